// SPDX-License-Identifier: MIT OR Apache-2.0
// Purpose: tail calls. A prog_array declared with `__array(values, ...)` and
// initialised with two programs (slots 1 and 3), and an entry program that
// tail-calls slot `ctx->index` and returns 0 when the slot is empty.
// Used by: object tests (prog_array initializers), verifier and JIT (tail
// calls), runtime tests.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct input {
	__u32 index;
	__u32 value;
};

SEC("extension")
int tail_double(struct input *in)
{
	return in->value * 2;
}

SEC("extension")
int tail_square(struct input *in)
{
	return in->value * in->value;
}

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__uint(key_size, sizeof(__u32));
	__array(values, int (struct input *));
} jump_table SEC(".maps") = {
	.values = {
		[1] = (void *)&tail_double,
		[3] = (void *)&tail_square,
	},
};

SEC("extension")
int tail_entry(struct input *in)
{
	bpf_tail_call(in, &jump_table, in->index);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
