//! `lddw` map pseudo forms and inlined array lookups through the verifier.

use std::ffi::c_void;

use pkbpf_jit::x86::{ArrayLayout, HelperRet, JitEnv, JitMap, JitProgram, RunError};
use pkbpf_verifier::{verify, MapDesc, ProgramEnv};

mod jit_support;
use jit_support::lookup_prog;

/// Stands in for map_lookup_elem where inlining is expected: aborts.
extern "C" fn not_inlined(_: u64, _: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> HelperRet {
    HelperRet {
        value: 0,
        abort: 0xdead,
    }
}

#[test]
fn array_lookups_the_verifier_marks_are_inlined() {
    let mut penv = ProgramEnv::conformance(0);
    penv.maps = vec![MapDesc::new(MapDesc::ARRAY, 4, 8, 4)];
    let values: Vec<u64> = vec![10, 20, 30, 0x0f05_0f05];
    let env = JitEnv::new().with_helper(1, not_inlined).with_map(JitMap {
        object: 0x1000,
        value: Some(values.as_ptr() as u64),
        array: Some(ArrayLayout {
            values: values.as_ptr() as u64,
            stride: 8,
            max_entries: 4,
        }),
    });
    for (key, want) in [
        (0, 10u64),
        (2, 30),
        (3, 0x0f05_0f05),
        (4, u64::MAX),
        (-1, u64::MAX),
    ] {
        let prog = lookup_prog(key);
        let v = verify(&prog, &penv).unwrap();
        assert_eq!(v.inlinable_lookups(), &[(5, 0)]);
        let jit = JitProgram::compile(&v, &env).unwrap();
        // SAFETY: the program was verified with a map whose values are
        // `values` (alive for the call); r1/r2 are unused.
        let got = unsafe { jit.call_with_env(0, 0, std::ptr::null_mut()) };
        assert_eq!(got, Ok(want), "key {key}");
    }
    // Without a layout the helper is called (and here aborts).
    let env = JitEnv::new().with_helper(1, not_inlined).with_map(JitMap {
        object: 0x1000,
        value: None,
        array: None,
    });
    let v = verify(&lookup_prog(0), &penv).unwrap();
    let jit = JitProgram::compile(&v, &env).unwrap();
    // SAFETY: the helper aborts before anything is dereferenced.
    let got = unsafe { jit.call_with_env(0, 0, std::ptr::null_mut()) };
    assert_eq!(got, Err(RunError::HelperAbort { code: 0xdead }));
}

#[test]
fn programs_compile_for_display_with_placeholder_helpers_and_maps() {
    let mut penv = ProgramEnv::conformance(0);
    penv.maps = vec![MapDesc::new(MapDesc::ARRAY, 4, 8, 4)];
    let prog = lookup_prog(1);
    let v = verify(&prog, &penv).unwrap();
    let env = JitEnv::for_display(&v);
    assert_eq!(env.helpers.keys().copied().collect::<Vec<_>>(), vec![1]);
    assert_eq!(env.maps.len(), 1);
    let jit = JitProgram::compile(&v, &env).unwrap();
    let text = jit.dump(v.insns());
    assert!(text.contains("; helper 1 stub"), "{text}");
    assert!(
        text.contains("call 1") || text.contains("map_lookup_elem"),
        "{text}"
    );
}
