//! The interpreter never panics: any program, well-formed or not, runs to a
//! `Result`, whatever it does.

use pkbpf_jit::interp::{ExecErrorKind, HelperTable, Interpreter, Memory, Options, RegionKind};
use pkbpf_verifier::isa::{decode_program, Insn};
use pkbpf_verifier::strategies::{any_bytes_program, any_insn_sequence, any_program};
use proptest::prelude::*;

fn run_small(prog: &[Insn], input: &mut [u8]) -> Result<u64, ExecErrorKind> {
    let len = input.len() as u64;
    let mut mem = Memory::new();
    let addr = mem.add_slice_mut(input, RegionKind::Input);
    let opts = Options {
        budget: 2_000,
        ..Options::default()
    };
    Interpreter::new(prog)
        .with_options(opts)
        .run(
            &mut mem,
            &mut HelperTable::conformance(),
            [addr, len, 0, 0, 0],
        )
        .map(|o| o.r0)
        .map_err(|e| e.kind)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random bytes: whatever decodes runs without panicking.
    #[test]
    fn never_panics_on_random_bytes(bytes in any_bytes_program(24)) {
        if let Ok(prog) = decode_program(&bytes) {
            let _ = run_small(&prog, &mut [0u8; 32]);
        }
    }

    /// Well-formed programs (every jump lands on an instruction).
    #[test]
    fn never_panics_on_well_formed_programs(prog in any_program(32)) {
        let _ = run_small(&prog, &mut [0x5au8; 64]);
    }

    /// Jumps may leave the program or land in an `lddw`'s second half; the
    /// interpreter reports it.
    #[test]
    fn never_panics_on_arbitrary_jumps(prog in any_insn_sequence(32)) {
        let _ = run_small(&prog, &mut [0xa5u8; 16]);
    }
}
