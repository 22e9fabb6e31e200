//! Comparisons of two pointers into one region (the packet-style
//! `if (p + n > end)` check): the outcome narrows both offsets, so the
//! access the check guards verifies; an off-by-one check does not, and
//! comparisons whose outcome depends on placement stay refused.

use pkbpf_verifier::asm::assemble;
use pkbpf_verifier::{ProgramEnv, Reason, Verifier};

/// 16 bytes of input memory at `r1`; `r3` points at an unknown offset in
/// 0..=15 of it, `r4` four bytes further, `r5` at offset END.
fn guarded(end: u32, cond: &str) -> String {
    format!(
        "r3 = *(u8 *)(r1 + 0)
         r3 &= 15
         r3 += r1
         r4 = r3
         r4 += 4
         r5 = r1
         r5 += {end}
         if r4 {cond} r5 goto out
         r0 = *(u32 *)(r4 - 4)
         exit
     out:
         r0 = 0
         exit"
    )
}

fn verify(src: &str) -> Result<pkbpf_verifier::VerifiedProgram, pkbpf_verifier::VerifyError> {
    let prog = assemble(src).unwrap_or_else(|e| panic!("{e}"));
    Verifier::new(&ProgramEnv::conformance(16)).verify(&prog).0
}

#[test]
fn an_end_check_narrows_the_pointer() {
    for cond in [">", "s>"] {
        if let Err(e) = verify(&guarded(16, cond)) {
            panic!("{cond}: {e}");
        }
    }
    // the mirrored form: `if end >= p + 4` falls through when p + 4 > end
    let src = guarded(16, ">").replace(
        "if r4 > r5 goto out",
        "if r5 >= r4 goto ok\n goto out\n ok:",
    );
    verify(&src).unwrap();
}

#[test]
fn an_off_by_one_end_check_is_rejected() {
    let r = verify(&guarded(17, ">")).unwrap_err().reason;
    assert!(
        matches!(r, Reason::MemOutOfBounds { mem_size: 16, .. }),
        "{r:?}"
    );
    // without the check at all
    let r = verify(&guarded(16, ">").replace("if r4 > r5 goto out", "if r2 == 0 goto out"))
        .unwrap_err()
        .reason;
    assert!(matches!(r, Reason::MemOutOfBounds { .. }), "{r:?}");
}

#[test]
fn placement_dependent_pointer_comparisons_are_refused() {
    let r = verify(&guarded(16, "&")).unwrap_err().reason;
    assert!(matches!(r, Reason::PointerComparison { .. }), "{r:?}");
}
