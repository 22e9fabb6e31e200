//! `bpf_loop` callbacks: programs the verifier must accept (the callback
//! verified for any number of iterations) and the misuse it must reject.

use pkbpf_verifier::asm::assemble;
use pkbpf_verifier::verifier::ctx::CtxDesc;
use pkbpf_verifier::{MapDesc, ProgramEnv, Reason, Verifier};

fn env() -> ProgramEnv {
    ProgramEnv::new(CtxDesc::PtRegs)
        .with_map(MapDesc::new(1, 4, 8, 16)) // 0: hash u32 -> u64
        .with_map(MapDesc::new(2, 4, 16, 4)) // 1: array u32 -> 16 bytes
}

fn verify(
    src: &str,
) -> (
    Result<pkbpf_verifier::VerifiedProgram, pkbpf_verifier::VerifyError>,
    String,
) {
    let prog = assemble(src).unwrap_or_else(|e| panic!("{e}"));
    Verifier::new(&env()).log_level(1).verify(&prog)
}

fn accept(src: &str) -> pkbpf_verifier::VerifiedProgram {
    match verify(src) {
        (Ok(v), _) => v,
        (Err(e), log) => panic!("rejected at insn {}: {e}\n{log}", e.insn),
    }
}

fn reject(src: &str) -> Reason {
    match verify(src).0 {
        Ok(_) => panic!("accepted:\n{src}"),
        Err(e) => e.reason,
    }
}

/// A counter on the caller's stack, incremented by the callback.
const COUNTER: &str = "
    *(u64 *)(r10 - 8) = 0
    r1 = 100
    r2 = func cb
    r3 = r10
    r3 += -8
    r4 = 0
    call bpf_loop#181
    r0 = *(u64 *)(r10 - 8)
    exit
cb:
    r3 = *(u64 *)(r2 + 0)
    r3 += 1
    *(u64 *)(r2 + 0) = r3
    r0 = 0
    exit";

#[test]
fn counter_on_the_callers_stack() {
    let v = accept(COUNTER);
    assert!(v.helpers_used().contains(&181));
    assert_eq!(v.subprogs().len(), 2);
    assert_eq!(v.subprogs()[1].entry, 10);
}

#[test]
fn null_and_map_value_contexts() {
    accept(
        "r1 = 10
         r2 = func cb
         r3 = 0
         r4 = 0
         call bpf_loop#181
         exit
     cb:
         r0 = 1
         exit",
    );
    accept(
        "*(u32 *)(r10 - 4) = 0
         r2 = r10
         r2 += -4
         r1 = map[idx:1]
         call bpf_map_lookup_elem#1
         if r0 == 0 goto out
         r1 = 10
         r2 = func cb
         r3 = r0
         r4 = 0
         call bpf_loop#181
     out:
         r0 = 0
         exit
     cb:
         r1 &= 1
         r1 <<= 3
         r2 += r1
         r3 = *(u64 *)(r2 + 0)
         r3 += 7
         *(u64 *)(r2 + 0) = r3
         r0 = 0
         exit",
    );
}

/// A slot the callback turns from a scalar into a pointer-free value is not
/// a pointer after the loop: the fixpoint sees the second iteration.
#[test]
fn a_pointer_the_callback_overwrites_is_lost() {
    let r = reject(
        "*(u64 *)(r10 - 16) = r10
         r1 = 3
         r2 = func cb
         r3 = r10
         r3 += -16
         r4 = 0
         call bpf_loop#181
         r1 = *(u64 *)(r10 - 16)
         r0 = *(u64 *)(r1 - 8)
         exit
     cb:
         *(u64 *)(r2 + 0) = r1
         r0 = 0
         exit",
    );
    assert!(
        matches!(r, Reason::InvalidMemAccess { reg: 1, .. }),
        "{r:?}"
    );
}

/// Each iteration moves a stack pointer kept in the caller's frame 8 bytes
/// down and writes through it: iterations 1 to 64 stay in the frame, the
/// 65th writes below it. Only a verifier that runs the callback again on
/// what the previous iteration left sees it (pointers are not widened).
#[test]
fn a_later_iteration_going_out_of_bounds_is_caught() {
    let r = reject(
        "*(u64 *)(r10 - 8) = r10
         r1 = 100
         r2 = func cb
         r3 = r10
         r3 += -8
         r4 = 0
         call bpf_loop#181
         r0 = 0
         exit
     cb:
         r3 = *(u64 *)(r2 + 0)
         r3 += -8
         r4 = 0
         *(u64 *)(r3 + 0) = r4
         *(u64 *)(r2 + 0) = r3
         r0 = 0
         exit",
    );
    assert!(
        matches!(r, Reason::StackOutOfBounds { off: -520, size: 8 }),
        "{r:?}"
    );
}

