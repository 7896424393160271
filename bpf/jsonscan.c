// SPDX-License-Identifier: Apache-2.0
/*
 * Typed JSON batches -> ring records in one pass, driven by a table the BTF
 * schema compiler emits (service/schema/jsonscan.py).
 *
 * Accept-only: it accepts a strict subset of what the exact path
 * (msgspec typed decode + pack, service/schema/jsoncodec.py) accepts, and for
 * those bodies writes byte for byte the records the exact path would; on
 * anything else it gives up (RB_SCAN_GIVE_UP) and the caller runs the exact
 * path, which accepts or names the error with its index and path. A
 * hypothesis test holds the two to that (tests/schema/test_jsonscan.py).
 *
 * What it accepts:
 *   {"samples": [S, ...]}                 a body (frame = 0)
 *   {"id": ID, "samples": [S, ...]}       a text frame (frame = 1; any order,
 *                                          id optional)
 *   S = {"member": value, ...}            members of the table, each at most
 *                                          once, any order; missing ones 0
 *   value: an integer literal in the member's C range (no fraction or
 *          exponent, no "-0", no leading zeros), or true/false for a bool
 *          member
 *   ID: an integer literal of at most 18 digits, true, false, null, or a
 *       string of printable ASCII without escapes (the caller decodes its span)
 *   whitespace: space, tab, CR, LF (JSON's four)
 * Everything else gives up: keys with escapes or unknown to the table (a
 * "data" sample too), repeated keys, floats, strings as values, empty
 * batches, more than max_samples samples, records beyond the output's room.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum {
	RB_SCAN_OK = 0,
	RB_SCAN_GIVE_UP = 1,
	RB_SCAN_NO_ROOM = 2, /* accepted so far, but the records need more than cap */
};

enum { RB_FIELD_UNSIGNED = 0, RB_FIELD_SIGNED = 1, RB_FIELD_BOOL = 2 };

/* One member of the sample struct: its key and where and how it is stored. */
struct rb_scan_field {
	uint32_t name_off; /* into rb_scan_layout.names */
	uint32_t name_len;
	uint32_t offset; /* in the sample */
	uint8_t size;    /* 1, 2, 4 or 8 */
	uint8_t kind;    /* RB_FIELD_* */
	uint16_t _pad;
};

struct rb_scan_layout {
	const struct rb_scan_field *fields;
	const char *names;
	uint32_t nfields; /* at most 64 */
	uint32_t sample_size;
	uint32_t record_size; /* 8-byte header + sample + padding to 8 */
	uint32_t _pad;
};

struct rb_scan_result {
	uint64_t count;
	uint64_t id_start; /* [id_start, id_end): the frame id's value, or 0, 0 */
	uint64_t id_end;
	uint64_t stop; /* where it gave up (a diagnostic) */
};

struct cur {
	const char *p, *e;
};

