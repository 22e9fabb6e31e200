// SPDX-License-Identifier: MIT OR Apache-2.0
// Purpose: count calls of tick() in the ticker target
// (tests/targets/ticker.c, run as ./ticker or by absolute path): per pid
// (hash of struct tick_stats, BTF-decoded by `pkbpf map dump`), in total
// (array) and per CPU (per-CPU array).
// Used by: tests/cli_session.rs.
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct tick_stats {
	__u64 calls;
	__s64 last_arg;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct tick_stats);
} tick_by_pid SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} tick_total SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} tick_percpu SEC(".maps");

SEC("uprobe/ticker:tick")
int BPF_KPROBE(count_tick, long x)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32, zero = 0;
	struct tick_stats *s = bpf_map_lookup_elem(&tick_by_pid, &pid);
	if (!s) {
		struct tick_stats init = {};
		bpf_map_update_elem(&tick_by_pid, &pid, &init, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&tick_by_pid, &pid);
	}
	if (s) {
		__sync_fetch_and_add(&s->calls, 1);
		s->last_arg = x;
	}
	__u64 *t = bpf_map_lookup_elem(&tick_total, &zero);
	if (t)
		__sync_fetch_and_add(t, 1);
	__u64 *c = bpf_map_lookup_elem(&tick_percpu, &zero);
	if (c)
		*c += 1;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
