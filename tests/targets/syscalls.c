// SPDX-License-Identifier: MIT OR Apache-2.0
// Purpose: a target with a known number of system calls, for the syscall
// tracepoint tests: getppid() GETPPID_MAIN times on the main thread,
// THREADS threads doing GETPPID_THREAD each, a SIGUSR1 handler (installed
// with sigaction) raised USR1_RAISES times whose body calls getppid once,
// one read() of READ_BYTES bytes from /dev/zero, an openat() of argv[1]
// (when given), its own SIGSYS handler called by raise(SIGSYS), and a
// fork whose child calls getppid FORK_CHILD times and exits.
// `syscalls --storm`: instead, a 100 us interval timer whose SIGALRM handler
// calls getppid, while the main thread calls getppid (and nanosleep) until
// STORM_ALARMS alarms arrived; prints both counts.
// Used by: tests/syscall_tracepoints.rs.
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#define GETPPID_MAIN 100
#define THREADS 4
#define GETPPID_THREAD 50
#define USR1_RAISES 10
#define READ_BYTES 1234
#define FORK_CHILD 7
#define STORM_ALARMS 300

static volatile sig_atomic_t usr1_hits, sigsys_hits;

static void on_usr1(int sig)
{
	(void)sig;
	syscall(SYS_getppid);
	usr1_hits++;
}

static void on_sigsys(int sig, siginfo_t *info, void *uc)
{
	(void)uc;
	if (sig == SIGSYS && info->si_signo == SIGSYS)
		sigsys_hits++;
}

static volatile sig_atomic_t alarms;

static void on_alarm(int sig)
{
	(void)sig;
	syscall(SYS_getppid);
	alarms++;
}

static int storm(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGALRM, &sa, NULL);
	struct itimerval it = { { 0, 100 }, { 0, 100 } };
	setitimer(ITIMER_REAL, &it, NULL);
	long loops = 0;
	while (alarms < STORM_ALARMS) {
		syscall(SYS_getppid);
		loops++;
		struct timespec ts = { 0, 20000 };
		nanosleep(&ts, NULL);
	}
	struct itimerval off = { { 0, 0 }, { 0, 0 } };
	setitimer(ITIMER_REAL, &off, NULL);
	/* Alarms already in flight when the timer stopped are counted too. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGALRM);
	sigprocmask(SIG_BLOCK, &set, NULL);
	printf("storm loops %ld alarms %d\n", loops, (int)alarms);
	return 0;
}

static void *worker(void *arg)
{
	(void)arg;
	for (int i = 0; i < GETPPID_THREAD; i++)
		syscall(SYS_getppid);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "--storm") == 0)
		return storm();
	for (int i = 0; i < GETPPID_MAIN; i++)
		syscall(SYS_getppid);

	pthread_t t[THREADS];
	for (int i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, worker, NULL);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);

	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	for (int i = 0; i < USR1_RAISES; i++)
		raise(SIGUSR1);

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigsys;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGSYS, &sa, NULL);
	raise(SIGSYS);

	char buf[READ_BYTES];
	int z = open("/dev/zero", O_RDONLY);
	ssize_t n = read(z, buf, sizeof(buf));
	close(z);

	if (argc > 1) {
		int fd = openat(AT_FDCWD, argv[1], O_RDONLY);
		if (fd >= 0)
			close(fd);
	}

	pid_t child = fork();
	if (child == 0) {
		for (int i = 0; i < FORK_CHILD; i++)
			syscall(SYS_getppid);
		_exit(0);
	}
	int status = 0;
	waitpid(child, &status, 0);

	printf("usr1 %d sigsys %d read %zd child %d\n", (int)usr1_hits, (int)sigsys_hits, n,
	       WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	return 0;
}
