// SPDX-License-Identifier: MIT OR Apache-2.0
// Tenant extension: refuses writes (PUT, DEL) to keys starting "admin".
#include "kv.h"

SEC("extension")
int filter(struct kv_req *r)
{
	count_request();
	if (r->op != 0 && r->prefix[0] == 'a' && r->prefix[1] == 'd' &&
	    r->prefix[2] == 'm' && r->prefix[3] == 'i' && r->prefix[4] == 'n')
		return KV_DENY;
	return KV_ALLOW;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
