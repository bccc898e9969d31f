// SPDX-License-Identifier: GPL-2.0
/*
 * pattern: write a pattern through a device mapping, read it back, and time
 * both against anonymous memory of the same size in the same run.
 *
 * usage: pattern DEVICE  (maps the driver's area_bytes at offset 0)
 * Prints one JSON object; exits 0 when every word read back is right.
 */
#include "mh_workload.h"

#define PASSES	8
#define SEED	0x9e3779b97f4a7c15ULL
#define MIB	(1024.0 * 1024.0)

struct timing {
	double write_mib_s;
	double read_mib_s;
	size_t bad_words;
};

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
		t = mh_now();
		for (i = 0; i < words; i++)
			buf[i] = word(i, pass);
		wt += mh_now() - t;

		t = mh_now();
		for (i = 0; i < words; i++)
			if (buf[i] != word(i, pass))
				r.bad_words++;
		rt += mh_now() - t;
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
	long bytes;
	void *map, *mem;
	int fd;

	if (argc != 2)
		return fail("usage: pattern DEVICE", EINVAL);
	bytes = mh_param(argv[1], "area_bytes");
	if (bytes <= 0)
		return fail("area_bytes parameter", ENOENT);

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

	printf("{\"ok\": %s, \"bytes\": %ld, \"passes\": %d, \"bad_words\": %zu, "
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
