// SPDX-License-Identifier: GPL-2.0
/*
 * pattern: write a pattern through a device mapping, read it back, and time
 * both against anonymous memory of the same size in the same run.
 *
 * usage: pattern DEVICE BYTES
 * Prints one JSON object; exits 0 when every word read back is right.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PASSES	8
#define SEED	0x9e3779b97f4a7c15ULL
#define MIB	(1024.0 * 1024.0)

struct timing {
	double write_mib_s;
	double read_mib_s;
	size_t bad_words;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t word(size_t i, unsigned int pass)
{
	return (i * SEED) ^ ((uint64_t)pass << 56);
}

/* Write then verify PASSES patterns over buf; the first pass pays any faults. */
static struct timing exercise(volatile uint64_t *buf, size_t bytes)
{
	size_t words = bytes / sizeof(uint64_t);
	double wt = 0, rt = 0, t;
	struct timing r = { 0 };
	unsigned int pass;
	size_t i;

	for (pass = 0; pass < PASSES; pass++) {
		t = now();
		for (i = 0; i < words; i++)
			buf[i] = word(i, pass);
		wt += now() - t;

		t = now();
		for (i = 0; i < words; i++)
			if (buf[i] != word(i, pass))
				r.bad_words++;
		rt += now() - t;
	}
	r.write_mib_s = PASSES * bytes / MIB / wt;
	r.read_mib_s = PASSES * bytes / MIB / rt;
	return r;
}

static int fail(const char *what, int err)
{
	printf("{\"ok\": false, \"error\": \"%s: %s\"}\n", what, strerror(err));
	return 2;
}

int main(int argc, char **argv)
{
	struct timing dev, anon;
	size_t bytes;
	void *map, *mem;
	int fd;

	if (argc != 3)
		return fail("usage: pattern DEVICE BYTES", EINVAL);
	bytes = strtoul(argv[2], NULL, 0);

	fd = open(argv[1], O_RDWR);
	if (fd < 0)
		return fail("open", errno);
	map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		return fail("mmap device", errno);
	mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return fail("mmap anonymous", errno);

	dev = exercise(map, bytes);
	anon = exercise(mem, bytes);

	printf("{\"ok\": %s, \"bytes\": %zu, \"passes\": %d, \"bad_words\": %zu, "
	       "\"device_write_mib_s\": %.1f, \"device_read_mib_s\": %.1f, "
	       "\"anon_write_mib_s\": %.1f, \"anon_read_mib_s\": %.1f, "
	       "\"write_ratio_device_vs_anon\": %.3f, \"read_ratio_device_vs_anon\": %.3f}\n",
	       dev.bad_words ? "false" : "true", bytes, PASSES, dev.bad_words,
	       dev.write_mib_s, dev.read_mib_s, anon.write_mib_s, anon.read_mib_s,
	       dev.write_mib_s / anon.write_mib_s, dev.read_mib_s / anon.read_mib_s);

	munmap(mem, bytes);
	munmap(map, bytes);
	close(fd);
	return dev.bad_words ? 1 : 0;
}
