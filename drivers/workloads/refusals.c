// SPDX-License-Identifier: GPL-2.0
/*
 * refusals: what every template driver refuses, with the errno in the
 * README's driver table, and that the refusals leave the rest working. The
 * memory is the device's, so it is mapped shared only, never executable:
 *
 *   MAP_PRIVATE (read, read/write)        EINVAL
 *   PROT_EXEC at mmap                     EPERM (as on a noexec mount)
 *   mprotect adding PROT_EXEC             EACCES
 *   write-only region (remap only):       PROT_WRITE|PROT_EXEC EPERM,
 *                                         mprotect -W- to -WX EACCES
 *
 * and /proc/self/maps never shows a private or executable mapping of the
 * device. A shared read/write mapping works, shows the offset it was asked
 * for (not a page frame number), and fork after writing through it works,
 * the child sharing the page with the parent.
 *
 * Adapts to the device: when MH_IOC_ALLOC works (dmabuf) it maps a new
 * buffer at its handle, when the device has a write-only region (remap) it
 * checks that too; one page at the rw_offset parameter, or 0, otherwise.
 *
 * usage: refusals DEVICE   (also built -m32: the compat mmap path)
 */
#define _FILE_OFFSET_BITS 64
#include "dmabuf_ops.h"

#define HELD_MAX	8
#define PARENT_MARK	0x70
#define CHILD_MARK	0xc4
#define PERMS_LEN	4	/* "rw-s" */
#define PERM_EXEC	2	/* index of 'x' */
#define PERM_SHARING	3	/* index of 's' or 'p' */

/* What the forked child reports through its exit status. */
enum child_status { CHILD_OK, CHILD_STALE };

struct target {
	const char *device;
	int fd;
	size_t page;
	off_t offset;		/* one read/write page: a handle, rw_offset or 0 */
	int buffer;		/* offset is a dmabuf buffer of ours, freed at the end */
	void *held[HELD_MAX];	/* every mapping made, kept until the maps check */
	int nheld;
};

#ifdef __linux__
/*
 * One line of /proc/self/maps. The maps checks are Linux's: illumos's
 * /proc/self/map is binary (prmap_t) and names no file, so there the
 * refusals are proved by the calls' errnos alone.
 */
struct maps_entry {
	unsigned long start;
	char perms[PERMS_LEN + 1];
	unsigned long long offset;
	char path[256];
};
#endif

static void hold(struct target *t, void *map)
{
	if (map != MAP_FAILED && t->nheld < HELD_MAX)
		t->held[t->nheld++] = map;
}

/*
 * Map one page that the driver must refuse with `want`. One made anyway is
 * written through and held, so the fork check that follows sees its effect
 * (a written private PFN mapping used to make fork fail with ENOMEM).
 */
static void expect_refused(struct mh_report *r, struct target *t, off_t offset, int prot,
			   int flags, int want, const char *name)
{
	void *map = mmap(NULL, t->page, prot, flags, t->fd, offset);
	int err = errno;

	mh_check_errno(r, map == MAP_FAILED ? -1 : 0, err, want, name);
	if (map != MAP_FAILED)
		mh_touch(map, 1);
	hold(t, map);
}

static void *expect_mapped(struct mh_report *r, struct target *t, off_t offset, int prot,
			   const char *name)
{
	void *map = mmap(NULL, t->page, prot, MAP_SHARED, t->fd, offset);

	mh_check(r, map != MAP_FAILED, name, "%s", strerror(errno));
	hold(t, map);
	return map;
}

static void expect_mprotect_refused(struct mh_report *r, const struct target *t, void *map,
				    int prot, const char *name)
{
	int ret = mprotect(map, t->page, prot);
	int err = errno;

	mh_check_errno(r, ret, err, EACCES, name);
}

/* Where one read/write page maps: a new buffer's handle, rw_offset, or 0. */
static void find_page(struct mh_report *r, struct target *t)
{
	uint64_t handle;
	long rw;

	if (db_alloc(t->fd, t->page, &handle) == 0) {
		t->offset = (off_t)handle;
		t->buffer = 1;
		return;
	}
	/* No allocator: the only acceptable answer is "no such ioctl". */
	mh_check(r, errno == ENOTTY, "probe-alloc", "MH_IOC_ALLOC: %s", strerror(errno));
	rw = mh_param(t->device, "rw_offset");
	t->offset = rw > 0 ? rw : 0;
}

#ifdef __linux__
static int maps_next(FILE *f, struct maps_entry *e)
{
	char line[512];

	if (!fgets(line, sizeof(line), f))
		return 0;
	/* Anonymous mappings have no path. */
	e->path[0] = '\0';
	sscanf(line, "%lx-%*x %4s %llx %*s %*s %255s", &e->start, e->perms, &e->offset,
	       e->path);
	return 1;
}

