// SPDX-License-Identifier: Apache-2.0
/*
 * The in-process C baseline of the benchmark (bench/run.py): the best a
 * producer can do through libbpf on the same ring, sample size and drain.
 *
 * Opens the ring map and the on-demand drain program pinned by ringbridge
 * (bpf_obj_get), writes N samples of B bytes with libbpf's
 * user_ring_buffer__reserve/submit, and whenever reserve says ENOSPC runs
 * the pinned ringbridge_drain program once through BPF_PROG_TEST_RUN (the
 * "kick" drain), and once more at the end. Prints one JSON line.
 *
 * It does not use user_ring_buffer__reserve_blocking(): with a timeout it
 * spins on a level-triggered EPOLLOUT (~100% of a core), and we drain ourselves.
 *
 * Usage: c_producer --pin-dir DIR --samples N --size B
 */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../bpf/ringbridge.h"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs the drain program once; returns samples drained or -errno. */
static long drain_once(int prog_fd)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts);
	int err = bpf_prog_test_run_opts(prog_fd, &opts);

	if (err)
		return -errno;
	return (int)opts.retval;
}

static int open_pin(const char *dir, const char *name)
{
	char path[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = bpf_obj_get(path);
	if (fd < 0)
		fprintf(stderr, "c_producer: bpf_obj_get %s failed: %s\n", path, strerror(errno));
	return fd;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "pin-dir", required_argument, NULL, 'p' },
		{ "samples", required_argument, NULL, 'n' },
		{ "size", required_argument, NULL, 's' },
		{ 0 },
	};
	const char *pin_dir = NULL;
	unsigned long long n = 1000000, drained = 0, drains = 0, full = 0;
	unsigned long size = sizeof(struct ringbridge_sample);
	struct user_ring_buffer *rb;
	int opt, ring_fd, drain_fd;
	double t0, t1;
	long r;

	while ((opt = getopt_long(argc, argv, "p:n:s:", longopts, NULL)) != -1) {
		switch (opt) {
		case 'p':
			pin_dir = optarg;
			break;
		case 'n':
			n = strtoull(optarg, NULL, 10);
			break;
		case 's':
			size = strtoul(optarg, NULL, 10);
			break;
		default:
			fprintf(stderr, "usage: %s --pin-dir DIR --samples N --size B\n", argv[0]);
			return 2;
		}
	}
	if (!pin_dir || size < sizeof(struct ringbridge_sample)) {
		fprintf(stderr, "c_producer: --pin-dir is required and --size must be >= %zu\n",
			sizeof(struct ringbridge_sample));
		return 2;
	}
	ring_fd = open_pin(pin_dir, "ringbridge_ring");
	drain_fd = open_pin(pin_dir, "ringbridge_drain");
	if (ring_fd < 0 || drain_fd < 0)
		return 1;
	rb = user_ring_buffer__new(ring_fd, NULL);
	if (!rb) {
		fprintf(stderr, "c_producer: user_ring_buffer__new failed: %s\n", strerror(errno));
		return 1;
	}

	t0 = now_s();
	for (unsigned long long i = 0; i < n; i++) {
		struct ringbridge_sample *s;

		while (!(s = user_ring_buffer__reserve(rb, (__u32)size))) {
			if (errno != ENOSPC) {
				fprintf(stderr, "c_producer: reserve failed: %s\n", strerror(errno));
				return 1;
			}
			full++;
			r = drain_once(drain_fd);
			if (r < 0) {
				fprintf(stderr, "c_producer: drain failed: %s\n", strerror((int)-r));
				return 1;
			}
			drained += (unsigned long long)r;
			drains++;
		}
		/* Same content as the Python paths: kind cycles, value counts. */
		s->kind = (__u32)(i % RINGBRIDGE_MAX_KINDS);
		s->flags = 0;
		s->value = i;
		if (size > sizeof(*s))
			memset(s + 1, 0, size - sizeof(*s));
		user_ring_buffer__submit(rb, s);
	}
	/* Consume what is left so the count is end-to-end. */
	do {
		r = drain_once(drain_fd);
		if (r < 0) {
			fprintf(stderr, "c_producer: final drain failed: %s\n", strerror((int)-r));
			return 1;
		}
		drained += (unsigned long long)r;
		drains++;
	} while (r > 0);
	t1 = now_s();

	user_ring_buffer__free(rb);
	printf("{\"samples\": %llu, \"size\": %lu, \"seconds\": %.6f, \"samples_per_s\": %.1f, "
	       "\"drained\": %llu, \"drains\": %llu, \"ring_full\": %llu}\n",
	       n, size, t1 - t0, (double)n / (t1 - t0), drained, drains, full);
	return drained == n ? 0 : 3;
}
