// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * ringbridge default consumer: drains the user ring buffer filled by the
 * ringbridge service and keeps per-CPU counters of what arrived.
 *
 * Drain triggers (chosen by the service at load, all programs always loaded):
 *   - timer:    ringbridge_arm_timer (SEC("syscall"), run through
 *               BPF_PROG_TEST_RUN) arms a bpf_timer that drains every
 *               ctl.period_ns while samples are left behind (every two
 *               while each drain empties the ring), backing off to
 *               ctl.idle_period_ns while the ring stays empty; the kernel
 *               consumes on its own. The producer runs the arm program
 *               again after each event-loop pass that committed while the
 *               timer backed off (idle_drains > 0): the next
 *               drain comes a period after the last one, at once if that
 *               is past, not two periods or a backed-off period later.
 *   - kick:     ringbridge_drain (SEC("syscall")) drains on demand.
 *   - external: nothing here runs; the user's own program drains.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "ringbridge.h"

#define CLOCK_MONOTONIC 1
#define EINVAL 22
#define E2BIG 7
#define EBUSY 16

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Since 6.4; counts payload bytes without probing the dynptr's size. */
extern __u32 bpf_dynptr_size(const struct bpf_dynptr *p) __ksym;
/*
 * Since 6.3. On the ring's read-only local dynptr it returns a pointer into
 * the sample itself (NULL when the sample is shorter than asked), so nothing
 * is copied: bpf_dynptr_read copied the header out, one helper call and
 * memcpy per sample, and the drain worker's time per 1000-sample batch fell
 * from 60-64 to 35-42 us without it (AMD EPYC VM, 2026-12-03).
 */
extern void *bpf_dynptr_slice(const struct bpf_dynptr *p, __u32 offset,
			      void *buffer__opt, __u32 buffer__szk) __ksym;

struct {
	__uint(type, BPF_MAP_TYPE_USER_RINGBUF);
	/* Default size; the service overrides it before load (--ring-size). */
	__uint(max_entries, 8 * 1024 * 1024);
} ringbridge_ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ringbridge_counters);
} ringbridge_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	/* mmapable so the producer flips producer_waiting without a syscall */
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct ringbridge_ctl);
} ringbridge_ctl SEC(".maps");

struct timer_elem {
	struct bpf_timer timer;
	/* When on_timer last drained (bpf_ktime_get_ns): a re-arm waits for a period after it. */
	__u64 last_drain_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct timer_elem);
} ringbridge_timer SEC(".maps");

/* The sample struct is referenced so that its BTF is always emitted. */
struct ringbridge_sample ringbridge_sample_btf_anchor SEC(".bss");

struct drain_ctx {
	struct ringbridge_counters *c;
	__u32 seen;
	__u32 budget;
};

/*
 * kind_value[kind] += value, carrying into kind_value_hi (see ringbridge.h).
 * Only the holder of the ring's busy bit runs this, and on this CPU's own
 * copy: one writer. The carry path is rare (once per 2^64 of a kind's sum on
 * a CPU) and fenced: the fetching add on carry_end is a full barrier (its
 * result is used, so it is BPF_FETCH: lock xadd on x86, ldaddal on arm64),
 * so a reader that sees the new lo/hi words sees the new carry_end; the
 * exchange on carry_begin (always fetching: xchg, swpal) orders the lo/hi
 * stores before it, so a reader that sees the new carry_begin sees them.
 */
static __always_inline void add_value(struct ringbridge_counters *c, __u32 kind,
				      __u64 value)
{
	__u64 sum = c->kind_value[kind] + value;
	__u64 started;

	if (sum >= value) {
		c->kind_value[kind] = sum;
		return;
	}
	started = __sync_fetch_and_add(&c->carry_end, 1) + 1;
	c->kind_value[kind] = sum;
	c->kind_value_hi[kind]++;
	__sync_lock_test_and_set(&c->carry_begin, started);
}

static long on_sample(struct bpf_dynptr *dynptr, void *ctx)
{
	struct drain_ctx *d = ctx;
	struct ringbridge_counters *c = d->c;
	const struct ringbridge_sample *s;

	/*
	 * Plain increments: only the holder of the ring's busy bit runs this
	 * callback, and the counters are per CPU.
	 */
	c->samples++;
	c->bytes += bpf_dynptr_size(dynptr);
	s = bpf_dynptr_slice(dynptr, 0, NULL, sizeof(*s));
	if (!s) {
		c->short_samples++;
	} else if (s->kind < RINGBRIDGE_MAX_KINDS) {
		c->kind_count[s->kind]++;
		add_value(c, s->kind, s->value);
	} else {
		c->kind_overflow++;
	}
	/* Returning 1 stops the drain: bounds the work of one call. */
	d->seen++;
	return d->seen >= d->budget;
}

