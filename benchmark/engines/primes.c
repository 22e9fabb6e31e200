// SPDX-License-Identifier: MIT OR Apache-2.0
// Engine benchmark: count the primes below 10^4 by trial division, 10
// candidates per call (the harness calls chunks 0..999 and sums the counts).
// The divisor loop is bounded by a constant (100 * 100 > 10^4) so that
// verifiers can see it terminate.
#include "engine.h"

#define LIMIT 10000

#define PER_CALL 10

struct ctx {
	u64 chunk;
};

ENTRY(primes)(struct ctx *c)
{
	if (c->chunk >= LIMIT / PER_CALL)
		return 0;
	u32 base = (u32)c->chunk * PER_CALL;
	int count = 0;
	for (u32 i = 0; i < PER_CALL; i++) {
		u32 n = base + i;
		if (n < 2)
			continue;
		int prime = 1;
		for (u32 d = 2; d < 100; d++) {
			if (d * d > n)
				break;
			if (n % d == 0) {
				prime = 0;
				break;
			}
		}
		count += prime;
	}
	return count;
}

LICENSE
