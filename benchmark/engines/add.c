// SPDX-License-Identifier: MIT OR Apache-2.0
// Engine benchmark: a + b, both loaded from the input.
#include "engine.h"

struct ctx {
	u64 a;
	u64 b;
};

ENTRY(add)(struct ctx *c)
{
	return (int)(c->a + c->b);
}

LICENSE
