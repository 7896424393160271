/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Wire and map layouts shared by the BPF consumer (ringbridge.bpf.c), the
 * in-process C producer used by the benchmark, and the Python service (which
 * reads the same layouts from the object's BTF rather than copying them).
 *
 * Everything here is little-endian on the hosts we run on and naturally
 * aligned, so the layout is identical in BPF and in user space.
 */
#ifndef RINGBRIDGE_H
#define RINGBRIDGE_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Number of distinct `kind` values with their own count and value sum. */
#define RINGBRIDGE_MAX_KINDS 256

/*
 * One sample as the default consumer reads it. A record shorter than this
 * struct is counted in `short_samples`; bytes after it are opaque payload.
 */
struct ringbridge_sample {
	__u32 kind;
	__u32 flags;
	__u64 value;
};

/* Index into ringbridge_counters.drain_errors, by what the drain returned. */
enum ringbridge_drain_error {
	RINGBRIDGE_ERR_EINVAL = 0, /* malformed ring: producer bug, ring is poisoned */
	RINGBRIDGE_ERR_E2BIG = 1,  /* record larger than the ring or the dynptr limit */
	RINGBRIDGE_ERR_EBUSY = 2,  /* another drain was running on the same ring */
	RINGBRIDGE_ERR_OTHER = 3,
	RINGBRIDGE_ERR_MAX = 4,
};

/*
 * Value of the single-entry per-CPU array `ringbridge_counters`.
 *
 * A kind's `value` sum on one CPU is the 128-bit number
 * kind_value_hi[k] * 2^64 + kind_value[k]: a sum of u64 values passes 2^64
 * (and a Prometheus counter must never go backwards). The carry is taken on
 * each CPU's own words, where it can be seen (lo + v < v); user space adds
 * the CPUs' 128-bit sums. A carry changes two words, so it is bracketed by
 * carry_end (bumped first) and carry_begin (set to the same count last): a
 * reader, which copies the value from low to high addresses, took a
 * consistent copy of this CPU when carry_begin == carry_end, and reads again
 * otherwise. Every other change is to one word, which a reader sees old or
 * new but never torn.
 */
struct ringbridge_counters {
	__u64 samples;       /* records handed to the callback */
	__u64 bytes;         /* their payload bytes */
	__u64 drain_calls;   /* bpf_user_ringbuf_drain() calls */
	__u64 drain_errors[RINGBRIDGE_ERR_MAX];
	__u64 short_samples; /* records shorter than struct ringbridge_sample */
	__u64 kind_overflow; /* samples whose kind >= RINGBRIDGE_MAX_KINDS */
	__u64 carry_begin;   /* carries completed on this CPU (written last) */
	__u64 kind_count[RINGBRIDGE_MAX_KINDS];
	__u64 kind_value[RINGBRIDGE_MAX_KINDS];    /* low 64 bits of the sum */
	__u64 kind_value_hi[RINGBRIDGE_MAX_KINDS]; /* carries out of kind_value */
	__u64 carry_end;     /* carries started on this CPU (written first) */
};

/*
 * Value of the single-entry, mmapable array `ringbridge_ctl`: the handshake
 * between the user-space producer and the kernel consumer.
 */
struct ringbridge_ctl {
	/*
	 * Set (non-zero) by the producer before it sleeps waiting for space;
	 * the consumer asks for a wake-up only while it is set, so an idle or
	 * fast producer does not pay ~6.6 us of irq_work per drain.
	 */
	__u32 producer_waiting;
	/* Max samples per bpf_user_ringbuf_drain() call (0 = default). */
	__u32 drain_budget;
	/* Timer period in ns for the timer trigger (0 = default). */
	__u64 period_ns;
	/*
	 * The service's sequence number of the next sample, stored before each
	 * commit: kept with the pins, so seqs stay unique across restarts.
	 * Not read by BPF.
	 */
	__u64 next_seq;
	/*
	 * Timer trigger only. Drains in a row that found the ring empty: set by
	 * the timer, reset to 0 by ringbridge_arm_timer. While the ring stays
	 * empty the period doubles with each such drain, up to idle_period_ns,
	 * so an idle service costs a few wake-ups a second; the producer re-arms
	 * the timer (its next drain a period after its last) after each
	 * event-loop pass that committed.
	 */
	__u32 idle_drains;
	__u32 _reserved;
	/* Longest timer period while the ring stays empty, ns (0 = default). */
	__u64 idle_period_ns;
};

#define RINGBRIDGE_DEFAULT_BUDGET 4096
#define RINGBRIDGE_DEFAULT_PERIOD_NS 100000ULL
#define RINGBRIDGE_DEFAULT_IDLE_PERIOD_NS 100000000ULL
/* Upper bound of drain calls one run of the on-demand drain program makes. */
#define RINGBRIDGE_KICK_MAX_CALLS 256

#endif /* RINGBRIDGE_H */
