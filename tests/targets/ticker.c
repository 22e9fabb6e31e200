/* SPDX-License-Identifier: MIT OR Apache-2.0
 * Purpose: a long-running target for `pkbpf start` / `pkbpf attach`: prints
 * "pid P" and "ready", then reads commands from stdin with read(2) (so it
 * sits blocked in read() between commands): a line "N" calls tick(i) for
 * i = 0..N-1 and prints "done N sum S" (tick returns its argument plus 1);
 * end of input exits 0.
 * Used by: tests/cli_session.rs with tests/targets/ticker.bpf.c. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((noinline)) long tick(long x)
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}

int main(void)
{
	char line[64];
	size_t len = 0;
	printf("pid %d\nready\n", (int)getpid());
	fflush(stdout);
	for (;;) {
		char c;
		ssize_t n = read(0, &c, 1);
		if (n < 0)
			return 3;
		if (n == 0)
			return 0;
		if (c != '\n') {
			if (len + 1 < sizeof(line))
				line[len++] = c;
			continue;
		}
		line[len] = 0;
		len = 0;
		long count = atol(line), sum = 0;
		for (long i = 0; i < count; i++)
			sum += tick(i);
		printf("done %ld sum %ld\n", count, sum);
		fflush(stdout);
	}
}
