/*
 * Every way a header defines (or only mentions) a type, for the header
 * compiler's tests. Uses __u32 and friends without including <linux/types.h>,
 * like headers written for BPF programs.
 */
#ifndef WIRE_KINDS_H
#define WIRE_KINDS_H

#include "wire_common.h"

enum wire_op { WIRE_NOP, WIRE_SET = 5, WIRE_NEG = -1 };

enum { WIRE_ANON_CONST = 3 };	/* no type name: nothing to anchor */

struct wire_msg {
	struct common_hdr hdr;
	enum wire_op op;
	union {
		__s64 i64;
		__u8 raw[8];
	};
	struct wire_inner {	/* C gives it file scope */
		__u32 a, b;
	} inner;
};

union wire_value {
	__u64 u;
	__s32 s;
};

typedef struct {
	__u32 id;
	char name[12];
} wire_anon_t;

typedef __u32 wire_id_t;
typedef int wire_fn_t(int);
typedef struct wire_opaque wire_opaque_t;	/* incomplete: only a pointer can name it */

struct wire_forward;	/* declared, never defined */

#define WIRE_PAIR(name, type) struct name { type first, second; }
WIRE_PAIR(wire_pair, __u16);

static inline int wire_helper(int x)
{
	struct wire_local { int y; } l = { x };	/* block scope: not anchorable */

	return l.y;
}

#endif
