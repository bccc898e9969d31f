// SPDX-License-Identifier: GPL-2.0
/*
 * umem_limits: a process may map one page at offset 0 and nothing more.
 * An offset of one page and a length of two pages each fail with ENXIO and
 * leave no VMA behind; a mapping cannot grow (VM_DONTEXPAND: mremap fails
 * with EFAULT); after munmap the address raises SIGSEGV. Built 64-bit and
 * -m32: the compat process has the same limits on its own page.
 *
 * usage: umem_limits DEVICE
 */
#define _GNU_SOURCE	/* mremap */
#include "umem_layout.h"

/* A length short of a page: the kernel rounds it up to the one page. */
#define SHORT_LENGTH	1

static void check_enxio(struct mh_report *r, int fd, size_t len, off_t offset, const char *name)
{
	void *map = umem_map(fd, len, offset);
	int err = errno;

	mh_check_errno(r, map == MAP_FAILED ? -1 : 0, err, ENXIO, name);
	if (map != MAP_FAILED)
		munmap(map, len);
}

static void check_maps(struct mh_report *r, const char *device, long want, const char *name)
{
	long maps = mh_param(device, "maps");

	mh_check(r, maps == want, name, "maps %ld, want %ld", maps, want);
}

/* Grow a mapping in place or by moving it: both must be refused. */
static void check_no_growth(struct mh_report *r, void *map, size_t page)
{
#ifdef MREMAP_MAYMOVE
	void *grown = mremap(map, page, 2 * page, MREMAP_MAYMOVE);
	int err = errno;

	mh_check_errno(r, grown == MAP_FAILED ? -1 : 0, err, EFAULT, "mremap-grow-efault");
	if (grown != MAP_FAILED)
		munmap(grown, 2 * page);
#endif	/* illumos has no mremap(2): nothing can grow a mapping there */
}

static void check_unmapped_faults(struct mh_report *r, int fd, size_t page)
{
	void *map = umem_map(fd, page, 0);
	int sig;

	mh_check(r, map != MAP_FAILED, "mmap-one-page", "%s", strerror(errno));
	if (map == MAP_FAILED)
		return;
	check_no_growth(r, map, page);
	sig = mh_touch(map, 1);
	mh_check(r, sig == 0, "touch-while-mapped", "signal %d", sig);
	munmap(map, page);
	/* Nothing is mapped between munmap and the touch: the hole stays a hole. */
	sig = mh_touch(map, 0);
	mh_check(r, sig == SIGSEGV, "touch-after-munmap-sigsegv", "signal %d, want %d", sig,
		 SIGSEGV);
}

int main(int argc, char **argv)
{
	struct mh_report r = { 0 };
	size_t page = umem_page();
	long maps_before;
	void *map;
	int fd;

	if (argc != 2)
		return 2;
	fd = mh_open_device(&r, argv[1]);
	if (fd < 0)
		return mh_finish(&r);
	maps_before = mh_param(argv[1], "maps");
	check_enxio(&r, fd, page, page, "offset-one-page-enxio");
	check_enxio(&r, fd, 2 * page, 0, "length-two-pages-enxio");
	check_maps(&r, argv[1], maps_before, "refused-mmaps-leave-no-vma");

	map = umem_map(fd, SHORT_LENGTH, 0);
	mh_check(&r, map != MAP_FAILED, "mmap-short-length", "%s", strerror(errno));
	if (map != MAP_FAILED)
		munmap(map, SHORT_LENGTH);
	check_unmapped_faults(&r, fd, page);
	check_maps(&r, argv[1], maps_before, "munmap-closes-every-vma");

	mh_metric(&r, "pointer_bits", sizeof(void *) * 8);
	close(fd);
	return mh_finish(&r);
}
