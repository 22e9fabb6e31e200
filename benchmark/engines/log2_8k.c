// SPDX-License-Identifier: MIT OR Apache-2.0
// Engine benchmark: integer log2 (binary search on the bits) of 8192 u32s,
// summed; 64 values per call (the harness calls chunks 0..127 and sums), so a
// verifier that walks every iteration stays within its budget.
#include "engine.h"

#define N 8192
#define PER_CALL 64

struct ctx {
	u64 chunk;
	u32 v[N];
};

static inline __attribute__((always_inline)) u32 ilog2(u32 v)
{
	u32 r = 0;
	if (v >> 16) {
		v >>= 16;
		r += 16;
	}
	if (v >> 8) {
		v >>= 8;
		r += 8;
	}
	if (v >> 4) {
		v >>= 4;
		r += 4;
	}
	if (v >> 2) {
		v >>= 2;
		r += 2;
	}
	if (v >> 1)
		r += 1;
	return r;
}

ENTRY(log2_8k)(struct ctx *c)
{
	u32 base = (c->chunk & (N / PER_CALL - 1)) * PER_CALL;
	u32 sum = 0;
	for (u32 i = 0; i < PER_CALL; i++)
		sum += ilog2(c->v[base + i]);
	return sum;
}

LICENSE
