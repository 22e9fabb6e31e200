// SPDX-License-Identifier: MIT OR Apache-2.0
// Purpose: programs for the embedding API (no hook): SEC("extension") (two
// programs in one section) and an unknown section name, plus a legacy `maps`
// section (struct bpf_map_def, as pre-BTF objects declared them) and a
// `version` section.
// Used by: object tests (Embedded kind, legacy maps), JIT and runtime tests.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct legacy_map_def {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
};

struct legacy_map_def SEC("maps") legacy_counts = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = 4,
	.value_size = 8,
	.max_entries = 16,
};

struct legacy_map_def SEC("maps") legacy_hash = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = 8,
	.value_size = 16,
	.max_entries = 64,
	.map_flags = 1,
};

struct input {
	__u64 a;
	__u64 b;
};

SEC("extension")
int add_inputs(struct input *in)
{
	__u32 k = 0;
	__u64 *v = bpf_map_lookup_elem(&legacy_counts, &k);
	if (v)
		*v += 1;
	return in->a + in->b;
}

/* A second program in the same section. */
SEC("extension")
int mul_inputs(struct input *in)
{
	return in->a * in->b;
}

SEC("my_custom_hook")
int custom(void *ctx)
{
	__u64 k = 1;
	bpf_map_lookup_elem(&legacy_hash, &k);
	return 7;
}

char LICENSE[] SEC("license") = "GPL";
__u32 _version SEC("version") = 0x050a00;
