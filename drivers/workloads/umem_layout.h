/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The umem driver's page as its workloads see it (the driver side is in
 * drivers/linux/templates/umem.c.j2). A process maps one page at offset 0:
 * page 0 of the driver's area for 64-bit processes, page 1 for 32-bit ones.
 *
 *   [0, UMEM_MARKER_OFFSET)   scratch: the workloads' patterns
 *   UMEM_MARKER_OFFSET        one u64: umem_compat's data-model marker
 *   UMEM_OPENS_OFFSET         one u64 the driver writes: its open count
 */
#ifndef UMEM_LAYOUT_H
#define UMEM_LAYOUT_H

#include "mh_workload.h"

/* Offsets inside a page of `page` bytes; the last word is the driver's. */
#define UMEM_OPENS_OFFSET(page)		((size_t)(page) - sizeof(uint64_t))
#define UMEM_MARKER_OFFSET(page)	((size_t)(page) - 2 * sizeof(uint64_t))

/* Pages the driver keeps once anything has been mapped (order 1). */
#define UMEM_AREA_PAGES		2

/* What umem_compat writes into its page: "UMEM-64!" and "UMEM-32!". */
#define UMEM_MARKER_64		0x554d454d2d363421ULL
#define UMEM_MARKER_32		0x554d454d2d333221ULL

static inline size_t umem_page(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

/* Map `len` bytes of the device at `offset`, shared and writable. */
static inline void *umem_map(int fd, size_t len, off_t offset)
{
	return mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset);
}

/*
 * Open `device` and map this data model's page; MAP_FAILED (with the failed
 * check recorded in `r`) when either step fails.
 */
static inline void *umem_open_page(struct mh_report *r, const char *device, size_t page,
				   int *fd)
{
	void *map;

	*fd = mh_open_device(r, device);
	if (*fd < 0)
		return MAP_FAILED;
	map = umem_map(*fd, page, 0);
	mh_check(r, map != MAP_FAILED, "mmap", "%s", strerror(errno));
	return map;
}

static inline volatile uint64_t *umem_word(void *map, size_t offset)
{
	return (volatile uint64_t *)((char *)map + offset);
}

#endif /* UMEM_LAYOUT_H */
