// SPDX-License-Identifier: MIT OR Apache-2.0
// Purpose: bpf_printk from a uprobe and a uretprobe on greet() of the
// greet target (tests/targets/greet.c, built as ./greet in the test's
// working directory).
// Used by: tests/run_agent.rs.
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

SEC("uprobe/greet:greet")
int BPF_KPROBE(greet_entry, int x)
{
	bpf_printk("greet entry %d", x);
	return 0;
}

SEC("uretprobe/greet:greet")
int BPF_KRETPROBE(greet_exit, int ret)
{
	bpf_printk("greet returned %d", ret);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
