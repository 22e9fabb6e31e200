//! Inputs the fuzz targets crashed on, replayed through the same oracles.
//! Each names the target, what it found and where the fix is.

use pkbpf_fuzzlib::oracles::{case_env, jit_diff, Verdict};
use pkbpf_fuzzlib::Case;
use pkbpf_verifier::asm::assemble;
use pkbpf_verifier::verify;

/// `jit_diff` crash-0ed8c421: `r5 = -1; call 7; r0 = 2; exit` with no
/// memory. `ProgramEnv::conformance` admits every built-in helper (7 =
/// get_prandom_u32), but the engines' conformance tables implement only 5,
/// so the JIT refused the "verified" program (`unknown helper 7`). Fixed in
/// the oracle: cases verify against `case_env`, which admits exactly the
/// helpers the engines run.
#[test]
fn jit_diff_helper_outside_the_engines_table_is_rejected_up_front() {
    let artifact: &[u8] = b"\x00\x00\x00\xb7\x05\x00\x00\xff\xff\xff\xff\x85\x00\x00\x00\x07\x00\x00\x00\xb7\x00\x00\x00\x02\x00\x00\x00\x95\x00\x00\x00\x00\x00\x00\x00";
    let case = Case::from_bytes(artifact).expect("the artifact decodes");
    assert_eq!(
        case.insns,
        assemble("mov %r5, -1\ncall 7\nmov %r0, 2\nexit").unwrap()
    );
    assert_eq!(jit_diff(&case).unwrap(), Verdict::Rejected);
    // Helper 5 (unwind) is still callable.
    let unwind = assemble("mov %r1, 9\ncall 5\nexit").unwrap();
    assert!(verify(&unwind, &case_env(0)).is_ok());
    let case = Case {
        insns: unwind,
        mem: Vec::new(),
    };
    assert_eq!(jit_diff(&case).unwrap(), Verdict::Accepted { r0: Ok(9) });
}

/// `maps_model` crash-0a4ba44a: a zero-length ring-buffer record reserved in
/// the ring's last 8 bytes could not be committed (`-EINVAL`): its data
/// pointer is the ring's end, which `commit` took for out of range.
#[test]
fn ringbuf_zero_length_record_at_the_end_of_the_ring_commits() {
    use pkbpf_fuzzlib::oracles::{maps_model, MapOp, MapSel, MapsInput};

    let input = MapsInput {
        map: MapSel::RingBuf,
        key_extra: 0,
        value_size: 0,
        max_entries: 0,
        ops: [
            // 7 records of 504 + 8 bytes and one of 496 + 8: 4088 bytes,
            // so the next record starts 8 bytes before the end.
            vec![MapOp::RbOutput { len: 504, byte: 1 }; 7],
            vec![
                MapOp::RbOutput { len: 496, byte: 2 },
                MapOp::RbConsume,
                MapOp::RbReserve { len: 0, byte: 3 },
                MapOp::RbCommit {
                    which: 0,
                    discard: false,
                },
                MapOp::RbConsume,
                MapOp::RbOutput { len: 8, byte: 4 },
                MapOp::RbConsume,
            ],
        ]
        .concat(),
    };
    maps_model(&input).unwrap_or_else(|f| panic!("{f}"));
}

/// `jit_diff` crash-07fc087b: the verifier accepts an `lddw` map pseudo
/// form with an invalid map index when no path reaches it (here the branch
/// over it is always taken), and the JIT, which compiles every instruction,
/// then refuses the `VerifiedProgram` (`lddw pseudo form MapFd ... cannot be
/// resolved`). The kernel resolves map references for every instruction
/// before verification, so it rejects this program. Fixed: the verifier
/// checks every map reference statically (`cfg::check_map_refs`).
#[test]
fn verifier_rejects_invalid_map_reference_in_dead_code() {
    use pkbpf_verifier::isa::decode_program;

    let prog = decode_program(&[
        0xb7, 0, 0, 0, 0, 0, 0, 0, // r0 = 0
        0x15, 0, 2, 0, 0, 0, 0, 0, // if r0 == 0 goto +2
        0x18, 0x11, 0, 0, 1, 0, 0, 0x80, // r1 = map_fd 0x80000001 (no such map)
        0, 0, 0, 0, 0, 0, 0, 0, //
        0x95, 0, 0, 0, 0, 0, 0, 0, // exit
    ])
    .unwrap();
    assert!(verify(&prog, &case_env(0)).is_err());
}

