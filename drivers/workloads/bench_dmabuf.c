// SPDX-License-Identifier: GPL-2.0
/*
 * bench_dmabuf: the ioctl allocator's latencies. Each sample allocates
 * BUFFERS buffers of PAGES pages, maps, touches and unmaps each, then frees
 * them all; the figures are per call:
 *   alloc_us, free_us              MH_IOC_ALLOC and MH_IOC_FREE
 *   map_touch_ns_per_page          mmap at the handle, one write per page, munmap
 *
 * usage: bench_dmabuf DEVICE   (MH_BENCH_REPEAT=N repetitions)
 */
#define _FILE_OFFSET_BITS 64
#include "dmabuf_ops.h"
#include "mh_bench.h"

#define BUFFERS		8	/* under the spec's max_buffers (16) */
#define PAGES		16	/* under the spec's max_buffer_pages (64) */

struct sample {
	double alloc_us;
	double free_us;
	double touch_ns;
};

static int one_sample(int fd, struct sample *s)
{
	size_t page = db_page(), len = PAGES * page, i;
	uint64_t handles[BUFFERS];
	double t, touch = 0;
	uint8_t *p;
	int b;

	t = mh_now();
	for (b = 0; b < BUFFERS; b++)
		if (db_alloc(fd, len, &handles[b]) != 0)
			return -1;
	s->alloc_us = (mh_now() - t) * MH_US_PER_S / BUFFERS;
	for (b = 0; b < BUFFERS; b++) {
		t = mh_now();
		p = db_map(fd, handles[b], len);
		if (p == MAP_FAILED)
			return -1;
		for (i = 0; i < PAGES; i++)
			((volatile uint8_t *)p)[i * page] = (uint8_t)i;
		munmap(p, len);
		touch += mh_now() - t;
	}
	s->touch_ns = touch * MH_NS_PER_S / (BUFFERS * PAGES);
	t = mh_now();
	for (b = 0; b < BUFFERS; b++)
		if (db_free(fd, handles[b]) != 0)
			return -1;
	s->free_us = (mh_now() - t) * MH_US_PER_S / BUFFERS;
	return 0;
}

int main(int argc, char **argv)
{
	static double alloc[MH_BENCH_MAX_REPEAT], freed[MH_BENCH_MAX_REPEAT];
	static double touch[MH_BENCH_MAX_REPEAT];
	struct mh_report r = { 0 };
	int n = mh_bench_repeat(), rep, fd;
	struct sample s;

	if (argc != 2)
		return mh_bench_fail("usage: bench_dmabuf DEVICE", EINVAL);
	fd = open(argv[1], O_RDWR);
	if (fd < 0)
		return mh_bench_fail("open", errno);
	for (rep = 0; rep < n; rep++) {
		if (one_sample(fd, &s) != 0)
			return mh_bench_fail("alloc, map or free", errno);
		alloc[rep] = s.alloc_us;
		freed[rep] = s.free_us;
		touch[rep] = s.touch_ns;
	}
	mh_metric(&r, "repeat", n);
	mh_figure(&r, "alloc_us", alloc, n);
	mh_figure(&r, "free_us", freed, n);
	mh_figure(&r, "map_touch_ns_per_page", touch, n);
	close(fd);
	return mh_finish(&r);
}