static __u32 budget_of(const struct ringbridge_ctl *ctl)
{
	__u32 b = ctl->drain_budget;

	return b ? b : RINGBRIDGE_DEFAULT_BUDGET;
}

static void count_error(struct ringbridge_counters *c, long err)
{
	int idx = RINGBRIDGE_ERR_OTHER;

	if (err == -EINVAL)
		idx = RINGBRIDGE_ERR_EINVAL;
	else if (err == -E2BIG)
		idx = RINGBRIDGE_ERR_E2BIG;
	else if (err == -EBUSY)
		idx = RINGBRIDGE_ERR_EBUSY;
	/*
	 * Atomic: a timer drain (softirq) may interrupt a syscall-program
	 * drain on the same CPU between its load and store.
	 */
	__sync_fetch_and_add(&c->drain_errors[idx & 3], 1);
}

/* One bounded drain call; returns samples drained or a negative errno. */
static long drain_once(void)
{
	__u32 key = 0;
	struct ringbridge_counters *c;
	struct ringbridge_ctl *ctl;
	struct drain_ctx d = {};
	long n, m;

	c = bpf_map_lookup_elem(&ringbridge_counters, &key);
	ctl = bpf_map_lookup_elem(&ringbridge_ctl, &key);
	if (!c || !ctl)
		return 0;
	d.c = c;
	d.budget = budget_of(ctl);

	/*
	 * No wake-up by default: each one costs ~6.6 us of irq_work and is
	 * wasted when no producer sleeps.
	 */
	n = bpf_user_ringbuf_drain(&ringbridge_ring, on_sample, &d, BPF_RB_NO_WAKEUP);
	__sync_fetch_and_add(&c->drain_calls, 1);
	if (n < 0) {
		count_error(c, n);
		return n;
	}
	/*
	 * Dekker handshake with the producer: the drain published consumer_pos
	 * (smp_store_release in __bpf_user_ringbuf_sample_release); this
	 * fetching atomic is a full barrier, so either we see producer_waiting
	 * set here, or the producer's re-check after setting it (seq_cst
	 * exchange, then acquire load of consumer_pos) sees the space we freed.
	 */
	if (n > 0 && __sync_fetch_and_add(&ctl->producer_waiting, 0)) {
		d.seen = 0;
		d.budget = 1;
		m = bpf_user_ringbuf_drain(&ringbridge_ring, on_sample, &d,
					   BPF_RB_FORCE_WAKEUP);
		__sync_fetch_and_add(&c->drain_calls, 1);
		if (m > 0)
			n += m;
		else if (m < 0)
			count_error(c, m);
	}
	return n;
}

struct kick_ctx {
	long total;
	long err;
	__u32 budget;
};

static long kick_step(__u32 i, void *ctx)
{
	struct kick_ctx *k = ctx;
	long n = drain_once();

	if (n < 0) {
		k->err = n;
		return 1;
	}
	k->total += n;
	/* A short drain means the ring is empty: stop. */
	return n < k->budget;
}

/*
 * On-demand drain: drains until the ring is empty, at most
 * RINGBRIDGE_KICK_MAX_CALLS bounded calls. Returns samples drained, or a
 * negative errno when the first call failed.
 */
SEC("syscall")
int ringbridge_drain(void *ctx)
{
	__u32 key = 0;
	struct ringbridge_ctl *ctl = bpf_map_lookup_elem(&ringbridge_ctl, &key);
	struct kick_ctx k = {};

	if (!ctl)
		return 0;
	k.budget = budget_of(ctl);
	bpf_loop(RINGBRIDGE_KICK_MAX_CALLS, kick_step, &k, 0);
	if (k.err && !k.total)
		return k.err;
	return k.total;
}

static __u64 period_of(const struct ringbridge_ctl *ctl)
{
	if (!ctl || !ctl->period_ns)
		return RINGBRIDGE_DEFAULT_PERIOD_NS;
	return ctl->period_ns;
}

