// SPDX-License-Identifier: MIT OR Apache-2.0
// Purpose: syscall counter. A raw_tracepoint/sys_enter program counts every
// syscall by id (hash map id -> count); a tracepoint on sys_enter_openat
// counts openat calls in an array map. Contexts are declared here with the
// UAPI-style layout (no CO-RE).
// Used by: object tests (tracepoint kinds), hooks syscall interception.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct sys_enter_ctx {
	__u64 ent;        /* struct trace_entry */
	long id;
	unsigned long args[6];
};

struct raw_sys_enter_args {
	unsigned long long args[2]; /* regs, id */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 512);
	__uint(pinning, LIBBPF_PIN_BY_NAME); /* accepted and reported only */
	__type(key, __u32);
	__type(value, __u64);
} syscall_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} openat_count SEC(".maps");

SEC("raw_tracepoint/sys_enter")
int count_syscalls(struct raw_sys_enter_args *ctx)
{
	__u32 id = ctx->args[1];
	__u64 one = 1, *v = bpf_map_lookup_elem(&syscall_counts, &id);
	if (v)
		__sync_fetch_and_add(v, 1);
	else
		bpf_map_update_elem(&syscall_counts, &id, &one, BPF_NOEXIST);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_openat")
int count_openat(struct sys_enter_ctx *ctx)
{
	__u32 zero = 0;
	__u64 *v = bpf_map_lookup_elem(&openat_count, &zero);
	if (v)
		__sync_fetch_and_add(v, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
