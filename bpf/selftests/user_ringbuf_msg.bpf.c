// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * A test object in the style of the kernel's user_ringbuf selftests: the
 * message protocol case (ops on a kernel-side counter with 32- and 64-bit
 * operands in an anonymous union), drained on prctl(2) (upstream hooks it
 * with fentry; a raw tracepoint on sys_enter attaches on kernels without BPF
 * trampolines or kprobes too)
 * that a test triggers, echoing each result into a kernel ring buffer.
 *
 * Both ring maps are declared without max_entries, as upstream does: the
 * loader must size them (--ring-size, --map-size kernel_ringbuf=SIZE).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <asm/unistd.h>

char _license[] SEC("license") = "GPL";


enum test_msg_op {
	TEST_MSG_OP_INC64,
	TEST_MSG_OP_INC32,
	TEST_MSG_OP_MUL64,
	TEST_MSG_OP_MUL32,
	TEST_MSG_OP_NUM_OPS,
};

struct test_msg {
	enum test_msg_op msg_op;
	union {
		__s64 operand_64;
		__s32 operand_32;
	};
};

struct {
	__uint(type, BPF_MAP_TYPE_USER_RINGBUF);
} user_ringbuf SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
} kernel_ringbuf SEC(".maps");

__u64 kern_mutated;
__u64 msgs_read;
__u64 bad_msgs;
__s64 last_drain_ret;
/*
 * Built with -DTEST_MSG_VARIANT: the same maps and layouts, another program
 * (INC64 counts twice). The pin-safety tests start it against the pins of
 * the plain build: nothing but the code differs, so only an identity check
 * of the pins can tell.
 */
#ifdef TEST_MSG_VARIANT
#define INC64_SCALE 2
#else
#define INC64_SCALE 1
#endif

struct test_msg test_msg_btf_anchor SEC(".bss");

static void handle_msg(const struct test_msg *msg)
{
	switch (msg->msg_op) {
	case TEST_MSG_OP_INC64:
		kern_mutated += msg->operand_64 * INC64_SCALE;
		break;
	case TEST_MSG_OP_INC32:
		kern_mutated += msg->operand_32;
		break;
	case TEST_MSG_OP_MUL64:
		kern_mutated *= msg->operand_64;
		break;
	case TEST_MSG_OP_MUL32:
		kern_mutated *= msg->operand_32;
		break;
	default:
		bad_msgs++;
		return;
	}
	msgs_read++;
}

static long read_protocol_msg(struct bpf_dynptr *dynptr, void *context)
{
	const struct test_msg *msg;
	__u64 *echo;

	msg = bpf_dynptr_data(dynptr, 0, sizeof(*msg));
	if (!msg) {
		bad_msgs++;
		return 0;
	}
	handle_msg(msg);
	echo = bpf_ringbuf_reserve(&kernel_ringbuf, sizeof(*echo), 0);
	if (echo) {
		*echo = kern_mutated;
		bpf_ringbuf_submit(echo, 0);
	}
	return 0;
}

SEC("raw_tp/sys_enter")
int test_user_ringbuf_protocol(struct bpf_raw_tracepoint_args *ctx)
{
	if (ctx->args[1] != __NR_prctl)
		return 0;
	last_drain_ret = bpf_user_ringbuf_drain(&user_ringbuf, read_protocol_msg, NULL, 0);
	return 0;
}