/// A caller's constant the callback changes is not that constant after the
/// loop: the value the callback wrote decides the bound check.
#[test]
fn a_value_the_callback_writes_reaches_the_caller() {
    let r = reject(
        "*(u64 *)(r10 - 8) = 0
         r1 = 3
         r2 = func cb
         r3 = r10
         r3 += -8
         r4 = 0
         call bpf_loop#181
         r1 = *(u64 *)(r10 - 8)
         r2 = r10
         r2 += -64
         r2 += r1
         r0 = *(u8 *)(r2 + 0)
         exit
     cb:
         r3 = 9999
         *(u64 *)(r2 + 0) = r3
         r0 = 0
         exit",
    );
    assert!(
        matches!(r, Reason::StackOutOfBounds { off: 9935, size: 1 }),
        "{r:?}"
    );
}

#[test]
fn misuse_is_rejected_for_its_reason() {
    // callback returning 2
    let r = reject(
        "r1 = 1
         r2 = func cb
         r3 = 0
         r4 = 0
         call bpf_loop#181
         exit
     cb:
         r0 = 2
         exit",
    );
    assert!(
        matches!(r, Reason::CallbackReturn { smin: 2, smax: 2 }),
        "{r:?}"
    );
    // a non-func pointer as the callback
    let r = reject(
        "r1 = 1
         r2 = r10
         r3 = 0
         r4 = 0
         call bpf_loop#181
         exit",
    );
    assert!(
        matches!(
            r,
            Reason::HelperArgType {
                reg: 2,
                expected: "func",
                ..
            }
        ),
        "{r:?}"
    );
    // constant flags other than 0
    let r = reject(
        "r1 = 1
         r2 = func cb
         r3 = 0
         r4 = 1
         call bpf_loop#181
         exit
     cb:
         r0 = 0
         exit",
    );
    assert!(
        matches!(r, Reason::InvalidFlags { reg: 4, value: 1 }),
        "{r:?}"
    );
    // writing past the context (8 bytes at fp-8: fp+0 is outside the frame)
    let r = reject(
        "*(u64 *)(r10 - 8) = 0
         r1 = 1
         r2 = func cb
         r3 = r10
         r3 += -8
         r4 = 0
         call bpf_loop#181
         exit
     cb:
         *(u64 *)(r2 + 8) = r1
         r0 = 0
         exit",
    );
    assert!(
        matches!(r, Reason::StackOutOfBounds { off: 0, .. }),
        "{r:?}"
    );
    // arithmetic on a func pointer, and calling it through a jump
    let r = reject(
        "r2 = func cb
         r2 += 8
         r0 = 0
         exit
     cb:
         r0 = 0
         exit",
    );
    assert!(matches!(r, Reason::PointerArith { reg: 2, .. }), "{r:?}");
    // an infinite loop inside one callback iteration is still one
    let r = reject(
        "r1 = 1
         r2 = func cb
         r3 = 0
         r4 = 0
         call bpf_loop#181
         exit
     cb:
         r0 = 0
     l:
         goto l",
    );
    assert!(matches!(r, Reason::InfiniteLoop { .. }), "{r:?}");
}

#[test]
fn callbacks_count_toward_depth_and_combined_stack() {
    // 300 bytes in the caller plus 300 in the callback: over 512.
    let r = reject(
        "*(u64 *)(r10 - 300) = 0
         r1 = 1
         r2 = func cb
         r3 = 0
         r4 = 0
         call bpf_loop#181
         exit
     cb:
         *(u64 *)(r10 - 300) = 0
         r0 = 0
         exit",
    );
    assert!(matches!(r, Reason::CombinedStackTooLarge { .. }), "{r:?}");
    // a callback passing itself to bpf_loop nests until the depth limit
    let r = reject(
        "r1 = 1
         r2 = func cb
         r3 = 0
         r4 = 0
         call bpf_loop#181
         exit
     cb:
         r1 = 1
         r2 = func cb
         r3 = 0
         r4 = 0
         call bpf_loop#181
         r0 = 0
         exit",
    );
    assert!(matches!(r, Reason::CallTooDeep { .. }), "{r:?}");
}
