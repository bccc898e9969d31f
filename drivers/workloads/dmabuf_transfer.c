// SPDX-License-Identifier: GPL-2.0
/*
 * dmabuf_transfer: TRANSFER copies into a buffer only when the whole range
 * lies inside one buffer of this file. Copies inside a buffer (a few bytes
 * in the middle, a whole buffer, from the device's own mapping, into an
 * unmapped buffer) must show through the mapping with nothing else
 * touched; ranges crossing into the next buffer or past the end, at an
 * offset no buffer has (also one only another open file has), empty or
 * wrapping, or naming a freed buffer must fail with EINVAL and copy
 * nothing; an unreadable source fails with EFAULT.
 *
 * usage: dmabuf_transfer DEVICE   (also built -m32: the compat ioctl path)
 */
#define _FILE_OFFSET_BITS 64
#include "dmabuf_ops.h"

#define A_PAGES		2
#define B_PAGES		1
#define SEED_SRC	3
#define SEED_WHOLE	4
#define SMALL_AT	10
#define SMALL_LEN	100
#define STRADDLE	8	/* bytes each side of a boundary */

struct bufs {
	uint64_t a, b;		/* handles */
	uint8_t *ma, *mb;	/* their mappings */
	size_t la, lb;		/* their lengths */
};

static uint8_t *src;		/* a pattern as large as the largest buffer */

static void expect_einval(struct mh_report *r, int fd, uint64_t off, uint64_t len,
			  const char *name)
{
	int ret = db_transfer(fd, off, len, src);
	int err = errno;

	mh_check_errno(r, ret, err, EINVAL, name);
}

static void inside(struct mh_report *r, int fd, struct bufs *x)
{
	int ret, err;

	ret = db_transfer(fd, x->a + SMALL_AT, SMALL_LEN, src);
	err = errno;
	db_check_ok(r, ret, err, "transfer-small");
	mh_check(r, db_bad(x->ma + SMALL_AT, SMALL_LEN, SEED_SRC) == 0, "small-visible",
		 "%zu bad bytes", db_bad(x->ma + SMALL_AT, SMALL_LEN, SEED_SRC));
	mh_check(r, db_nonzero(x->ma, SMALL_AT) == 0 &&
		 db_nonzero(x->ma + SMALL_AT + SMALL_LEN, x->la - SMALL_AT - SMALL_LEN) == 0,
		 "small-only", "bytes outside the range changed");

	ret = db_transfer(fd, x->b, x->lb, src);
	err = errno;
	db_check_ok(r, ret, err, "transfer-whole-b");
	mh_check(r, db_bad(x->mb, x->lb, SEED_SRC) == 0, "whole-b-visible", "%zu bad bytes",
		 db_bad(x->mb, x->lb, SEED_SRC));

	/* From the device's own mapping of b into all of a (b is shorter: twice). */
	db_fill(x->mb, x->lb, SEED_WHOLE);
	ret = db_transfer(fd, x->a, x->lb, x->mb) ||
	      db_transfer(fd, x->a + x->lb, x->la - x->lb, x->mb);
	err = errno;
	db_check_ok(r, ret, err, "transfer-from-mapping");
	mh_check(r, db_bad(x->ma, x->lb, SEED_WHOLE) == 0 &&
		 db_bad(x->ma + x->lb, x->la - x->lb, SEED_WHOLE) == 0,
		 "from-mapping-visible", "bad bytes in a");
}

static void refused(struct mh_report *r, int fd, struct bufs *x)
{
	uint8_t before[2 * STRADDLE];
	int ret, err;

	memcpy(before, x->ma + x->la - STRADDLE, STRADDLE);
	memcpy(before + STRADDLE, x->mb, STRADDLE);
	/* Handles are consecutive here, so this range starts in a, ends in b. */
	mh_metric(r, "b_follows_a", x->b == x->a + x->la);
	expect_einval(r, fd, x->a + x->la - STRADDLE, 2 * STRADDLE, "span-two-buffers");
	mh_check(r, memcmp(before, x->ma + x->la - STRADDLE, STRADDLE) == 0 &&
		 memcmp(before + STRADDLE, x->mb, STRADDLE) == 0,
		 "span-copies-nothing", "bytes changed");
	expect_einval(r, fd, x->b + x->lb - STRADDLE, 2 * STRADDLE, "span-past-end");
	expect_einval(r, fd, x->b + x->lb, 1, "at-end");
	expect_einval(r, fd, x->a, x->la + x->lb + 1, "longer-than-all");
	expect_einval(r, fd, x->b + 64 * x->lb, 1, "unknown-offset");
	expect_einval(r, fd, x->a + 1, 0, "len-0");
	expect_einval(r, fd, x->a + 1, UINT64_MAX, "len-wraps");
	expect_einval(r, fd, UINT64_MAX - STRADDLE + 1, 2 * STRADDLE, "offset-wraps");

	ret = db_transfer(fd, x->a, 1, NULL);
	err = errno;
	mh_check_errno(r, ret, err, EFAULT, "src-null");
	ret = ioctl(fd, MH_IOC_TRANSFER, NULL);
	err = errno;
	mh_check_errno(r, ret, err, EFAULT, "arg-null");
}

