// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Example consumer for "bring your own program": a tiny message protocol that
 * mutates kernel state. Each sample is one `struct ops_msg`:
 *
 *   OPS_ADD  acc += add
 *   OPS_MUL  acc *= mul
 *   OPS_SET  slots[set.name] = set.value  (a named slot in a hash map)
 *
 * Results live where a test (or Prometheus, through --export-map and the
 * global-variable export) can read them exactly: the globals `acc`,
 * `ops_applied` and `ops_rejected`, the hash map `slots` and the per-CPU
 * array `op_stats` keyed by the op enum.
 *
 * Two ways to drain, both in this object:
 *   - ops_on_getpgid attaches on its own (raw tracepoint sys_enter, which
 *     needs neither tracefs nor kprobes): any getpgid(2) call drains the
 *     ring (run with --drain external);
 *   - ops_drain is a SEC("syscall") program the service runs on demand
 *     (--drain kick --drain-program ops_drain).
 *
 * The maps are left at max_entries 0 on purpose: the service sizes them
 * before load (--ring-size for the ring, --map-size slots=N for the hash).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <asm/unistd.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";


enum ops_op {
	OPS_ADD = 0,
	OPS_MUL = 1,
	OPS_SET = 2,
	OPS_NR_OPS,
};

#define OPS_NAME_LEN 16

struct ops_slot_key {
	char name[OPS_NAME_LEN];
};

struct ops_msg {
	enum ops_op op;
	__u32 tag; /* opaque to the kernel: echoed into last_tag */
	union {
		__s64 add;
		__s64 mul;
		struct {
			char name[OPS_NAME_LEN];
			__u64 value;
		} set;
	};
};

struct ops_stat {
	__u64 count;
	__s64 operand_sum;
};

struct {
	__uint(type, BPF_MAP_TYPE_USER_RINGBUF);
} ops_ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct ops_slot_key);
	__type(value, __u64);
} slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, OPS_NR_OPS);
	__type(key, __u32); /* an enum ops_op; array keys must be u32 in BTF */
	__type(value, struct ops_stat);
} op_stats SEC(".maps");

/* .data: starts at 1 so that a first OPS_MUL is meaningful. */
__s64 acc = 1;
/* .bss */
__u64 ops_applied;
__u64 ops_rejected;
__u32 last_tag;
/* .rodata */
const volatile __u32 ops_abi_version = 1;

/* Referenced so that clang emits its BTF (--sample-type ops_msg). */
struct ops_msg ops_msg_btf_anchor SEC(".bss");

static long apply(struct bpf_dynptr *dynptr, void *ctx)
{
	struct ops_msg msg;
	struct ops_slot_key key = {};
	struct ops_stat *st;
	__u32 op;

	if (bpf_dynptr_read(&msg, sizeof(msg), dynptr, 0, 0)) {
		ops_rejected++;
		return 0;
	}
	op = msg.op;
	st = bpf_map_lookup_elem(&op_stats, &op);
	switch (msg.op) {
	case OPS_ADD:
		acc += msg.add;
		if (st)
			st->operand_sum += msg.add;
		break;
	case OPS_MUL:
		acc *= msg.mul;
		if (st)
			st->operand_sum += msg.mul;
		break;
	case OPS_SET:
		__builtin_memcpy(key.name, msg.set.name, sizeof(key.name));
		if (bpf_map_update_elem(&slots, &key, &msg.set.value, BPF_ANY)) {
			ops_rejected++;
			return 0;
		}
		if (st)
			st->operand_sum += msg.set.value;
		break;
	default:
		ops_rejected++;
		return 0;
	}
	if (st)
		st->count++;
	last_tag = msg.tag;
	ops_applied++;
	return 0;
}

static long drain(void)
{
	/* Ops are applied in ring order: ADD then MUL differs from MUL then ADD. */
	return bpf_user_ringbuf_drain(&ops_ring, apply, NULL, 0);
}

/* Runs on every syscall entry: one compare, then out unless it is getpgid(2). */
SEC("raw_tp/sys_enter")
int ops_on_getpgid(struct bpf_raw_tracepoint_args *ctx)
{
	if (ctx->args[1] == __NR_getpgid)
		drain();
	return 0;
}

SEC("syscall")
int ops_drain(void *ctx)
{
	return drain();
}
