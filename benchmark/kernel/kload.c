// SPDX-License-Identifier: MIT OR Apache-2.0
// Kernel baseline of the pkbpf benchmark: loads .bpf.o files into the kernel
// with libbpf, attaches every program (uprobes/uretprobes on the target
// binary's functions by name, tracepoints by section name), runs the target
// and checks that every program actually ran, so a probe that silently failed
// to attach cannot look fast.
//
// Usage: kload [--min-runs N] -o OBJ [-o OBJ ...] -- TARGET [ARGS...]
//
// Output: the target's stdout unchanged, then one line per program
// `probe <name> <run_cnt>` (run counts from the kernel's BPF statistics,
// switched on with BPF_ENABLE_STATS for the duration of the run).
// A program the kernel refuses to load is left out with a line
// `unsupported <name> <reason>`, one that cannot be attached with
// `unattached <name> <reason>` (both printed before the target runs).
// tracefs is mounted on /sys/kernel/tracing when it is not there yet.
// Exit status: 0 ok; 2 the kernel rows cannot run here (a line
// `skipped: kernel rows: <why>` is printed); 3 a program ran fewer than N
// times; 1 any other failure.
//
// Section names: `uprobe/<anything>:<function>` and
// `uretprobe/<anything>:<function>` attach to <function> in TARGET; every other
// section is attached the way libbpf's auto-attach understands it.
//
// Built at run time by the harness: cc -O2 kload.c -lbpf -lelf -lz
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#define MAX_OBJS 16
#define MAX_LINKS 256

static int quiet_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level == LIBBPF_DEBUG)
		return 0;
	return vfprintf(stderr, fmt, ap);
}

static void skip(const char *why, int err)
{
	if (err)
		printf("skipped: kernel rows: %s (%s)\n", why, strerror(err));
	else
		printf("skipped: kernel rows: %s\n", why);
	fflush(stdout);
	exit(2);
}

static struct bpf_object *open_object(const char *path)
{
	struct bpf_object *obj = bpf_object__open_file(path, NULL);
	if (!obj)
		fprintf(stderr, "kload: open %s: %s\n", path, strerror(errno));
	return obj;
}

/*
 * Loads every program of `path` that this kernel accepts. When the whole
 * object fails to load, each program is tried alone; the ones the kernel
 * refuses (e.g. bpf_probe_write_user under lockdown) are reported as
 * `unsupported <name> <reason>` and left out, the rest are loaded.
 */
static struct bpf_object *load_object(const char *path)
{
	struct bpf_object *obj = open_object(path);
	if (!obj)
		return NULL;
	libbpf_set_print(NULL);
	int err = bpf_object__load(obj);
	libbpf_set_print(quiet_print);
	if (!err)
		return obj;
	if (-err == EPERM || -err == ENOSYS)
		skip("loading programs failed", -err);
	int count = 0;
	struct bpf_program *prog;
	bpf_object__for_each_program(prog, obj) count++;
	bpf_object__close(obj);
	char refused[MAX_LINKS] = { 0 };
	int nrefused = 0;
	libbpf_set_print(NULL);
	for (int k = 0; k < count && k < MAX_LINKS; k++) {
		struct bpf_object *one = open_object(path);
		if (!one)
			return NULL;
		int idx = 0;
		const char *name = "?";
		bpf_object__for_each_program(prog, one) {
			bpf_program__set_autoload(prog, idx == k);
			if (idx == k)
				name = bpf_program__name(prog);
			idx++;
		}
		int e = bpf_object__load(one);
		if (e) {
			printf("unsupported %s %s\n", name, strerror(-e));
			refused[k] = 1;
			nrefused++;
		}
		bpf_object__close(one);
	}
	libbpf_set_print(quiet_print);
	if (nrefused == 0) {
		fprintf(stderr, "kload: load %s: %s\n", path, strerror(-err));
		return NULL;
	}
	obj = open_object(path);
	if (!obj)
		return NULL;
	int idx = 0;
	bpf_object__for_each_program(prog, obj) {
		bpf_program__set_autoload(prog, !refused[idx]);
		idx++;
	}
	err = bpf_object__load(obj);
	if (err) {
		fprintf(stderr, "kload: load %s: %s\n", path, strerror(-err));
		return NULL;
	}
	return obj;
}

