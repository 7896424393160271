// SPDX-License-Identifier: Apache-2.0
/*
 * The few memory-ordering primitives the Python producer needs on the mmapped
 * user ring buffer. Python has no release/acquire accesses; on x86-64 (TSO)
 * plain stores would happen to be ordered, on arm64 they are not, so every
 * ordering point of the producer goes through one of these calls.
 *
 * Kernel counterparts (kernel/bpf/ringbuf.c, __bpf_user_ringbuf_peek and
 * __bpf_user_ringbuf_sample_release) are named at each function.
 */
#include <stdint.h>

/*
 * Publish producer_pos. Pairs with smp_load_acquire(&rb->producer_pos) in
 * __bpf_user_ringbuf_peek(): every header and payload byte written before
 * this call is visible to the kernel once it sees the new position.
 * (x86-64: plain mov; arm64: stlr.)
 */
void rb_store_release_u64(uint64_t *p, uint64_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/*
 * Read consumer_pos. Pairs with smp_store_release(&rb->consumer_pos) in
 * __bpf_user_ringbuf_sample_release(): the kernel is done reading the space
 * before we reuse it. (x86-64: mov; arm64: ldar.)
 */
uint64_t rb_load_acquire_u64(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

/*
 * Write a record header in place (clearing BUSY on submit). Pairs with
 * smp_load_acquire(hdr) in __bpf_user_ringbuf_peek().
 */
void rb_store_release_u32(uint32_t *p, uint32_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELEASE);
}

uint32_t rb_load_acquire_u32(const uint32_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

/*
 * Set ringbridge_ctl.producer_waiting with a full barrier, so that the
 * following consumer_pos load cannot be satisfied before the flag is visible
 * (store-load order, which even x86 does not give for plain accesses). Pairs
 * with the fetching atomic on the flag in the BPF consumer after its drain.
 */
uint32_t rb_xchg_u32(uint32_t *p, uint32_t v)
{
	return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);
}

/*
 * Full barrier between the consumer's consumer_pos store and its following
 * re-read of producer_pos (or of a BUSY header), on a kernel ring buffer
 * (BPF_MAP_TYPE_RINGBUF). The kernel wakes the consumer only for a record
 * committed at consumer_pos (bpf_ringbuf_commit: xchg on the header, then
 * smp_load_acquire(&rb->consumer_pos)); without store-load order here both
 * sides could read the other's old value and the wake-up would be lost.
 * (x86-64: mfence or a locked op; arm64: dmb ish.)
 */
void rb_fence_seq_cst(void)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}