/* The maps line of the mapping at `map`; 0 when it is there. */
static int maps_find(void *map, struct maps_entry *e)
{
	FILE *f = fopen("/proc/self/maps", "r");
	int found = 0;

	if (!f)
		return -1;
	while (!found && maps_next(f, e))
		found = e->start == (unsigned long)map;
	fclose(f);
	return found ? 0 : -1;
}

/* How many mappings of the device are private or executable. */
static int maps_forbidden(const char *device)
{
	FILE *f = fopen("/proc/self/maps", "r");
	struct maps_entry e;
	int count = 0;

	if (!f)
		return -1;
	while (maps_next(f, &e))
		count += strcmp(e.path, device) == 0 &&
			 (e.perms[PERM_SHARING] != 's' || e.perms[PERM_EXEC] != '-');
	fclose(f);
	return count;
}

/* The maps line at `map` shows `perms` and the offset it was mapped at. */
static void check_maps_line(struct mh_report *r, void *map, const char *perms, off_t offset,
			    const char *name)
{
	struct maps_entry e = { 0 };
	int ret = maps_find(map, &e);

	mh_check(r, ret == 0 && strcmp(e.perms, perms) == 0 &&
		 e.offset == (unsigned long long)offset, name,
		 "found %d, perms %s offset %#llx, want %s offset %#llx", ret == 0, e.perms,
		 e.offset, perms, (unsigned long long)offset);
}
#endif /* __linux__ */

static int child(void *arg)
{
	volatile uint8_t *p = arg;

	if (*p != PARENT_MARK)
		return CHILD_STALE;
	*p = CHILD_MARK;
	return CHILD_OK;
}

/* Write through the shared mapping, then fork: the child must run and share the page. */
static void check_fork(struct mh_report *r, uint8_t *map)
{
	volatile uint8_t *p = map;
	int status, err;

	*p = PARENT_MARK;
	status = mh_in_child(child, map);
	err = errno;
	mh_check(r, status == CHILD_OK, "fork-after-write",
		 "child status %d (-1: fork failed, %s; 1: the parent's write not seen)", status,
		 status < 0 ? strerror(err) : "no errno");
	if (status < 0)
		return;
	mh_check(r, *p == CHILD_MARK, "child-write-shared", "byte 0 is %#x, want %#x", *p,
		 CHILD_MARK);
}

/* remap's write-only frame buffer: writable, never executable (x86 would read it). */
static void check_write_only(struct mh_report *r, struct target *t, off_t wo)
{
	void *map;

	expect_refused(r, t, wo, PROT_WRITE | PROT_EXEC, MAP_SHARED, EPERM, "wo-write-exec-map");
	map = expect_mapped(r, t, wo, PROT_WRITE, "wo-write-map");
	if (map == MAP_FAILED)
		return;
	expect_mprotect_refused(r, t, map, PROT_WRITE | PROT_EXEC, "wo-mprotect-exec");
#ifdef __linux__
	check_maps_line(r, map, "-w-s", wo, "wo-maps-line");
#endif
}

static void check_device(struct mh_report *r, struct target *t)
{
	long wo = mh_param(t->device, "wo_offset");
	uint8_t *map;
#ifdef __linux__
	int forbidden;
#endif

	map = expect_mapped(r, t, t->offset, PROT_READ | PROT_WRITE, "shared-map");
	expect_refused(r, t, t->offset, PROT_READ, MAP_PRIVATE, EINVAL, "private-read-map");
	expect_refused(r, t, t->offset, PROT_READ | PROT_WRITE, MAP_PRIVATE, EINVAL,
		       "private-write-map");
	expect_refused(r, t, t->offset, PROT_READ | PROT_EXEC, MAP_SHARED, EPERM, "exec-map");
	if (map != MAP_FAILED) {
		expect_mprotect_refused(r, t, map, PROT_READ | PROT_WRITE | PROT_EXEC,
					"mprotect-exec");
#ifdef __linux__
		check_maps_line(r, map, "rw-s", t->offset, "shared-maps-line");
#endif
		check_fork(r, map);
	}
	if (wo > 0)
		check_write_only(r, t, wo);
#ifdef __linux__
	forbidden = maps_forbidden(t->device);
	mh_check(r, forbidden == 0, "maps-shared-only",
		 "%d private or executable mappings of %s", forbidden, t->device);
#endif
}

int main(int argc, char **argv)
{
	struct target t = { .page = db_page() };
	struct mh_report r = { 0 };
	int i, ret;

	if (argc != 2)
		return 2;
	t.device = argv[1];
	t.fd = mh_open_device(&r, t.device);
	if (t.fd < 0)
		return mh_finish(&r);
	find_page(&r, &t);
	check_device(&r, &t);
	for (i = 0; i < t.nheld; i++)
		munmap(t.held[i], t.page);
	if (t.buffer) {
		ret = db_free(t.fd, (uint64_t)t.offset);
		db_check_ok(&r, ret, errno, "free");
	}
	close(t.fd);
	return mh_finish(&r);
}
