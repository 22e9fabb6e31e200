// SPDX-License-Identifier: MIT OR Apache-2.0
// Tenant extension: routes each key to shard (first byte & 3), so keys
// "a..", "b..", "c..", "d.." land on shards 1, 2, 3, 0.
#include "kv.h"

SEC("extension")
int filter(struct kv_req *r)
{
	count_request();
	r->shard = r->prefix[0] & 3;
	return KV_ALLOW;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
