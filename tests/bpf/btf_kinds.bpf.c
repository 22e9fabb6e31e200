// SPDX-License-Identifier: MIT OR Apache-2.0
// Purpose: BTF coverage. Global variables and a map whose types use most BTF
// kinds clang emits: INT, PTR, ARRAY, STRUCT, UNION (anonymous too), ENUM,
// FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FUNC_PROTO, VAR, DATASEC,
// FLOAT, DECL_TAG, TYPE_TAG; a bitfield struct; and a bpf_loop callback
// (an lddw function pointer to a static subprogram).
// Used by: BTF tests (cross-checked against bpftool), object tests.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct opaque;                       /* FWD */

enum color { RED = 1, GREEN = 2, BLUE = 4 };

typedef unsigned int u32_t;

struct flags {
	unsigned int a : 3;
	unsigned int b : 5;
	int c : 12;
	unsigned long long wide;
};

union value {
	__u64 u;
	double d;                        /* FLOAT */
	struct {
		__u32 lo;
		__u32 hi;
	};
};

struct record {
	enum color color;
	struct flags flags;
	union value v;
	struct opaque *opaque;
	const char *name;
	int __attribute__((btf_type_tag("user"))) *tagged;
	u32_t counts[4];
} __attribute__((btf_decl_tag("pkbpf_record")));

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, u32_t);
	__type(value, struct record);
} records SEC(".maps");

struct record last_record;           /* .bss */
volatile enum color favourite = BLUE; /* .data */

struct loop_ctx {
	__u64 sum;
};

static int add_index(__u32 index, void *data)
{
	struct loop_ctx *c = data;
	c->sum += index;
	return 0;
}

static __noinline int copy_out(void *__restrict dst, const void *__restrict src)
{
	__builtin_memcpy(dst, src, 8);
	return 0;
}

SEC("extension")
int btf_kinds(struct record *in)
{
	struct loop_ctx c = { .sum = 0 };
	u32_t key = 0;
	bpf_loop(10, add_index, &c, 0);
	copy_out(&last_record.v.u, &c.sum);
	last_record.flags.b = in->flags.a;
	bpf_map_update_elem(&records, &key, &last_record, BPF_ANY);
	return c.sum + favourite;
}

char LICENSE[] SEC("license") = "GPL";
