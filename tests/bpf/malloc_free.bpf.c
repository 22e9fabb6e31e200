// SPDX-License-Identifier: MIT OR Apache-2.0
// Purpose: the bpftime malloc example: count calls of libc malloc and free per
// process (hash map keyed by pid, value = struct counts).
// Used by: object tests (bare target path + symbol), hooks end-to-end tests.
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct counts {
	__u64 mallocs;
	__u64 frees;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct counts);
} malloc_counts SEC(".maps");

static __always_inline struct counts *get_counts(void)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	struct counts *c = bpf_map_lookup_elem(&malloc_counts, &pid);
	if (!c) {
		struct counts zero = {};
		bpf_map_update_elem(&malloc_counts, &pid, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&malloc_counts, &pid);
	}
	return c;
}

SEC("uprobe/libc.so.6:malloc")
int BPF_KPROBE(count_malloc, unsigned long size)
{
	struct counts *c = get_counts();
	if (c)
		__sync_fetch_and_add(&c->mallocs, 1);
	return 0;
}

SEC("uprobe/libc.so.6:free")
int BPF_KPROBE(count_free, void *ptr)
{
	struct counts *c = get_counts();
	if (c)
		__sync_fetch_and_add(&c->frees, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
