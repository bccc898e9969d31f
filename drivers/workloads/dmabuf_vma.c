// SPDX-License-Identifier: GPL-2.0
/*
 * dmabuf_vma: a buffer stays busy (FREE says EBUSY) exactly as long as
 * some VMA maps it, however the mappings multiply or move:
 *  - fork: the child inherits the mapping, its writes show in the parent,
 *    and while only the child still maps the buffer, FREE is EBUSY;
 *  - partial munmap: each piece of a split mapping counts until it goes;
 *  - mprotect splits a mapping in three, one munmap removes them all;
 *  - mremap: a move keeps the buffer busy and its bytes, the old address
 *    faults; a shrink keeps it busy; growing is refused; MREMAP_DONTUNMAP
 *    is refused, or else leaves two mappings that both count.
 * The module's maps counter must be back where it was at the end.
 *
 * usage: dmabuf_vma DEVICE
 */
#define _GNU_SOURCE	/* mremap */
#define _FILE_OFFSET_BITS 64
#include "dmabuf_ops.h"

#define SEED_CHILD	5
#define SEED_MOVE	6

static void expect_busy(struct mh_report *r, int fd, uint64_t h, const char *name)
{
	int ret = db_free(fd, h);
	int err = errno;

	mh_check_errno(r, ret, err, EBUSY, name);
}

static void expect_freed(struct mh_report *r, int fd, uint64_t h, const char *name)
{
	int ret = db_free(fd, h);
	int err = errno;

	db_check_ok(r, ret, err, name);
}

/* Alloc and map `pages` pages; MAP_FAILED (and a failed check) if not. */
static uint8_t *alloc_map(struct mh_report *r, int fd, size_t pages, uint64_t *h)
{
	size_t len = pages * db_page();
	uint8_t *map;

	if (db_alloc(fd, len, h)) {
		mh_check(r, 0, "alloc", "%zu pages: %s", pages, strerror(errno));
		return MAP_FAILED;
	}
	map = db_map(fd, *h, len);
	mh_check(r, map != MAP_FAILED, "mmap", "%zu pages: %s", pages, strerror(errno));
	return map;
}

/* Wait for one byte on fd; 0 when it came. */
static int wait_byte(int fd)
{
	char c;

	return read(fd, &c, 1) == 1 ? 0 : -1;
}

/* The child writes, tells the parent, and keeps its mapping until told. */
static void fork_child_holds(struct mh_report *r, int fd)
{
	size_t page = db_page();
	int up[2], down[2], status;
	uint64_t h;
	uint8_t *map = alloc_map(r, fd, 1, &h);
	pid_t pid;

	if (map == MAP_FAILED)
		return;
	if (pipe(up)) {
		mh_check(r, 0, "pipe", "%s", strerror(errno));
		goto out_unmap;
	}
	if (pipe(down)) {
		mh_check(r, 0, "pipe", "%s", strerror(errno));
		goto out_close_up;
	}
	pid = fork();
	if (pid == 0) {
		db_fill(map, page, SEED_CHILD);
		if (write(up[1], "w", 1) != 1 || wait_byte(down[0]))
			_exit(1);
		_exit(db_bad(map, page, SEED_CHILD) ? 1 : 0);
	}
	/* Our copies of the child's ends: a dead child then reads as EOF. */
	close(up[1]);
	close(down[0]);
	up[1] = down[0] = -1;
	mh_check(r, pid > 0 && wait_byte(up[0]) == 0, "fork", "%s", strerror(errno));
	if (pid > 0) {
		mh_check(r, db_bad(map, page, SEED_CHILD) == 0, "child-writes-parent-sees",
			 "%zu bad bytes", db_bad(map, page, SEED_CHILD));
		munmap(map, page);
		expect_busy(r, fd, h, "free-while-only-child-maps");
		mh_check(r, write(down[1], "x", 1) == 1, "wake-child", "%s", strerror(errno));
		waitpid(pid, &status, 0);
		mh_check(r, WIFEXITED(status) && WEXITSTATUS(status) == 0, "child-ok",
			 "status %d", status);
		expect_freed(r, fd, h, "free-after-child-exit");
		map = MAP_FAILED;
	}
	close(down[0]);
	close(down[1]);
out_close_up:
	close(up[0]);
	close(up[1]);
out_unmap:
	/* Only when something failed before the parent let go of it. */
	if (map != MAP_FAILED) {
		munmap(map, page);
		db_free(fd, h);
	}
}

static void partial_munmap(struct mh_report *r, int fd)
{
	size_t page = db_page();
	uint64_t h;
	uint8_t *map = alloc_map(r, fd, 2, &h);

	if (map == MAP_FAILED)
		return;
	db_fill(map + page, page, SEED_MOVE);
	munmap(map, page);
	expect_busy(r, fd, h, "free-with-second-page-mapped");
	mh_check(r, mh_touch(map, 0) == SIGSEGV, "first-page-gone", "no SIGSEGV");
	mh_check(r, db_bad(map + page, page, SEED_MOVE) == 0, "second-page-kept",
		 "%zu bad bytes", db_bad(map + page, page, SEED_MOVE));
	munmap(map + page, page);
	expect_freed(r, fd, h, "free-after-last-piece");
}

