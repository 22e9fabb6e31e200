// SPDX-License-Identifier: MIT OR Apache-2.0
// The bpftime syscall-tracepoint benchmark: an almost empty program on
// `sys_exit_write` that reads the return value from its context.
// Used by: the benchmark harness (kernel baseline via benchmark/kernel/kload.c).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct sys_exit_ctx {
	__u64 ent; /* struct trace_entry */
	long id;
	long ret;
};

SEC("tracepoint/syscalls/sys_exit_write")
int bench_sys_exit_write(struct sys_exit_ctx *ctx)
{
	return ctx->ret == 42;
}

char LICENSE[] SEC("license") = "GPL";