static inline void skip_ws(struct cur *c)
{
	/* Every byte that matters here ('"', '{', ':', digits...) is above ' '. */
	while (c->p < c->e && (unsigned char)*c->p <= ' ' &&
	       (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t'))
		c->p++;
}

static inline int eat(struct cur *c, char ch)
{
	skip_ws(c);
	if (c->p < c->e && *c->p == ch) {
		c->p++;
		return 1;
	}
	return 0;
}

static inline int is_digit(char ch)
{
	return ch >= '0' && ch <= '9';
}

/* The rest of a string after its opening '"', up to and past the closing one:
 * plain printable ASCII only. An escape or a control byte is refused here, not
 * decoded: the exact Python path then names the error (the scanner only accepts). */
static int plain_string_rest(struct cur *c)
{
	while (c->p < c->e && *c->p != '"') {
		unsigned char ch = (unsigned char)*c->p;

		if (ch == '\\' || ch < 0x20 || ch >= 0x7f)
			return -1;
		c->p++;
	}
	if (c->p >= c->e)
		return -1;
	c->p++;
	return 0;
}

/* A key: '"' plain bytes '"' (no escapes, no control bytes); its span. */
static int key(struct cur *c, const char **k, uint32_t *len)
{
	const char *p;

	skip_ws(c);
	if (c->p >= c->e || *c->p != '"')
		return -1;
	p = ++c->p;
	if (plain_string_rest(c))
		return -1;
	*k = p;
	*len = (uint32_t)(c->p - p - 1);
	return 0;
}

/*
 * Byte i of the result is zero iff byte i of w is a decimal digit, without a
 * branch per digit: short numbers of varying length made a per-digit loop
 * mispredict its exit at every value. A byte is a digit iff its high nibble
 * is 3 and adding 6 keeps it so ('0'..'9' = 0x30..0x39); a carry out of a
 * byte (>= 0xfa) lands only in bytes past the first non-digit, so the
 * result is exact up to and including that one.
 */
static inline uint64_t nondigits(uint64_t w)
{
	return ((w & 0xF0F0F0F0F0F0F0F0ULL) | (((w + 0x0606060606060606ULL) & 0xF0F0F0F0F0F0F0F0ULL) >> 4)) ^
	       0x3333333333333333ULL;
}

/* The value of the n (1..8) digits in the low bytes of w (first digit lowest:
 * little endian): moved to the top of the word, combined pairwise (x10,
 * x100, x10000 per lane). */
static inline uint64_t digits_value(uint64_t w, unsigned n)
{
	w = (w & 0x0F0F0F0F0F0F0F0FULL) << (8 * (8 - n));
	w = (w * 2561) >> 8;
	w = ((w & 0x00FF00FF00FF00FFULL) * 6553601) >> 16;
	return ((w & 0x0000FFFF0000FFFFULL) * 42949672960001ULL) >> 32;
}

/* The value of the leading decimal digits in the 8 bytes at p, and how many
 * there are (0..8). */
static inline uint64_t eight_digits(const char *p, unsigned *len)
{
	uint64_t w, t;

	memcpy(&w, p, 8);
	t = nondigits(w);
	*len = t ? (unsigned)__builtin_ctzll(t) >> 3 : 8;
	return *len ? digits_value(w, *len) : 0;
}

/* An integer literal: its sign and magnitude (which fits a u64). */
static inline __attribute__((always_inline)) int integer(struct cur *c, int *neg, uint64_t *mag)
{
	/* A local cursor: stores through c would be redone at every digit. */
	const char *p = c->p, *e = c->e;
	uint64_t v = 0;

	*neg = 0;
	if (p < e && *p == '-') {
		*neg = 1;
		p++;
	}
	if (p >= e || !is_digit(*p))
		return -1;
	if (*p == '0') {
		p++;
		if (*neg)
			return -1; /* "-0": left to the exact path */
	} else {
		/*
		 * Any 19 digits fit a u64 (10^19 - 1 < 2^64), so only a 20th is
		 * checked for overflow, not every digit. A 21st is caught below.
		 */
		const char *most = e - p > 19 ? p + 19 : e;

		if (e - p >= 8) {
			unsigned len;

			v = eight_digits(p, &len);
			p += len;
		}
		while (p < most && is_digit(*p))
			v = v * 10 + (uint64_t)(*p++ - '0');
		if (p < e && is_digit(*p)) {
			uint64_t d = (uint64_t)(*p - '0');

			if (v > (UINT64_MAX - d) / 10)
				return -1; /* past u64: out of every member's range */
			v = v * 10 + d;
			p++;
		}
	}
	/* A fraction, an exponent or a leading zero ("01"): not ours. */
	if (p < e && (*p == '.' || *p == 'e' || *p == 'E' || is_digit(*p)))
		return -1;
	c->p = p;
	*mag = v;
	return 0;
}

static int literal(struct cur *c, const char *word, size_t n)
{
	if ((size_t)(c->e - c->p) < n || memcmp(c->p, word, n))
		return -1;
	c->p += n;
	return 0;
}

static inline void store_le(uint8_t *dst, uint64_t v, unsigned size)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	for (unsigned i = 0; i < size; i++)
		dst[i] = (uint8_t)(v >> (8 * i));
#else
	switch (size) {
	case 1: { uint8_t x = (uint8_t)v; memcpy(dst, &x, 1); break; }
	case 2: { uint16_t x = (uint16_t)v; memcpy(dst, &x, 2); break; }
	case 4: { uint32_t x = (uint32_t)v; memcpy(dst, &x, 4); break; }
	default: memcpy(dst, &v, 8);
	}
#endif
}

/* The largest value a member takes (its negative ones go one further when signed). */
static inline uint64_t field_max(const struct rb_scan_field *f)
{
	if (f->kind == RB_FIELD_SIGNED)
		return f->size == 8 ? (uint64_t)INT64_MAX : (1ULL << (8 * f->size - 1)) - 1;
	return f->size == 8 ? UINT64_MAX : (1ULL << (8 * f->size)) - 1;
}

/* Inlined into the shape match and the general parse: a call there cost 6% of
 * the scan (19.5 against 20.8 us for the 1000 x 16 B body). */
static inline __attribute__((always_inline)) int value(struct cur *c, const struct rb_scan_field *f,
						   uint8_t *dst)
{
	int neg;
	uint64_t mag, lim;

	skip_ws(c);
	if (f->kind == RB_FIELD_BOOL) {
		if (c->p < c->e && *c->p == 't') {
			if (literal(c, "true", 4))
				return -1;
			dst[0] = 1;
			return 0;
		}
		return literal(c, "false", 5); /* the record is zeroed */
	}
	if (integer(c, &neg, &mag))
		return -1;
	lim = field_max(f);
	if (f->kind == RB_FIELD_SIGNED) {
		if (neg ? mag > lim + 1 : mag > lim)
			return -1;
		store_le(dst, neg ? (uint64_t)0 - mag : mag, f->size);
		return 0;
	}
	if (neg)
		return -1; /* a negative magnitude (not 0: "-0" gave up already) */
	if (mag > lim)
		return -1;
	store_le(dst, mag, f->size);
	return 0;
}

static inline int same(const char *a, const char *b, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (a[i] != b[i])
			return 0;
	return 1;
}

/*
 * A member's name and closing quote as one 8-byte word and the mask of its
 * bytes (mask 0: the name is longer than 7 bytes), so that the expected key
 * is recognised with one load and compare instead of a loop over its bytes.
 */
struct key8 {
	uint64_t word, mask;
};

/* The layout and the key words of its members (built once per scan). */
struct scan {
	const struct rb_scan_layout *L;
	struct key8 k8[64];
};

static void scan_init(struct scan *S, const struct rb_scan_layout *L)
{
	S->L = L;
	for (uint32_t i = 0; i < L->nfields; i++) {
		const struct rb_scan_field *f = &L->fields[i];
		uint8_t w[8] = { 0 }, m[8] = { 0 };

		S->k8[i].word = S->k8[i].mask = 0;
		if (f->name_len + 1 > 8)
			continue;
		memcpy(w, L->names + f->name_off, f->name_len);
		w[f->name_len] = '"';
		memset(m, 0xff, f->name_len + 1);
		memcpy(&S->k8[i].word, w, 8); /* byte order: the same as the loads' */
		memcpy(&S->k8[i].mask, m, 8);
	}
}

/*
 * The member whose key starts at c->p (after the opening quote was seen).
 * Members usually come in the same order, so the one after the last is
 * tried first, by comparing its name and closing quote in place (a table
 * name holds no quote or backslash, so a match is that very key).
 */
static const struct rb_scan_field *member(struct cur *c, const struct scan *S, uint32_t hint)
{
	const struct rb_scan_layout *L = S->L;
	const struct rb_scan_field *f = &L->fields[hint];
	const struct key8 *k8 = &S->k8[hint];
	const char *k;
	uint32_t len;

	if (k8->mask && c->e - c->p >= 8) {
		uint64_t w;

		memcpy(&w, c->p, 8);
		if (!((w ^ k8->word) & k8->mask)) {
			c->p += f->name_len + 1;
			return f;
		}
	} else if ((size_t)(c->e - c->p) > f->name_len && c->p[f->name_len] == '"' &&
		   same(c->p, L->names + f->name_off, f->name_len)) {
		c->p += f->name_len + 1;
		return f;
	}
	c->p--; /* back to the quote: key() reads the whole key */
	if (key(c, &k, &len))
		return NULL;
	for (uint32_t i = 0; i < L->nfields; i++) {
		f = &L->fields[i];
		if (f->name_len == len && same(L->names + f->name_off, k, len))
			return f;
	}
	return NULL;
}

/*
 * A sample's shape: its members in order and the exact bytes around its values
 * (the gaps: '{', keys, ':', ',', whitespace and '}'). An encoder writes every
 * sample of a batch alike, so a sample is first matched against the shape of
 * the one before it: each gap compared as two masked words, each value parsed
 * where it lies. Bytes equal to a sample's gaps are the same tokens, so the
 * match accepts only what the general parse (sample()) accepts and writes the
 * same record: the same members in the same order, none repeated, each value
 * through value() -- or value_w(), which takes a subset of what value() takes,
 * at the width the value had the last time. Any other sample (another order,
 * other whitespace, a member more or less) fails a gap and is parsed the
 * general way, and its shape is the next one tried.
 */
struct gap {
	const char *p; /* in the body: a sample parsed the general way */
	uint32_t len;
	uint64_t w[2], m[2]; /* its first 16 bytes and their mask (len <= 16) */
};

struct shape {
	uint32_t n; /* 0: none yet, or an empty sample ({}) */
	int valid;
	const struct rb_scan_field *f[64];
	struct gap g[65]; /* g[i] before value i; g[n] after the last, '}' included */
	uint8_t w[64];    /* value i's width when last seen, if a plain 1-7 digit integer; else 0 */
	uint64_t lim[64]; /* field_max() of member i */
};

static void gap_set(struct gap *g, const char *from, const char *to)
{
	uint8_t w[16] = { 0 }, m[16] = { 0 };

	g->p = from;
	g->len = (uint32_t)(to - from);
	if (g->len <= 16) {
		memcpy(w, from, g->len);
		memset(m, 0xff, g->len);
	}
	memcpy(g->w, w, 16);
	memcpy(g->m, m, 16);
}

static inline int gap_eat(struct cur *c, const struct gap *g)
{
	if (g->len <= 16 && c->e - c->p >= 16) {
		uint64_t a, b;

		memcpy(&a, c->p, 8);
		memcpy(&b, c->p + 8, 8);
		if (((a ^ g->w[0]) & g->m[0]) | ((b ^ g->w[1]) & g->m[1]))
			return 0;
	} else if ((size_t)(c->e - c->p) < g->len || memcmp(c->p, g->p, g->len)) {
		return 0;
	}
	c->p += g->len;
	return 1;
}

/* A record of zeros but its header's length word (records lie 8-aligned). */
static inline void record_init(uint8_t *rec, const struct rb_scan_layout *L)
{
	const uint64_t zero = 0;

	for (uint32_t k = 0; k < L->record_size; k += 8)
		memcpy(rec + k, &zero, 8);
	store_le(rec, L->sample_size, 4);
}

/*
 * The width to expect of a value next time: that of [at, end) if it is a
 * plain integer of 1 to 7 digits (no sign), else 0 (none expected).
 */
static inline uint8_t width_of(const struct rb_scan_field *f, const char *at, const char *end)
{
	if (f->kind == RB_FIELD_BOOL || end - at < 1 || end - at > 7 || *at == '-')
		return 0;
	return (uint8_t)(end - at);
}

/*
 * The value at p, if it is a plain integer of exactly w (1..7) digits, into
 * dst; -1 otherwise (then value() decides, which accepts what this accepts
 * and more). Why a width is expected at all: the cursor then moves by w, a
 * number the previous sample gave, not by a length computed from the bytes,
 * so the next sample's loads do not wait for this value's digits to be
 * counted -- the scan stops being one long chain of dependent loads and
 * runs samples in parallel. A wrong guess costs a branch, as a changed
 * width (9 -> 10) does.
 */
static inline int value_w(const char *p, const char *e, unsigned w, const struct rb_scan_field *f,
			  uint64_t lim, uint8_t *dst)
{
	uint64_t x, t, v;
	unsigned stop;

	if (e - p < 8)
		return -1;
	memcpy(&x, p, 8);
	t = nondigits(x);
	stop = (unsigned)(x >> (8 * w)) & 0xff;
	if ((t & ((1ULL << (8 * w)) - 1)) || !((t >> (8 * w)) & 0xff))
		return -1; /* not w digits then a non-digit */
	if ((w > 1 && (x & 0xff) == '0') || stop == '.' || stop == 'e' || stop == 'E')
		return -1; /* a leading zero, a fraction or an exponent: value() refuses */
	v = digits_value(x, w);
	if (v > lim)
		return -1;
	store_le(dst, v, f->size);
	return 0;
}

/* One sample object (c->p at its '{') matched against shape sh into rec; the
 * widths it expects follow the values it meets. */
static int replay(struct cur *c, struct shape *sh, uint8_t *rec)
{
	for (uint32_t i = 0; i < sh->n; i++) {
		const struct rb_scan_field *f = sh->f[i];
		uint8_t *dst = rec + 8 + f->offset;
		unsigned w = sh->w[i];
		const char *at;

		if (!gap_eat(c, &sh->g[i]))
			return -1;
		if (w && !value_w(c->p, c->e, w, f, sh->lim[i], dst)) {
			c->p += w;
			continue;
		}
		at = c->p;
		if (value(c, f, dst))
			return -1;
		sh->w[i] = width_of(f, at, c->p);
	}
	return gap_eat(c, &sh->g[sh->n]) ? 0 : -1;
}

/* One sample object (c->p at its '{') into rec (zeroed), the general way; its
 * shape into sh. */
static int sample(struct cur *c, const struct scan *S, uint8_t *rec, struct shape *sh)
{
	const struct rb_scan_layout *L = S->L;
	const char *from = c->p;
	uint64_t seen = 0;
	uint32_t hint = 0, n = 0;

	sh->valid = 0;
	if (!eat(c, '{'))
		return -1;
	if (!eat(c, '}')) {
		for (;;) {
			const struct rb_scan_field *f;
			uint32_t i;

			if (!eat(c, '"'))
				return -1;
			f = member(c, S, hint);
			if (!f)
				return -1;
			i = (uint32_t)(f - L->fields);
			if (seen >> i & 1)
				return -1;
			seen |= 1ULL << i;
			hint = i + 1 < L->nfields ? i + 1 : 0;
			if (!eat(c, ':'))
				return -1;
			skip_ws(c);
			gap_set(&sh->g[n], from, c->p);
			sh->f[n] = f;
			sh->lim[n] = field_max(f);
			if (value(c, f, rec + 8 + f->offset))
				return -1;
			sh->w[n] = width_of(f, from + sh->g[n].len, c->p);
			n++;
			from = c->p;
			if (eat(c, ','))
				continue;
			if (eat(c, '}'))
				break;
			return -1;
		}
	}
	gap_set(&sh->g[n], from, c->p);
	sh->n = n;
	sh->valid = 1;
	return 0;
}

static int samples(struct cur *c, const struct rb_scan_layout *L, uint64_t max_samples,
		   uint8_t *out, size_t cap, uint64_t *count)
{
	struct scan S;
	struct shape sh;
	uint64_t n = 0;

	if (!eat(c, '['))
		return RB_SCAN_GIVE_UP;
	if (eat(c, ']'))
		return RB_SCAN_GIVE_UP; /* empty: the exact path's error */
	scan_init(&S, L);
	sh.valid = 0;
	for (;;) {
		uint8_t *rec = out + n * L->record_size;
		const char *at;

		if (n >= max_samples)
			return RB_SCAN_GIVE_UP;
		if ((n + 1) * L->record_size > cap)
			return RB_SCAN_NO_ROOM;
		skip_ws(c);
		at = c->p;
		record_init(rec, L);
		if (!sh.valid || replay(c, &sh, rec)) {
			c->p = at;
			/* Values a failed match stored are those the general parse stores
			 * again (same bytes up to the mismatch); zeroed all the same, so the
			 * record owes nothing to that argument. */
			record_init(rec, L);
			if (sample(c, &S, rec, &sh))
				return RB_SCAN_GIVE_UP;
		}
		n++;
		if (eat(c, ','))
			continue;
		if (eat(c, ']'))
			break;
		return RB_SCAN_GIVE_UP;
	}
	*count = n;
	return RB_SCAN_OK;
}

/* A frame id: an integer of at most 18 digits, a literal, or a plain ASCII string. */
static int frame_id(struct cur *c, const char *base, struct rb_scan_result *res)
{
	const char *start;

	skip_ws(c);
	start = c->p;
	if (c->p >= c->e)
		return -1;
	if (*c->p == '"') {
		c->p++;
		if (plain_string_rest(c))
			return -1;
	} else if (*c->p == 't') {
		if (literal(c, "true", 4))
			return -1;
	} else if (*c->p == 'f') {
		if (literal(c, "false", 5))
			return -1;
	} else if (*c->p == 'n') {
		if (literal(c, "null", 4))
			return -1;
	} else {
		int neg;
		uint64_t mag;

		if (integer(c, &neg, &mag) || c->p - start > 19)
			return -1;
	}
	res->id_start = (uint64_t)(start - base);
	res->id_end = (uint64_t)(c->p - base);
	return 0;
}

int rb_json_scan(const struct rb_scan_layout *L, const char *s, size_t n, int frame,
		 uint64_t max_samples, uint8_t *out, size_t cap, struct rb_scan_result *res)
{
	struct cur c = { s, s + n };
	int have_samples = 0, have_id = 0, verdict = RB_SCAN_GIVE_UP;

	memset(res, 0, sizeof(*res));
	if (L->nfields > 64 || L->record_size < 8 + L->sample_size)
		goto out;
	if (!eat(&c, '{'))
		goto out;
	for (;;) {
		const char *k;
		uint32_t len;

		if (key(&c, &k, &len) || !eat(&c, ':'))
			goto out;
		if (len == 7 && !memcmp(k, "samples", 7) && !have_samples) {
			have_samples = 1;
			verdict = samples(&c, L, max_samples, out, cap, &res->count);
			if (verdict != RB_SCAN_OK)
				goto out;
			verdict = RB_SCAN_GIVE_UP;
		} else if (frame && len == 2 && !memcmp(k, "id", 2) && !have_id) {
			have_id = 1;
			if (frame_id(&c, s, res))
				goto out;
		} else {
			goto out;
		}
		if (eat(&c, ','))
			continue;
		if (eat(&c, '}'))
			break;
		goto out;
	}
	skip_ws(&c);
	if (c.p == c.e && have_samples)
		verdict = RB_SCAN_OK;
out:
	res->stop = (uint64_t)(c.p - s);
	if (verdict != RB_SCAN_OK)
		res->count = 0;
	return verdict;
}
