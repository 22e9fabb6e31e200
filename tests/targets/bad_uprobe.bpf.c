// SPDX-License-Identifier: MIT OR Apache-2.0
// Purpose: a uprobe the verifier rejects (reads past the end of pt_regs), so
// `pkbpf run` must fail before starting its target.
// Used by: tests/run_agent.rs.
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>

SEC("uprobe/libc.so.6:malloc")
int past_ctx(struct pt_regs *ctx)
{
	return *(volatile long *)((char *)ctx + 4096);
}

char LICENSE[] SEC("license") = "GPL";
