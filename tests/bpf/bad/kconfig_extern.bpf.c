// SPDX-License-Identifier: MIT OR Apache-2.0
// Purpose: a `.kconfig` extern, which has no meaning in userspace. Loading
// must fail with a clear error naming the extern.
// Used by: object tests (bad input).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

extern int LINUX_KERNEL_VERSION __kconfig;

SEC("uprobe")
int uses_kconfig(void *ctx)
{
	return LINUX_KERNEL_VERSION > 0;
}

char LICENSE[] SEC("license") = "GPL";
