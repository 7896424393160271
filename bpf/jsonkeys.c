// SPDX-License-Identifier: Apache-2.0
/*
 * Duplicate-key check for JSON request bodies and WebSocket text frames.
 *
 * msgspec, like most JSON decoders, keeps the last of two equal keys in an
 * object: {"kind": 1, "kind": 2} is silently kind 2. ringbridge refuses such
 * a sample instead (RFC 8259 section 4: names SHOULD be unique; two readers
 * of the same body must not see different samples). Doing it in Python per
 * sample would double the cost of the JSON path; this scan runs at memory
 * speed over the raw body before msgspec decodes it.
 *
 * It is not a validator: anything malformed is left to msgspec, which
 * reports it precisely. It only tokenizes strings and brackets well enough
 * to know which strings are keys of which object. Keys are compared as raw
 * bytes; a key written with a backslash escape is reported as such
 * (RB_JSON_ESCAPED_KEY) and the caller checks that body the slow, exact way.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum {
	RB_JSON_OK = 0,
	RB_JSON_DUPLICATE = 1,
	RB_JSON_ESCAPED_KEY = 2,
	RB_JSON_TOO_DEEP = 3,
	RB_JSON_NOMEM = 4,
};

#define RB_JSON_MAX_DEPTH 128
/* Objects with more keys than this get a hash index instead of a linear scan. */
#define LINEAR_KEYS 16

struct rb_json_keys_result {
	uint64_t offset;      /* byte offset of the repeated key's opening quote */
	int64_t sample_index; /* its object's index in "samples", or -1 */
	uint32_t key_len;     /* length of the key, without quotes */
	uint32_t _reserved;
	/* [id_start, id_end): the top-level "id" member after its key, i.e.
	 * ': <value>' (0, 0 if not seen whole): lets the caller echo a frame's
	 * id even when the rest of the frame is too deep for its decoder. */
	uint64_t id_start;
	uint64_t id_end;
};

struct key {
	size_t off;
	uint32_t len;
	uint32_t hash;
};

struct level {
	char kind;          /* 'o' object, 'a' array */
	int key_next;       /* object: the next string is a key */
	int is_samples;     /* array: the value of the top-level "samples" */
	int64_t elements;   /* array: objects opened in it so far */
	int64_t sample;     /* object: index in "samples", or -1 */
	struct key *keys;   /* object: keys so far */
	uint32_t nkeys, cap;
	uint32_t *index;    /* object: hash index (slot = key number + 1), when large */
	uint32_t index_cap;
	size_t last_key_off; /* object: the last key (to spot "samples") */
	uint32_t last_key_len;
};

static const unsigned char STRUCTURAL[256] = {
	['"'] = 1, ['{'] = 1, ['}'] = 1, ['['] = 1, [']'] = 1, [','] = 1,
};

static uint32_t hash_bytes(const char *p, uint32_t n)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (uint32_t i = 0; i < n; i++) {
		h ^= (unsigned char)p[i];
		h *= 16777619u;
	}
	return h;
}

static int index_insert(struct level *lv, uint32_t knum)
{
	uint32_t mask = lv->index_cap - 1;
	uint32_t s = lv->keys[knum].hash & mask;
	while (lv->index[s] != 0)
		s = (s + 1) & mask;
	lv->index[s] = knum + 1;
	return 0;
}

static int index_rebuild(struct level *lv, uint32_t cap)
{
	uint32_t *idx = calloc(cap, sizeof(*idx));
	if (!idx)
		return -1;
	free(lv->index);
	lv->index = idx;
	lv->index_cap = cap;
	for (uint32_t k = 0; k < lv->nkeys; k++)
		index_insert(lv, k);
	return 0;
}

/* 1: duplicate; 0: added; -1: out of memory. */
static int add_key(const char *buf, struct level *lv, size_t off, uint32_t len)
{
	const char *p = buf + off;
	uint32_t h = 0;

	if (lv->nkeys < LINEAR_KEYS) {
		/* Small objects (every sample): compare directly, no hashing. */
		for (uint32_t k = 0; k < lv->nkeys; k++) {
			struct key *o = &lv->keys[k];
			if (o->len == len && memcmp(buf + o->off, p, len) == 0)
				return 1;
		}
	} else {
		h = hash_bytes(p, len);
		if (lv->index == NULL) {
			/* Switching to the index: hash the keys seen so far. */
			for (uint32_t k = 0; k < lv->nkeys; k++)
				lv->keys[k].hash = hash_bytes(buf + lv->keys[k].off, lv->keys[k].len);
		}
		if (lv->index == NULL || (lv->nkeys + 1) * 2 > lv->index_cap) {
			uint32_t cap = lv->index_cap ? lv->index_cap * 2 : 64;
			if (index_rebuild(lv, cap))
				return -1;
		}
		uint32_t mask = lv->index_cap - 1;
		for (uint32_t s = h & mask; lv->index[s] != 0; s = (s + 1) & mask) {
			struct key *o = &lv->keys[lv->index[s] - 1];
			if (o->len == len && o->hash == h && memcmp(buf + o->off, p, len) == 0)
				return 1;
		}
	}
	if (lv->nkeys == lv->cap) {
		uint32_t cap = lv->cap ? lv->cap * 2 : 8;
		struct key *keys = realloc(lv->keys, cap * sizeof(*keys));
		if (!keys)
			return -1;
		lv->keys = keys;
		lv->cap = cap;
	}
	lv->keys[lv->nkeys] = (struct key){ off, len, h };
	if (lv->index != NULL)
		index_insert(lv, lv->nkeys);
	lv->nkeys++;
	return 0;
}

