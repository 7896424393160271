// SPDX-License-Identifier: Apache-2.0
/*
 * The benchmark's latency client (bench/run.py, the latency rows over HTTP):
 * one keep-alive connection, one request in flight, blocking reads and
 * writes, each round trip timed on CLOCK_MONOTONIC from the request's write
 * to the last byte of its answer -- what a client waiting for its ack sees,
 * and nothing of the client's own event loop.
 *
 * Why not wrk, which measures the throughput rows: wrk is an event loop (one
 * epoll_wait for writability and two epoll_ctl calls around every request)
 * and its own tail shows in its percentiles. On the same minimal C responder
 * (bench/http_floor.c), same host, same minute, wrk's p99 was 2x this
 * client's at the same p50 (README, "Benchmark"). The WebSocket latency rows'
 * client (bench/ws_client.c, window 1) is blocking in the same way.
 *
 * POSTs the bytes of --body with --content-type to --path for --seconds;
 * every answer is read whole (its head and Content-Length body) and its
 * status checked: anything but 2xx ends the run at once with exit status 1
 * and the answer on stderr (the benchmark measures successes only).
 *
 * Prints one JSON line: requests, duration_us, latency
 * percentiles (us: p50, p99, p99.9, max) and the client's own CPU time.
 *
 * Usage: lat_client --port P --body FILE --path PATH [--host H]
 *                   [--content-type T] [--seconds S]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ANSWER_BYTES (64u << 10) /* an ack is ~200 bytes; an error body, a few KiB */

static double now_us(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static double cpu_seconds(void)
{
	struct rusage u;

	getrusage(RUSAGE_SELF, &u);
	return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
	       (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double percentile(const double *sorted, size_t n, double q)
{
	size_t i = (size_t)(q * (double)n); /* nearest rank, as wrk's histogram */

	return n ? sorted[i < n ? i : n - 1] : 0.0;
}

static void write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			perror("lat_client: write");
			exit(1);
		}
		buf += n;
		len -= (size_t)n;
	}
}

/* Reads one answer whole; returns its status code. */
static int read_answer(int fd, char *buf)
{
	size_t have = 0, need = 0;
	int status = 0;

	for (;;) {
		ssize_t n = read(fd, buf + have, ANSWER_BYTES - 1 - have);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "lat_client: the server closed the connection (%s)\n",
				n ? strerror(errno) : "EOF");
			exit(1);
		}
		have += (size_t)n;
		buf[have] = '\0';
		if (!need) {
			char *end = strstr(buf, "\r\n\r\n"), *cl;

			if (!end) {
				if (have >= ANSWER_BYTES - 1) {
					fprintf(stderr, "lat_client: answer head over %u bytes\n",
						ANSWER_BYTES);
					exit(1);
				}
				continue;
			}
			if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
				fprintf(stderr, "lat_client: not an HTTP answer: %.80s\n", buf);
				exit(1);
			}
			*end = '\0'; /* search the head only */
			cl = strcasestr(buf, "\r\ncontent-length:");
			need = (size_t)(end - buf) + 4 + (cl ? strtoul(cl + 17, NULL, 10) : 0);
			*end = '\r';
			if (need >= ANSWER_BYTES) {
				fprintf(stderr, "lat_client: answer of %zu bytes\n", need);
				exit(1);
			}
		}
		if (have >= need) {
			if (have > need) {
				fprintf(stderr, "lat_client: bytes after the answer (one in flight)\n");
				exit(1);
			}
			return status;
		}
	}
}

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	if (!f || fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
		perror(path);
		exit(1);
	}
	buf = malloc((size_t)n + 1);
	if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
		perror(path);
		exit(1);
	}
	fclose(f);
	*len = (size_t)n;
	return buf;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "host", required_argument, NULL, 'h' },
		{ "port", required_argument, NULL, 'p' },
		{ "body", required_argument, NULL, 'b' },
		{ "path", required_argument, NULL, 'P' },
		{ "content-type", required_argument, NULL, 't' },
		{ "seconds", required_argument, NULL, 's' },
		{ NULL, 0, NULL, 0 },
	};
	const char *host = "127.0.0.1", *body_path = NULL, *path = NULL;
	const char *ctype = "application/octet-stream";
	double seconds = 3.0, t0, t_end, cpu0;
	size_t body_len, req_len, cap = 1u << 16, n = 0;
	struct sockaddr_in addr = { .sin_family = AF_INET };
	char *body, *req, *answer;
	double *lat;
	int opt, port = 0, fd, one = 1;

	while ((opt = getopt_long(argc, argv, "h:p:b:P:t:s:", longopts, NULL)) != -1) {
		switch (opt) {
		case 'h': host = optarg; break;
		case 'p': port = atoi(optarg); break;
		case 'b': body_path = optarg; break;
		case 'P': path = optarg; break;
		case 't': ctype = optarg; break;
		case 's': seconds = atof(optarg); break;
		default: goto usage;
		}
	}
	if (!port || !body_path || !path || seconds <= 0) {
usage:
		fprintf(stderr, "usage: %s --port P --body FILE --path PATH [--host H] "
				"[--content-type T] [--seconds S]\n", argv[0]);
		return 2;
	}
	if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
		fprintf(stderr, "lat_client: --host %s: not an IPv4 address\n", host);
		return 2;
	}
	addr.sin_port = htons((unsigned short)port);

	body = read_file(body_path, &body_len);
	req = malloc(body_len + 512);
	answer = malloc(ANSWER_BYTES);
	lat = malloc(cap * sizeof(*lat));
	if (!req || !answer || !lat) {
		perror("lat_client: malloc");
		return 1;
	}
	req_len = (size_t)snprintf(req, 512,
				   "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: %s\r\n"
				   "Content-Length: %zu\r\n\r\n",
				   path, host, port, ctype, body_len);
	memcpy(req + req_len, body, body_len);
	req_len += body_len;

	fd = socket(AF_INET, SOCK_STREAM, 0);
	/* The request leaves in one write; Nagle would hold a short tail. */
	if (fd < 0 || setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) ||
	    connect(fd, (struct sockaddr *)&addr, sizeof(addr))) {
		fprintf(stderr, "lat_client: connect %s:%d: %s\n", host, port, strerror(errno));
		return 1;
	}

	cpu0 = cpu_seconds();
	t0 = now_us();
	t_end = t0 + seconds * 1e6;
	for (;;) {
		double start = now_us(), done;
		int status;

		if (start >= t_end)
			break;
		write_all(fd, req, req_len);
		status = read_answer(fd, answer);
		done = now_us();
		if (status < 200 || status > 299) {
			fprintf(stderr, "lat_client: status %d: %.300s\n", status, answer);
			return 1;
		}
		if (n == cap) {
			cap *= 2;
			lat = realloc(lat, cap * sizeof(*lat));
			if (!lat) {
				perror("lat_client: realloc");
				return 1;
			}
		}
		lat[n++] = done - start;
	}
	t_end = now_us();
	close(fd);

	qsort(lat, n, sizeof(*lat), cmp_double);
	printf("{\"requests\": %zu, \"duration_us\": %.0f, "
	       "\"latency_p50_us\": %.1f, \"latency_p99_us\": %.1f, \"latency_p999_us\": %.1f, "
	       "\"latency_max_us\": %.1f, \"cpu_seconds\": %.4f}\n",
	       n, t_end - t0, percentile(lat, n, 0.50), percentile(lat, n, 0.99),
	       percentile(lat, n, 0.999), n ? lat[n - 1] : 0.0, cpu_seconds() - cpu0);
	return 0;
}
