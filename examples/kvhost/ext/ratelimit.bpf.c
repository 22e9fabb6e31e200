// SPDX-License-Identifier: MIT OR Apache-2.0
// Tenant extension: allows the first 5 requests, then answers LIMITED.
#include "kv.h"

#define LIMIT 5

SEC("extension")
int filter(struct kv_req *r)
{
	if (count_request() > LIMIT)
		return KV_LIMITED;
	return KV_ALLOW;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
