// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * A consumer in the style of the kernel's progs/user_ringbuf_success.c, for
 * the producer conformance tests of the public library (ringbridge.ring):
 * loaded and pinned by bpftool, never by ringbridge.
 *
 * Upstream drains from an fentry hook on prlimit64(2) that the test
 * triggers; fentry does not load on every kernel (EPERM on these VMs), so
 * the drain here is a SEC("syscall") program the test runs through
 * BPF_PROG_TEST_RUN. Its return value is bpf_user_ringbuf_drain()'s: the
 * samples drained, or -errno of a malformed ring.
 *
 * The ring is declared without max_entries, as upstream does: the test
 * creates it (bpftool map create) at the size it needs and loads the program
 * against it (bpftool prog loadall ... map name user_ringbuf pinned PATH).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char _license[] SEC("license") = "GPL";

/* Since 6.4: the payload length of the sample behind a dynptr. */
extern __u32 bpf_dynptr_size(const struct bpf_dynptr *p) __ksym;

#define MAX_KINDS 256
#define MAX_ERRNO 128

struct sample {
	__u32 kind;
	__u32 flags;
	__u64 value;
};

struct {
	__uint(type, BPF_MAP_TYPE_USER_RINGBUF);
} user_ringbuf SEC(".maps");

/* outputs, read by the test from the pinned .bss map */
__u64 read;
__u64 bytes;
__u64 short_samples;
__u64 kind_overflow;
__u64 kind_count[MAX_KINDS];
__u64 kind_value[MAX_KINDS];
__u64 drain_calls;
/* failed drains by errno (-return value of bpf_user_ringbuf_drain) */
__u64 drain_errors[MAX_ERRNO];

struct sample sample_btf_anchor;

static long record_sample(struct bpf_dynptr *dynptr, void *context)
{
	struct sample s;

	read++;
	bytes += bpf_dynptr_size(dynptr);
	if (bpf_dynptr_read(&s, sizeof(s), dynptr, 0, 0)) {
		short_samples++;
	} else if (s.kind < MAX_KINDS) {
		kind_count[s.kind]++;
		kind_value[s.kind] += s.value;
	} else {
		kind_overflow++;
	}
	return 0;
}

SEC("syscall")
int test_user_ringbuf_drain(void *ctx)
{
	long ret = bpf_user_ringbuf_drain(&user_ringbuf, record_sample, NULL, 0);

	drain_calls++;
	if (ret < 0 && -ret < MAX_ERRNO)
		drain_errors[-ret]++;
	return ret;
}
