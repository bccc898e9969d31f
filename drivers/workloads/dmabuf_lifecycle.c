// SPDX-License-Identifier: GPL-2.0
/*
 * dmabuf_lifecycle: one buffer from ALLOC to FREE. Alloc (size rounded up
 * to pages, zero-filled), map at the handle, pattern through the mapping,
 * a second mapping sees the same bytes, FREE refused (EBUSY) while any
 * mapping is left, access after munmap raises SIGSEGV, FREE, FREE again
 * (EINVAL), and the pages are back. Then what mmap must refuse: an offset
 * that is no handle, more than the buffer, a private mapping.
 *
 * usage: dmabuf_lifecycle DEVICE   (also built -m32: the compat ioctl path)
 */
#define _FILE_OFFSET_BITS 64
#include "dmabuf_ops.h"

#define PAGES		3
#define SEED		1

static void lifecycle(struct mh_report *r, int fd, const char *dev)
{
	size_t page = db_page(), len = PAGES * page;
	long live0 = mh_param(dev, "live_pages"), maps0 = mh_param(dev, "maps");
	uint8_t *map, *map2;
	uint64_t handle;
	int ret, err;

	/* A size just over two pages rounds up to three. */
	ret = db_alloc(fd, len - page / 2, &handle);
	err = errno;
	db_check_ok(r, ret, err, "alloc");
	if (ret)
		return;
	mh_check(r, handle % page == 0, "handle-page-aligned", "handle %llu",
		 (unsigned long long)handle);
	mh_check(r, mh_param(dev, "live_pages") >= live0 + PAGES, "alloc-counted",
		 "live_pages %ld, was %ld", mh_param(dev, "live_pages"), live0);
	mh_metric(r, "pages_held_for_3", mh_param(dev, "live_pages") - live0);

	map = db_map(fd, handle, len);
	mh_check(r, map != MAP_FAILED, "mmap", "%s", strerror(errno));
	if (map == MAP_FAILED)
		return;
	mh_check(r, db_nonzero(map, len) == 0, "zero-filled", "%zu nonzero bytes",
		 db_nonzero(map, len));
	db_fill(map, len, SEED);
	mh_check(r, db_bad(map, len, SEED) == 0, "pattern", "%zu bad bytes",
		 db_bad(map, len, SEED));
	mh_check(r, mh_param(dev, "maps") == maps0 + 1, "maps-counted", "maps %ld, was %ld",
		 mh_param(dev, "maps"), maps0);

	/* A second mapping of the same buffer shares its pages. */
	map2 = db_map(fd, handle, page);
	mh_check(r, map2 != MAP_FAILED && db_bad(map2, page, SEED) == 0, "second-mapping",
		 "%s", map2 == MAP_FAILED ? strerror(errno) : "other bytes");

	ret = db_free(fd, handle);
	err = errno;
	mh_check_errno(r, ret, err, EBUSY, "free-while-mapped");
	if (map2 != MAP_FAILED)
		munmap(map2, page);
	ret = db_free(fd, handle);
	err = errno;
	mh_check_errno(r, ret, err, EBUSY, "free-while-one-mapping-left");

	munmap(map, len);
	mh_check(r, mh_touch(map, 0) == SIGSEGV, "read-after-munmap", "no SIGSEGV");
	mh_check(r, mh_param(dev, "maps") == maps0, "maps-back", "maps %ld, was %ld",
		 mh_param(dev, "maps"), maps0);
	ret = db_free(fd, handle);
	err = errno;
	db_check_ok(r, ret, err, "free");
	ret = db_free(fd, handle);
	err = errno;
	mh_check_errno(r, ret, err, EINVAL, "free-again");
	mh_check(r, mh_param(dev, "live_pages") == live0, "pages-back", "live_pages %ld, was %ld",
		 mh_param(dev, "live_pages"), live0);

	map = db_map(fd, handle, page);
	err = errno;
	mh_check_errno(r, map == MAP_FAILED ? -1 : 0, err, EINVAL, "mmap-freed-handle");
}

/* mmap must refuse anything but a shared mapping of (part of) one buffer. */
static void refusals(struct mh_report *r, int fd)
{
	size_t page = db_page();
	uint64_t handle, bad = 1;
	void *map;
	int ret, err;

	ret = db_alloc(fd, 2 * page, &handle);
	err = errno;
	db_check_ok(r, ret, err, "alloc-2");
	if (ret)
		return;

	map = db_map(fd, handle, 3 * page);
	err = errno;
	mh_check_errno(r, map == MAP_FAILED ? -1 : 0, err, EINVAL, "mmap-longer-than-buffer");
	map = db_map(fd, handle + page, page);
	err = errno;
	mh_check_errno(r, map == MAP_FAILED ? -1 : 0, err, EINVAL, "mmap-inside-not-at-handle");
	map = db_map(fd, handle + 64 * page, page);
	err = errno;
	mh_check_errno(r, map == MAP_FAILED ? -1 : 0, err, EINVAL, "mmap-unknown-offset");
	map = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, (off_t)handle);
	err = errno;
	mh_check_errno(r, map == MAP_FAILED ? -1 : 0, err, EINVAL, "mmap-private");

	/* The head of a buffer may be mapped alone. */
	map = db_map(fd, handle, page);
	mh_check(r, map != MAP_FAILED, "mmap-head", "%s", strerror(errno));
	if (map != MAP_FAILED)
		munmap(map, page);

	ret = db_free(fd, handle + 1);
	err = errno;
	mh_check_errno(r, ret, err, EINVAL, "free-unaligned-handle");
	ret = ioctl(fd, _IOW(MH_IOC_MAGIC, 99, __u64), &bad);
	err = errno;
	mh_check_errno(r, ret, err, ENOTTY, "unknown-ioctl");
	ret = db_free(fd, handle);
	err = errno;
	db_check_ok(r, ret, err, "free-2");
}

int main(int argc, char **argv)
{
	struct mh_report r = { 0 };
	int fd;

	if (argc != 2)
		return 2;
	fd = mh_open_device(&r, argv[1]);
	if (fd >= 0) {
		lifecycle(&r, fd, argv[1]);
		refusals(&r, fd);
		close(fd);
	}
	mh_metric(&r, "word_bits", sizeof(long) * 8);
	return mh_finish(&r);
}
