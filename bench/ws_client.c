// SPDX-License-Identifier: Apache-2.0
/*
 * The benchmark's WebSocket load generator (bench/run.py): light enough that
 * the server, not the client, is what gets measured.
 *
 * Reads batches from a file, builds one masked client frame per batch before
 * timing starts (each frame gets its own random masking key once; frames are
 * then re-sent as they are, so the client never touches payload bytes again),
 * opens --conns connections to ws://HOST:PORT/v1/stream (no extensions: no
 * permessage-deflate), and on each connection, one thread each, keeps up to
 * --window batches in flight for --seconds, then waits for the outstanding
 * acks. Acks are in order per connection; each one is checked for an error
 * and its "accepted" count summed, and its round trip (frame sent -> ack
 * read) recorded.
 *
 * Batch file: repeated { u32 LE length; u8 opcode (1 text, 2 binary);
 * u8 pad[3]; payload }.
 *
 * Prints one JSON line: frames, accepted, errors, seconds, latency
 * percentiles (us), and the client's own CPU time over the timed part; and
 * where the client's time went while it was sending, summed over
 * connections, to tell a slow server from a slow client: seconds waiting for
 * acks with its window full (the server's pace), seconds in send() (the copy
 * into its socket, and whatever its own TCP does there: a pacing sender
 * arms its timer), and its sockets' TCP_INFO times (us) with data unsent or
 * unacked, limited by the server's receive window, and limited by its own
 * send buffer.
 *
 * --congestion NAME sets the client's sockets' TCP congestion control
 * (TCP_CONGESTION) instead of the host's default: the benchmark runs its WS
 * target once more with the sender on a non-pacing algorithm (bench/cases.py).
 *
 * Usage: ws_client --port P --batches FILE [--host H] [--conns C]
 *                  [--window W] [--seconds S] [--congestion NAME]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <linux/tcp.h> /* struct tcp_info with the *_limited times */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct frame {
	uint8_t *buf;
	size_t len;
};

struct conn {
	int fd, idx;
	pthread_t thread;
	uint64_t sent, acked, accepted, errors;
	double send_s, wait_s; /* in send(), and waiting for acks with the window full */
	struct tcp_info ti;    /* read before close */
	double *lat;      /* one per ack, in seconds */
	size_t lat_cap;
	char *in;         /* unparsed bytes from the server */
	size_t in_len, in_cap;
	char err[256];
};

