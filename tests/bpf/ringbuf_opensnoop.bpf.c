// SPDX-License-Identifier: MIT OR Apache-2.0
// Purpose: opensnoop-style ringbuf emitter. On sys_enter_openat (tracepoint)
// and sys_exit_openat (tp/ alias) it reserves an event in a ringbuf, fills in
// pid, comm and the file name (bpf_probe_read_user_str) and submits it.
// Used by: object tests (ringbuf map, tp/ sections), maps ringbuf, hooks.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct sys_enter_ctx {
	__u64 ent;
	long id;
	unsigned long args[6];
};

struct sys_exit_ctx {
	__u64 ent;
	long id;
	long ret;
};

struct event {
	__u32 pid;
	int ret;
	char comm[16];
	char filename[128];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_openat")
int trace_openat_enter(struct sys_enter_ctx *ctx)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->ret = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_probe_read_user_str(e->filename, sizeof(e->filename), (const char *)ctx->args[1]);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp/syscalls/sys_exit_openat")
int trace_openat_exit(struct sys_exit_ctx *ctx)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->ret = ctx->ret;
	e->comm[0] = 0;
	e->filename[0] = 0;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
