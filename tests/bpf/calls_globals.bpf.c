// SPDX-License-Identifier: MIT OR Apache-2.0
// Purpose: bpf-to-bpf calls and global data. Two programs share `.text`
// subprograms (static __noinline, one calling another), and use a .data
// counter, a .rodata constant and a .bss scratch variable, plus a
// bpf_printk format string (also .rodata).
// Used by: object tests (static linking, MapIdxValue relocations), verifier
// (subprogram frames), JIT (local calls).
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

volatile __u64 hits = 7;              /* .data */
const volatile __u64 multiplier = 3;  /* .rodata */
volatile __u64 last_value;            /* .bss */
volatile __u32 scratch[4];            /* .bss */

static __noinline __u64 scale(__u64 x)
{
	return x * multiplier;
}

static __noinline __u64 add_scaled(__u64 a, __u64 b)
{
	return scale(a) + b;
}

SEC("uprobe/benchmark/test:__bench_calls")
int BPF_KPROBE(calls_main, long a, long b)
{
	__u64 r = add_scaled(a, b);
	hits++;
	last_value = r;
	scratch[1] = (__u32)r;
	bpf_printk("r=%llu", r);
	return r & 0xff;
}

SEC("uprobe/benchmark/test:__bench_calls2")
int BPF_KPROBE(calls_second, long a)
{
	return scale(a) & 0xff;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
