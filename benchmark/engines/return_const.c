// SPDX-License-Identifier: MIT OR Apache-2.0
// Engine benchmark: the cost of a call that does nothing.
#include "engine.h"

struct ctx {
	u64 unused;
};

ENTRY(return_const)(struct ctx *c)
{
	return 42;
}

LICENSE
