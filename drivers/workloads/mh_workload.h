/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers shared by the mmap-harness workloads (header-only: each workload
 * is one static program built from one .c file).
 *
 * A workload is run as `WORKLOAD DEVICE`; it records named checks and
 * metrics and ends with mh_finish(), which prints one JSON object
 *   {"ok": true|false, "checks": N, "failed": ["name: detail", ...], metrics...}
 * and returns the exit status (0 only when every check passed).
 */
#ifndef MH_WORKLOAD_H
#define MH_WORKLOAD_H

/* 64-bit file offsets on a 32-bit guest too: mmap offsets past 4 GiB are tested. */
#define _FILE_OFFSET_BITS 64

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifndef __linux__
#include <sys/ioctl.h>
#include "mmap_harness.h"	/* MH_IOC_COUNTERS: the counters without sysfs */
#endif

#define MH_TEXT_MAX	8192

struct mh_report {
	int checks;
	int failures;
	char failed[MH_TEXT_MAX];
	char metrics[MH_TEXT_MAX];
};

static inline void mh_append(char *buf, const char *fmt, ...)
{
	size_t used = strlen(buf);
	va_list ap;

	if (used >= MH_TEXT_MAX - 1)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + used, MH_TEXT_MAX - used, fmt, ap);
	va_end(ap);
}

/* Record one check; `detail` says what was seen when it fails. */
static inline void mh_check(struct mh_report *r, int ok, const char *name, const char *fmt, ...)
{
	char detail[256] = "";
	va_list ap;

	r->checks++;
	if (ok)
		return;
	r->failures++;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	fprintf(stderr, "FAIL %s: %s\n", name, detail);
	/* JSON strings: the names and details we write carry no quotes. */
	mh_append(r->failed, "%s\"%s: %s\"", r->failures > 1 ? ", " : "", name, detail);
}

/* Expect `ret` to be -1 with errno `want` (pass the errno saved right after the call). */
static inline void mh_check_errno(struct mh_report *r, long ret, int err, int want, const char *name)
{
	mh_check(r, ret == -1 && err == want, name, "got ret %ld errno %d (%s), want errno %d (%s)",
		 ret, ret == -1 ? err : 0, ret == -1 ? strerror(err) : "none", want, strerror(want));
}

static inline void mh_metric(struct mh_report *r, const char *key, double value)
{
	mh_append(r->metrics, ", \"%s\": %.15g", key, value);
}

static inline int mh_finish(struct mh_report *r)
{
	printf("{\"ok\": %s, \"checks\": %d, \"failed\": [%s]%s}\n",
	       r->failures ? "false" : "true", r->checks, r->failed, r->metrics);
	fflush(stdout);
	return r->failures ? 1 : 0;
}

/* The module's name is the device's: /dev/NAME. */
static inline const char *mh_module(const char *device)
{
	const char *slash = strrchr(device, '/');

	return slash ? slash + 1 : device;
}

#ifdef __linux__
/* A counter from /sys/module/NAME/parameters/PARAM, or -1. */
static inline long mh_param(const char *device, const char *param)
{
	char path[256];
	long value = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/module/%s/parameters/%s", mh_module(device), param);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (fscanf(f, "%ld", &value) != 1)
		value = -1;
	fclose(f);
	return value;
}
#else
/*
 * illumos has no sysfs: the counters come from the driver's MH_IOC_COUNTERS
 * snapshot, and the remap layout (Linux exports it as parameters) is derived
 * from area_bytes, the read/write region's size, as remap.c.j2 lays it out:
 * four equal regions by offset, the shifted buffer MH_BUFFER_OFFSET into the
 * last. A name with no meaning on illumos (wo_request_flags: Linux vm_flags)
 * answers -1, as a missing sysfs file does on Linux.
 */
#define MH_BUFFER_OFFSET	0x800L

enum { MH_REGION_RW, MH_REGION_RO, MH_REGION_WO, MH_REGION_SHIFTED };