int main(int argc, char **argv)
{
	const char *objs[MAX_OBJS];
	int nobjs = 0;
	long min_runs = 1;
	int i = 1;
	for (; i < argc; i++) {
		if (!strcmp(argv[i], "--")) {
			i++;
			break;
		} else if (!strcmp(argv[i], "-o") && i + 1 < argc && nobjs < MAX_OBJS) {
			objs[nobjs++] = argv[++i];
		} else if (!strcmp(argv[i], "--min-runs") && i + 1 < argc) {
			min_runs = strtol(argv[++i], NULL, 10);
		} else {
			fprintf(stderr, "usage: kload [--min-runs N] -o OBJ... -- TARGET [ARGS...]\n");
			return 1;
		}
	}
	if (i >= argc || nobjs == 0) {
		fprintf(stderr, "usage: kload [--min-runs N] -o OBJ... -- TARGET [ARGS...]\n");
		return 1;
	}
	char **target_argv = &argv[i];
	const char *target = target_argv[0];

	if (geteuid() != 0)
		skip("not root", 0);
	libbpf_set_print(quiet_print);

	/* Also the probe for a working bpf(): EPERM/ENOSYS here mean no kernel rows. */
	int stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
	if (stats_fd < 0) {
		int err = errno;
		if (err == EPERM || err == ENOSYS || err == EACCES)
			skip("bpf(BPF_ENABLE_STATS) failed", err);
		fprintf(stderr, "kload: bpf_enable_stats: %s\n", strerror(err));
		return 1;
	}

	/* Tracepoints need tracefs; mount it where the system has not. */
	if (access("/sys/kernel/tracing/events", F_OK) != 0 &&
	    mount("nodev", "/sys/kernel/tracing", "tracefs", 0, NULL) == 0)
		fprintf(stderr, "kload: mounted tracefs on /sys/kernel/tracing\n");

	struct bpf_object *loaded[MAX_OBJS];
	struct bpf_link *links[MAX_LINKS];
	int nlinks = 0;
	for (int o = 0; o < nobjs; o++) {
		struct bpf_object *obj = load_object(objs[o]);
		if (!obj)
			return 1;
		loaded[o] = obj;
		struct bpf_program *prog;
		bpf_object__for_each_program(prog, obj) {
			if (!bpf_program__autoload(prog))
				continue;
			const char *sec = bpf_program__section_name(prog);
			struct bpf_link *link;
			int uprobe = !strncmp(sec, "uprobe/", 7);
			int uretprobe = !strncmp(sec, "uretprobe/", 10);
			if (uprobe || uretprobe) {
				const char *func = strrchr(sec, ':');
				if (!func) {
					fprintf(stderr, "kload: %s: section %s names no function\n",
						bpf_program__name(prog), sec);
					return 1;
				}
				LIBBPF_OPTS(bpf_uprobe_opts, opts, .func_name = func + 1,
					    .retprobe = uretprobe);
				link = bpf_program__attach_uprobe_opts(prog, -1, target, 0, &opts);
			} else {
				link = bpf_program__attach(prog);
			}
			if (!link) {
				/* Reported, and its run count is not checked. */
				printf("unattached %s %s\n", bpf_program__name(prog), strerror(errno));
				bpf_program__set_autoload(prog, false);
				continue;
			}
			if (nlinks == MAX_LINKS) {
				fprintf(stderr, "kload: more than %d programs\n", MAX_LINKS);
				return 1;
			}
			links[nlinks++] = link;
		}
	}

	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0) {
		perror("kload: fork");
		return 1;
	}
	if (pid == 0) {
		execv(target, target_argv);
		perror("kload: exec target");
		_exit(127);
	}
	int status;
	if (waitpid(pid, &status, 0) < 0) {
		perror("kload: waitpid");
		return 1;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "kload: target %s failed (status %#x)\n", target, status);
		return 1;
	}

	int short_runs = 0;
	for (int o = 0; o < nobjs; o++) {
		struct bpf_program *prog;
		bpf_object__for_each_program(prog, loaded[o]) {
			if (!bpf_program__autoload(prog))
				continue;
			struct bpf_prog_info info;
			__u32 len = sizeof(info);
			memset(&info, 0, sizeof(info));
			if (bpf_obj_get_info_by_fd(bpf_program__fd(prog), &info, &len)) {
				fprintf(stderr, "kload: prog info %s: %s\n", bpf_program__name(prog),
					strerror(errno));
				return 1;
			}
			printf("probe %s %llu\n", bpf_program__name(prog),
			       (unsigned long long)info.run_cnt);
			if ((long long)info.run_cnt < min_runs) {
				fprintf(stderr, "kload: %s ran %llu times, expected at least %ld\n",
					bpf_program__name(prog), (unsigned long long)info.run_cnt,
					min_runs);
				short_runs = 1;
			}
		}
	}
	fflush(stdout);
	for (int l = 0; l < nlinks; l++)
		bpf_link__destroy(links[l]);
	for (int o = 0; o < nobjs; o++)
		bpf_object__close(loaded[o]);
	close(stats_fd);
	return short_runs ? 3 : 0;
}
