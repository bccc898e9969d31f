// SPDX-License-Identifier: GPL-2.0
/*
 * fault_count: pages arrive on first touch, and only once. mmap adds no
 * fault; touching each page once (reads and writes alternating) adds one
 * fault per page; reading and writing them all again adds none. A second
 * mapping of the same pages faults them in again, sees what the first one
 * wrote, and its writes show through the first: it is the same memory.
 *
 * usage: fault_count DEVICE  (maps the whole area, area_bytes at offset 0)
 */
#include "mh_workload.h"

#define MARK_FIRST	0xf1000000UL	/* | page index, written through the first map */
#define MARK_SECOND	0xf2000000UL	/* | page index, written through the second map */

struct area {
	const char *device;
	long pages;
	long page;
};

static long faults(const struct area *a)
{
	return mh_param(a->device, "faults");
}

static volatile uint32_t *word(uint8_t *map, const struct area *a, long i)
{
	return (volatile uint32_t *)(map + i * a->page);
}

/* First touch of every page: even pages read, odd pages written. */
static void first_touch(struct mh_report *r, uint8_t *map, const struct area *a)
{
	long before = faults(a), i, bad = 0;

	for (i = 0; i < a->pages; i++)
		bad += mh_touch(map + i * a->page, i & 1) != 0;
	mh_check(r, bad == 0, "first touch", "%ld pages raised a signal", bad);
	mh_check(r, faults(a) - before == a->pages, "one fault per page",
		 "%ld faults for %ld pages", faults(a) - before, a->pages);
}

/* Read and write every page again, leaving a marker: no fault. */
static void touch_again(struct mh_report *r, uint8_t *map, const struct area *a)
{
	long before = faults(a), i;

	for (i = 0; i < a->pages; i++)
		(void)*word(map, a, i);
	for (i = 0; i < a->pages; i++)
		*word(map, a, i) = MARK_FIRST | i;
	mh_check(r, faults(a) == before, "no fault on present pages",
		 "%ld more faults", faults(a) - before);
}

/* A fresh mapping faults again, sees the first map's data and writes back through it. */
static void second_mapping(struct mh_report *r, int fd, uint8_t *first, const struct area *a)
{
	long before = faults(a), i, bad = 0;
	uint8_t *map;

	map = mmap(NULL, a->pages * a->page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	mh_check(r, map != MAP_FAILED, "second mmap", "%s", strerror(errno));
	if (map == MAP_FAILED)
		return;
	mh_check(r, faults(a) == before, "second mmap adds no fault",
		 "%ld faults", faults(a) - before);
	for (i = 0; i < a->pages; i++)
		bad += *word(map, a, i) != (MARK_FIRST | i);
	mh_check(r, bad == 0, "second map sees first map data", "%ld pages differ", bad);
	mh_check(r, faults(a) - before == a->pages, "second map faults each page once",
		 "%ld faults for %ld pages", faults(a) - before, a->pages);
	for (i = 0; i < a->pages; i++)
		*word(map, a, i) = MARK_SECOND | i;
	for (i = 0, bad = 0; i < a->pages; i++)
		bad += *word(first, a, i) != (MARK_SECOND | i);
	mh_check(r, bad == 0, "first map sees second map data", "%ld pages differ", bad);
	munmap(map, a->pages * a->page);
}

int main(int argc, char **argv)
{
	struct mh_report r = { 0 };
	struct area a = { .page = sysconf(_SC_PAGESIZE) };
	long bytes, before;
	uint8_t *map;
	int fd;

	if (argc != 2)
		return 2;
	a.device = argv[1];
	bytes = mh_param(a.device, "area_bytes");
	a.pages = bytes / a.page;
	mh_check(&r, bytes > 0 && faults(&a) >= 0, "parameters", "area_bytes %ld", bytes);
	fd = mh_open_device(&r, a.device);
	if (fd < 0 || r.failures)
		return mh_finish(&r);

	before = faults(&a);
	map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	mh_check(&r, map != MAP_FAILED, "mmap", "%s", strerror(errno));
	if (map == MAP_FAILED)
		return mh_finish(&r);
	mh_check(&r, faults(&a) == before, "mmap adds no fault", "%ld faults",
		 faults(&a) - before);
	mh_metric(&r, "pages", a.pages);

	first_touch(&r, map, &a);
	touch_again(&r, map, &a);
	second_mapping(&r, fd, map, &a);
	munmap(map, bytes);
	close(fd);
	return mh_finish(&r);
}