static __u64 idle_period_of(const struct ringbridge_ctl *ctl, __u64 period)
{
	__u64 idle = ctl->idle_period_ns ? ctl->idle_period_ns : RINGBRIDGE_DEFAULT_IDLE_PERIOD_NS;

	return idle > period ? idle : period;
}

/*
 * Periodic drain with back-off. A drain that stopped at its budget left
 * samples behind: the next one comes after the base period. One that
 * emptied the ring leaves nothing pending: the next comes after two (one
 * step of back-off, idle_drains 1), unless a commit re-arms it first (one
 * period after this drain; ringbridge_arm_timer): a timer that finds the
 * ring empty costs an interrupt for nothing, on a virtual machine a VM exit
 * or more. After each empty drain (or a failing one: a poisoned ring must
 * not spin) the period doubles again, up to idle_period_ns.
 */
static int on_timer(void *map, int *key, struct timer_elem *elem)
{
	__u32 k = 0;
	struct ringbridge_ctl *ctl = bpf_map_lookup_elem(&ringbridge_ctl, &k);
	__u64 period, next, idle_max;
	__u32 idle, to;
	long n;

	elem->last_drain_ns = bpf_ktime_get_ns();
	n = drain_once();
	period = period_of(ctl);
	if (!ctl) {
		bpf_timer_start(&elem->timer, period, 0);
		return 0;
	}
	idle = __sync_fetch_and_add(&ctl->idle_drains, 0);
	next = period;
	idle_max = idle_period_of(ctl, period);
	if (n > 0) {
		to = n < budget_of(ctl) ? 1 : 0; /* 0: stopped at its budget */
		/* Fails when ringbridge_arm_timer reset it meanwhile: stay at the base period. */
		if (idle != to && __sync_val_compare_and_swap(&ctl->idle_drains, idle, to) != idle)
			to = 0;
		if (to)
			next = idle_max >> 1 < period ? idle_max : period << 1;
	} else if (idle < 63) {
		/* Fails when ringbridge_arm_timer reset it meanwhile: stay at the base period. */
		if (__sync_val_compare_and_swap(&ctl->idle_drains, idle, idle + 1) == idle)
			next = idle_max >> idle < period ? idle_max : period << idle;
	} else {
		next = idle_max;
	}
	bpf_timer_start(&elem->timer, next, 0);
	/*
	 * A producer re-arm between our update and our start was overridden by
	 * the start above; it reset idle_drains, so restart at the base period.
	 */
	if (next > period && !__sync_fetch_and_add(&ctl->idle_drains, 0))
		bpf_timer_start(&elem->timer, period, 0);
	return 0;
}

/*
 * Arms (or re-arms with a new period) the periodic drain timer, and resets
 * its back-off. It fires a base period after its last drain -- at once if
 * that is past -- then every period (see on_timer). The producer runs this
 * after each event-loop pass that committed: with batches a period apart or
 * more (one request in flight), the drain follows the pass's acks on that
 * CPU, between requests, where a free-running timer would land on the next
 * request and its softirq delay that request's ack (README, "Benchmark");
 * and the period still bounds how often the timer drains.
 */
SEC("syscall")
int ringbridge_arm_timer(void *ctx)
{
	__u32 key = 0;
	struct timer_elem *elem = bpf_map_lookup_elem(&ringbridge_timer, &key);
	struct ringbridge_ctl *ctl = bpf_map_lookup_elem(&ringbridge_ctl, &key);
	__u64 now = bpf_ktime_get_ns(), due;
	long err;

	if (!elem)
		return -EINVAL;
	due = elem->last_drain_ns + period_of(ctl);
	err = bpf_timer_init(&elem->timer, &ringbridge_timer, CLOCK_MONOTONIC);
	/* -EBUSY: already initialised by an earlier run; re-arm it. */
	if (err && err != -EBUSY)
		return err;
	err = bpf_timer_set_callback(&elem->timer, on_timer);
	if (err)
		return err;
	if (ctl)
		__sync_lock_test_and_set(&ctl->idle_drains, 0);
	return bpf_timer_start(&elem->timer, due > now ? due - now : 0, 0);
}

/* Stops the periodic drain (the timer stays initialised). */
SEC("syscall")
int ringbridge_disarm_timer(void *ctx)
{
	__u32 key = 0;
	struct timer_elem *elem = bpf_map_lookup_elem(&ringbridge_timer, &key);

	if (!elem)
		return -EINVAL;
	return bpf_timer_cancel(&elem->timer);
}
