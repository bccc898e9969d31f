// SPDX-License-Identifier: GPL-2.0
/*
 * remap_share: the read/write region is one piece of memory for everyone.
 * A second process with its own mapping sees our writes and we see its;
 * a forked child inherits the mapping (one more VMA in the maps counter)
 * and writes through it; after munmap the address faults with SIGSEGV.
 *
 * usage: remap_share DEVICE
 */
#include "mh_workload.h"

#define MARK_OURS	0x1111111111111111ULL
#define MARK_OTHER	0x2222222222222222ULL
#define MARK_CHILD	0x3333333333333333ULL
#define SPOTS		4	/* words checked: first, two inside, last */

struct shared {
	const char *device;
	volatile uint64_t *map;		/* the parent's mapping (inherited by fork) */
	long size;
	long maps_before;		/* the maps counter with only our VMA */
};

static size_t spot(long size, int i)
{
	size_t words = size / sizeof(uint64_t);

	return i == SPOTS - 1 ? words - 1 : i * (words / SPOTS) + i;
}

static int all_equal(volatile uint64_t *map, long size, uint64_t want)
{
	int i;

	for (i = 0; i < SPOTS; i++)
		if (map[spot(size, i)] != want)
			return 0;
	return 1;
}

static void fill(volatile uint64_t *map, long size, uint64_t value)
{
	int i;

	for (i = 0; i < SPOTS; i++)
		map[spot(size, i)] = value;
}

/* Another process, with its own open and its own mapping of the region. */
static int other_process(void *arg)
{
	struct shared *s = arg;
	volatile uint64_t *map;
	int fd = open(s->device, O_RDWR);

	if (fd < 0)
		return 10;
	map = mmap(NULL, s->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		return 11;
	if (!all_equal(map, s->size, MARK_OURS))
		return 12;
	fill(map, s->size, MARK_OTHER);
	return 0;
}

/* A forked child, using the mapping it inherited. */
static int forked_child(void *arg)
{
	struct shared *s = arg;

	/* fork copies our VMA and vm_ops->open counts the copy. */
	if (mh_param(s->device, "maps") != s->maps_before + 1)
		return 20;
	if (!all_equal(s->map, s->size, MARK_OTHER))
		return 21;
	fill(s->map, s->size, MARK_CHILD);
	return 0;
}

int main(int argc, char **argv)
{
	struct mh_report r = { 0 };
	struct shared s = { 0 };
	long maps_start;
	void *map;
	int fd, status, sig;

	if (argc != 2)
		return 2;
	s.device = argv[1];
	s.size = mh_param(s.device, "rw_size");
	mh_check(&r, s.size > 0 && mh_param(s.device, "rw_offset") == 0, "layout",
		 "rw_size %ld rw_offset %ld", s.size, mh_param(s.device, "rw_offset"));
	fd = mh_open_device(&r, s.device);
	if (fd < 0 || s.size <= 0)
		return mh_finish(&r);

	maps_start = mh_param(s.device, "maps");
	map = mmap(NULL, s.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	mh_check(&r, map != MAP_FAILED, "mmap rw", "%s", strerror(errno));
	if (map == MAP_FAILED)
		return mh_finish(&r);
	s.map = map;
	s.maps_before = mh_param(s.device, "maps");
	mh_check(&r, s.maps_before == maps_start + 1, "maps counts our vma",
		 "before %ld after %ld", maps_start, s.maps_before);

	fill(s.map, s.size, MARK_OURS);
	status = mh_in_child(other_process, &s);
	mh_check(&r, status == 0, "other process sees our writes", "child status %d", status);
	mh_check(&r, all_equal(s.map, s.size, MARK_OTHER), "we see the other process's writes",
		 "first word 0x%llx", (unsigned long long)s.map[0]);

	status = mh_in_child(forked_child, &s);
	mh_check(&r, status == 0, "fork inherits the mapping", "child status %d", status);
	mh_check(&r, all_equal(s.map, s.size, MARK_CHILD), "we see the forked child's writes",
		 "first word 0x%llx", (unsigned long long)s.map[0]);
	mh_check(&r, mh_param(s.device, "maps") == s.maps_before, "child vmas closed",
		 "maps %ld, want %ld", mh_param(s.device, "maps"), s.maps_before);

	mh_check(&r, munmap(map, s.size) == 0, "munmap", "%s", strerror(errno));
	sig = mh_touch(map, 0);
	mh_check(&r, sig == SIGSEGV, "access after munmap", "signal %d, want SIGSEGV", sig);
	mh_check(&r, mh_param(s.device, "maps") == maps_start, "maps back after munmap",
		 "maps %ld, want %ld", mh_param(s.device, "maps"), maps_start);
	close(fd);
	return mh_finish(&r);
}
