/* SPDX-License-Identifier: MIT OR Apache-2.0
 * Purpose: a `pkbpf run` target that calls malloc and free a known number of
 * times: `mallocs N [fork]` makes N malloc/free pairs; with `fork`, a child
 * makes another N pairs first; with `kill`, the process kills itself with
 * SIGKILL after its pairs (no exit handlers run). Prints "pid P" for each
 * process.
 * Used by: tests/run_agent.rs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void *volatile sink;

static void pairs(long n)
{
	for (long i = 0; i < n; i++) {
		sink = malloc(32 + (size_t)(i & 7));
		free(sink);
	}
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 10;
	if (argc > 2 && strcmp(argv[2], "fork") == 0) {
		fflush(stdout);
		pid_t c = fork();
		if (c < 0)
			return 2;
		if (c == 0) {
			pairs(n);
			printf("child pid %d\n", (int)getpid());
			fflush(stdout);
			exit(0);
		}
		int st;
		waitpid(c, &st, 0);
	}
	pairs(n);
	printf("pid %d\n", (int)getpid());
	if (argc > 2 && strcmp(argv[2], "kill") == 0) {
		fflush(stdout);
		raise(SIGKILL);
	}
	return 0;
}
