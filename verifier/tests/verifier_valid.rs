//! Programs the verifier must accept: the shapes clang emits for tracing and
//! embedded programs (map lookups with null checks, ringbuf records, bounded
//! loops, bpf-to-bpf calls, helper buffers on the stack).

use pkbpf_verifier::asm::assemble;
use pkbpf_verifier::verifier::ctx::CtxDesc;
use pkbpf_verifier::{ProgramEnv, Verifier};

pub fn env() -> ProgramEnv {
    use pkbpf_verifier::MapDesc;
    ProgramEnv::new(CtxDesc::PtRegs)
        .with_map(MapDesc::new(1, 4, 8, 16)) // 0: hash u32 -> u64
        .with_map(MapDesc::new(2, 4, 16, 4)) // 1: array u32 -> 16 bytes
        .with_map(MapDesc::new(27, 0, 0, 4096)) // 2: ringbuf
        .with_map(MapDesc::new(3, 4, 4, 4)) // 3: prog array
        .with_map(MapDesc {
            read_only: true,
            ..MapDesc::new(2, 4, 8, 1)
        }) // 4: .rodata
        .with_map(MapDesc::new(22, 0, 8, 16)) // 5: queue
        .with_map(MapDesc::new(4, 4, 4, 0)) // 6: perf event array
}

fn accept(name: &str, env: &ProgramEnv, src: &str) -> pkbpf_verifier::VerifiedProgram {
    let prog = assemble(src).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (res, log) = Verifier::new(env).log_level(2).verify(&prog);
    match res {
        Ok(v) => v,
        Err(e) => panic!("{name}: rejected at insn {}: {e}\n{log}", e.insn),
    }
}

#[test]
fn map_lookup_with_null_check() {
    let v = accept(
        "lookup",
        &env(),
        "*(u32 *)(r10 - 4) = 0
         r2 = r10
         r2 += -4
         r1 = map[idx:1]
         call bpf_map_lookup_elem#1
         if r0 == 0 goto out
         r1 = *(u64 *)(r0 + 8)
         *(u64 *)(r0 + 0) = r1
         out:
         r0 = 0
         exit",
    );
    assert_eq!(v.inlinable_lookups(), &[(5, 1)]);
    assert!(v.helpers_used().contains(&1));
    assert_eq!(v.subprogs()[0].stack_depth, 4);
}

#[test]
fn hash_update_and_counter() {
    accept(
        "counter",
        &env(),
        "r6 = r1
         call bpf_get_current_pid_tgid#14
         r0 >>= 32
         *(u32 *)(r10 - 4) = r0
         r2 = r10
         r2 += -4
         r1 = map[idx:0]
         call bpf_map_lookup_elem#1
         if r0 != 0 goto found
         *(u64 *)(r10 - 16) = 1
         r2 = r10
         r2 += -4
         r3 = r10
         r3 += -16
         r1 = map[idx:0]
         r4 = 0
         call bpf_map_update_elem#2
         goto out
         found:
         r1 = 1
         lock *(u64 *)(r0 + 0) += r1
         out:
         r0 = 0
         exit",
    );
}

#[test]
fn ringbuf_reserve_submit() {
    accept(
        "ringbuf",
        &env(),
        "r1 = map[idx:2]
         r2 = 16
         r3 = 0
         call bpf_ringbuf_reserve#131
         if r0 == 0 goto out
         r6 = r0
         *(u64 *)(r6 + 8) = 7
         call bpf_ktime_get_ns#5
         *(u64 *)(r6 + 0) = r0
         r1 = r6
         r2 = 0
         call bpf_ringbuf_submit#132
         out:
         r0 = 0
         exit",
    );
}

#[test]
fn bounded_loop_over_map_value() {
    let v = accept(
        "loop",
        &env(),
        "*(u32 *)(r10 - 4) = 0
         r2 = r10
         r2 += -4
         r1 = map[idx:1]
         call bpf_map_lookup_elem#1
         if r0 == 0 goto out
         r1 = 0
         loop:
         r2 = r0
         r2 += r1
         r3 = *(u8 *)(r2 + 0)
         r3 += 1
         *(u8 *)(r2 + 0) = r3
         r1 += 1
         if r1 < 16 goto loop
         out:
         r0 = 0
         exit",
    );
    assert!(v.stats().processed > 16 * 7);
}

#[test]
fn variable_index_bounded_by_and() {
    accept(
        "and-bound",
        &env(),
        "r6 = *(u64 *)(r1 + 0)
         *(u32 *)(r10 - 4) = 0
         r2 = r10
         r2 += -4
         r1 = map[idx:1]
         call bpf_map_lookup_elem#1
         if r0 == 0 goto out
         r6 &= 15
         r0 += r6
         r1 = *(u8 *)(r0 + 0)
         out:
         r0 = 0
         exit",
    );
}

