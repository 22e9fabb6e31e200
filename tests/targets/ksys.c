// SPDX-License-Identifier: MIT OR Apache-2.0
// Purpose: kernel baseline for the syscall tracepoint tests. Loads a .bpf.o
// into the kernel with libbpf, attaches every program (libbpf's
// auto-attach: tracepoints and raw tracepoints by section name), runs the
// target, then prints one map's entries (u32 key, u64 value) as
// `key <k> value <v>` after a `target <pid>` line.
//
// Usage: ksys OBJ MAP -- TARGET [ARGS...]
// Exit status: 0 ok; 2 kernel eBPF cannot run here (a `skipped: <why>` line);
// 1 any other failure.
// Used by: tests/syscall_tracepoints.rs (built with cc ksys.c -lbpf -lelf -lz).
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

static int quiet(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	(void)level;
	(void)fmt;
	(void)ap;
	return 0;
}

static int skip(const char *why, int err)
{
	printf("skipped: %s (%s)\n", why, strerror(err < 0 ? -err : err));
	return 2;
}

int main(int argc, char **argv)
{
	if (argc < 5 || strcmp(argv[3], "--") != 0) {
		fprintf(stderr, "usage: ksys OBJ MAP -- TARGET [ARGS...]\n");
		return 1;
	}
	libbpf_set_print(quiet);
	if (access("/sys/kernel/tracing/events", F_OK) != 0)
		mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, NULL);
	struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
	if (!obj)
		return skip("open", errno);
	int err = bpf_object__load(obj);
	if (err)
		return skip("load", err);
	struct bpf_program *prog;
	bpf_object__for_each_program(prog, obj)
	{
		struct bpf_link *link = bpf_program__attach(prog);
		if (!link)
			return skip(bpf_program__name(prog), errno);
	}
	struct bpf_map *map = bpf_object__find_map_by_name(obj, argv[2]);
	if (!map) {
		fprintf(stderr, "no map %s\n", argv[2]);
		return 1;
	}
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		execvp(argv[4], argv + 4);
		_exit(127);
	}
	int status = 0;
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "target failed: %#x\n", status);
		return 1;
	}
	printf("target %d\n", (int)pid);
	int fd = bpf_map__fd(map);
	__u32 key, next;
	__u64 value;
	int first = 1;
	while (bpf_map_get_next_key(fd, first ? NULL : &key, &next) == 0) {
		first = 0;
		key = next;
		if (bpf_map_lookup_elem(fd, &key, &value) == 0)
			printf("key %u value %llu\n", key, (unsigned long long)value);
	}
	return 0;
}