static inline long mh_layout(const char *param, long region)
{
	static const char *const offsets[] = { "rw_offset", "ro_offset", "wo_offset",
					       "shifted_offset" };
	static const char *const sizes[] = { "rw_size", "ro_size", "wo_size", "shifted_size" };
	int r;

	for (r = MH_REGION_RW; r <= MH_REGION_SHIFTED; r++) {
		if (strcmp(param, offsets[r]) == 0)
			return r * region;
		if (strcmp(param, sizes[r]) == 0)
			return region;
	}
	if (strcmp(param, "buffer_offset") == 0)
		return MH_BUFFER_OFFSET;
	if (strcmp(param, "buffer_size") == 0)
		return region - MH_BUFFER_OFFSET;
	return -1;
}

static inline long mh_param(const char *device, const char *param)
{
	struct mh_counters c;
	int fd = open(device, O_RDWR);
	int ok = fd >= 0 && ioctl(fd, MH_IOC_COUNTERS, &c) == 0;

	if (fd >= 0)
		close(fd);
	if (!ok)
		return -1;
	if (strcmp(param, "live_pages") == 0)
		return (long)c.live_pages;
	if (strcmp(param, "resident_pages") == 0)
		return (long)c.resident_pages;
	if (strcmp(param, "opens") == 0)
		return (long)c.opens - 1;	/* not counting this probe's own open */
	if (strcmp(param, "maps") == 0)
		return (long)c.maps;
	if (strcmp(param, "faults") == 0)
		return (long)c.faults;
	if (strcmp(param, "area_bytes") == 0)
		return (long)c.area_bytes;
	if (strcmp(param, "dups") == 0)
		return (long)c.dups;
	if (strcmp(param, "unmaps") == 0)
		return (long)c.unmaps;
	/* dmabuf's limits (driver.conf); 0 in the other drivers: no such parameter */
	if (strcmp(param, "max_buffer_pages") == 0)
		return c.max_buffer_pages ? (long)c.max_buffer_pages : -1;
	if (strcmp(param, "max_buffers") == 0)
		return c.max_buffers ? (long)c.max_buffers : -1;
	return mh_layout(param, (long)c.area_bytes);
}
#endif

static sigjmp_buf mh_fault_jmp __attribute__((unused));
static volatile sig_atomic_t mh_fault_sig __attribute__((unused));

static inline void mh_on_fault(int sig)
{
	mh_fault_sig = sig;
	siglongjmp(mh_fault_jmp, 1);
}

/*
 * Touch one byte (write when `write`); returns 0 if it worked, or the
 * signal (SIGSEGV, SIGBUS) the access raised, caught so the workload goes on.
 */
static inline int mh_touch(volatile void *addr, int write)
{
	struct sigaction sa = { .sa_handler = mh_on_fault }, old_segv, old_bus;
	int sig = 0;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &old_segv);
	sigaction(SIGBUS, &sa, &old_bus);
	mh_fault_sig = 0;
	if (sigsetjmp(mh_fault_jmp, 1) == 0) {
		if (write)
			*(volatile uint8_t *)addr = 0x5a;
		else
			(void)*(volatile uint8_t *)addr;
	} else {
		sig = mh_fault_sig;
	}
	sigaction(SIGSEGV, &old_segv, NULL);
	sigaction(SIGBUS, &old_bus, NULL);
	return sig;
}

static inline int mh_open_device(struct mh_report *r, const char *device)
{
	int fd = open(device, O_RDWR);

	mh_check(r, fd >= 0, "open", "%s: %s", device, strerror(errno));
	return fd;
}

static inline double mh_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Run fn(arg) in a child; returns its exit status (or 128 + signal). */
static inline int mh_in_child(int (*fn)(void *), void *arg)
{
	pid_t pid = fork();
	int status;

	if (pid == 0)
		_exit(fn(arg));
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

#endif /* MH_WORKLOAD_H */