#[test]
fn bpf_to_bpf_call_with_stack_argument() {
    let v = accept(
        "call",
        &env(),
        "*(u64 *)(r10 - 8) = 5
         r1 = r10
         r1 += -8
         call local f
         exit
         f:
         r0 = *(u64 *)(r1 + 0)
         *(u64 *)(r10 - 16) = r0
         r0 = *(u64 *)(r10 - 16)
         exit",
    );
    assert_eq!(v.subprogs().len(), 2);
    assert_eq!(v.subprogs()[1].stack_depth, 16);
}

#[test]
fn probe_read_and_printk_from_stack() {
    accept(
        "printk",
        &env(),
        "r3 = *(u64 *)(r1 + 112)
         r1 = r10
         r1 += -16
         r2 = 16
         call bpf_probe_read_user#112
         r1 = 0x0a6425
         *(u64 *)(r10 - 24) = r1
         r1 = r10
         r1 += -24
         r2 = 4
         r3 = *(u64 *)(r10 - 16)
         call bpf_trace_printk#6
         r0 = 0
         exit",
    );
}

#[test]
fn syscall_tracepoint_reads_args() {
    let env = ProgramEnv::new(CtxDesc::SyscallEnter);
    accept(
        "sys",
        &env,
        "r2 = *(u64 *)(r1 + 8)
         r3 = *(u64 *)(r1 + 56)
         r0 = 0
         exit",
    );
}

#[test]
fn buffer_ctx_writes_in_writable_range() {
    let env = ProgramEnv::new(CtxDesc::Buffer {
        size: 32,
        writable: std::iter::once(8..16).collect(),
    });
    accept(
        "buffer",
        &env,
        "r2 = *(u64 *)(r1 + 0)
         *(u64 *)(r1 + 8) = r2
         *(u32 *)(r1 + 12) = 1
         r0 = 0
         exit",
    );
}

#[test]
fn spilled_pointer_restored() {
    accept(
        "spill",
        &env(),
        "*(u64 *)(r10 - 8) = r1
         r1 = 0
         r1 = *(u64 *)(r10 - 8)
         r0 = *(u64 *)(r1 + 0)
         r0 = 0
         exit",
    );
}

#[test]
fn states_are_pruned() {
    let v = accept(
        "prune",
        &env(),
        "r6 = *(u64 *)(r1 + 0)
         r7 = *(u64 *)(r1 + 8)
         if r6 > 5 goto a
         r8 = 1
         a:
         if r7 > 7 goto b
         r8 = 2
         b:
         r0 = r7
         exit",
    );
    assert!(v.stats().pruned > 0, "{:?}", v.stats());
}

#[test]
fn tail_call_and_perf_output() {
    accept(
        "tail",
        &env(),
        "r6 = r1
         *(u64 *)(r10 - 8) = 1
         r4 = r10
         r4 += -8
         r1 = r6
         r2 = map[idx:6]
         r3 = 0xffffffff ll
         r5 = 8
         call bpf_perf_event_output#25
         r1 = r6
         r2 = map[idx:3]
         r3 = 0
         call bpf_tail_call#12
         r0 = 0
         exit",
    );
}

#[test]
fn rodata_read() {
    accept(
        "rodata",
        &env(),
        "r1 = map[idx:4]+4
         r0 = *(u32 *)(r1 + 0)
         exit",
    );
}

#[test]
fn level2_log_has_the_kernel_grammar() {
    let prog = assemble("r0 = 0\nif r1 == 0 goto +1\nr0 = 1\nexit").unwrap();
    let env = env();
    let (res, log) = Verifier::new(&env).log_level(2).verify(&prog);
    assert!(res.is_ok(), "{log}");
    assert!(log.contains("0: (b7) r0 = 0"), "{log}");
    assert!(log.contains("processed "), "{log}");
    assert!(
        log.lines().last().unwrap().starts_with("processed"),
        "{log}"
    );
}

#[test]
fn line_info_printed_once_per_change() {
    let prog = assemble("r0 = 0\nr0 += 1\nexit").unwrap();
    let env = env().with_line_info(vec![(0, "int x = 0;".into()), (2, "return x;".into())]);
    let (_, log) = Verifier::new(&env).log_level(2).verify(&prog);
    assert_eq!(log.matches("; int x = 0;").count(), 1, "{log}");
    assert_eq!(log.matches("; return x;").count(), 1, "{log}");
}

