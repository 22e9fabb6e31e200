//! The interpreter never panics: any decodable (or hand-built) program runs
//! to a `Result`, whatever it does.

use pkbpf_jit::interp::{HelperTable, Interpreter, Memory, Options, RegionKind};
use pkbpf_verifier::isa::{decode_program, Insn, RawInsn};
use proptest::prelude::*;

fn run_small(prog: &[Insn], input: &mut [u8]) {
    let len = input.len() as u64;
    let mut mem = Memory::new();
    let addr = mem.add_slice_mut(input, RegionKind::Input);
    let opts = Options {
        budget: 2_000,
        ..Options::default()
    };
    let _ = Interpreter::new(prog).with_options(opts).run(
        &mut mem,
        &mut HelperTable::conformance(),
        [addr, len, 0, 0, 0],
    );
}

/// Opcodes that decode, so random slots are not almost all rejected.
const OPCODES: &[u8] = &[
    0x04, 0x0c, 0x14, 0x1c, 0x24, 0x2c, 0x34, 0x3c, 0x44, 0x4c, 0x54, 0x5c, 0x64, 0x6c, 0x74, 0x7c,
    0x84, 0x94, 0x9c, 0xa4, 0xac, 0xb4, 0xbc, 0xc4, 0xcc, 0xd4, 0xdc, 0x07, 0x0f, 0x17, 0x1f, 0x27,
    0x2f, 0x37, 0x3f, 0x47, 0x4f, 0x57, 0x5f, 0x67, 0x6f, 0x77, 0x7f, 0x87, 0x97, 0x9f, 0xa7, 0xaf,
    0xb7, 0xbf, 0xc7, 0xcf, 0xd7, 0x18, 0x61, 0x69, 0x71, 0x79, 0x81, 0x89, 0x91, 0x62, 0x6a, 0x72,
    0x7a, 0x63, 0x6b, 0x73, 0x7b, 0xc3, 0xdb, 0x05, 0x06, 0x15, 0x1d, 0x25, 0x2d, 0x35, 0x3d, 0x45,
    0x4d, 0x55, 0x5d, 0x65, 0x6d, 0x75, 0x7d, 0xa5, 0xad, 0xb5, 0xbd, 0xc5, 0xcd, 0xd5, 0xdd, 0x16,
    0x1e, 0x26, 0xa6, 0x85, 0x8d, 0x95,
];

fn slot() -> impl Strategy<Value = RawInsn> {
    (
        prop::sample::select(OPCODES),
        0u8..11,
        0u8..11,
        -8i16..8,
        prop_oneof![-16i32..16, any::<i32>(), Just(0xe1), Just(0xf1), Just(0x41)],
    )
        .prop_map(|(code, dst, src, off, imm)| RawInsn::new(code, dst, src, off, imm))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn never_panics_on_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(prog) = decode_program(&bytes) {
            run_small(&prog, &mut [0u8; 32]);
        }
    }

    #[test]
    fn never_panics_on_decodable_programs(slots in prop::collection::vec(slot(), 1..48)) {
        let bytes: Vec<u8> = slots.iter().flat_map(|s| s.to_bytes()).collect();
        if let Ok(prog) = decode_program(&bytes) {
            run_small(&prog, &mut [0x5au8; 64]);
        }
    }

    /// Slots decoded one by one (undecodable ones become `exit`), without the
    /// whole-program checks: jumps may leave the program or land in an
    /// `lddw`'s second half, which the interpreter must report, not panic on.
    #[test]
    fn never_panics_without_structural_checks(slots in prop::collection::vec(slot(), 1..48)) {
        let mut prog = Vec::new();
        let mut i = 0;
        while i < slots.len() {
            match Insn::decode(&slots, i) {
                Ok(insn) if insn.slots() == 2 => {
                    prog.push(insn);
                    prog.push(Insn::LdImm64Hi);
                    i += 2;
                }
                Ok(insn) => {
                    prog.push(insn);
                    i += 1;
                }
                Err(_) => {
                    prog.push(Insn::Exit);
                    i += 1;
                }
            }
        }
        run_small(&prog, &mut [0xa5u8; 16]);
    }
}
