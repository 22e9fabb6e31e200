// SPDX-License-Identifier: MIT OR Apache-2.0
// Engine benchmark: memcpy of 1 MiB, one 4 KiB chunk per call (the harness
// calls it for chunks 0..255), 8 bytes at a time; returns the chunk's last
// word's low bits so the copy is observable.
#include "engine.h"

struct ctx {
	u64 chunk;
	u8 src[CHUNK * CHUNKS];
	u8 dst[CHUNK * CHUNKS];
};

ENTRY(memcpy_1m)(struct ctx *c)
{
	u64 base = (c->chunk & (CHUNKS - 1)) * CHUNK;
	u64 *s = (u64 *)&c->src[base];
	u64 *d = (u64 *)&c->dst[base];
	for (u32 i = 0; i < CHUNK / 8; i++)
		d[i] = s[i];
	return (int)(d[CHUNK / 8 - 1] & 0x7fffffff);
}

LICENSE
