// SPDX-License-Identifier: MIT OR Apache-2.0
// Purpose: the bpftime map benchmarks: for each of array, hash, percpu_array
// and percpu_hash (1024 entries, u32 key, u64 value) a uprobe that runs 1000
// update/lookup/delete operations (delete only for the hash kinds).
// Used by: object tests (BTF map definitions), verifier, JIT, maps, hooks.
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define OPS 1000
#define ENTRIES 1024

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ENTRIES);
	__type(key, __u32);
	__type(value, __u64);
} bench_array SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ENTRIES);
	__type(key, __u32);
	__type(value, __u64);
} bench_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ENTRIES);
	__type(key, __u32);
	__type(value, __u64);
} bench_percpu_array SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, __u64);
} bench_percpu_hash SEC(".maps");

static __always_inline int run_ops(void *map, int del)
{
	for (__u32 i = 0; i < OPS; i++) {
		__u32 key = i % ENTRIES;
		__u64 value = i;
		bpf_map_update_elem(map, &key, &value, BPF_ANY);
		__u64 *p = bpf_map_lookup_elem(map, &key);
		if (p)
			value += *p;
		if (del)
			bpf_map_delete_elem(map, &key);
	}
	return 0;
}

SEC("uprobe/benchmark/test:__bench_array_map")
int bench_array_map(struct pt_regs *ctx) { return run_ops(&bench_array, 0); }

SEC("uprobe/benchmark/test:__bench_hash_map")
int bench_hash_map(struct pt_regs *ctx) { return run_ops(&bench_hash, 1); }

SEC("uprobe/benchmark/test:__bench_percpu_array_map")
int bench_percpu_array_map(struct pt_regs *ctx) { return run_ops(&bench_percpu_array, 0); }

SEC("uprobe/benchmark/test:__bench_percpu_hash_map")
int bench_percpu_hash_map(struct pt_regs *ctx) { return run_ops(&bench_percpu_hash, 1); }

char LICENSE[] SEC("license") = "GPL";
