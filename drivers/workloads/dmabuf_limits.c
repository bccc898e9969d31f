// SPDX-License-Identifier: GPL-2.0
/*
 * dmabuf_limits: the size and count caps, read from the module's
 * max_buffer_pages and max_buffers parameters. Size 0, one byte over the
 * cap and a size near 2^64 are EINVAL; exactly the cap works. An open file
 * holds at most max_buffers buffers: one more is ENOSPC, while another
 * open file still gets its own; after a FREE there is room again. Handles
 * never overlap and a freed one is not handed out again.
 *
 * usage: dmabuf_limits DEVICE
 */
#define _FILE_OFFSET_BITS 64
#include "dmabuf_ops.h"

/* Above any max_buffers the template accepts. */
#define HANDLES_MAX	256

static void sizes(struct mh_report *r, int fd, long max_pages)
{
	uint64_t cap = (uint64_t)max_pages * db_page(), h;
	int ret, err;

	ret = db_alloc(fd, 0, &h);
	err = errno;
	mh_check_errno(r, ret, err, EINVAL, "size-0");
	ret = db_alloc(fd, cap + 1, &h);
	err = errno;
	mh_check_errno(r, ret, err, EINVAL, "size-over-cap");
	ret = db_alloc(fd, UINT64_MAX - 1, &h);
	err = errno;
	mh_check_errno(r, ret, err, EINVAL, "size-near-2-64");
	ret = db_alloc(fd, cap, &h);
	err = errno;
	db_check_ok(r, ret, err, "size-at-cap");
	if (ret == 0) {
		ret = db_free(fd, h);
		err = errno;
		db_check_ok(r, ret, err, "free-at-cap");
	}
	ret = db_alloc(fd, 1, &h);
	err = errno;
	db_check_ok(r, ret, err, "size-1-byte");
	if (ret == 0)
		db_free(fd, h);
	ret = ioctl(fd, MH_IOC_ALLOC, NULL);
	err = errno;
	mh_check_errno(r, ret, err, EFAULT, "alloc-arg-null");
}

/* Fill fd up to max_buffers, each one page; returns how many it got. */
static long fill(struct mh_report *r, int fd, long max_bufs, uint64_t *h)
{
	size_t page = db_page();
	long i, n = 0;

	for (i = 0; i < max_bufs; i++) {
		if (db_alloc(fd, page, &h[i])) {
			mh_check(r, 0, "alloc-up-to-cap", "buffer %ld: %s", i, strerror(errno));
			break;
		}
		n++;
		/* Handles ascend here; what matters is no two buffers overlap. */
		if (i > 0)
			mh_check(r, h[i] >= h[i - 1] + page || h[i] + page <= h[i - 1],
				 "handles-disjoint", "%llu after %llu",
				 (unsigned long long)h[i], (unsigned long long)h[i - 1]);
	}
	return n;
}

static void counts(struct mh_report *r, const char *dev, int fd, long max_bufs)
{
	uint64_t h[HANDLES_MAX], again, other;
	long i, n = fill(r, fd, max_bufs, h);
	int ret, err, fd2;

	if (n != max_bufs)
		return;
	ret = db_alloc(fd, 1, &again);
	err = errno;
	mh_check_errno(r, ret, err, ENOSPC, "one-too-many");

	fd2 = mh_open_device(r, dev);
	if (fd2 >= 0) {
		ret = db_alloc(fd2, 1, &other);
		err = errno;
		db_check_ok(r, ret, err, "cap-is-per-file");
		close(fd2);
	}

	ret = db_free(fd, h[0]);
	err = errno;
	db_check_ok(r, ret, err, "free-one");
	ret = db_alloc(fd, 1, &again);
	err = errno;
	db_check_ok(r, ret, err, "room-after-free");
	for (i = 0; ret == 0 && i < n; i++)
		mh_check(r, again != h[i], "handle-not-reused", "%llu again",
			 (unsigned long long)again);
	ret = db_free(fd, h[0]);
	err = errno;
	mh_check_errno(r, ret, err, EINVAL, "freed-handle-stays-unknown");
}

int main(int argc, char **argv)
{
	struct mh_report r = { 0 };
	long max_pages, max_bufs, live0;
	int fd;

	if (argc != 2)
		return 2;
	max_pages = mh_param(argv[1], "max_buffer_pages");
	max_bufs = mh_param(argv[1], "max_buffers");
	live0 = mh_param(argv[1], "live_pages");
	mh_check(&r, max_pages > 0 && max_bufs > 0 && max_bufs <= HANDLES_MAX, "params",
		 "max_buffer_pages %ld max_buffers %ld", max_pages, max_bufs);
	mh_metric(&r, "max_buffer_pages", max_pages);
	mh_metric(&r, "max_buffers", max_bufs);
	fd = mh_open_device(&r, argv[1]);
	if (fd >= 0 && r.failures == 0) {
		sizes(&r, fd, max_pages);
		counts(&r, argv[1], fd, max_bufs);
	}
	if (fd >= 0)
		close(fd);
	mh_check(&r, mh_param(argv[1], "live_pages") == live0, "pages-back",
		 "live_pages %ld, was %ld", mh_param(argv[1], "live_pages"), live0);
	return mh_finish(&r);
}
