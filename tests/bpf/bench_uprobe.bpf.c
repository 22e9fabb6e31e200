// SPDX-License-Identifier: MIT OR Apache-2.0
// Purpose: the bpftime "uprobe/uretprobe" micro-benchmarks. Three empty-ish
// probes on the benchmark victim's functions: a uprobe, a uretprobe, and a
// uprobe+uretprobe pair on the same function. Each returns 0 after reading
// its first argument / return value so the context is touched.
// Used by: object tests (kinds, attach targets), verifier, JIT, hooks.
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

SEC("uprobe/benchmark/test:__bench_uprobe")
int BPF_KPROBE(bench_uprobe, long a)
{
	return a == 42;
}

SEC("uretprobe/benchmark/test:__bench_uretprobe")
int BPF_KRETPROBE(bench_uretprobe, long ret)
{
	return ret == 42;
}

SEC("uprobe/benchmark/test:__bench_uprobe_uretprobe")
int BPF_KPROBE(bench_uprobe_both_entry, long a)
{
	return 0;
}

SEC("uretprobe/benchmark/test:__bench_uprobe_uretprobe")
int BPF_KRETPROBE(bench_uprobe_both_exit, long ret)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
