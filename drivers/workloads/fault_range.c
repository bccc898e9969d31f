// SPDX-License-Identifier: GPL-2.0
/*
 * fault_range: mmap only validates the window. The whole area and its last
 * page alone map; an offset at or far past the end of the area, and a
 * length running past it, are refused with EINVAL. A touch of the last
 * page arrives as exactly one fault.
 *
 * usage: fault_range DEVICE  (area_bytes is the whole area)
 */
#include "mh_workload.h"

/*
 * Far past any area, with no offset overflow. A 32-bit kernel refuses a
 * device offset past 4 GiB itself (EOVERFLOW) before any driver sees it.
 */
#define FAR_OFFSET	((off_t)1 << (sizeof(long) == 8 ? 40 : 30))

/* Map len bytes at offset; returns 0 or the errno, unmapping on success. */
static int try_map(int fd, off_t offset, long len)
{
	void *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset);

	if (map == MAP_FAILED)
		return errno;
	munmap(map, len);
	return 0;
}

static void check_refused(struct mh_report *r, int fd, const char *name, off_t offset, long len)
{
	int err = try_map(fd, offset, len);

	mh_check_errno(r, err ? -1 : 0, err, EINVAL, name);
}

/* The last page maps alone and faults in once, at the right place. */
static void check_last_page(struct mh_report *r, int fd, const char *device, long area,
			    long page)
{
	long before = mh_param(device, "faults");
	uint8_t *map;
	int sig;

	map = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, area - page);
	mh_check(r, map != MAP_FAILED, "last page", "%s", strerror(errno));
	if (map == MAP_FAILED)
		return;
	sig = mh_touch(map + page - 1, 1);
	mh_check(r, sig == 0, "last byte", "signal %d", sig);
	mh_check(r, mh_param(device, "faults") - before == 1, "last page faults once",
		 "%ld faults", mh_param(device, "faults") - before);
	munmap(map, page);
}

int main(int argc, char **argv)
{
	struct mh_report r = { 0 };
	long page = sysconf(_SC_PAGESIZE), area;
	int fd, err;

	if (argc != 2)
		return 2;
	area = mh_param(argv[1], "area_bytes");
	mh_check(&r, area > 0 && area % page == 0, "area_bytes", "%ld", area);
	fd = mh_open_device(&r, argv[1]);
	if (fd < 0 || r.failures)
		return mh_finish(&r);

	err = try_map(fd, 0, area);
	mh_check(&r, err == 0, "whole area", "%s", strerror(err));
	check_last_page(&r, fd, argv[1], area, page);
	check_refused(&r, fd, "offset at the area end", area, page);
	check_refused(&r, fd, "offset far past the area", FAR_OFFSET, page);
	check_refused(&r, fd, "length past the end", area - page, 2 * page);
	check_refused(&r, fd, "length over the area", 0, area + page);
	close(fd);
	return mh_finish(&r);
}
