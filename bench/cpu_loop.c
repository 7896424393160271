// SPDX-License-Identifier: Apache-2.0
/*
 * The benchmark's per-core speed probe (bench/anchors.py): how many dependent
 * integer adds one core retires per nanosecond, which on any out-of-order
 * core (one add per cycle on a dependency chain) reads as its clock in GHz.
 *
 * Virtual machines here expose no cycle counter (`perf stat -e cycles` says
 * "not supported"), and /proc/cpuinfo's "cpu MHz" is the nominal clock, not
 * what a vCPU gets. A fixed chain of adds is the same work on every host, so
 * its rate compares hosts the way the benchmark's anchors need.
 *
 * The empty asm after each add makes the compiler keep every add (it cannot
 * fold the chain into one multiply); the loop counter runs in parallel.
 *
 * Timed with the thread's CPU clock, not the wall clock: other processes on a
 * busy machine change how long the loop waits for a CPU, not how fast a core
 * runs it (steal time is not the thread's either, on KVM guests).
 *
 * Prints one JSON line: {"adds_per_ns": ..., "seconds": ...}; the best of
 * --repeat runs (default 5) of --iterations loops (default 50 M) each.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STEP(x) do { (x) += 1; __asm__ volatile("" : "+r"(x)); } while (0)
#define STEP8(x) do { STEP(x); STEP(x); STEP(x); STEP(x); \
		      STEP(x); STEP(x); STEP(x); STEP(x); } while (0)
#define ADDS_PER_LOOP 32

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	uint64_t iterations = 50000000, x = 0;
	int repeat = 5;
	double best = 1e30;

	for (int i = 1; i < argc; i++) {
		if (!strncmp(argv[i], "--iterations=", 13))
			iterations = strtoull(argv[i] + 13, NULL, 10);
		else if (!strncmp(argv[i], "--repeat=", 9))
			repeat = atoi(argv[i] + 9);
		else {
			fprintf(stderr, "usage: %s [--iterations=N] [--repeat=R]\n", argv[0]);
			return 2;
		}
	}
	if (!iterations || repeat <= 0) {
		fprintf(stderr, "cpu_loop: --iterations and --repeat must be > 0\n");
		return 2;
	}
	for (int r = 0; r < repeat; r++) {
		double t0 = now_s(), dt;

		for (uint64_t i = 0; i < iterations; i++) {
			STEP8(x);
			STEP8(x);
			STEP8(x);
			STEP8(x);
		}
		dt = now_s() - t0;
		if (dt < best)
			best = dt;
	}
	if (x != (uint64_t)repeat * iterations * ADDS_PER_LOOP) {
		fprintf(stderr, "cpu_loop: the chain lost adds (%llu)\n", (unsigned long long)x);
		return 1;
	}
	printf("{\"adds_per_ns\": %.4f, \"seconds\": %.6f}\n",
	       (double)iterations * ADDS_PER_LOOP / best / 1e9, best);
	return 0;
}
