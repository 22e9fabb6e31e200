// SPDX-License-Identifier: MIT OR Apache-2.0
// Purpose: a bashreadline-style probe: on each return of readline() in
// /bin/bash, copies the returned line (user memory) into a ring buffer
// record {pid, line[80]}.
// Used by: tests/real_targets.rs (pkbpf run on an interactive bash).
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define LINE_MAX 80

struct line_event {
	__u32 pid;
	char line[LINE_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} lines SEC(".maps");

SEC("uretprobe//bin/bash:readline")
int BPF_KRETPROBE(bash_readline, const char *ret)
{
	struct line_event e = {};
	if (!ret)
		return 0;
	e.pid = bpf_get_current_pid_tgid() >> 32;
	bpf_probe_read_user_str(e.line, sizeof(e.line), ret);
	bpf_ringbuf_output(&lines, &e, sizeof(e), 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
