// SPDX-License-Identifier: MIT OR Apache-2.0
// Purpose: a funclatency-style latency histogram of work() in the sleeper
// target (tests/targets/sleeper.c, built as ./sleeper in the test's
// working directory). The entry probe stores bpf_ktime_get_ns() under the
// thread id; the return probe takes it out again (deleting the entry),
// and adds one to the log2(nanoseconds) slot of an array histogram.
// Used by: tests/real_targets.rs (pkbpf run, and the kernel through libbpf).
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define SLOTS 64

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} starts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} hist SEC(".maps");

/* floor(log2(v)) for v > 0, 0 for v == 0: a binary search over the bits. */
static __always_inline __u32 log2_floor(__u64 v)
{
	__u32 r = 0;
	if (v >> 32) {
		v >>= 32;
		r += 32;
	}
	if (v >> 16) {
		v >>= 16;
		r += 16;
	}
	if (v >> 8) {
		v >>= 8;
		r += 8;
	}
	if (v >> 4) {
		v >>= 4;
		r += 4;
	}
	if (v >> 2) {
		v >>= 2;
		r += 2;
	}
	if (v >> 1)
		r += 1;
	return r;
}

SEC("uprobe/sleeper:work")
int BPF_KPROBE(work_entry)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 now = bpf_ktime_get_ns();
	bpf_map_update_elem(&starts, &tid, &now, BPF_ANY);
	return 0;
}

SEC("uretprobe/sleeper:work")
int BPF_KRETPROBE(work_return)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 *start = bpf_map_lookup_elem(&starts, &tid);
	if (!start)
		return 0;
	__u64 delta = bpf_ktime_get_ns() - *start;
	bpf_map_delete_elem(&starts, &tid);
	__u32 slot = log2_floor(delta);
	if (slot >= SLOTS)
		slot = SLOTS - 1;
	__u64 *count = bpf_map_lookup_elem(&hist, &slot);
	if (count)
		__sync_fetch_and_add(count, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
