// SPDX-License-Identifier: Apache-2.0
/*
 * The benchmark's latency floor (bench/run.py): the least an HTTP server can
 * do for the latency rows' load -- read a request head and its Content-Length
 * body, write a fixed ack -- in C, one blocking thread per connection, no
 * event loop. The same wrk load on it as on the service shows what the host
 * itself (loopback, wake-ups, scheduling of a shared VM) adds to a round trip:
 * the part of the service's p99 that no server code can remove.
 *
 * Usage: http_floor PORT   (listens on 127.0.0.1; stops on SIGTERM)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_BYTES (2u << 20) /* > the latency rows' bodies; longer ones close */

static const char ACK[] = "{\"accepted\":1,\"first_seq\":0,\"last_seq\":0,\"state\":\"committed\"}";
static char response[256];
static size_t response_len;

static int fill(int fd, char *buf, size_t *have)
{
	ssize_t n;

	if (*have == BUF_BYTES)
		return -1;
	n = read(fd, buf + *have, BUF_BYTES - *have);
	if (n <= 0)
		return -1;
	*have += (size_t)n;
	return 0;
}

static void *serve(void *arg)
{
	int fd = (int)(long)arg, one = 1;
	size_t have = 0;
	char *buf = malloc(BUF_BYTES);

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	while (buf) {
		char *end, *cl;
		size_t head, body = 0;

		while (!(end = memmem(buf, have, "\r\n\r\n", 4)))
			if (fill(fd, buf, &have))
				goto out;
		head = (size_t)(end + 4 - buf);
		*end = '\0'; /* the head is a string now: no search past it */
		cl = strcasestr(buf, "\r\ncontent-length:");
		if (cl)
			body = strtoul(cl + 17, NULL, 10);
		if (body > BUF_BYTES - head)
			goto out;
		while (have < head + body)
			if (fill(fd, buf, &have))
				goto out;
		if (write(fd, response, response_len) != (ssize_t)response_len)
			goto out;
		have -= head + body;
		memmove(buf, buf + head + body, have);
	}
out:
	free(buf);
	close(fd);
	return NULL;
}

int main(int argc, char **argv)
{
	struct sockaddr_in addr = { .sin_family = AF_INET };
	int s, one = 1;

	if (argc != 2) {
		fprintf(stderr, "usage: %s PORT\n", argv[0]);
		return 2;
	}
	response_len = (size_t)snprintf(response, sizeof(response),
					"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
					"content-length: %zu\r\n\r\n%s",
					sizeof(ACK) - 1, ACK);
	addr.sin_port = htons((unsigned short)atoi(argv[1]));
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (s < 0 || bind(s, (struct sockaddr *)&addr, sizeof(addr)) || listen(s, 128)) {
		perror("http_floor: listen");
		return 1;
	}
	for (;;) {
		pthread_t t;
		int c = accept(s, NULL, NULL);

		if (c < 0)
			continue;
		if (pthread_create(&t, NULL, serve, (void *)(long)c)) {
			close(c);
			continue;
		}
		pthread_detach(t);
	}
}
