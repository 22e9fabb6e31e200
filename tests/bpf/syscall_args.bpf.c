// SPDX-License-Identifier: MIT OR Apache-2.0
// Purpose: syscall tracepoint contexts end to end. sys_enter_getppid counts
// getppid entries per thread group (key: pid); sys_exit_read records each
// read() result (key: return value, value: how often); raw sys_exit reads
// the system call number from the pt_regs pointer in args[0]
// (bpf_probe_read_user of orig_ax) and counts getppid exits; raw sys_enter
// checks that args[1] equals the regs' orig_ax (mismatches counted).
// Used by: tests/syscall_tracepoints.rs (target tests/targets/syscalls.c).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct sys_enter_ctx {
	__u64 ent;
	int nr;
	int pad;
	unsigned long args[6];
};

struct sys_exit_ctx {
	__u64 ent;
	int nr;
	int pad;
	long ret;
};

struct raw_args {
	unsigned long long args[2];
};

/* Offset of orig_ax in the x86-64 struct pt_regs. */
#define ORIG_AX_OFF 120
#define NR_GETPPID 110

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} getppid_enter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __s64);
	__type(value, __u64);
} read_rets SEC(".maps");

/* 0: getppid exits seen by raw sys_exit; 1: raw sys_enter id mismatches;
 * 2: raw sys_enter calls seen. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} raw_counts SEC(".maps");

static void bump(void *map, const void *key)
{
	__u64 one = 1, *v = bpf_map_lookup_elem(map, key);
	if (v)
		__sync_fetch_and_add(v, 1);
	else
		bpf_map_update_elem(map, key, &one, BPF_NOEXIST);
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int enter_getppid(struct sys_enter_ctx *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	if (ctx->nr != NR_GETPPID)
		return 0;
	bump(&getppid_enter, &pid);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_read")
int exit_read(struct sys_exit_ctx *ctx)
{
	__s64 ret = ctx->ret;
	bump(&read_rets, &ret);
	return 0;
}

SEC("raw_tracepoint/sys_exit")
int raw_exit(struct raw_args *ctx)
{
	__u64 nr = 0;
	__u32 k = 0;
	bpf_probe_read_user(&nr, sizeof(nr), (void *)(ctx->args[0] + ORIG_AX_OFF));
	if (nr == NR_GETPPID) {
		__u64 *v = bpf_map_lookup_elem(&raw_counts, &k);
		if (v)
			__sync_fetch_and_add(v, 1);
	}
	return 0;
}

SEC("raw_tracepoint/sys_enter")
int raw_enter(struct raw_args *ctx)
{
	__u64 nr = 0;
	__u32 k = 1;
	bpf_probe_read_user(&nr, sizeof(nr), (void *)(ctx->args[0] + ORIG_AX_OFF));
	if (nr != ctx->args[1]) {
		__u64 *v = bpf_map_lookup_elem(&raw_counts, &k);
		if (v)
			__sync_fetch_and_add(v, 1);
	}
	k = 2;
	__u64 *seen = bpf_map_lookup_elem(&raw_counts, &k);
	if (seen)
		__sync_fetch_and_add(seen, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
