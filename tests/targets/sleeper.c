// SPDX-License-Identifier: MIT OR Apache-2.0
// Purpose: target of the funclatency-style histogram test. Calls work()
// 20 times with slow = 0 (returns at once) and 20 times with slow = 1
// (sleeps 2 ms first), interleaved, prints its pid and exits 0.
// Used by: tests/real_targets.rs (built as ./sleeper in the test's working
// directory, where tests/bpf/funclatency.bpf.c's sections point).
#include <stdio.h>
#include <unistd.h>

#define CALLS 20

__attribute__((noinline)) int work(int slow)
{
	if (slow)
		usleep(2000);
	return slow + 1;
}

int main(void)
{
	int sum = 0;
	for (int i = 0; i < CALLS; i++) {
		sum += work(0);
		sum += work(1);
	}
	printf("pid %d\nsum %d\n", (int)getpid(), sum);
	return 0;
}
