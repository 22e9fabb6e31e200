// SPDX-License-Identifier: MIT OR Apache-2.0
// Purpose: ring buffer output from a uprobe: each greet(x) call of the greet
// target (tests/targets/greet.c, built as ./greet in the test's working
// directory) submits {x, pid}.
// Used by: tests/run_agent.rs.
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct greet_event {
	__s32 x;
	__u32 pid;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} greet_events SEC(".maps");

SEC("uprobe/greet:greet")
int BPF_KPROBE(greet_event, int x)
{
	struct greet_event e = {
		.x = x,
		.pid = bpf_get_current_pid_tgid() >> 32,
	};
	bpf_ringbuf_output(&greet_events, &e, sizeof(e), 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
