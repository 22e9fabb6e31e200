// SPDX-License-Identifier: MIT OR Apache-2.0
// Engine benchmark: strcmp of two 1 MiB strings, one 4 KiB chunk per call (the
// harness calls chunks 0, 1, ... until one returns non-zero or all 256 are
// equal). Returns a[i] - b[i] at the first difference or NUL in the chunk,
// 0 when the whole chunk is equal and NUL-free.
#include "engine.h"

struct ctx {
	u64 chunk;
	u8 a[CHUNK * CHUNKS];
	u8 b[CHUNK * CHUNKS];
};

ENTRY(strcmp_1m)(struct ctx *c)
{
	u64 base = (c->chunk & (CHUNKS - 1)) * CHUNK;
	u8 *a = &c->a[base];
	u8 *b = &c->b[base];
	for (u32 i = 0; i < CHUNK; i++) {
		int d = (int)a[i] - (int)b[i];
		if (d != 0)
			return d;
		if (a[i] == 0)
			return 256; /* both ended: equal strings */
	}
	return 0;
}

LICENSE
