// SPDX-License-Identifier: MIT OR Apache-2.0
// Purpose: per-CPU array lookups from a real program: each call bumps the
// calling CPU's counter of the key in its first argument (the JIT inlines
// this lookup, reading the CPU from glibc's rseq area); an out-of-range key
// returns -1.
// Used by: tests/runtime_percpu.rs.
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

SEC("uprobe")
int count(struct pt_regs *ctx)
{
	__u32 key = PT_REGS_PARM1(ctx);
	__u64 *v = bpf_map_lookup_elem(&counts, &key);

	if (!v)
		return -1;
	*v += 1;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
