// SPDX-License-Identifier: GPL-2.0
/*
 * dmabuf_release: buffers belong to the open file and go with its last
 * reference, FREE or not. Several buffers closed without FREE; a dup and
 * a forked child's copy of the descriptor that must not free them early;
 * a mapping that outlives close() and keeps its buffer until munmap.
 * Each time live_pages must come back to what it was before.
 *
 * usage: dmabuf_release DEVICE
 */
#define _FILE_OFFSET_BITS 64
#include "dmabuf_ops.h"

#define SEED		2

/* Sizes in pages of the buffers a file is closed with. */
static const unsigned int sizes[] = { 1, 2, 5, 16 };
#define NSIZES		(sizeof(sizes) / sizeof(sizes[0]))

static long live(const char *dev)
{
	return mh_param(dev, "live_pages");
}

/* Alloc every size on fd; returns how many succeeded, handles in h. */
static unsigned int alloc_all(struct mh_report *r, int fd, uint64_t *h)
{
	unsigned int i, done = 0;

	for (i = 0; i < NSIZES; i++) {
		int ret = db_alloc(fd, sizes[i] * db_page(), &h[i]);

		mh_check(r, ret == 0, "alloc-several", "%u pages: %s", sizes[i], strerror(errno));
		done += ret == 0;
	}
	return done;
}

static void close_frees_all(struct mh_report *r, const char *dev)
{
	long live0 = live(dev), held;
	uint64_t h[NSIZES];
	int fd = mh_open_device(r, dev);

	if (fd < 0)
		return;
	alloc_all(r, fd, h);
	held = live(dev) - live0;
	mh_check(r, held >= 1 + 2 + 5 + 16, "several-counted", "%ld pages held", held);
	mh_metric(r, "pages_held_for_24", held);
	close(fd);
	mh_check(r, live(dev) == live0, "close-frees-all", "live_pages %ld, was %ld",
		 live(dev), live0);
}

static int child_closes(void *arg)
{
	close(*(int *)arg);
	return 0;
}

/* Only the last reference frees: not a dup, not a child's copy. */
static void last_reference_frees(struct mh_report *r, const char *dev)
{
	long live0 = live(dev), held;
	uint64_t h[NSIZES];
	int fd = mh_open_device(r, dev), fd2;

	if (fd < 0)
		return;
	alloc_all(r, fd, h);
	held = live(dev);
	mh_check(r, mh_in_child(child_closes, &fd) == 0 && live(dev) == held,
		 "child-close-keeps", "live_pages %ld, was %ld", live(dev), held);
	fd2 = dup(fd);
	close(fd);
	mh_check(r, live(dev) == held, "dup-keeps", "live_pages %ld, was %ld", live(dev), held);
	mh_check(r, db_free(fd2, h[0]) == 0, "free-through-dup", "%s", strerror(errno));
	close(fd2);
	mh_check(r, live(dev) == live0, "last-close-frees", "live_pages %ld, was %ld",
		 live(dev), live0);
}

/* A mapping holds the file: its buffers stay until the last munmap. */
static void mapping_outlives_close(struct mh_report *r, const char *dev)
{
	size_t page = db_page(), len = 2 * page;
	long live0 = live(dev);
	uint64_t h[NSIZES];
	uint8_t *map;
	int fd = mh_open_device(r, dev);

	if (fd < 0)
		return;
	if (alloc_all(r, fd, h) != NSIZES) {
		close(fd);
		return;
	}
	map = db_map(fd, h[1], len);
	mh_check(r, map != MAP_FAILED, "mmap", "%s", strerror(errno));
	close(fd);
	if (map == MAP_FAILED)
		return;
	mh_check(r, live(dev) > live0, "mapping-keeps-buffers", "live_pages %ld, was %ld",
		 live(dev), live0);
	db_fill(map, len, SEED);
	mh_check(r, db_bad(map, len, SEED) == 0, "usable-after-close", "%zu bad bytes",
		 db_bad(map, len, SEED));
	munmap(map, len);
	mh_check(r, live(dev) == live0, "munmap-frees-all", "live_pages %ld, was %ld",
		 live(dev), live0);
}

int main(int argc, char **argv)
{
	struct mh_report r = { 0 };
	long opens0;

	if (argc != 2)
		return 2;
	opens0 = mh_param(argv[1], "opens");
	close_frees_all(&r, argv[1]);
	last_reference_frees(&r, argv[1]);
	mapping_outlives_close(&r, argv[1]);
	mh_check(&r, mh_param(argv[1], "opens") == opens0 + 3, "opens-counted",
		 "opens %ld, was %ld", mh_param(argv[1], "opens"), opens0);
	return mh_finish(&r);
}
