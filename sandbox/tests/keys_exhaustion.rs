//! Key exhaustion (its own binary: it takes every key the process has).
// In the disabled backend `ProtectionKey` is uninhabited, so everything after
// a key allocation is unreachable (and the tests skip at run time).
#![cfg_attr(
    pkbpf_force_disabled_mpk,
    allow(unreachable_code, unused_variables, unused_imports, dead_code)
)]

#[macro_use]
mod common;

use pkbpf_sandbox::{Keys, SandboxError, KEY_COUNT};

#[test]
fn running_out_of_keys_is_a_typed_error() {
    require_pku!("running_out_of_keys_is_a_typed_error");
    let runtime = Keys::alloc_runtime().expect("runtime key");
    let mut keys = vec![runtime];
    let err = loop {
        match Keys::alloc_extension() {
            Ok(k) => {
                assert!(!keys.contains(&k), "key {} handed out twice", k.as_u32());
                assert!((1..KEY_COUNT).contains(&k.as_u32()));
                keys.push(k);
                assert!(
                    keys.len() < KEY_COUNT as usize,
                    "more keys than the hardware has"
                );
            }
            Err(e) => break e,
        }
    };
    assert_eq!(
        err,
        SandboxError::KeysExhausted {
            in_use: keys.len() as u32
        }
    );
    assert_eq!(Keys::in_use(), keys.len() as u32);
    // Twenty extensions cannot all get a key; the eighth or so still can.
    assert!(keys.len() >= 8, "only {} keys", keys.len());
    // Exhaustion is sticky (keys are never freed) and still typed.
    assert!(matches!(
        Keys::alloc_extension(),
        Err(SandboxError::KeysExhausted { .. })
    ));
    // The runtime key is still the same one.
    assert_eq!(Keys::alloc_runtime(), Ok(runtime));
}
