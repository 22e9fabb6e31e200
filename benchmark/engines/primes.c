// SPDX-License-Identifier: MIT OR Apache-2.0
// Engine benchmark: count the primes below 10^4 by trial division (the input
// is not used). The divisor loop is bounded by a constant (100 * 100 > 10^4)
// so that verifiers can see it terminate.
#include "engine.h"

#define LIMIT 10000

struct ctx {
	u64 unused;
};

ENTRY(primes)(struct ctx *c)
{
	int count = 0;
	for (u32 n = 2; n < LIMIT; n++) {
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