#[test]
fn u32_counter_spilled_to_stack_keeps_its_bounds() {
    // clang spills a u32 loop counter as 4 bytes: filling it back must keep
    // the bounds, or the loop never ends for the verifier.
    accept(
        "u32 spill",
        &env(),
        "*(u64 *)(r10 - 16) = 0
         w1 = 0
         *(u32 *)(r10 - 4) = r1
         loop:
         r1 = *(u32 *)(r10 - 4)
         r1 += 1
         *(u32 *)(r10 - 4) = r1
         if r1 < 0x20 goto loop
         r2 = r10
         r2 += -16
         r1 = *(u32 *)(r10 - 4)
         r1 &= 7
         r2 += r1
         r0 = *(u8 *)(r2 + 0)
         r0 = 0
         exit",
    );
}

#[test]
fn loop_with_inner_branch_is_pruned_by_read_marks() {
    // clang's shape for `for (i = 0; i < 1000; i++) { update; p = lookup; if (p) v += *p; }`:
    // both branch outcomes rejoin at the loop head with different dead stack
    // contents; without read marks every iteration would double the paths.
    let v = accept(
        "hash loop",
        &env(),
        "r7 = 0
         goto body
         del:
         r2 = r10
         r2 += -4
         r1 = map[idx:0]
         call bpf_map_delete_elem#3
         r7 += 1
         if r7 != 0x3e8 goto body
         r0 = 0
         exit
         body:
         *(u32 *)(r10 - 4) = r7
         *(u64 *)(r10 - 16) = r7
         r6 = r10
         r6 += -4
         r3 = r10
         r3 += -16
         r1 = map[idx:0]
         r2 = r6
         r4 = 0
         call bpf_map_update_elem#2
         r1 = map[idx:0]
         r2 = r6
         call bpf_map_lookup_elem#1
         if r0 == 0x0 goto del
         r1 = *(u64 *)(r0 + 0)
         r2 = *(u64 *)(r10 - 16)
         r2 += r1
         *(u64 *)(r10 - 16) = r2
         goto del",
    );
    let s = v.stats();
    assert!(s.pruned >= 999, "{s:?}");
    assert!(s.processed < 100_000, "{s:?}");
}

#[test]
fn bounds_check_on_a_copy_narrows_the_original() {
    // clang may test a copy and index with the original.
    accept(
        "copy",
        &env(),
        "r6 = *(u64 *)(r1 + 0)
         *(u32 *)(r10 - 4) = 0
         r2 = r10
         r2 += -4
         r1 = map[idx:1]
         call bpf_map_lookup_elem#1
         if r0 == 0x0 goto out
         r1 = r6
         if r1 > 0xf goto out
         r0 += r6
         r0 = *(u8 *)(r0 + 0)
         out:
         r0 = 0
         exit",
    );
}

#[test]
fn array_lookup_with_constant_in_range_key_needs_no_null_check() {
    // As the kernel: every index of a plain array exists, so a lookup with a
    // known key below max_entries cannot fail. Map 1 has 4 entries of 16 bytes.
    for (key, store) in [
        (0, "*(u32 *)(r10 - 4) = 0"),
        (3, "*(u32 *)(r10 - 4) = 3"),
        (2, "r6 = 2\n*(u64 *)(r10 - 8) = r6"),
    ] {
        let off = if store.contains("r10 - 8") { -8 } else { -4 };
        let src = format!(
            "{store}
             r2 = r10
             r2 += {off}
             r1 = map[idx:1]
             call bpf_map_lookup_elem#1
             r1 = *(u64 *)(r0 + 8)
             *(u64 *)(r0 + 0) = r1
             r0 = 0
             exit"
        );
        let v = accept(&format!("key {key}"), &env(), &src);
        assert_eq!(v.inlinable_lookups().len(), 1, "key {key}");
    }
    // A per-CPU array behaves the same.
    let percpu =
        ProgramEnv::new(CtxDesc::PtRegs).with_map(pkbpf_verifier::MapDesc::new(6, 4, 8, 2));
    accept(
        "percpu key 1",
        &percpu,
        "*(u32 *)(r10 - 4) = 1
         r2 = r10
         r2 += -4
         r1 = map[idx:0]
         call bpf_map_lookup_elem#1
         r0 = *(u64 *)(r0 + 0)
         exit",
    );
    // The compiled shape (a null check kept from the source) still verifies:
    // the null branch is simply dead.
    accept(
        "checked anyway",
        &env(),
        "*(u32 *)(r10 - 4) = 0
         r2 = r10
         r2 += -4
         r1 = map[idx:1]
         call bpf_map_lookup_elem#1
         if r0 == 0 goto out
         r0 = *(u64 *)(r0 + 0)
         out:
         exit",
    );
}
