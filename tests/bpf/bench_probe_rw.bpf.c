// SPDX-License-Identifier: MIT OR Apache-2.0
// Purpose: the bpftime probe_read / probe_write benchmarks. Each probe runs a
// loop of 1000 operations: bpf_probe_read_user of 8 bytes from the pointer in
// the first argument, or bpf_probe_write_user of 8 bytes to it.
// Used by: object tests, verifier (bounded loops), JIT, hooks.
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define OPS 1000

SEC("uprobe/benchmark/test:__bench_read")
int BPF_KPROBE(bench_probe_read, const void *ptr)
{
	__u64 sum = 0;
	for (int i = 0; i < OPS; i++) {
		__u64 v = 0;
		bpf_probe_read_user(&v, sizeof(v), ptr);
		sum += v;
	}
	return sum & 1;
}

SEC("uprobe/benchmark/test:__bench_write")
int BPF_KPROBE(bench_probe_write, void *ptr)
{
	for (int i = 0; i < OPS; i++) {
		__u64 v = i;
		bpf_probe_write_user(ptr, &v, sizeof(v));
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
