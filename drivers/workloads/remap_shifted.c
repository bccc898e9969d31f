// SPDX-License-Identifier: GPL-2.0
/*
 * remap_shifted: the shifted region's buffer does not start at the mapped
 * address but buffer_offset bytes into it (like an illumos segmap). Map the
 * region, find the driver's signature at addr + buffer_offset with zeroes
 * right before it, check the buffer runs to the region's end, and use it:
 * what we write past the signature a second mapping reads back.
 *
 * What mmap(2) returns differs by kernel family: Linux returns the mapped
 * page, the buffer buffer_offset into it; illumos's segmap(9E) returns the
 * buffer's own address (the driver shifts *addrp), and munmap(2) still
 * wants the page, buffer_offset before it.
 *
 * usage: remap_shifted DEVICE
 */
#include "mh_workload.h"

/* Must match the remap driver's BUFFER_SIGNATURE. */
#define BUFFER_SIGNATURE	"mmap-harness: shifted buffer"
#define SIG_BYTES		sizeof(BUFFER_SIGNATURE)
#define SEED			0x9e3779b97f4a7c15ULL

#ifdef __sun
#define SHIFTED_BY_MMAP		1	/* mmap(2) returns page + buffer_offset */
#else
#define SHIFTED_BY_MMAP		0	/* mmap(2) returns the page */
#endif

static uint8_t byte_at(size_t i)
{
	return (uint8_t)((i * SEED) >> 56);
}

/* Count bytes of [0, len) that are not zero. */
static size_t nonzero(const volatile uint8_t *p, size_t len)
{
	size_t i, n = 0;

	for (i = 0; i < len; i++)
		n += p[i] != 0;
	return n;
}

/* Write a pattern after the signature (kept for the next run) and read it back elsewhere. */
static void use_buffer(struct mh_report *r, volatile uint8_t *buf, volatile uint8_t *again,
		       size_t size)
{
	size_t i, bad = 0;

	for (i = SIG_BYTES; i < size; i++)
		buf[i] = byte_at(i);
	for (i = SIG_BYTES; i < size; i++)
		bad += again[i] != byte_at(i);
	mh_check(r, bad == 0, "buffer shared by two mappings", "%zu bytes differ", bad);
}

int main(int argc, char **argv)
{
	struct mh_report r = { 0 };
	long page = sysconf(_SC_PAGESIZE);
	long offset, size, shift, bsize;
	volatile uint8_t *buf;
	uint8_t *map, *map2;
	int fd;

	if (argc != 2)
		return 2;
	offset = mh_param(argv[1], "shifted_offset");
	size = mh_param(argv[1], "shifted_size");
	shift = mh_param(argv[1], "buffer_offset");
	bsize = mh_param(argv[1], "buffer_size");
	mh_metric(&r, "buffer_offset", shift);
	mh_check(&r, offset > 0 && size > 0, "layout", "shifted %ld+%ld", offset, size);
	/* A real shift: inside the first page, not on a page boundary. */
	mh_check(&r, shift > 0 && shift < page, "buffer offset inside the first page",
		 "buffer_offset %ld", shift);
	mh_check(&r, bsize == size - shift, "buffer runs to the region end",
		 "buffer_size %ld, region %ld, offset %ld", bsize, size, shift);
	fd = mh_open_device(&r, argv[1]);
	if (fd < 0 || r.failures)
		return mh_finish(&r);

	map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset);
	map2 = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, offset);
	mh_check(&r, map != MAP_FAILED && map2 != MAP_FAILED, "mmap shifted", "%s",
		 strerror(errno));
	if (map == MAP_FAILED || map2 == MAP_FAILED)
		return mh_finish(&r);
	mh_check(&r, (uintptr_t)map % page == (SHIFTED_BY_MMAP ? (uintptr_t)shift : 0),
		 "address mmap returns", "%p, page offset %ld", (void *)map,
		 (long)((uintptr_t)map % page));
	if (r.failures)	/* where the pages are is unknown: touch nothing */
		return mh_finish(&r);
	if (SHIFTED_BY_MMAP) {	/* from here on, the pages themselves */
		map -= shift;
		map2 -= shift;
	}

	buf = map + shift;
	mh_check(&r, memcmp((const void *)buf, BUFFER_SIGNATURE, SIG_BYTES) == 0,
		 "signature at addr + buffer_offset", "bytes there differ from the signature");
	/* The buffer starts there, not earlier: nothing before it in the page. */
	mh_check(&r, nonzero(map, shift) == 0, "zeroes before the buffer",
		 "%zu nonzero bytes before buffer_offset", nonzero(map, shift));
	use_buffer(&r, buf, map2 + shift, bsize);

	munmap(map2, size);
	munmap(map, size);
	close(fd);
	return mh_finish(&r);
}
