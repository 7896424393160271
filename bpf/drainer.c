// SPDX-License-Identifier: Apache-2.0
/*
 * The "kick" drain trigger's worker: one long-lived native thread that runs
 * the on-demand drain program (BPF_PROG_TEST_RUN) whenever the producer asks.
 *
 * Why native: a kick per committed batch through a Python worker thread
 * costs an executor hand-off and two GIL transfers per batch, and the worker
 * competes with the event loop for the GIL while the loop serves clients.
 * This thread never touches the GIL. The producer's kick is one atomic
 * exchange, plus one eventfd write only when the thread sleeps (not while
 * it drains or is due to); an idle thread sleeps in read(2) and costs nothing.
 *
 * Semantics (as the Python producer relies on them):
 *  - every kick is followed by a drain that starts after the kick: the
 *    thread clears `requested` before it drains, and a kick that finds it
 *    already set knows that such a drain is still to come;
 *  - a drain that consumed records while bytes are still pending (the
 *    program's per-run bound was hit) is followed by another;
 *  - rb_drainer_stop() lets requested drains run, then joins the thread.
 *
 * Counters are read by Python at any time (relaxed atomics: statistics).
 */
#include <errno.h>
#include <linux/bpf.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

struct rb_drainer_stats {
	uint64_t runs;     /* drain program runs that succeeded */
	uint64_t samples;  /* samples they drained */
	uint64_t errors;   /* runs that failed (syscall or program errno) */
	int64_t last_error; /* positive errno of the latest failure, 0 if none */
};

struct rb_drainer {
	struct rb_drainer_stats stats; /* first: Python reads it at offset 0 */
	int prog_fd;
	int efd;
	const uint64_t *producer_pos;
	const uint64_t *consumer_pos;
	uint32_t requested;
	uint32_t stop;
	uint32_t awake; /* the thread is draining, or about to look at requested */
	pthread_t thread;
};

/* One run of the drain program: samples drained, or a negative errno. */
static int64_t run_once(int prog_fd)
{
	union bpf_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.test.prog_fd = (uint32_t)prog_fd;
	if (syscall(__NR_bpf, BPF_PROG_TEST_RUN, &attr, sizeof(attr)) < 0)
		return -errno;
	/* The program returns an int: samples, or a negative errno. */
	return (int32_t)attr.test.retval;
}

static uint64_t pending(const struct rb_drainer *d)
{
	/* producer_pos: our own process's release store; consumer_pos: the kernel's. */
	uint64_t prod = __atomic_load_n(d->producer_pos, __ATOMIC_ACQUIRE);
	uint64_t cons = __atomic_load_n(d->consumer_pos, __ATOMIC_ACQUIRE);

	return prod - cons;
}

static void drain(struct rb_drainer *d)
{
	int64_t n;

	do {
		n = run_once(d->prog_fd);
		if (n < 0) {
			/* Not retried: a failing drain (a poisoned ring) fails again at once. */
			__atomic_store_n(&d->stats.last_error, -n, __ATOMIC_RELAXED);
			__atomic_fetch_add(&d->stats.errors, 1, __ATOMIC_RELAXED);
			return;
		}
		__atomic_fetch_add(&d->stats.runs, 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&d->stats.samples, (uint64_t)n, __ATOMIC_RELAXED);
	} while (n > 0 && pending(d) > 0);
}

static void *thread_main(void *arg)
{
	struct rb_drainer *d = arg;
	uint64_t v;

	for (;;) {
		int stopping;

		if (read(d->efd, &v, sizeof(v)) < 0 && errno != EINTR && errno != EAGAIN)
			break;
		__atomic_store_n(&d->awake, 1, __ATOMIC_SEQ_CST);
		for (;;) {
			/*
			 * stop is read before requested: a kick made before the stop
			 * was asked for has set requested by then, so its drain still runs.
			 */
			stopping = __atomic_load_n(&d->stop, __ATOMIC_SEQ_CST);
			/* Cleared before draining: a kick from here on gets a drain of its own. */
			if (__atomic_exchange_n(&d->requested, 0, __ATOMIC_SEQ_CST)) {
				drain(d);
				continue;
			}
			if (stopping)
				return NULL;
			/*
			 * Going to sleep: awake is cleared before requested is read
			 * again (both seq_cst, as in rb_drainer_kick, which sets
			 * requested and then reads awake): a kick either is seen here
			 * or sees awake cleared and writes the eventfd.
			 */
			__atomic_store_n(&d->awake, 0, __ATOMIC_SEQ_CST);
			if (!__atomic_load_n(&d->requested, __ATOMIC_SEQ_CST))
				break;
			__atomic_store_n(&d->awake, 1, __ATOMIC_SEQ_CST);
		}
	}
	return NULL;
}

/*
 * Starts the thread. producer_pos/consumer_pos point into the ring's
 * mapping, which must outlive rb_drainer_stop(). Returns NULL with errno set.
 */
struct rb_drainer *rb_drainer_start(int prog_fd, const uint64_t *producer_pos,
				    const uint64_t *consumer_pos)
{
	struct rb_drainer *d = calloc(1, sizeof(*d));
	sigset_t all, old;
	int err;

	if (!d)
		return NULL;
	d->prog_fd = prog_fd;
	d->producer_pos = producer_pos;
	d->consumer_pos = consumer_pos;
	d->efd = eventfd(0, EFD_CLOEXEC);
	if (d->efd < 0) {
		err = errno;
		free(d);
		errno = err;
		return NULL;
	}
	/* Signals stay with the interpreter's threads. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = pthread_create(&d->thread, NULL, thread_main, d);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err) {
		close(d->efd);
		free(d);
		errno = err;
		return NULL;
	}
	return d;
}

static void wake(struct rb_drainer *d)
{
	uint64_t one = 1;

	/* Only fails if the counter would overflow: the thread is due anyway. */
	while (write(d->efd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

/*
 * Asks for a drain that starts after this call. Never blocks; writes the
 * eventfd (a syscall and a wake-up) only when the thread sleeps: while it
 * drains, a kick is one atomic exchange and a load, which matters under load,
 * when the producer commits faster than one drain per commit.
 */
void rb_drainer_kick(struct rb_drainer *d)
{
	if (!__atomic_exchange_n(&d->requested, 1, __ATOMIC_SEQ_CST) &&
	    !__atomic_load_n(&d->awake, __ATOMIC_SEQ_CST))
		wake(d);
}

/*
 * Runs the drains already asked for, stops the thread, copies the final
 * counters to `out` (if not NULL) and frees `d`.
 */
void rb_drainer_stop(struct rb_drainer *d, struct rb_drainer_stats *out)
{
	__atomic_store_n(&d->stop, 1, __ATOMIC_SEQ_CST);
	wake(d);
	pthread_join(d->thread, NULL);
	if (out)
		*out = d->stats;
	close(d->efd);
	free(d);
}
