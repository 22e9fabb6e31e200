// SPDX-License-Identifier: MIT OR Apache-2.0
// The benchmark victim: bpftime's 17 probe targets, each timed over N calls.
//
// Every function has the same body, `return a[b] + c`, and is `noinline` so a
// uprobe on its symbol fires once per call. main() calls each one N times
// with (buffer, i % 4, i), times the loop with CLOCK_MONOTONIC and prints one
// line per function: `<name> <average ns per call>`. Then it times N
// `write()`s of one byte to /dev/null (the syscall tracepoint row) and prints
// `syscall_write <ns>`. A final `checksum <n>` line keeps the calls from being
// optimised away and lets a harness see that the run finished.
//
// Usage: bench_target [N]   (default 100000)
// Built at run time by the harness with `cc -O2 -fno-inline`.
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define TARGET(name)                                                        \
	__attribute__((noinline)) uint64_t name(char *a, int b, uint64_t c) \
	{                                                                   \
		__asm__ volatile("" ::: "memory");                          \
		return a[b] + c;                                            \
	}

TARGET(__bench_uprobe)
TARGET(__bench_uretprobe)
TARGET(__bench_uprobe_uretprobe)
TARGET(__bench_read)
TARGET(__bench_write)
TARGET(__bench_hash_map_update)
TARGET(__bench_hash_map_lookup)
TARGET(__bench_hash_map_delete)
TARGET(__bench_array_map_update)
TARGET(__bench_array_map_lookup)
TARGET(__bench_array_map_delete)
TARGET(__bench_per_cpu_hash_map_update)
TARGET(__bench_per_cpu_hash_map_lookup)
TARGET(__bench_per_cpu_hash_map_delete)
TARGET(__bench_per_cpu_array_map_update)
TARGET(__bench_per_cpu_array_map_lookup)
TARGET(__bench_per_cpu_array_map_delete)

typedef uint64_t (*target_fn)(char *, int, uint64_t);

static const struct {
	const char *name;
	target_fn fn;
} targets[] = {
#define T(n) { #n, n }
	T(__bench_uprobe),
	T(__bench_uretprobe),
	T(__bench_uprobe_uretprobe),
	T(__bench_read),
	T(__bench_write),
	T(__bench_hash_map_update),
	T(__bench_hash_map_lookup),
	T(__bench_hash_map_delete),
	T(__bench_array_map_update),
	T(__bench_array_map_lookup),
	T(__bench_array_map_delete),
	T(__bench_per_cpu_hash_map_update),
	T(__bench_per_cpu_hash_map_lookup),
	T(__bench_per_cpu_hash_map_delete),
	T(__bench_per_cpu_array_map_update),
	T(__bench_per_cpu_array_map_lookup),
	T(__bench_per_cpu_array_map_delete),
#undef T
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
	long n = 100000;
	if (argc > 1) {
		char *end;
		n = strtol(argv[1], &end, 10);
		if (*end != '\0' || n <= 0) {
			fprintf(stderr, "usage: %s [iterations > 0]\n", argv[0]);
			return 2;
		}
	}
	/* Writable: the probe_write_user benchmark writes 8 bytes at a. */
	static char buffer[64] = "0123456789abcdef";
	volatile uint64_t sink = 0;
	for (size_t t = 0; t < sizeof(targets) / sizeof(targets[0]); t++) {
		target_fn fn = targets[t].fn;
		uint64_t start = now_ns();
		for (long i = 0; i < n; i++)
			sink += fn(buffer, (int)(i % 4), (uint64_t)i);
		uint64_t elapsed = now_ns() - start;
		printf("%s %.3f\n", targets[t].name, (double)elapsed / (double)n);
	}
	int fd = open("/dev/null", O_WRONLY);
	if (fd < 0) {
		perror("open /dev/null");
		return 1;
	}
	char byte = 'x';
	uint64_t start = now_ns();
	for (long i = 0; i < n; i++) {
		if (write(fd, &byte, 1) != 1) {
			perror("write /dev/null");
			return 1;
		}
	}
	uint64_t elapsed = now_ns() - start;
	close(fd);
	printf("syscall_write %.3f\n", (double)elapsed / (double)n);
	printf("checksum %llu\n", (unsigned long long)sink);
	fflush(stdout);
	return 0;
}
