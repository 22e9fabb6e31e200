/* SPDX-License-Identifier: MIT OR Apache-2.0
 * Purpose: a `pkbpf run` target with one probed function: calls greet(7),
 * greet(8), greet(9) (greet returns twice its argument) and prints the sum.
 * Used by: tests/run_agent.rs with tests/targets/greet.bpf.c. */
#include <stdio.h>

__attribute__((noinline)) int greet(int x)
{
	__asm__ volatile("" ::: "memory");
	return 2 * x;
}

int main(void)
{
	int sum = 0;
	for (int i = 7; i <= 9; i++)
		sum += greet(i);
	printf("sum %d\n", sum);
	return 0;
}
