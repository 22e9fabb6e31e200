// SPDX-License-Identifier: MIT OR Apache-2.0
// Purpose: a CO-RE relocation pkbpf cannot satisfy (a kernel type that is not
// in its built-in target description). Loading must fail with an error that
// names the program, the instruction and the access string.
// Used by: object tests (bad input).
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct task_struct {
	int pid;
	int tgid;
} __attribute__((preserve_access_index));

SEC("uprobe")
int read_task(struct task_struct *t)
{
	return t->tgid;
}

char LICENSE[] SEC("license") = "GPL";
