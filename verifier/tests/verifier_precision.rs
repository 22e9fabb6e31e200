//! Pruning with precision: a kept state covers a new one whose scalars
//! differ only where no exact value decided anything below it; where one
//! did (a pointer offset, a branch with one feasible outcome, a size), the
//! values must still be covered. The first tests are states that must NOT
//! be pruned; the last ones show that branchy loops now prune.

use pkbpf_verifier::asm::assemble;
use pkbpf_verifier::verifier::ctx::CtxDesc;
use pkbpf_verifier::{MapDesc, ProgramEnv, Reason, Verifier};

fn env() -> ProgramEnv {
    ProgramEnv::new(CtxDesc::PtRegs).with_map(MapDesc::new(2, 4, 8, 4)) // array u32 -> u64
}

fn verify(src: &str) -> Result<pkbpf_verifier::VerifiedProgram, pkbpf_verifier::VerifyError> {
    let prog = assemble(src).unwrap_or_else(|e| panic!("{e}"));
    Verifier::new(&env()).verify(&prog).0
}

/// `r7` is 4 on the path explored first and 100 on the second; both reach
/// `join` (a prune point) with everything else equal.
const SPLIT: &str = "
    r6 = *(u64 *)(r1 + 0)
    r7 = 4
    if r6 > 10 goto other
    goto join
other:
    r7 = 100
join:
";

fn rejected(body: &str) -> Reason {
    match verify(&format!("{SPLIT}{body}")) {
        Ok(_) => panic!("accepted:\n{SPLIT}{body}"),
        Err(e) => e.reason,
    }
}

#[test]
fn a_scalar_that_becomes_a_pointer_offset_is_precise() {
    let r = rejected(
        "*(u64 *)(r10 - 8) = 0
         r3 = r10
         r3 += -8
         r3 += r7
         r0 = *(u8 *)(r3 - 4)
         exit",
    );
    assert!(matches!(r, Reason::StackOutOfBounds { .. }), "{r:?}");
}

#[test]
fn a_scalar_that_decides_a_branch_is_precise() {
    let r = rejected(
        "if r7 == 100 goto bad
         r0 = 0
         exit
     bad:
         r0 = *(u64 *)(r10 - 8)
         exit",
    );
    assert!(matches!(r, Reason::UninitStackRead { .. }), "{r:?}");
}

#[test]
fn precision_follows_copies_arithmetic_and_spills() {
    // r7 -> r8 (copy) -> r8 * 2 -> spilled -> filled into r9 -> offset
    let r = rejected(
        "r8 = r7
         r8 *= 2
         *(u64 *)(r10 - 16) = r8
         r9 = *(u64 *)(r10 - 16)
         *(u64 *)(r10 - 8) = 0
         r3 = r10
         r3 += -16
         r3 += r9
         r0 = *(u8 *)(r3 + 0)
         exit",
    );
    assert!(matches!(r, Reason::StackOutOfBounds { .. }), "{r:?}");
    // through a narrow spill and a comparison against another register
    let r = rejected(
        "*(u32 *)(r10 - 4) = r7
         r2 = *(u32 *)(r10 - 4)
         r3 = 50
         if r2 > r3 goto bad
         r0 = 0
         exit
     bad:
         r0 = *(u64 *)(r10 - 24)
         exit",
    );
    assert!(matches!(r, Reason::UninitStackRead { .. }), "{r:?}");
}

#[test]
fn a_scalar_that_sizes_a_helper_buffer_is_precise() {
    let r = rejected(
        "*(u64 *)(r10 - 8) = 0
         r1 = r10
         r1 += -8
         r2 = r7
         r3 = 0
         call bpf_probe_read_kernel#113
         r0 = 0
         exit",
    );
    assert!(matches!(r, Reason::StackOutOfBounds { .. }), "{r:?}");
}

#[test]
fn an_array_key_that_decides_null_is_precise() {
    // key 4 is past max_entries 4: the lookup may fail there.
    let src = "
        r6 = *(u64 *)(r1 + 0)
        r7 = 1
        if r6 > 10 goto other
        goto join
    other:
        r7 = 4
    join:
        *(u32 *)(r10 - 4) = r7
        r2 = r10
        r2 += -4
        r1 = map[idx:0]
        call bpf_map_lookup_elem#1
        r0 = *(u64 *)(r0 + 0)
        exit";
    let r = verify(src).unwrap_err().reason;
    assert!(
        matches!(r, Reason::InvalidMemAccess { reg: 0, .. }),
        "{r:?}"
    );
}

#[test]
fn a_value_only_stored_does_not_stop_pruning() {
    // r7 differs at `join` but is only written to memory afterwards: the
    // second path is pruned there.
    let v = verify(&format!(
        "{SPLIT}*(u64 *)(r10 - 8) = r7
         r0 = 0
         exit"
    ))
    .unwrap();
    assert!(v.stats().pruned >= 1, "{:?}", v.stats());
}

/// A loop of 1000 iterations with a branch whose outcome only changes an
/// accumulator: without precision every iteration doubles the states.
#[test]
fn branchy_loops_with_imprecise_accumulators_prune() {
    let v = verify(
        "r6 = 0
         r7 = 0
     top:
         r2 = *(u64 *)(r1 + 0)
         if r2 > 5 goto big
         r7 += 1
         goto next
     big:
         r7 += 3
     next:
         r6 += 1
         if r6 < 1000 goto top
         r0 = r7
         exit",
    )
    .unwrap();
    let s = v.stats();
    assert!(s.processed < 20_000, "{s:?}");
    assert!(s.pruned >= 900, "{s:?}");
}
