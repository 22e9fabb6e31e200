// SPDX-License-Identifier: MIT OR Apache-2.0
// Purpose: perf event array output from a uretprobe: each greet() return in
// the greet target (tests/targets/greet.c, built as ./greet in the test's
// working directory) sends its return value.
// Used by: tests/run_agent.rs.
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} greet_perf SEC(".maps");

SEC("uretprobe/greet:greet")
int BPF_KRETPROBE(greet_ret, int ret)
{
	__s64 v = ret;
	bpf_perf_event_output(ctx, &greet_perf, BPF_F_CURRENT_CPU, &v, sizeof(v));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
