/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* A tiny vmlinux.h-style header for pkbpf's CO-RE tests: just the types the
 * test programs and libbpf's bpf_helpers.h / bpf_tracing.h need, with
 * preserve_access_index on the context structs so that clang emits CO-RE
 * field relocations. The layouts here are deliberately NOT the real ones
 * (pt_regs fields reordered, some missing; an extra field in the tracepoint
 * records) so that tests can tell a relocated offset from a compile-time one. */
#ifndef __VMLINUX_H__
#define __VMLINUX_H__

typedef unsigned char __u8;
typedef short unsigned int __u16;
typedef unsigned int __u32;
typedef long long unsigned int __u64;
typedef signed char __s8;
typedef short int __s16;
typedef int __s32;
typedef long long int __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
enum { false = 0, true = 1 };

enum bpf_map_type {
	BPF_MAP_TYPE_UNSPEC = 0,
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_RINGBUF = 27,
};

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_EXIST = 2,
};

#pragma clang attribute push (__attribute__((preserve_access_index)), apply_to = record)

/* Reordered and incomplete on purpose (see above). */
struct pt_regs {
	long unsigned int ip;
	long unsigned int sp;
	long unsigned int ax;
	long unsigned int di;
	long unsigned int si;
	long unsigned int dx;
	long unsigned int cx;
	long unsigned int r8;
	long unsigned int r9;
};

struct trace_entry {
	short unsigned int type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
};

struct trace_event_raw_sys_enter {
	struct trace_entry ent;
	long int test_only_pad; /* not in the kernel: moves id and args by 8 */
	long int id;
	long unsigned int args[6];
	char __data[0];
};

struct trace_event_raw_sys_exit {
	struct trace_entry ent;
	long int test_only_pad; /* not in the kernel: moves id and ret by 8 */
	long int id;
	long int ret;
	char __data[0];
};

#pragma clang attribute pop

#endif /* __VMLINUX_H__ */
