// SPDX-License-Identifier: GPL-2.0
/*
 * fault_fork: a forked child shares the mapping. The parent touches the
 * first half of the pages; the child inherits those present pages (fork
 * copies the page tables of a VM_MIXEDMAP mapping, so no new fault), reads
 * the parent's data, faults in the second half and writes every page; the
 * parent then sees the child's writes: one piece of memory, not a copy.
 *
 * illumos differs: its x86 HAT copies no translations at fork (hat_dup()
 * does nothing), so the child faults the inherited pages in again, through
 * devmap_access(9E); the fork is counted by devmap_dup(9E) (dups) and the
 * child's exit by devmap_unmap(9E) (unmaps), counters Linux does not have.
 *
 * usage: fault_fork DEVICE  (maps the whole area, area_bytes at offset 0)
 */
#include "mh_workload.h"

#define MARK_PARENT	0xa0000000UL	/* | page index */
#define MARK_CHILD	0xc0000000UL	/* | page index */

#ifdef __sun
#define INHERITED_FAULT	1	/* an inherited present page faults in the child */
#else
#define INHERITED_FAULT	0
#endif

struct shared {
	const char *device;
	uint8_t *map;
	long pages;
	long page;
	long maps;	/* the maps counter with only the parent's VMA */
	long dups;	/* illumos: devmap_dup(9E) calls before the fork */
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
	if (mh_param(s->device, "faults") - before != INHERITED_FAULT * half)
		return 12;	/* inherited pages are present (Linux) */
	for (i = 0; i < s->pages; i++)
		*word(s, i) = MARK_CHILD | i;
	if (mh_param(s->device, "faults") - before != s->pages - (1 - INHERITED_FAULT) * half)
		return 13;	/* every page not present here faults, once */
#ifdef __sun
	if (mh_param(s->device, "dups") != s->dups + 1)
		return 14;	/* the fork copied the one handle */
#endif
	return 0;
}

int main(int argc, char **argv)
{
	struct mh_report r = { 0 };
	struct shared s = { .page = sysconf(_SC_PAGESIZE) };
	long bytes, i, bad = 0, unmaps;
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
	s.dups = mh_param(s.device, "dups");
	unmaps = mh_param(s.device, "unmaps");

	for (i = 0; i < s.pages / 2; i++)
		*word(&s, i) = MARK_PARENT | i;
	status = mh_in_child(child, &s);
	/* 10 maps, 11 data, 12 and 13 fault counts, 14 dups (illumos). */
	mh_check(&r, status == 0, "child shares the mapping", "child status %d", status);
	for (i = 0; i < s.pages; i++)
		bad += *word(&s, i) != (MARK_CHILD | i);
	mh_check(&r, bad == 0, "parent sees the child writes", "%ld pages differ", bad);
	mh_check(&r, mh_param(s.device, "maps") == s.maps, "child vma closed",
		 "maps %ld, want %ld", mh_param(s.device, "maps"), s.maps);
#ifdef __sun
	mh_check(&r, mh_param(s.device, "unmaps") == unmaps + 1, "child handle unmapped at exit",
		 "unmaps %ld, want %ld", mh_param(s.device, "unmaps"), unmaps + 1);
#else
	(void)unmaps;	/* Linux counts no unmaps: the maps check above says it */
#endif
	munmap(map, bytes);
	close(fd);
	return mh_finish(&r);
}
