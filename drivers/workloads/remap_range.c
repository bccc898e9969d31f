// SPDX-License-Identifier: GPL-2.0
/*
 * remap_range: the four regions tile the area, and a window must stay in
 * the area. Each region maps whole and by its last page alone; an offset
 * past the area and a length past the end are refused with EINVAL.
 *
 * A window crossing a region boundary differs by kernel family:
 *   Linux (remap_pfn_range, one range per VMA): refused, EINVAL;
 *   illumos (devmap(9E) answers each region with *maplen, one devmap
 *   handle per region): mapped, and the second region reads through it.
 * A window whose regions do not all take its protection is refused on both
 * (the whole area read: the write-only region refuses PROT_READ, EINVAL).
 *
 * usage: remap_range DEVICE
 */
#include "mh_workload.h"

#define NR_REGIONS	4
/*
 * Far past any area, with no offset overflow. A 32-bit kernel refuses a
 * device offset past 4 GiB itself (EOVERFLOW) before any driver sees it.
 */
#define FAR_OFFSET	((off_t)1 << (sizeof(long) == 8 ? 40 : 30))
/* Must match the remap driver's RO_SIGNATURE: the read-only region's first bytes. */
#define RO_SIGNATURE	"mmap-harness: read-only region"

struct region {
	const char *name;
	long offset;
	long size;
	int prot;	/* a protection the region accepts */
};

/* Map len bytes at offset; returns 0 or the errno, unmapping on success. */
static int try_map(int fd, off_t offset, long len, int prot)
{
	void *map = mmap(NULL, len, prot, MAP_SHARED, fd, offset);

	if (map == MAP_FAILED)
		return errno;
	munmap(map, len);
	return 0;
}

static void check_fits(struct mh_report *r, int fd, const struct region *g, long page)
{
	char name[64];
	int err;

	err = try_map(fd, g->offset, g->size, g->prot);
	snprintf(name, sizeof(name), "%s whole region", g->name);
	mh_check(r, err == 0, name, "%s", strerror(err));
	err = try_map(fd, g->offset + g->size - page, page, g->prot);
	snprintf(name, sizeof(name), "%s last page", g->name);
	mh_check(r, err == 0, name, "%s", strerror(err));
}

static void check_refused(struct mh_report *r, int fd, const char *name, off_t offset,
			  long len, int prot)
{
	int err = try_map(fd, offset, len, prot);

	mh_check_errno(r, err ? -1 : 0, err, EINVAL, name);
}

#ifdef __sun
/* A read window from `offset` into the read-only region: mapped, one handle per region. */
static void check_spans(struct mh_report *r, int fd, const char *name, off_t offset, long len,
			const struct region *ro)
{
	uint8_t *map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, offset);
	char what[80];

	mh_check(r, map != MAP_FAILED, name, "%s", strerror(errno));
	if (map == MAP_FAILED)
		return;
	snprintf(what, sizeof(what), "%s reads the ro region", name);
	mh_check(r, memcmp(map + (ro->offset - offset), RO_SIGNATURE, sizeof(RO_SIGNATURE)) == 0,
		 what, "no signature at %ld", (long)(ro->offset - offset));
	munmap(map, len);
}
#else
/* Linux: one remap_pfn_range per VMA, so a window stays in one region. */
static void check_spans(struct mh_report *r, int fd, const char *name, off_t offset, long len,
			const struct region *ro)
{
	(void)ro;
	check_refused(r, fd, name, offset, len, PROT_READ);
}
#endif

int main(int argc, char **argv)
{
	struct mh_report r = { 0 };
	struct region g[NR_REGIONS] = {
		{ "rw", 0, 0, PROT_READ | PROT_WRITE },
		{ "ro", 0, 0, PROT_READ },
		{ "wo", 0, 0, PROT_WRITE },
		{ "shifted", 0, 0, PROT_READ | PROT_WRITE },
	};
	long page = sysconf(_SC_PAGESIZE), area;
	char param[32];
	int fd, i;

	if (argc != 2)
		return 2;
	for (i = 0; i < NR_REGIONS; i++) {
		snprintf(param, sizeof(param), "%s_offset", g[i].name);
		g[i].offset = mh_param(argv[1], param);
		snprintf(param, sizeof(param), "%s_size", g[i].name);
		g[i].size = mh_param(argv[1], param);
		/* In order, back to back, page aligned. */
		mh_check(&r, g[i].size > 0 && g[i].size % page == 0 &&
			 g[i].offset == (i ? g[i - 1].offset + g[i - 1].size : 0),
			 "regions tile the area", "%s at %ld size %ld", g[i].name, g[i].offset,
			 g[i].size);
	}
	area = g[NR_REGIONS - 1].offset + g[NR_REGIONS - 1].size;
	mh_metric(&r, "region_kib", g[0].size / 1024);
	fd = mh_open_device(&r, argv[1]);
	if (fd < 0 || r.failures)
		return mh_finish(&r);

	for (i = 0; i < NR_REGIONS; i++)
		check_fits(&r, fd, &g[i], page);
	check_refused(&r, fd, "offset at the area end", area, page, PROT_READ);
	check_refused(&r, fd, "offset far past the area", FAR_OFFSET, page, PROT_READ);
	/* rw and ro both accept PROT_READ: only the crossing itself is at stake. */
	check_spans(&r, fd, "length crossing rw into ro", 0, g[0].size + page, &g[1]);
	check_spans(&r, fd, "last rw page crossing into ro", g[1].offset - page, 2 * page, &g[1]);
	check_refused(&r, fd, "length past the end", g[3].offset + g[3].size - page, 2 * page,
		      PROT_READ | PROT_WRITE);
	check_refused(&r, fd, "whole area at once", 0, area, PROT_READ);
	close(fd);
	return mh_finish(&r);
}
