// SPDX-License-Identifier: MIT OR Apache-2.0
// Engine benchmark: a large switch (64 cases) over 1024 input words, 16 per
// call (the harness calls chunks 0..63 and sums the results).
#include "engine.h"

#define N 1024
#define PER_CALL 16

struct ctx {
	u64 chunk;
	u32 v[N];
};

#define C4(k)                                   \
	case k:                                 \
		acc += (x ^ (k * 2654435761u)); \
		break;                          \
	case k + 1:                             \
		acc -= (x + k * 7u);            \
		break;                          \
	case k + 2:                             \
		acc ^= (x << (k % 13));         \
		break;                          \
	case k + 3:                             \
		acc += (x >> (k % 7)) * 3u;     \
		break;

ENTRY(switch_large)(struct ctx *c)
{
	u32 base = (c->chunk & (N / PER_CALL - 1)) * PER_CALL;
	u32 acc = 0;
	for (u32 i = 0; i < PER_CALL; i++) {
		u32 x = c->v[base + i];
		switch (x & 63) {
			C4(0) C4(4) C4(8) C4(12) C4(16) C4(20) C4(24) C4(28)
			C4(32) C4(36) C4(40) C4(44) C4(48) C4(52) C4(56) C4(60)
		}
	}
	return (int)acc;
}

LICENSE