int rb_json_dup_keys(const char *buf, size_t len, struct rb_json_keys_result *res)
{
	struct level *st = calloc(RB_JSON_MAX_DEPTH, sizeof(*st));
	int depth = 0; /* levels in use */
	int rc = RB_JSON_OK;

	if (!st)
		return RB_JSON_NOMEM;
	int in_id = 0;

	res->offset = 0;
	res->sample_index = -1;
	res->key_len = 0;
	res->id_start = 0;
	res->id_end = 0;
	for (size_t i = 0; i < len; i++) {
		/* Numbers, literals, ':' and blanks say nothing about keys. */
		while (i < len && !STRUCTURAL[(unsigned char)buf[i]])
			i++;
		if (i >= len)
			break;
		char c = buf[i];
		struct level *top = depth ? &st[depth - 1] : NULL;

		if (c == '"') {
			size_t start = i + 1;
			int escaped = 0;
			size_t j = start;
			/* Keys are short: a byte loop beats memchr calls here. */
			while (j < len && buf[j] != '"') {
				if (buf[j] == '\\') {
					escaped = 1;
					j++;
				}
				j++;
			}
			if (j >= len)
				break; /* unterminated: msgspec reports it */
			i = j;
			if (top && top->kind == 'o' && top->key_next) {
				uint32_t klen = (uint32_t)(j - start);
				top->key_next = 0;
				top->last_key_off = start;
				top->last_key_len = klen;
				if (depth == 1 && klen == 2 && buf[start] == 'i' && buf[start + 1] == 'd') {
					in_id = 1;
					res->id_start = j + 1;
				}
				if (escaped) {
					res->offset = start - 1;
					res->sample_index = top->sample;
					rc = RB_JSON_ESCAPED_KEY;
					goto out;
				}
				int dup = add_key(buf, top, start, klen);
				if (dup < 0) {
					rc = RB_JSON_NOMEM;
					goto out;
				}
				if (dup) {
					res->offset = start - 1;
					res->sample_index = top->sample;
					res->key_len = klen;
					rc = RB_JSON_DUPLICATE;
					goto out;
				}
			}
		} else if (c == '{' || c == '[') {
			if (depth == RB_JSON_MAX_DEPTH) {
				res->offset = i;
				rc = RB_JSON_TOO_DEEP;
				goto out;
			}
			struct level *lv = &st[depth];
			lv->kind = c == '{' ? 'o' : 'a';
			lv->key_next = c == '{';
			lv->nkeys = 0;
			/* Dropped, not cleared: a huge object here must not make every
			 * later object at this depth pay for clearing its index. */
			free(lv->index);
			lv->index = NULL;
			lv->index_cap = 0;
			lv->last_key_len = 0;
			lv->elements = 0;
			lv->sample = -1;
			lv->is_samples = 0;
			if (c == '{' && top && top->kind == 'a') {
				if (top->is_samples)
					lv->sample = top->elements;
				top->elements++;
			}
			if (c == '[' && depth == 1 && top->kind == 'o' && top->last_key_len == 7 &&
			    memcmp(buf + top->last_key_off, "samples", 7) == 0)
				lv->is_samples = 1;
			depth++;
		} else if (c == '}' || c == ']') {
			if (depth == 0)
				break; /* unbalanced: msgspec reports it */
			if (depth == 1 && in_id) {
				res->id_end = i;
				in_id = 0;
			}
			depth--;
		} else if (c == ',') {
			if (depth == 1 && in_id) {
				res->id_end = i;
				in_id = 0;
			}
			if (top && top->kind == 'o')
				top->key_next = 1;
		}
	}
out:
	for (int d = 0; d < RB_JSON_MAX_DEPTH; d++) {
		free(st[d].keys);
		free(st[d].index);
	}
	free(st);
	return rc;
}