/* Handles are per file: an offset only another file has is unknown here. */
static void other_file(struct mh_report *r, const char *dev, int fd, struct bufs *x)
{
	int fd2 = mh_open_device(r, dev);
	uint64_t h;

	if (fd2 < 0)
		return;
	/* fd2's third buffer lies past the end of everything fd holds. */
	if (db_alloc(fd2, x->la, &h) || db_alloc(fd2, x->lb, &h) || db_alloc(fd2, x->la, &h)) {
		mh_check(r, 0, "alloc-other-file", "%s", strerror(errno));
	} else {
		int ret, err;

		expect_einval(r, fd, h, 1, "offset-of-other-file");
		ret = db_transfer(fd2, h, 1, src);
		err = errno;
		db_check_ok(r, ret, err, "transfer-other-file");
	}
	close(fd2);
}

/* A buffer needs no mapping to be written; the data shows when mapped. */
static void unmapped_then_freed(struct mh_report *r, int fd, size_t page)
{
	uint64_t h;
	uint8_t *map;
	int ret, err;

	if (db_alloc(fd, page, &h)) {
		mh_check(r, 0, "alloc-c", "%s", strerror(errno));
		return;
	}
	ret = db_transfer(fd, h, page, src);
	err = errno;
	db_check_ok(r, ret, err, "transfer-unmapped");
	map = db_map(fd, h, page);
	mh_check(r, map != MAP_FAILED && db_bad(map, page, SEED_SRC) == 0,
		 "unmapped-then-visible", "%s", map == MAP_FAILED ? strerror(errno) : "bad bytes");
	if (map != MAP_FAILED)
		munmap(map, page);
	ret = db_free(fd, h);
	err = errno;
	db_check_ok(r, ret, err, "free-c");
	expect_einval(r, fd, h, 1, "freed-buffer");
}

int main(int argc, char **argv)
{
	struct mh_report r = { 0 };
	size_t page = db_page();
	struct bufs x = { .la = A_PAGES * page, .lb = B_PAGES * page };
	long live0;
	int fd;

	if (argc != 2)
		return 2;
	live0 = mh_param(argv[1], "live_pages");
	src = malloc(x.la);
	if (!src)
		return 2;
	db_fill(src, x.la, SEED_SRC);
	fd = mh_open_device(&r, argv[1]);
	if (fd < 0)
		return mh_finish(&r);
	if (db_alloc(fd, x.la, &x.a) || db_alloc(fd, x.lb, &x.b)) {
		mh_check(&r, 0, "alloc", "%s", strerror(errno));
		close(fd);
		return mh_finish(&r);
	}
	x.ma = db_map(fd, x.a, x.la);
	x.mb = db_map(fd, x.b, x.lb);
	mh_check(&r, x.ma != MAP_FAILED && x.mb != MAP_FAILED, "mmap", "%s", strerror(errno));
	if (x.ma != MAP_FAILED && x.mb != MAP_FAILED) {
		inside(&r, fd, &x);
		refused(&r, fd, &x);
		other_file(&r, argv[1], fd, &x);
		unmapped_then_freed(&r, fd, page);
	}
	close(fd);
	if (x.ma != MAP_FAILED)
		munmap(x.ma, x.la);
	if (x.mb != MAP_FAILED)
		munmap(x.mb, x.lb);
	mh_check(&r, mh_param(argv[1], "live_pages") == live0, "pages-back",
		 "live_pages %ld, was %ld", mh_param(argv[1], "live_pages"), live0);
	free(src);
	return mh_finish(&r);
}