static struct frame *frames;
static size_t nframes;
static const char *host = "127.0.0.1";
static int port, window = 16;
static double seconds = 2.0, deadline;
static const char *congestion; /* NULL: the host's default */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "ws_client: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void load_batches(const char *path)
{
	FILE *f = fopen(path, "rb");
	size_t cap = 0;
	uint8_t hdr[8];

	if (!f)
		die(path);
	while (fread(hdr, 1, sizeof(hdr), f) == sizeof(hdr)) {
		uint32_t n = hdr[0] | hdr[1] << 8 | hdr[2] << 16 | (uint32_t)hdr[3] << 24;
		size_t h = n < 126 ? 2 : n < 65536 ? 4 : 10;
		uint8_t *b = malloc(h + 4 + n), *mask;

		if (!b)
			die("malloc");
		b[0] = 0x80 | hdr[4]; /* FIN + opcode */
		if (n < 126) {
			b[1] = 0x80 | n;
		} else if (n < 65536) {
			b[1] = 0x80 | 126;
			b[2] = n >> 8;
			b[3] = n & 0xff;
		} else {
			b[1] = 0x80 | 127;
			for (int i = 0; i < 8; i++)
				b[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
		}
		mask = b + h;
		for (int i = 0; i < 4; i++)
			mask[i] = (uint8_t)(rand() >> 7);
		if (fread(mask + 4, 1, n, f) != n) {
			fprintf(stderr, "ws_client: %s: truncated batch\n", path);
			exit(1);
		}
		for (uint32_t i = 0; i < n; i++)
			mask[4 + i] ^= mask[i & 3];
		if (nframes == cap) {
			cap = cap ? 2 * cap : 64;
			frames = realloc(frames, cap * sizeof(*frames));
			if (!frames)
				die("realloc");
		}
		frames[nframes].buf = b;
		frames[nframes].len = h + 4 + n;
		nframes++;
	}
	fclose(f);
	if (!nframes) {
		fprintf(stderr, "ws_client: %s holds no batch\n", path);
		exit(1);
	}
}

static int send_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Reads more bytes into c->in; -1 on error or EOF. */
static int fill(struct conn *c)
{
	ssize_t r;

	if (c->in_cap - c->in_len < 65536) {
		c->in_cap = c->in_cap ? 2 * c->in_cap : 131072;
		c->in = realloc(c->in, c->in_cap);
		if (!c->in)
			die("realloc");
	}
	do
		r = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
	while (r < 0 && errno == EINTR);
	if (r <= 0) {
		snprintf(c->err, sizeof(c->err), "connection %s",
			 r ? strerror(errno) : "closed by the server");
		return -1;
	}
	c->in_len += (size_t)r;
	return 0;
}

static int handshake(struct conn *c)
{
	char req[512];
	char *end;
	int n = snprintf(req, sizeof(req),
			 "GET /v1/stream HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
			 "Connection: Upgrade\r\nSec-WebSocket-Key: cmluZ2JyaWRnZS1iZW5jaA==\r\n"
			 "Sec-WebSocket-Version: 13\r\n\r\n",
			 host, port);

	if (send_all(c->fd, (uint8_t *)req, (size_t)n))
		return -1;
	while (!(end = memmem(c->in, c->in_len, "\r\n\r\n", 4)))
		if (fill(c))
			return -1;
	if (c->in_len < 12 || memcmp(c->in + 9, "101", 3)) {
		snprintf(c->err, sizeof(c->err), "handshake refused: %.40s", c->in);
		return -1;
	}
	end += 4;
	c->in_len -= (size_t)(end - c->in);
	memmove(c->in, end, c->in_len);
	return 0;
}

/* Parses the complete ack frames in c->in; returns how many, -1 on error. */
static int parse_acks(struct conn *c, const double *sent_at)
{
	size_t off = 0;
	int got = 0;
	double t = now_s();

	for (;;) {
		const uint8_t *p = (const uint8_t *)c->in + off;
		size_t avail = c->in_len - off, h = 2, len;

		if (avail < 2)
			break;
		len = p[1] & 0x7f;
		if (len == 126) {
			h = 4;
			if (avail < h)
				break;
			len = (size_t)p[2] << 8 | p[3];
		} else if (len == 127) {
			h = 10;
			if (avail < h)
				break;
			len = 0;
			for (int i = 0; i < 8; i++)
				len = len << 8 | p[2 + i];
		}
		if (avail < h + len)
			break;
		if ((p[0] & 0x0f) == 8) {
			snprintf(c->err, sizeof(c->err), "server closed the stream");
			return -1;
		}
		if ((p[0] & 0x0f) == 1) {
			const char *body = (const char *)p + h;
			const char *acc = memmem(body, len, "\"accepted\":", 11);

			if (memmem(body, len, "\"error\"", 7) || !acc) {
				if (!c->errors)
					snprintf(c->err, sizeof(c->err), "error ack: %.*s",
						 (int)(len < 200 ? len : 200), body);
				c->errors++;
			} else {
				c->accepted += strtoull(acc + 11, NULL, 10);
			}
			if (c->acked < c->lat_cap)
				c->lat[c->acked] = t - sent_at[c->acked % (uint64_t)window];
			c->acked++;
			got++;
		}
		off += h + len;
	}
	c->in_len -= off;
	memmove(c->in, c->in + off, c->in_len);
	return got;
}

static void *run_conn(void *arg)
{
	struct conn *c = arg;
	double *sent_at = calloc((size_t)window, sizeof(double));
	size_t next = (size_t)c->idx % nframes; /* connections start apart */

	if (!sent_at)
		die("calloc");
	for (;;) {
		int sending = now_s() < deadline;

		while (sending && c->sent - c->acked < (uint64_t)window) {
			const struct frame *f = &frames[next];

			next = (next + 1) % nframes;
			double t = now_s();

			sent_at[c->sent % (uint64_t)window] = t;
			if (send_all(c->fd, f->buf, f->len)) {
				snprintf(c->err, sizeof(c->err), "send: %s", strerror(errno));
				goto out;
			}
			c->send_s += now_s() - t;
			c->sent++;
		}
		if (c->acked == c->sent)
			break;
		double t = now_s();

		if (fill(c) || parse_acks(c, sent_at) < 0)
			goto out;
		if (sending) /* the loop above stopped on a full window */
			c->wait_s += now_s() - t;
	}
out:
	{
		socklen_t n = sizeof(c->ti);

		if (getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &c->ti, &n))
			memset(&c->ti, 0, sizeof(c->ti));
	}
	free(sent_at);
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "host", required_argument, NULL, 'h' },
		{ "port", required_argument, NULL, 'p' },
		{ "batches", required_argument, NULL, 'b' },
		{ "conns", required_argument, NULL, 'c' },
		{ "window", required_argument, NULL, 'w' },
		{ "seconds", required_argument, NULL, 's' },
		{ "congestion", required_argument, NULL, 'C' },
		{ 0 },
	};
	const char *path = NULL;
	int nconns = 1, opt;
	struct conn *conns;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	uint64_t frames_acked = 0, accepted = 0, errors = 0, nlat = 0;
	uint64_t busy_us = 0, rwnd_us = 0, sndbuf_us = 0;
	double send_s = 0, wait_s = 0;
	double t0, t1, cpu0, cpu1, *lat;

	while ((opt = getopt_long(argc, argv, "h:p:b:c:w:s:", longopts, NULL)) != -1) {
		switch (opt) {
		case 'h': host = optarg; break;
		case 'p': port = atoi(optarg); break;
		case 'b': path = optarg; break;
		case 'c': nconns = atoi(optarg); break;
		case 'w': window = atoi(optarg); break;
		case 'C': congestion = optarg; break;
		case 's': seconds = atof(optarg); break;
		default:
			fprintf(stderr, "usage: %s --port P --batches FILE [--host H] [--conns C] "
				"[--window W] [--seconds S] [--congestion NAME]\n", argv[0]);
			return 2;
		}
	}
	if (!path || port <= 0 || nconns <= 0 || window <= 0 || seconds <= 0) {
		fprintf(stderr, "ws_client: --port and --batches are required; counts must be > 0\n");
		return 2;
	}
	srand((unsigned)getpid() ^ (unsigned)time(NULL));
	load_batches(path);
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		fprintf(stderr, "ws_client: --host must be an IPv4 address\n");
		return 2;
	}
	sa.sin_port = htons((uint16_t)port);
	conns = calloc((size_t)nconns, sizeof(*conns));
	if (!conns)
		die("calloc");
	for (int i = 0; i < nconns; i++) {
		struct conn *c = &conns[i];
		int one = 1;

		c->idx = i;
		c->fd = socket(AF_INET, SOCK_STREAM, 0);
		if (c->fd < 0)
			die("socket");
		if (congestion && setsockopt(c->fd, IPPROTO_TCP, TCP_CONGESTION, congestion,
					     (socklen_t)strlen(congestion)))
			die("setsockopt TCP_CONGESTION");
		if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)))
			die("connect");
		setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		/* Enough room for every ack of the run at ~1 M acks/s. */
		c->lat_cap = (size_t)(seconds * 1e6 / nconns) + 1024;
		c->lat = malloc(c->lat_cap * sizeof(double));
		if (!c->lat)
			die("malloc");
		if (handshake(c)) {
			fprintf(stderr, "ws_client: %s\n", c->err);
			return 1;
		}
	}
	cpu0 = cpu_s();
	t0 = now_s();
	deadline = t0 + seconds;
	for (int i = 0; i < nconns; i++)
		if (pthread_create(&conns[i].thread, NULL, run_conn, &conns[i]))
			die("pthread_create");
	for (int i = 0; i < nconns; i++)
		pthread_join(conns[i].thread, NULL);
	t1 = now_s();
	cpu1 = cpu_s();
	for (int i = 0; i < nconns; i++) {
		if (conns[i].err[0] && !conns[i].errors) {
			fprintf(stderr, "ws_client: connection %d: %s\n", i, conns[i].err);
			return 1;
		}
		if (conns[i].errors)
			fprintf(stderr, "ws_client: connection %d: %s\n", i, conns[i].err);
		frames_acked += conns[i].acked;
		accepted += conns[i].accepted;
		errors += conns[i].errors;
		send_s += conns[i].send_s;
		wait_s += conns[i].wait_s;
		busy_us += conns[i].ti.tcpi_busy_time;
		rwnd_us += conns[i].ti.tcpi_rwnd_limited;
		sndbuf_us += conns[i].ti.tcpi_sndbuf_limited;
	}
	lat = malloc((frames_acked + 1) * sizeof(double));
	if (!lat)
		die("malloc");
	for (int i = 0; i < nconns; i++) {
		uint64_t n = conns[i].acked < conns[i].lat_cap ? conns[i].acked : conns[i].lat_cap;

		memcpy(lat + nlat, conns[i].lat, n * sizeof(double));
		nlat += n;
		close(conns[i].fd);
	}
	qsort(lat, nlat, sizeof(double), cmp_double);
	printf("{\"frames\": %llu, \"accepted\": %llu, \"errors\": %llu, \"seconds\": %.6f, "
	       "\"latency_p50_us\": %.1f, \"latency_p99_us\": %.1f, \"cpu_seconds\": %.4f, "
	       "\"send_seconds\": %.6f, \"window_full_seconds\": %.6f, \"tcp_busy_us\": %llu, "
	       "\"tcp_rwnd_limited_us\": %llu, \"tcp_sndbuf_limited_us\": %llu}\n",
	       (unsigned long long)frames_acked, (unsigned long long)accepted,
	       (unsigned long long)errors, t1 - t0,
	       nlat ? lat[nlat / 2] * 1e6 : 0.0,
	       nlat ? lat[(size_t)((double)nlat * 0.99)] * 1e6 : 0.0, cpu1 - cpu0,
	       send_s, wait_s, (unsigned long long)busy_us, (unsigned long long)rwnd_us,
	       (unsigned long long)sndbuf_us);
	return errors ? 3 : 0;
}
