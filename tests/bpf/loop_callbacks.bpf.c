// SPDX-License-Identifier: MIT OR Apache-2.0
// Purpose: bpf_loop with callbacks (lddw function pointers to static
// subprograms): a context on the caller's stack, a map value as context, a
// null context, early stop, a callback calling bpf_loop itself, a bounded
// array index inside the callback, and the helper's error returns.
// Used by: verifier tests (object corpus), interpreter/JIT agreement.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct io {
	__u64 n;     /* in: iteration count (any value, even too large) */
	__u64 arg;   /* in: a second input */
	__u64 out;   /* out: a result the program writes back */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} calls SEC(".maps");

struct sum_ctx {
	__u64 sum;
	__u64 squares;
};

static int add_index(__u32 index, void *data)
{
	struct sum_ctx *c = data;
	c->sum += index;
	c->squares += (__u64)index * index;
	return 0;
}

/* sum of 0..n-1 and of their squares; r0 = iterations bpf_loop reports. */
SEC("extension")
int sum_loop(struct io *io)
{
	struct sum_ctx c = { 0, 0 };
	long r = bpf_loop(io->n, add_index, &c, 0);
	io->out = c.sum * 1000003 + c.squares;
	return r;
}

struct find_ctx {
	__u64 target;
	__u64 found;
};

static int find_square(__u32 index, void *data)
{
	struct find_ctx *c = data;
	if ((__u64)index * index >= c->target) {
		c->found = index;
		return 1;
	}
	return 0;
}

/* first i with i*i >= arg, stopping the loop early. */
SEC("extension")
int first_square(struct io *io)
{
	struct find_ctx c = { .target = io->arg, .found = ~0ULL };
	long r = bpf_loop(io->n, find_square, &c, 0);
	io->out = c.found;
	return r;
}

static int count_call(__u32 index, void *data)
{
	__u64 *v = data;
	*v += 1;
	return 0;
}

/* the context is a map value; the count lands in the map. */
SEC("extension")
int map_ctx(struct io *io)
{
	__u32 k = 0;
	__u64 *v = bpf_map_lookup_elem(&calls, &k);
	if (!v)
		return -1;
	long r = bpf_loop(io->n, count_call, v, 0);
	io->out = *v;
	return r;
}

static int nothing(__u32 index, void *data)
{
	return index >= 5;
}

/* a null context; stops at index 5. */
SEC("extension")
int null_ctx(struct io *io)
{
	return bpf_loop(io->n, nothing, NULL, 0);
}

struct buf_ctx {
	__u64 slots[8];
	__u64 seed;
};

static int fill_slot(__u32 index, void *data)
{
	struct buf_ctx *c = data;
	c->seed = c->seed * 6364136223846793005ULL + 1442695040888963407ULL;
	c->slots[index & 7] ^= c->seed;
	return 0;
}

/* a bounded, index-dependent write into the caller's stack buffer. */
SEC("extension")
int fill_buffer(struct io *io)
{
	struct buf_ctx c = { .seed = io->arg };
	__u64 acc = 0;
	int i;

	for (i = 0; i < 8; i++)
		c.slots[i] = i;
	bpf_loop(io->n, fill_slot, &c, 0);
	for (i = 0; i < 8; i++)
		acc = acc * 31 + c.slots[i];
	io->out = acc;
	return 0;
}

struct outer_ctx {
	__u64 total;
	__u32 inner;
};

static int inner_step(__u32 index, void *data)
{
	struct outer_ctx *c = data;
	c->total += index + 1;
	return 0;
}

static int outer_step(__u32 index, void *data)
{
	struct outer_ctx *c = data;
	bpf_loop(c->inner, inner_step, c, 0);
	c->total *= 3;
	return 0;
}

/* a callback calling bpf_loop: two nested callback frames. */
SEC("extension")
int nested_loops(struct io *io)
{
	struct outer_ctx c = { .total = 0, .inner = io->arg & 15 };
	long r = bpf_loop(io->n & 15, outer_step, &c, 0);
	io->out = c.total;
	return r;
}

/* flags other than 0 (not known to the verifier) give -EINVAL at run time. */
SEC("extension")
int bad_flags(struct io *io)
{
	struct sum_ctx c = { 0, 0 };
	return bpf_loop(io->n, add_index, &c, io->arg);
}

char LICENSE[] SEC("license") = "GPL";
