/* SPDX-License-Identifier: MIT OR Apache-2.0
 * Purpose: a `pkbpf run` target whose probed function is called from 8
 * threads at once: `threads N` makes each thread call __bench_uprobe N
 * times, then prints the sum of the results.
 * Used by: tests/run_agent.rs (built as benchmark/test so bench_uprobe.bpf.c's
 * section target names it). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) uint64_t __bench_uprobe(char *a, int b, uint64_t c)
{
	__asm__ volatile("" ::: "memory");
	return a[b] + c;
}

static long n;
static char buf[8] = "0123456";

static void *worker(void *arg)
{
	uint64_t sum = 0;
	for (long i = 0; i < n; i++)
		sum += __bench_uprobe(buf, (int)(i & 3), 1);
	*(uint64_t *)arg = sum;
	return NULL;
}

int main(int argc, char **argv)
{
	n = argc > 1 ? atol(argv[1]) : 1000;
	pthread_t t[8];
	uint64_t sums[8];
	for (int i = 0; i < 8; i++)
		if (pthread_create(&t[i], NULL, worker, &sums[i]) != 0)
			return 2;
	uint64_t total = 0;
	for (int i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		total += sums[i];
	}
	printf("total %llu\n", (unsigned long long)total);
	return 0;
}
