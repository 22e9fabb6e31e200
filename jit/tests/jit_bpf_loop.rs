//! `bpf_loop` and its callbacks on both engines: the interpreter runs the
//! helper itself, the JIT compiles it in line; both must agree with each
//! other and with the kernel helper's semantics (iterations done, early
//! stop, `-E2BIG`, `-EINVAL`, the low 32 bits of the count).

mod jit_support;

use jit_support::both_asm;

/// `r0 = bpf_loop(N, cb, fp-8, FLAGS)` where the callback adds its index
/// plus one to the u64 at fp-8 and stops when that index is STOP; then the
/// sum goes to the first 8 bytes of memory.
fn sum_prog(n: &str, flags: &str, stop: i64) -> String {
    format!(
        "*(u64 *)(r10 - 8) = 0
         r6 = r1
         r1 = {n}
         r2 = func cb
         r3 = r10
         r3 += -8
         r4 = {flags}
         call bpf_loop#181
         r1 = *(u64 *)(r10 - 8)
         *(u64 *)(r6 + 0) = r1
         exit
     cb:
         r3 = *(u64 *)(r2 + 0)
         r3 += r1
         r3 += 1
         *(u64 *)(r2 + 0) = r3
         r0 = 0
         if r1 != {stop} goto out
         r0 = 1
     out:
         exit"
    )
}

fn run(src: &str) -> (u64, u64) {
    let mut mem = [0u8; 16];
    let r0 = both_asm(src, &mem);
    // both_asm checks both engines leave the same memory; rerun the
    // interpreter's view for the value written
    let prog = pkbpf_verifier::asm::assemble(src).unwrap();
    let _ = jit_support::run_interp(&prog, &mut mem).unwrap();
    (r0, u64::from_le_bytes(mem[..8].try_into().unwrap()))
}

#[test]
fn runs_all_iterations() {
    for n in [0u64, 1, 2, 10, 100] {
        let (r0, sum) = run(&sum_prog(&n.to_string(), "0", -1));
        assert_eq!(r0, n);
        assert_eq!(sum, n * (n + 1) / 2, "n = {n}");
    }
}

#[test]
fn stops_when_the_callback_returns_one() {
    let (r0, sum) = run(&sum_prog("100", "0", 7));
    assert_eq!(r0, 8, "iterations done, the stopping one included");
    assert_eq!(sum, 36);
}

#[test]
fn errors_and_the_count_width() {
    // over 1 << 23 iterations: -E2BIG, the callback never runs
    let (r0, sum) = run(&sum_prog("0x800001", "0", -1));
    assert_eq!(r0 as i64, -7);
    assert_eq!(sum, 0);
    // exactly 1 << 23 is allowed (stopped at once to keep the test short)
    let (r0, _) = run(&sum_prog("0x800000", "0", 0));
    assert_eq!(r0, 1);
    // flags not 0 (unknown to the verifier): -EINVAL
    let src = sum_prog("5", "*(u64 *)(r6 + 8)", -1)
        .replace("r4 = *(u64 *)(r6 + 8)", "r4 = *(u64 *)(r6 + 8)\n r4 |= 4");
    let src = src.replacen("r1 = 5", "r1 = 5\n r4 = 0", 1);
    let mut mem = [0u8; 16];
    let r0 = both_asm(&src, &mem);
    assert_eq!(r0 as i64, -22);
    let prog = pkbpf_verifier::asm::assemble(&src).unwrap();
    jit_support::run_interp(&prog, &mut mem).unwrap();
    assert_eq!(u64::from_le_bytes(mem[..8].try_into().unwrap()), 0);
    // the count is a u32: the upper half is ignored
    let (r0, sum) = run(&sum_prog("0x100000003 ll", "0", -1));
    assert_eq!(r0, 3);
    assert_eq!(sum, 6);
}

#[test]
fn callee_saved_registers_survive_and_callbacks_nest() {
    // The caller keeps r6..r9 across the loop; the outer callback uses
    // r6..r9 itself and runs an inner loop on the same counter.
    let src = "
         *(u64 *)(r10 - 8) = 0
         r6 = 11
         r7 = 22
         r8 = 33
         r9 = r1
         r1 = 4
         r2 = func outer
         r3 = r10
         r3 += -8
         r4 = 0
         call bpf_loop#181
         r1 = *(u64 *)(r10 - 8)
         *(u64 *)(r9 + 0) = r1
         r0 += r6
         r0 += r7
         r0 += r8
         exit
     outer:
         r6 = r1
         r7 = r2
         r8 = 1000
         r9 = 2000
         r1 += 1
         r2 = func inner
         r3 = r7
         r4 = 0
         call bpf_loop#181
         r1 = *(u64 *)(r7 + 0)
         r1 *= 3
         r1 += r6
         *(u64 *)(r7 + 0) = r1
         r0 = 0
         if r8 != 1000 goto bad
         if r9 == 2000 goto good
     bad:
         r0 = 1
     good:
         exit
     inner:
         r3 = *(u64 *)(r2 + 0)
         r3 += r1
         *(u64 *)(r2 + 0) = r3
         r0 = 0
         exit";
    let (r0, total) = run(src);
    assert_eq!(r0, 4 + 11 + 22 + 33);
    let mut want = 0u64;
    for i in 0..4u64 {
        want += (0..=i).sum::<u64>();
        want = want * 3 + i;
    }
    assert_eq!(total, want);
}

#[test]
fn a_helper_ending_the_program_inside_a_callback() {
    // The conformance "unwind" helper (id 5) with r1 == 0 ends the whole
    // program with r0 = 0, from the fourth iteration's callback.
    let src = "
         *(u64 *)(r10 - 8) = 0
         r6 = r1
         r1 = 10
         r2 = func cb
         r3 = r10
         r3 += -8
         r4 = 0
         call bpf_loop#181
         r0 = 99
         exit
     cb:
         r6 = r2
         r3 = *(u64 *)(r2 + 0)
         r3 += 1
         *(u64 *)(r2 + 0) = r3
         r1 += -3
         call 5
         r0 = 0
         exit";
    assert_eq!(both_asm(src, &[0u8; 16]), 0);
}
