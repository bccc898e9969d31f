// SPDX-License-Identifier: GPL-2.0
/*
 * umem_share: the umem area is allocated by the first mmap (not at load),
 * zero-filled, and shared: a pattern written through one mapping is read
 * back through it, through a second open of the device, and by another
 * process with its own open and mapping, whose writes come back too.
 *
 * usage: umem_share DEVICE
 * Must be the first umem workload after insmod: it checks that nothing was
 * allocated before its own mmap. Patterns cover the scratch region only
 * (umem_layout.h): the last word belongs to the driver.
 */
#include "umem_layout.h"

/* Three distinct patterns: this process, its second open, the other process. */
#define SEED_FIRST	0x9e3779b97f4a7c15ULL
#define SEED_SECOND	0xc2b2ae3d27d4eb4fULL
#define SEED_OTHER	0x165667b19e3779f9ULL

/* What the other process reports through its exit status. */
enum other_status { OTHER_OK, OTHER_NO_OPEN, OTHER_NO_MAP, OTHER_STALE };

struct share {
	const char *device;
	size_t page;
};

static size_t scratch_words(size_t page)
{
	return UMEM_MARKER_OFFSET(page) / sizeof(uint64_t);
}

/* Seed 0 is all zeros, so mismatches(map, page, 0) checks the zero fill. */
static void fill(void *map, size_t page, uint64_t seed)
{
	volatile uint64_t *w = map;
	size_t i;

	for (i = 0; i < scratch_words(page); i++)
		w[i] = (i + 1) * seed;
}

static size_t mismatches(void *map, size_t page, uint64_t seed)
{
	volatile uint64_t *w = map;
	size_t i, bad = 0;

	for (i = 0; i < scratch_words(page); i++)
		if (w[i] != (i + 1) * seed)
			bad++;
	return bad;
}

static void check_allocated(struct mh_report *r, const char *device, long want,
			    const char *name)
{
	long live = mh_param(device, "live_pages");
	long resident = mh_param(device, "resident_pages");

	mh_check(r, live == want && resident == want, name,
		 "live_pages %ld resident_pages %ld, want %ld", live, resident, want);
}

/* A second open of the device in this process maps the same page. */
static void check_second_open(struct mh_report *r, const struct share *s, void *map)
{
	int fd = mh_open_device(r, s->device);
	void *map2;

	if (fd < 0)
		return;
	map2 = umem_map(fd, s->page, 0);
	mh_check(r, map2 != MAP_FAILED, "second-mmap", "%s", strerror(errno));
	if (map2 != MAP_FAILED) {
		mh_check(r, mismatches(map2, s->page, SEED_FIRST) == 0, "second-open-sees-first",
			 "%zu words differ", mismatches(map2, s->page, SEED_FIRST));
		fill(map2, s->page, SEED_SECOND);
		mh_check(r, mismatches(map, s->page, SEED_SECOND) == 0, "first-sees-second-open",
			 "%zu words differ", mismatches(map, s->page, SEED_SECOND));
		munmap(map2, s->page);
	}
	close(fd);
}

/* Runs in a child that opens and maps the device itself (the inherited mapping is unused). */
static int other_process(void *arg)
{
	const struct share *s = arg;
	enum other_status status = OTHER_OK;
	int fd = open(s->device, O_RDWR);
	void *map;

	if (fd < 0)
		return OTHER_NO_OPEN;
	map = umem_map(fd, s->page, 0);
	if (map == MAP_FAILED) {
		close(fd);
		return OTHER_NO_MAP;
	}
	if (mismatches(map, s->page, SEED_FIRST))
		status = OTHER_STALE;
	fill(map, s->page, SEED_OTHER);
	munmap(map, s->page);
	close(fd);
	return status;
}

static void check_other_process(struct mh_report *r, struct share *s, void *map)
{
	int status;

	fill(map, s->page, SEED_FIRST);
	status = mh_in_child(other_process, s);
	mh_check(r, status == OTHER_OK, "other-process-sees-ours",
		 "child status %d (1 no open, 2 no mmap, 3 pattern differs)", status);
	mh_check(r, mismatches(map, s->page, SEED_OTHER) == 0, "we-see-other-process",
		 "%zu words differ", mismatches(map, s->page, SEED_OTHER));
}

int main(int argc, char **argv)
{
	struct mh_report r = { 0 };
	struct share s = { .page = umem_page() };
	void *map;
	int fd;

	if (argc != 2)
		return 2;
	s.device = argv[1];
	check_allocated(&r, s.device, 0, "nothing-allocated-at-load");
	fd = mh_open_device(&r, s.device);
	if (fd < 0)
		return mh_finish(&r);
	check_allocated(&r, s.device, 0, "nothing-allocated-at-open");
	map = umem_map(fd, s.page, 0);
	mh_check(&r, map != MAP_FAILED, "mmap", "%s", strerror(errno));
	if (map == MAP_FAILED)
		return mh_finish(&r);
	check_allocated(&r, s.device, UMEM_AREA_PAGES, "allocated-at-first-mmap");
	mh_check(&r, mismatches(map, s.page, 0) == 0, "zero-filled",
		 "%zu words not zero", mismatches(map, s.page, 0));

	fill(map, s.page, SEED_FIRST);
	mh_check(&r, mismatches(map, s.page, SEED_FIRST) == 0, "pattern-readback",
		 "%zu words differ", mismatches(map, s.page, SEED_FIRST));
	check_second_open(&r, &s, map);
	check_other_process(&r, &s, map);

	mh_metric(&r, "scratch_words", scratch_words(s.page));
	mh_metric(&r, "resident_pages", mh_param(s.device, "resident_pages"));
	munmap(map, s.page);
	close(fd);
	return mh_finish(&r);
}
