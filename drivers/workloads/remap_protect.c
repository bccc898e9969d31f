// SPDX-License-Identifier: GPL-2.0
/*
 * remap_protect: the read-only and write-only regions refuse what their
 * policy forbids, with the exact errno, at mmap and at a later mprotect.
 *
 *   read-only:  writable shared map EACCES (a private one EINVAL, as every
 *               private map: see refusals); read map works and shows the
 *               driver's signature; a write through it SIGSEGV;
 *               mprotect(PROT_WRITE) EACCES.
 *   write-only: map with PROT_READ EINVAL; PROT_WRITE map works and a write
 *               through it succeeds; mprotect(PROT_READ) EACCES. The kernel
 *               flags of that request (wo_request_flags) have VM_WRITE and
 *               no VM_READ; on x86 the MMU still lets the page be read.
 *
 * usage: remap_protect DEVICE
 */
#include "mh_workload.h"

/* Must match the remap driver's RO_SIGNATURE. */
#define RO_SIGNATURE	"mmap-harness: read-only region"
/* vm_flags bits (include/linux/mm.h), as the driver reports them. */
#define VM_READ		0x1UL
#define VM_WRITE	0x2UL
#define WO_MARK		0xa5

struct region {
	off_t offset;
	long size;
};

/* mmap that returns the errno in *err (0 on success). */
static void *map_region(int fd, const struct region *g, int prot, int flags, int *err)
{
	void *map = mmap(NULL, g->size, prot, flags, fd, g->offset);

	*err = map == MAP_FAILED ? errno : 0;
	return map;
}

static void check_read_only(struct mh_report *r, int fd, const struct region *g)
{
	int err, sig;
	void *map;
	long ret;

	map = map_region(fd, g, PROT_READ | PROT_WRITE, MAP_SHARED, &err);
	mh_check_errno(r, map == MAP_FAILED ? -1 : 0, err, EACCES, "ro shared writable map");
	map = map_region(fd, g, PROT_READ | PROT_WRITE, MAP_PRIVATE, &err);
	mh_check_errno(r, map == MAP_FAILED ? -1 : 0, err, EINVAL, "ro private writable map");

	map = map_region(fd, g, PROT_READ, MAP_SHARED, &err);
	mh_check(r, map != MAP_FAILED, "ro read map", "%s", strerror(err));
	if (map == MAP_FAILED)
		return;
	mh_check(r, memcmp(map, RO_SIGNATURE, sizeof(RO_SIGNATURE)) == 0, "ro signature",
		 "first bytes differ from the driver's signature");
	sig = mh_touch(map, 1);
	mh_check(r, sig == SIGSEGV, "ro write access", "signal %d, want SIGSEGV", sig);
	ret = mprotect(map, g->size, PROT_READ | PROT_WRITE);
	mh_check_errno(r, ret, errno, EACCES, "ro mprotect write");
	munmap(map, g->size);
}

static void check_write_only(struct mh_report *r, int fd, const struct region *g,
			     const char *device)
{
	volatile uint8_t *p;
	long ret, flags;
	int err, sig;
	void *map;

	map = map_region(fd, g, PROT_READ | PROT_WRITE, MAP_SHARED, &err);
	mh_check_errno(r, map == MAP_FAILED ? -1 : 0, err, EINVAL, "wo read-write map");
	map = map_region(fd, g, PROT_READ, MAP_SHARED, &err);
	mh_check_errno(r, map == MAP_FAILED ? -1 : 0, err, EINVAL, "wo read map");

	map = map_region(fd, g, PROT_WRITE, MAP_SHARED, &err);
	mh_check(r, map != MAP_FAILED, "wo write map", "%s", strerror(err));
	if (map == MAP_FAILED)
		return;
	flags = mh_param(device, "wo_request_flags");
	mh_metric(r, "wo_request_vm_flags", flags);
	mh_check(r, flags >= 0 && (flags & VM_WRITE) && !(flags & VM_READ),
		 "wo request flags", "vm_flags 0x%lx: want VM_WRITE without VM_READ", flags);

	p = map;
	sig = mh_touch(p, 1);
	mh_check(r, sig == 0, "wo write access", "signal %d", sig);
	p[g->size - 1] = WO_MARK;
	/* No MMU bit for write-only on x86: the read works; the policy is the driver's. */
	sig = mh_touch(p + g->size - 1, 0);
	mh_metric(r, "wo_read_signal", sig);
#if defined(__x86_64__) || defined(__i386__)
	mh_check(r, sig == 0 && p[g->size - 1] == WO_MARK, "wo write landed",
		 "read back signal %d", sig);
#endif
	ret = mprotect(map, g->size, PROT_READ | PROT_WRITE);
	mh_check_errno(r, ret, errno, EACCES, "wo mprotect read");
	munmap(map, g->size);
}

int main(int argc, char **argv)
{
	struct mh_report r = { 0 };
	struct region ro, wo;
	int fd;

	if (argc != 2)
		return 2;
	ro.offset = mh_param(argv[1], "ro_offset");
	ro.size = mh_param(argv[1], "ro_size");
	wo.offset = mh_param(argv[1], "wo_offset");
	wo.size = mh_param(argv[1], "wo_size");
	mh_check(&r, ro.offset > 0 && ro.size > 0 && wo.offset > 0 && wo.size > 0, "layout",
		 "ro %ld+%ld wo %ld+%ld", (long)ro.offset, ro.size, (long)wo.offset, wo.size);
	fd = mh_open_device(&r, argv[1]);
	if (fd < 0 || r.failures)
		return mh_finish(&r);

	check_read_only(&r, fd, &ro);
	check_write_only(&r, fd, &wo, argv[1]);
	close(fd);
	return mh_finish(&r);
}
