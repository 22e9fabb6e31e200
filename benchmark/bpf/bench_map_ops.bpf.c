// SPDX-License-Identifier: MIT OR Apache-2.0
// The bpftime map benchmarks, one uprobe per target function: each runs 1000
// operations of one kind (update, lookup or delete) on a 1024-entry map of one
// type (hash, array, per-CPU hash, per-CPU array; u32 key, u64 value).
// Deletes on array maps fail (the kernel returns -EINVAL), exactly as in
// bpftime's benchmark; the helper call is still made 1000 times.
// Used by: the benchmark harness (kernel baseline via benchmark/kernel/kload.c).
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define OPS 1000
#define ENTRIES 1024

#define MAP(name, kind, flags)                   \
	struct {                                 \
		__uint(type, kind);              \
		__uint(max_entries, ENTRIES);    \
		__uint(map_flags, flags);        \
		__type(key, __u32);              \
		__type(value, __u64);            \
	} name SEC(".maps")

MAP(hash_map, BPF_MAP_TYPE_HASH, 0);
MAP(array_map, BPF_MAP_TYPE_ARRAY, 0);
MAP(per_cpu_hash_map, BPF_MAP_TYPE_PERCPU_HASH, 0);
MAP(per_cpu_array_map, BPF_MAP_TYPE_PERCPU_ARRAY, 0);

static __always_inline int do_update(void *map)
{
	for (__u32 i = 0; i < OPS; i++) {
		__u32 key = i % ENTRIES;
		__u64 value = i;
		bpf_map_update_elem(map, &key, &value, BPF_ANY);
	}
	return 0;
}

static __always_inline int do_lookup(void *map)
{
	__u64 sum = 0;
	for (__u32 i = 0; i < OPS; i++) {
		__u32 key = i % ENTRIES;
		__u64 *v = bpf_map_lookup_elem(map, &key);
		if (v)
			sum += *v;
	}
	return sum & 1;
}

static __always_inline int do_delete(void *map)
{
	for (__u32 i = 0; i < OPS; i++) {
		__u32 key = i % ENTRIES;
		bpf_map_delete_elem(map, &key);
	}
	return 0;
}

#define OPS_FOR(map)                                                        \
	SEC("uprobe/benchmark/test:__bench_" #map "_update")                 \
	int bench_##map##_update(struct pt_regs *ctx) { return do_update(&map); } \
	SEC("uprobe/benchmark/test:__bench_" #map "_lookup")                 \
	int bench_##map##_lookup(struct pt_regs *ctx) { return do_lookup(&map); } \
	SEC("uprobe/benchmark/test:__bench_" #map "_delete")                 \
	int bench_##map##_delete(struct pt_regs *ctx) { return do_delete(&map); }

OPS_FOR(hash_map)
OPS_FOR(array_map)
OPS_FOR(per_cpu_hash_map)
OPS_FOR(per_cpu_array_map)

char LICENSE[] SEC("license") = "GPL";
