/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * The ioctl interface of the mmap-harness drivers, shared by the kernel
 * templates and the workloads. Every field is 64 bits wide, so 32-bit
 * (compat) and 64-bit processes see the same layout.
 */
#ifndef MMAP_HARNESS_H
#define MMAP_HARNESS_H

#ifdef __KERNEL__
#include <linux/ioctl.h>
#include <linux/types.h>
#else
#include <linux/types.h>
#include <sys/ioctl.h>
#endif

#define MH_IOC_MAGIC	'M'

/* dmabuf: ALLOC returns a handle that is also the buffer's mmap offset. */
struct mh_alloc {
	__u64 size;		/* in: bytes, rounded up to whole pages */
	__u64 handle;		/* out */
};

/* dmabuf: copy len bytes from src into [offset, offset + len). */
struct mh_transfer {
	__u64 offset;		/* an mmap offset: a handle plus an offset in it */
	__u64 len;
	__u64 src;		/* user address of the data */
};

#define MH_IOC_ALLOC	_IOWR(MH_IOC_MAGIC, 1, struct mh_alloc)
#define MH_IOC_FREE	_IOW(MH_IOC_MAGIC, 2, __u64)
#define MH_IOC_TRANSFER	_IOW(MH_IOC_MAGIC, 3, struct mh_transfer)

#endif /* MMAP_HARNESS_H */
