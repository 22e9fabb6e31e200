//! The verifier never panics: arbitrary instruction sequences (jumps out of
//! range, into `lddw` halves, any registers, maps that do not exist) get a
//! verdict, in every environment, and a log at every level.

use pkbpf_verifier::strategies::{any_insn_sequence, any_program};
use pkbpf_verifier::verifier::ctx::CtxDesc;
use pkbpf_verifier::{MapDesc, ProgramEnv, Verifier};
use proptest::prelude::*;

fn envs() -> Vec<ProgramEnv> {
    vec![
        ProgramEnv::conformance(16),
        ProgramEnv::conformance(0),
        ProgramEnv::new(CtxDesc::PtRegs)
            .with_map(MapDesc::new(1, 4, 8, 16))
            .with_map(MapDesc::new(2, 4, 16, 4))
            .with_map(MapDesc::new(27, 0, 0, 4096)),
        ProgramEnv::new(CtxDesc::Buffer {
            size: 24,
            writable: std::iter::once(0..8).collect(),
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn arbitrary_sequences_get_a_verdict(prog in any_insn_sequence(24), level in 0u32..3) {
        for env in envs() {
            let (res, log) = Verifier::new(&env).log_level(level).verify(&prog);
            if level > 0 {
                prop_assert!(!log.is_empty());
            }
            if let Err(e) = res {
                prop_assert_eq!(e.category, e.reason.category());
                prop_assert!(e.insn < prog.len().max(1));
            }
        }
    }

    #[test]
    fn well_formed_programs_get_a_verdict(prog in any_program(24)) {
        for env in envs() {
            let _ = Verifier::new(&env).log_level(2).verify(&prog);
        }
    }
}
