// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Two user ring buffers and a raw tracepoint program that is not a drain:
 * the object the ring/drain selection tests refuse without --ring-map. Also
 * the "other loader's" object of the --ring-pin tests (bpftool loads and
 * pins it), with a sample type in its BTF.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char _license[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_USER_RINGBUF);
	__uint(max_entries, 64 * 1024);
} ring_a SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_USER_RINGBUF);
	__uint(max_entries, 64 * 1024);
} ring_b SEC(".maps");

struct pinned_sample {
	__u32 id;
	__s16 delta;
	char name[6];
};

struct pinned_sample pinned_sample_btf_anchor;

static long count(struct bpf_dynptr *dynptr, void *ctx)
{
	return 0;
}

SEC("syscall")
int drain_a(void *ctx)
{
	return bpf_user_ringbuf_drain(&ring_a, count, NULL, 0);
}

SEC("raw_tp/sys_enter")
int not_a_drain(void *ctx)
{
	return 0;
}
