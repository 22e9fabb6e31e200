/* SPDX-License-Identifier: MIT OR Apache-2.0
 * Purpose: a long-running target for `pkbpf start` / `pkbpf attach`: prints
 * "pid P" and "ready", then reads commands from stdin with read(2) (so it
 * sits blocked in read() between commands): a line "N" calls tick(i) for
 * i = 0..N-1 and prints "done N sum S" (tick returns its argument plus 1);
 * end of input exits 0. `ticker spin`: a second thread reads the commands
 * and the main thread runs them, spinning in user code (no system call)
 * while it waits, with a known value in xmm7 that must survive (exit 5 if
 * it changes); `ticker churn`: the same, but the main thread calls
 * malloc and free while it waits (so it is often inside the C library);
 * `ticker poll`: like the default, but waits in poll(2) with an hour's
 * timeout before each read (a call the kernel restarts through
 * restart_syscall); `ticker orphan`: a second thread serves the commands
 * and the main thread exits with pthread_exit (leaving a zombie main
 * thread in a live process).
 * Used by: tests/cli_session.rs with tests/targets/ticker.bpf.c. */
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((noinline)) long tick(long x)
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}

/* The next command: a count, -1 for none, -2 for end of input. */
static volatile long pending = -1;
static void *volatile sink;
static int use_poll;

static void run(long count)
{
	long sum = 0;
	for (long i = 0; i < count; i++)
		sum += tick(i);
	printf("done %ld sum %ld\n", count, sum);
	fflush(stdout);
}

/* Reads one command line; -2 at end of input. */
static long next_command(void)
{
	char line[64];
	size_t len = 0;
	for (;;) {
		char c;
		if (use_poll) {
			struct pollfd p = { .fd = 0, .events = POLLIN };
			int r = poll(&p, 1, 3600 * 1000);
			if (r < 0) {
				perror("poll");
				exit(4);
			}
			if (r == 0)
				continue;
		}
		ssize_t n = read(0, &c, 1);
		if (n <= 0)
			return -2;
		if (c == '\n')
			break;
		if (len + 1 < sizeof(line))
			line[len++] = c;
	}
	line[len] = 0;
	return atol(line);
}

static void *reader(void *arg)
{
	(void)arg;
	for (;;) {
		long c = next_command();
		while (pending != -1)
			;
		pending = c;
		if (c == -2)
			return NULL;
	}
}

static void *serve(void *arg)
{
	(void)arg;
	for (;;) {
		long c = next_command();
		if (c == -2)
			exit(0);
		run(c);
	}
}

int main(int argc, char **argv)
{
	printf("pid %d\nready\n", (int)getpid());
	fflush(stdout);
	int spin = argc > 1 && strcmp(argv[1], "spin") == 0;
	int churn = argc > 1 && strcmp(argv[1], "churn") == 0;
	use_poll = argc > 1 && strcmp(argv[1], "poll") == 0;
	if (argc > 1 && strcmp(argv[1], "orphan") == 0) {
		pthread_t t;
		if (pthread_create(&t, NULL, serve, NULL) != 0)
			return 2;
		pthread_exit(NULL);
	}
	if (spin || churn) {
		pthread_t t;
		if (pthread_create(&t, NULL, reader, NULL) != 0)
			return 2;
		const unsigned long long mark = 0x1122334455667788ULL;
		__asm__ volatile("movq %0, %%xmm7" ::"r"(mark) : "xmm7");
		for (;;) {
			long c = pending;
			unsigned long long x7;
			__asm__ volatile("movq %%xmm7, %0" : "=r"(x7));
			if (spin && x7 != mark) {
				printf("xmm7 clobbered: %llx\n", x7);
				fflush(stdout);
				return 5;
			}
			if (c == -2)
				return 0;
			if (c >= 0) {
				run(c);
				pending = -1;
				/* run() may use xmm7 (caller-saved): set it again. */
				__asm__ volatile("movq %0, %%xmm7" ::"r"(mark) : "xmm7");
			} else if (churn) {
				sink = malloc(64);
				free(sink);
			}
		}
	}
	for (;;) {
		long c = next_command();
		if (c == -2)
			return 0;
		run(c);
	}
}
