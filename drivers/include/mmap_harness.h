/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * The ioctl interface of the mmap-harness drivers, shared by the kernel
 * templates (Linux and illumos) and the workloads. Every field is 64 bits
 * wide, so 32-bit (compat) and 64-bit processes see the same layout.
 *
 * The requests below are the same definitions on both kernels (magic 'M',
 * number, struct); their values are each kernel's own encoding
 * (<linux/ioctl.h>, illumos <sys/ioccom.h>), so a program compiled for one
 * kernel talks to the driver built for that kernel. Compiled into illumos
 * modules, it is written to pass the gate's cstyle as well as checkpatch.
 */
#ifndef MMAP_HARNESS_H
#define	MMAP_HARNESS_H

#if defined(__KERNEL__)
#include <linux/ioctl.h>
#include <linux/types.h>
#elif defined(__sun)
/* illumos (kernel and user) has no <linux/types.h>: name __u64 here. */
#include <sys/types.h>
#include <sys/ioccom.h>
typedef uint64_t __u64;
#else
#include <linux/types.h>
#include <sys/ioctl.h>
#endif

#define	MH_IOC_MAGIC	'M'

/* dmabuf: ALLOC returns a handle that is also the buffer's mmap offset. */
struct mh_alloc {
	__u64 size;		/* in: bytes, rounded up to whole pages */
	__u64 handle;		/* out */
};

/* dmabuf: copy len bytes from src into [offset, offset + len). */
struct mh_transfer {
	__u64 offset;		/* an mmap offset: a handle plus an offset */
	__u64 len;
	__u64 src;		/* user address of the data */
};

#define	MH_IOC_ALLOC	_IOWR(MH_IOC_MAGIC, 1, struct mh_alloc)
#define	MH_IOC_FREE	_IOW(MH_IOC_MAGIC, 2, __u64)
#define	MH_IOC_TRANSFER	_IOW(MH_IOC_MAGIC, 3, struct mh_transfer)

/*
 * illumos: the counters the harness reads, one snapshot per call, from any
 * open of any mmap-harness driver (Linux drivers show the same names in
 * /sys/module/<name>/parameters/ and answer this request with ENOTTY).
 */
struct mh_counters {
	__u64 live_pages;	/* every page the driver holds */
	__u64 resident_pages;	/* of those, kept until detach by design */
	__u64 opens;		/* open(9E) calls that succeeded */
	__u64 maps;		/* devmap handles alive (mmap, fork, split) */
	__u64 faults;		/* devmap_access(9E) calls (fault driver) */
	__u64 area_bytes;	/* what a 64-bit process maps at 0 */
	__u64 dups;		/* devmap_dup(9E) calls: fork copied a handle */
	__u64 unmaps;		/* devmap_unmap(9E) calls, whole or partial */
	__u64 max_buffer_pages;	/* dmabuf: largest buffer (0: other drivers) */
	__u64 max_buffers;	/* dmabuf: most buffers of one open */
};

#define	MH_IOC_COUNTERS	_IOR(MH_IOC_MAGIC, 4, struct mh_counters)

#endif /* MMAP_HARNESS_H */