static void mprotect_split(struct mh_report *r, int fd)
{
	size_t page = db_page();
	uint64_t h;
	uint8_t *map = alloc_map(r, fd, 3, &h);

	if (map == MAP_FAILED)
		return;
	mh_check(r, mprotect(map + page, page, PROT_READ) == 0, "mprotect-middle", "%s",
		 strerror(errno));
	mh_check(r, mh_touch(map + page, 1) == SIGSEGV && mh_touch(map + 2 * page, 1) == 0,
		 "middle-read-only", "protections not split");
	expect_busy(r, fd, h, "free-split-in-three");
	munmap(map, 3 * page);
	expect_freed(r, fd, h, "free-after-one-munmap");
}

#ifdef MREMAP_MAYMOVE	/* mremap(2) is Linux's; illumos has none */
static void mremap_move(struct mh_report *r, int fd)
{
	size_t page = db_page(), len = 2 * page;
	uint8_t *map, *to, *moved;
	uint64_t h;

	map = alloc_map(r, fd, 2, &h);
	if (map == MAP_FAILED)
		return;
	db_fill(map, len, SEED_MOVE);
	/* A place to move to that is surely free: reserve it, then replace. */
	to = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	moved = mremap(map, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, to);
	mh_check(r, to != MAP_FAILED && moved == to, "mremap-move", "%s", strerror(errno));
	if (moved != to) {
		munmap(map, len);
		expect_freed(r, fd, h, "free-move-failed");
		return;
	}
	mh_check(r, db_bad(moved, len, SEED_MOVE) == 0, "moved-bytes-kept", "%zu bad bytes",
		 db_bad(moved, len, SEED_MOVE));
	mh_check(r, mh_touch(map, 0) == SIGSEGV, "old-address-gone", "no SIGSEGV");
	expect_busy(r, fd, h, "free-after-move");
	munmap(moved, len);
	expect_freed(r, fd, h, "free-after-munmap-moved");
}

/*
 * MREMAP_DONTUNMAP would leave the old mapping in place next to the new
 * one. The kernel refuses it for VM_PFNMAP; if it ever allowed it, both
 * mappings must count.
 */
static void mremap_dontunmap(struct mh_report *r, int fd)
{
	size_t page = db_page();
	uint8_t *map, *res;
	uint64_t h;

	map = alloc_map(r, fd, 1, &h);
	if (map == MAP_FAILED)
		return;
	res = mremap(map, page, page, MREMAP_MAYMOVE | MREMAP_DONTUNMAP);
	mh_metric(r, "dontunmap_refused", res == MAP_FAILED);
	if (res != MAP_FAILED) {
		munmap(res, page);
		expect_busy(r, fd, h, "free-old-mapping-left");
	}
	munmap(map, page);
	expect_freed(r, fd, h, "free-after-dontunmap");
}

static void mremap_resize(struct mh_report *r, int fd)
{
	size_t page = db_page();
	uint8_t *map, *res;
	uint64_t h;
	int err;

	map = alloc_map(r, fd, 2, &h);
	if (map == MAP_FAILED)
		return;
	res = mremap(map, page, 2 * page, MREMAP_MAYMOVE);
	mh_check(r, res == MAP_FAILED, "mremap-grow-refused", "grew to %p", (void *)res);
	munmap(map + page, page);
	/* The first page cannot grow back over the freed second one either. */
	res = mremap(map, page, 2 * page, 0);
	err = errno;
	mh_check(r, res == MAP_FAILED, "mremap-grow-in-place-refused", "errno %d", err);
	mh_metric(r, "grow_errno", err);
	expect_busy(r, fd, h, "free-after-refused-grow");
	munmap(map, page);
	expect_freed(r, fd, h, "free-after-shrunk-munmap");

	map = alloc_map(r, fd, 2, &h);
	if (map == MAP_FAILED)
		return;
	res = mremap(map, 2 * page, page, 0);
	mh_check(r, res == map, "mremap-shrink", "%s", strerror(errno));
	expect_busy(r, fd, h, "free-after-shrink");
	munmap(map, page);
	expect_freed(r, fd, h, "free-after-munmap-shrunk");
}
#endif

int main(int argc, char **argv)
{
	struct mh_report r = { 0 };
	long maps0, live0;
	int fd;

	if (argc != 2)
		return 2;
	maps0 = mh_param(argv[1], "maps");
	live0 = mh_param(argv[1], "live_pages");
	fd = mh_open_device(&r, argv[1]);
	if (fd >= 0) {
		fork_child_holds(&r, fd);
		partial_munmap(&r, fd);
		mprotect_split(&r, fd);
#ifdef MREMAP_MAYMOVE
		mremap_move(&r, fd);
		mremap_dontunmap(&r, fd);
		mremap_resize(&r, fd);
#endif
		close(fd);
	}
	mh_check(&r, mh_param(argv[1], "maps") == maps0, "maps-back", "maps %ld, was %ld",
		 mh_param(argv[1], "maps"), maps0);
	mh_check(&r, mh_param(argv[1], "live_pages") == live0, "pages-back",
		 "live_pages %ld, was %ld", mh_param(argv[1], "live_pages"), live0);
	return mh_finish(&r);
}
