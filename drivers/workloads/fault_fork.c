// SPDX-License-Identifier: GPL-2.0
/*
 * fault_fork: a forked child shares the mapping. The parent touches the
 * first half of the pages; the child inherits those present pages (fork
 * copies the page tables of a VM_MIXEDMAP mapping, so no new fault), reads
 * the parent's data, faults in the second half and writes every page; the
 * parent then sees the child's writes: one piece of memory, not a copy.
 *
 * usage: fault_fork DEVICE  (maps the whole area, area_bytes at offset 0)
 */
#include "mh_workload.h"

#define MARK_PARENT	0xa0000000UL	/* | page index */
#define MARK_CHILD	0xc0000000UL	/* | page index */

struct shared {
	const char *device;
	uint8_t *map;
	long pages;
	long page;
	long maps;	/* the maps counter with only the parent's VMA */
};

static volatile uint32_t *word(const struct shared *s, long i)
{
	return (volatile uint32_t *)(s->map + i * s->page);
}

static int child(void *arg)
{
	const struct shared *s = arg;
	long half = s->pages / 2, before, i;

	if (mh_param(s->device, "maps") != s->maps + 1)
		return 10;	/* fork must open a copy of the VMA */
	before = mh_param(s->device, "faults");
	for (i = 0; i < half; i++)
		if (*word(s, i) != (MARK_PARENT | i))
			return 11;
	if (mh_param(s->device, "faults") != before)
		return 12;	/* inherited pages are present */
	for (i = 0; i < s->pages; i++)
		*word(s, i) = MARK_CHILD | i;
	if (mh_param(s->device, "faults") - before != s->pages - half)
		return 13;	/* the untouched half faults here, once each */
	return 0;
}

int main(int argc, char **argv)
{
	struct mh_report r = { 0 };
	struct shared s = { .page = sysconf(_SC_PAGESIZE) };
	long bytes, i, bad = 0;
	void *map;
	int fd, status;

	if (argc != 2)
		return 2;
	s.device = argv[1];
	bytes = mh_param(s.device, "area_bytes");
	s.pages = bytes / s.page;
	mh_check(&r, s.pages >= 2, "parameters", "area_bytes %ld", bytes);
	fd = mh_open_device(&r, s.device);
	if (fd < 0 || r.failures)
		return mh_finish(&r);
	map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	mh_check(&r, map != MAP_FAILED, "mmap", "%s", strerror(errno));
	if (map == MAP_FAILED)
		return mh_finish(&r);
	s.map = map;
	s.maps = mh_param(s.device, "maps");

	for (i = 0; i < s.pages / 2; i++)
		*word(&s, i) = MARK_PARENT | i;
	status = mh_in_child(child, &s);
	/* 10 maps, 11 data, 12 fault on an inherited page, 13 fault count. */
	mh_check(&r, status == 0, "child shares the mapping", "child status %d", status);
	for (i = 0; i < s.pages; i++)
		bad += *word(&s, i) != (MARK_CHILD | i);
	mh_check(&r, bad == 0, "parent sees the child writes", "%ld pages differ", bad);
	mh_check(&r, mh_param(s.device, "maps") == s.maps, "child vma closed",
		 "maps %ld, want %ld", mh_param(s.device, "maps"), s.maps);
	munmap(map, bytes);
	close(fd);
	return mh_finish(&r);
}
