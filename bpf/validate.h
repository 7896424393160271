/* SPDX-License-Identifier: Apache-2.0 */
/* The binary batch validator's verdicts and result (validate.c), shared with
 * the WebSocket frame scanner (wsunmask.c) that calls it per frame. */
#ifndef RB_VALIDATE_H
#define RB_VALIDATE_H

#include <stddef.h>
#include <stdint.h>

#define RB_HDR_SIZE 8u
#define RB_BUSY_BIT (1u << 31)
#define RB_DISCARD_BIT (1u << 30)

enum rb_verdict {
	RB_OK = 0,
	RB_EMPTY = 1,
	RB_BATCH_TOO_LARGE = 3,
	RB_TRUNCATED_HEADER = 4,
	RB_FLAG_BITS = 5,
	RB_PAD_WORD = 6,
	RB_RECORD_TOO_LARGE = 7,
	RB_OVERRUN = 8,
	RB_PADDING = 9,
};

/* Filled on success (count, payload_bytes) and on rejection (index, word). */
struct rb_batch_result {
	uint64_t count;
	uint64_t payload_bytes;
	int64_t index; /* first bad record, -1 for whole-batch verdicts */
	uint32_t word; /* that record's header length word */
	uint32_t _reserved;
};

int rb_validate_batch(const uint8_t *buf, size_t len, uint64_t ring_size,
		      uint64_t max_sample_len, struct rb_batch_result *out);

#endif
