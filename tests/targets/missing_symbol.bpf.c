// SPDX-License-Identifier: MIT OR Apache-2.0
// Purpose: a valid uprobe whose target symbol does not exist, so the agent's
// attach fails inside the target and `pkbpf run` must exit non-zero.
// Used by: tests/run_agent.rs.
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>

SEC("uprobe/libc.so.6:pkbpf_no_such_function")
int nothing_here(struct pt_regs *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
