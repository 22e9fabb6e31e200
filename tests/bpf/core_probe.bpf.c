// SPDX-License-Identifier: MIT OR Apache-2.0
// Purpose: CO-RE. Built against tests/bpf/include/vmlinux.h (whose pt_regs
// layout is deliberately wrong) with -D__TARGET_ARCH_x86: every context read
// is a CO-RE field relocation that the loader must rewrite to the x86-64
// offsets (di 112, si 104, ax 80, ip 128, sp 152) and to the syscall
// tracepoint layout (id 8, args 16, ret 16). Also uses a ___flavor struct and
// bpf_core_field_exists / bpf_core_type_size, and (core_read_macros)
// BPF_CORE_READ, bpf_core_field_offset/size, bpf_core_type_exists.
// Used by: object tests (CO-RE), verifier/JIT (context access), hooks.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u64);
	__type(value, __u64);
} seen SEC(".maps");

/* A flavor of pt_regs with only one field: matches pt_regs by name. */
struct pt_regs___mini {
	long unsigned int bx;
} __attribute__((preserve_access_index));

SEC("uprobe")
int BPF_KPROBE(core_uprobe, long a, long b)
{
	__u64 key = a + b;
	__u64 ip = PT_REGS_IP(ctx);
	__u64 sp = PT_REGS_SP(ctx);
	__u64 v = ip ^ sp;
	if (bpf_core_field_exists(((struct pt_regs___mini *)ctx)->bx))
		v += ((struct pt_regs___mini *)ctx)->bx;
	v += bpf_core_type_size(struct pt_regs);
	bpf_map_update_elem(&seen, &key, &v, BPF_ANY);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(core_uretprobe, long ret)
{
	return ret > 0;
}

SEC("tracepoint/syscalls/sys_enter_write")
int core_sys_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u64 key = ctx->id;
	__u64 v = ctx->args[2];
	bpf_map_update_elem(&seen, &key, &v, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_write")
int core_sys_exit(struct trace_event_raw_sys_exit *ctx)
{
	return ctx->ret < 0;
}

/* CO-RE helper macros: BPF_CORE_READ (address arithmetic relocated on an
 * ALU instruction), field size/offset and type existence as immediates. */
SEC("tracepoint/syscalls/sys_enter_openat")
int core_read_macros(struct trace_event_raw_sys_enter *ctx)
{
	__u64 key = bpf_core_field_offset(ctx->args[1]);
	__u64 v = BPF_CORE_READ(ctx, args[1]);
	v += bpf_core_field_size(ctx->id) << 8;
	v += bpf_core_type_exists(struct trace_event_raw_sys_exit) << 16;
	bpf_map_update_elem(&seen, &key, &v, BPF_ANY);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
