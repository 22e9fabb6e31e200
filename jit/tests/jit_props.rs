//! Property tests: the JIT against the interpreter on random valid programs,
//! and gadget-freedom of the code for programs built from gadget bytes.

mod jit_support;

use jit_support::gen::{lower, mem_len, program};
use jit_support::{both_verified, compile, try_verified};
use pkbpf_jit::x86::scan_gadgets;
use proptest::prelude::*;

/// Deterministic memory contents.
fn fill(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Same r0, same failure-or-not, same final memory (which includes a copy
    /// of every register and stack slot) on both engines.
    #[test]
    fn jit_matches_interpreter(p in program(48, 64, false), seed in any::<u64>()) {
        let prog = lower(&p, 64);
        // The generator aims at verifiable programs; a rejection is skipped
        // (proptest fails the test if rejections pile up).
        let Some(v) = try_verified(&prog, mem_len(64)) else {
            return Err(TestCaseError::reject("verifier rejected the program"));
        };
        let mem = fill(mem_len(64), seed);
        let (r0, _) = both_verified(&prog, &v, &mem);
        prop_assert!(r0.is_ok(), "interpreter failed: {r0:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Immediates, lddw constants and memory offsets made of WRPKRU, XRSTOR,
    /// SYSCALL, SYSENTER and INT 0x80 bytes: the final code has no gadget at
    /// any offset, and still computes what the interpreter does.
    #[test]
    fn no_gadgets_in_generated_code(p in program(160, 0x4000, true), seed in any::<u64>()) {
        let prog = lower(&p, 0x4000);
        let Some(v) = try_verified(&prog, mem_len(0x4000)) else {
            return Err(TestCaseError::reject("verifier rejected the program"));
        };
        let jit = compile(&v);
        prop_assert_eq!(scan_gadgets(jit.code()), vec![]);
        let mem = fill(mem_len(0x4000), seed);
        let (r0, _) = both_verified(&prog, &v, &mem);
        prop_assert!(r0.is_ok(), "interpreter failed: {r0:?}");
    }
}
