/* Sample types for the schema tests, compiled with clang -g -target bpf by the
 * `types_object` fixture: the tests read them back from real BTF. Global
 * pointers make clang emit the pointees' BTF without any program. */
#include <linux/types.h>

typedef __u32 u32_alias;
typedef const volatile u32_alias cv_u32;

enum op { OP_ADD = 1, OP_MUL = 2, OP_SET = 3 };
enum neg { NEG_MIN = -5, NEG_ZERO = 0 };
enum big64 { BIG64 = 0x100000000ULL };

struct inner {
	__u16 ops[3];
	__s8 delta;
};

struct hdr {
	__u8 version;
	struct inner in;
	__u64 seq;
};

/* Every supported kind, with padding, anonymous members and bitfields. */
struct every {
	__u8 u8;
	__s8 s8;
	__u16 u16;
	__s16 s16;
	__u32 u32;
	__s32 s32;
	__u64 u64;
	__s64 s64;
	_Bool flag;
	char c;
	cv_u32 cv;
	enum op op;
	enum neg neg;
	enum big64 big;
	float f32;
	double f64;
	char name[8];
	__u8 raw[4];
	__u16 grid[2][3];
	struct hdr hdr;
	struct inner list[2];
	struct {
		__u32 x;
		__u32 y;
	};
	union {
		__u32 a;
		float b;
		struct {
			__u16 lo;
			__u16 hi;
		};
	};
	union {
		__u64 bits;
		__u8 bytes[8];
	} u;
	__u32 bf_a : 3;
	__s32 bf_b : 5;
	enum op bf_op : 4;
	__u32 : 4;
	__u32 bf_c : 16;
	__u8 tail;
};

/* A union as the sample type itself. */
union msg {
	struct {
		__u32 slot;
		__s64 value;
	} set;
	__u64 word;
};

/* In the spirit of the upstream user_ringbuf selftests: an op and its operands. */
struct op_sample {
	enum op op;
	union {
		__s64 operand64;
		__s32 operand32;
	};
	char slot[16];
};

/* Only integers and a bool, with padding: what the native JSON scanner takes. */
struct flat {
	__u8 u8;
	__s16 s16;
	_Bool flag;
	__s32 s32;
	__u64 u64;
	char c;
	__s64 s64;
	__u32 u32;
	__s8 s8;
};

/* Names of 7 bytes and fewer (one 8-byte compare with the quote) and longer. */
struct named {
	__u32 seven77;
	__u16 eight888;
	__u8 x;
	__u64 a_member_name_longer_than_a_word;
	__s32 yy;
};

struct with_ptr { __u64 x; void *p; };
struct with_flex { __u32 n; __u32 items[]; };
typedef struct every every_t;

struct every *g_every;
union msg *g_msg;
struct op_sample *g_op;
struct flat *g_flat;
struct named *g_named;
struct with_ptr *g_ptr;
struct with_flex *g_flex;
every_t *g_every_t;
