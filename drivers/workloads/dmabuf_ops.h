/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The dmabuf driver's ioctls and mappings as small calls, shared by the
 * dmabuf_* workloads. Every call returns 0 (or a pointer) on success and
 * -1 (or MAP_FAILED) with errno set, as the system call did.
 *
 * Include after defining _FILE_OFFSET_BITS 64 (before any system header),
 * so handles reach mmap whole in 32-bit (compat) builds too.
 */
#ifndef DMABUF_OPS_H
#define DMABUF_OPS_H

#include "mh_workload.h"
#include "mmap_harness.h"

static inline size_t db_page(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

static inline int db_alloc(int fd, uint64_t size, uint64_t *handle)
{
	struct mh_alloc req = { .size = size };

	if (ioctl(fd, MH_IOC_ALLOC, &req) != 0)
		return -1;
	*handle = req.handle;
	return 0;
}

static inline int db_free(int fd, uint64_t handle)
{
	__u64 arg = handle;

	return ioctl(fd, MH_IOC_FREE, &arg);
}

static inline int db_transfer(int fd, uint64_t offset, uint64_t len, const void *src)
{
	struct mh_transfer req = { .offset = offset, .len = len, .src = (uintptr_t)src };

	return ioctl(fd, MH_IOC_TRANSFER, &req);
}

static inline void *db_map(int fd, uint64_t handle, size_t len)
{
	return mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)handle);
}

/* The byte a pattern puts at index i of a buffer; seed tells runs apart. */
static inline uint8_t db_byte(size_t i, unsigned int seed)
{
	return (uint8_t)(i * 131 + seed * 7 + (i >> 8));
}

static inline void db_fill(volatile uint8_t *p, size_t len, unsigned int seed)
{
	size_t i;

	for (i = 0; i < len; i++)
		p[i] = db_byte(i, seed);
}

/* How many bytes of p differ from the pattern. */
static inline size_t db_bad(const volatile uint8_t *p, size_t len, unsigned int seed)
{
	size_t i, bad = 0;

	for (i = 0; i < len; i++)
		bad += p[i] != db_byte(i, seed);
	return bad;
}

/* How many bytes of p are not zero. */
static inline size_t db_nonzero(const volatile uint8_t *p, size_t len)
{
	size_t i, bad = 0;

	for (i = 0; i < len; i++)
		bad += p[i] != 0;
	return bad;
}

/* Expect a call (0 / -1 with errno) to succeed; records errno if not. */
static inline void db_check_ok(struct mh_report *r, int ret, int err, const char *name)
{
	mh_check(r, ret == 0, name, "ret %d errno %d (%s)", ret, ret ? err : 0,
		 ret ? strerror(err) : "none");
}

#endif /* DMABUF_OPS_H */
