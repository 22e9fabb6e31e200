/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The request context and the counter map every kvhost extension shares. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* Mirrors pkbpf_kvhost::Request (32 bytes; only `shard` is writable). */
struct kv_req {
	__u32 op; /* 0 GET, 1 PUT, 2 DEL */
	__u32 key_len;
	__u64 key_hash; /* FNV-1a of the key */
	__u32 shard;    /* writable: where the request goes (0..3) */
	__u32 tenant;
	char prefix[8]; /* the key's first bytes, zero-padded */
};

enum { KV_ALLOW = 0, KV_DENY = 1, KV_LIMITED = 2 };

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

/* Counts this request in the tenant's own map; returns the new count. */
static __always_inline __u64 count_request(void)
{
	__u32 k = 0;
	__u64 *v = bpf_map_lookup_elem(&counts, &k);
	if (!v)
		return 0;
	return __sync_fetch_and_add(v, 1) + 1;
}
