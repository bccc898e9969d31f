// SPDX-License-Identifier: GPL-2.0
/*
 * bench_map: what a mapping costs to make and to first touch, through the
 * driver (area_bytes at offset 0) and through anonymous MAP_SHARED memory.
 *   *_first_touch_ns_per_page  a fresh mapping, one write per page (a lazy
 *                              `fault` driver pays its faults here)
 *   *_map_touch_ns_per_page    mmap + that touch + munmap, per page (a
 *                              prefaulting `remap` driver pays in mmap: this
 *                              compares the two fairly)
 *   *_mmap_munmap_us           mmap + munmap of the whole area, untouched
 *
 * usage: bench_map DEVICE   (MH_BENCH_REPEAT=N repetitions)
 */
#include "mh_bench.h"

#define MAPS_PER_SAMPLE	20	/* mmap+munmap pairs timed together */

struct target {
	int fd;			/* -1: anonymous */
	size_t bytes;
	size_t page;
};

static void *map(const struct target *t)
{
	int flags = MAP_SHARED | (t->fd < 0 ? MAP_ANONYMOUS : 0);

	return mmap(NULL, t->bytes, PROT_READ | PROT_WRITE, flags, t->fd, 0);
}

/* One sample of each cost; -1 when a mapping fails (errno says why). */
static int sample(const struct target *t, double *touch_ns, double *total_ns, double *pair_us)
{
	size_t pages = t->bytes / t->page, i;
	double start, touched;
	uint8_t *p;
	int k;

	start = mh_now();
	p = map(t);
	if (p == MAP_FAILED)
		return -1;
	touched = mh_now();
	for (i = 0; i < pages; i++)
		((volatile uint8_t *)p)[i * t->page] = (uint8_t)i;
	*touch_ns = (mh_now() - touched) * MH_NS_PER_S / pages;
	munmap(p, t->bytes);
	*total_ns = (mh_now() - start) * MH_NS_PER_S / pages;

	start = mh_now();
	for (k = 0; k < MAPS_PER_SAMPLE; k++) {
		p = map(t);
		if (p == MAP_FAILED)
			return -1;
		munmap(p, t->bytes);
	}
	*pair_us = (mh_now() - start) * MH_US_PER_S / MAPS_PER_SAMPLE;
	return 0;
}

int main(int argc, char **argv)
{
	static double dt[MH_BENCH_MAX_REPEAT], dm[MH_BENCH_MAX_REPEAT], dp[MH_BENCH_MAX_REPEAT];
	static double at[MH_BENCH_MAX_REPEAT], am[MH_BENCH_MAX_REPEAT], ap[MH_BENCH_MAX_REPEAT];
	struct mh_report r = { 0 };
	struct target dev, anon;
	int n = mh_bench_repeat(), rep;
	long bytes = 0;

	dev.fd = mh_bench_open(argc, argv, &bytes);
	if (dev.fd < 0)
		return MH_BENCH_CANNOT;
	dev.bytes = anon.bytes = bytes;
	dev.page = anon.page = (size_t)sysconf(_SC_PAGESIZE);
	anon.fd = -1;

	for (rep = 0; rep < n; rep++) {
		if (sample(&dev, &dt[rep], &dm[rep], &dp[rep]) != 0)
			return mh_bench_fail("mmap device", errno);
		if (sample(&anon, &at[rep], &am[rep], &ap[rep]) != 0)
			return mh_bench_fail("mmap anonymous", errno);
	}
	mh_metric(&r, "bytes", bytes);
	mh_metric(&r, "repeat", n);
	mh_figure(&r, "device_first_touch_ns_per_page", dt, n);
	mh_figure(&r, "anon_first_touch_ns_per_page", at, n);
	mh_figure(&r, "device_map_touch_ns_per_page", dm, n);
	mh_figure(&r, "anon_map_touch_ns_per_page", am, n);
	mh_figure(&r, "device_mmap_munmap_us", dp, n);
	mh_figure(&r, "anon_mmap_munmap_us", ap, n);
	close(dev.fd);
	return mh_finish(&r);
}
