// SPDX-License-Identifier: MIT OR Apache-2.0
// Engine benchmark: integer log2 (binary search on the bits) of 8192 u32s,
// summed.
#include "engine.h"

#define N 8192

struct ctx {
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
	u32 sum = 0;
	for (u32 i = 0; i < N; i++)
		sum += ilog2(c->v[i]);
	return sum;
}

LICENSE