/// The same program through `jit_diff`: until the verifier gap above is
/// closed, the oracle skips the JIT's refusal instead of crashing.
#[test]
fn jit_diff_skips_the_known_dead_code_map_reference_gap() {
    use pkbpf_verifier::isa::decode_program;

    let insns = decode_program(&[
        0xb7, 0, 0, 0, 0, 0, 0, 0, // r0 = 0
        0x15, 0, 2, 0, 0, 0, 0, 0, // if r0 == 0 goto +2
        0x18, 0x11, 0, 0, 1, 0, 0, 0x80, // r1 = map_fd 0x80000001
        0, 0, 0, 0, 0, 0, 0, 0, //
        0x95, 0, 0, 0, 0, 0, 0, 0, // exit
    ])
    .unwrap();
    let case = Case {
        insns,
        mem: Vec::new(),
    };
    let v = jit_diff(&case).unwrap_or_else(|f| panic!("{f}"));
    assert!(
        matches!(v, Verdict::Rejected | Verdict::Accepted { r0: Ok(0) }),
        "{v:?}"
    );
}

/// `jit_diff` crash-787963bf: `if w10 s<= -2` compared the low half of the
/// frame pointer with a number, so the result depended on where each engine
/// placed the stack (interpreter Ok(1), JIT Ok(2)). The verifier now rejects
/// comparisons that depend on memory placement (only null checks and
/// orderings of two pointers into one region remain), so the oracle never
/// runs such a program.
#[test]
fn comparing_the_frame_pointer_with_a_number_is_rejected_up_front() {
    let insns = pkbpf_verifier::asm::assemble(
        "r9 = 1\nr9 <<= 32\nw0 = 0\nw1 = -2\nr1 |= r9\nif w1 s<= -3 goto +1\n\
         if w1 s<= -1 goto +1\nexit\nw0 = 1\nif w10 s<= -2 goto +1\nw0 = 2\nexit",
    )
    .unwrap();
    assert!(verify(&insns, &case_env(0)).is_err());
    let v = jit_diff(&Case {
        insns,
        mem: Vec::new(),
    })
    .unwrap_or_else(|f| panic!("{f}"));
    assert!(matches!(v, Verdict::Rejected), "{v:?}");
}

/// `jit_diff` crash-af3add1e (the CI smoke on a fresh clone): `call 0`
/// behind a branch whose constant operands never take it. The verifier
/// never reached the call, so it accepted the program, and the JIT, which
/// compiles every instruction, refused it (`unknown helper 0`). Fixed in the
/// verifier: every call's helper is checked statically, reachable or not
/// (`cfg::check_helper_refs`), as map references already were.
#[test]
fn unknown_helper_in_dead_code_is_rejected_by_the_verifier() {
    let insns = assemble(
        "mov %r1, 1
         jgt %r1, 2, +2
         mov %r0, 0
         exit
         call 0
         exit",
    )
    .unwrap();
    let e = verify(&insns, &case_env(0)).unwrap_err();
    assert_eq!(e.insn, 4, "{e}");
    assert!(
        matches!(e.reason, pkbpf_verifier::Reason::UnknownHelper { id: 0 }),
        "{e}"
    );
    let case = Case {
        insns,
        mem: Vec::new(),
    };
    assert_eq!(jit_diff(&case).unwrap(), Verdict::Rejected);
}
