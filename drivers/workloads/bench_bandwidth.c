// SPDX-License-Identifier: GPL-2.0
/*
 * bench_bandwidth: sequential write and read bandwidth through the driver's
 * mapping (area_bytes at offset 0) and through anonymous MAP_SHARED memory of
 * the same size, in one process. Both are touched once first (steady state,
 * not faults: bench_map times those); each repetition times both, in
 * alternating order, so drift of the host hits both alike, and the
 * device/anon ratio is taken per repetition before its median.
 *
 * usage: bench_bandwidth DEVICE   (MH_BENCH_REPEAT=N repetitions)
 */
#include "mh_bench.h"

#define SAMPLE_BYTES	(16L << 20)	/* one timed sample moves this much */
#define PATTERN		0x9e3779b97f4a7c15ULL

struct pair {
	volatile uint64_t *dev;
	volatile uint64_t *anon;
	size_t words;
	int rounds;		/* passes over the buffer per sample */
};

static double write_mib_s(volatile uint64_t *buf, const struct pair *p, unsigned int rep)
{
	double t = mh_now();
	size_t i;
	int k;

	for (k = 0; k < p->rounds; k++)
		for (i = 0; i < p->words; i++)
			buf[i] = i ^ (PATTERN + rep);
	return p->rounds * p->words * sizeof(uint64_t) / MH_MIB / (mh_now() - t);
}

/* Read it all back; *bad counts words that are not what write_mib_s() left. */
static double read_mib_s(volatile uint64_t *buf, const struct pair *p, unsigned int rep,
			 size_t *bad)
{
	double t = mh_now();
	size_t i;
	int k;

	for (k = 0; k < p->rounds; k++)
		for (i = 0; i < p->words; i++)
			*bad += buf[i] != (i ^ (PATTERN + rep));
	return p->rounds * p->words * sizeof(uint64_t) / MH_MIB / (mh_now() - t);
}

int main(int argc, char **argv)
{
	static double dw[MH_BENCH_MAX_REPEAT], aw[MH_BENCH_MAX_REPEAT], rw[MH_BENCH_MAX_REPEAT];
	static double dr[MH_BENCH_MAX_REPEAT], ar[MH_BENCH_MAX_REPEAT], rr[MH_BENCH_MAX_REPEAT];
	struct mh_report r = { 0 };
	int n = mh_bench_repeat(), rep, fd;
	size_t bad = 0;
	struct pair p;
	long bytes = 0;
	void *map;

	fd = mh_bench_open(argc, argv, &bytes);
	if (fd < 0)
		return MH_BENCH_CANNOT;
	map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		return mh_bench_fail("mmap device", errno);
	p.dev = map;
	map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED)
		return mh_bench_fail("mmap anonymous", errno);
	p.anon = map;
	p.words = bytes / sizeof(uint64_t);
	p.rounds = SAMPLE_BYTES / bytes > 0 ? SAMPLE_BYTES / bytes : 1;

	write_mib_s(p.dev, &p, 0);
	write_mib_s(p.anon, &p, 0);
	for (rep = 0; rep < n; rep++) {
		if (rep % 2) {
			aw[rep] = write_mib_s(p.anon, &p, rep);
			dw[rep] = write_mib_s(p.dev, &p, rep);
			ar[rep] = read_mib_s(p.anon, &p, rep, &bad);
			dr[rep] = read_mib_s(p.dev, &p, rep, &bad);
		} else {
			dw[rep] = write_mib_s(p.dev, &p, rep);
			aw[rep] = write_mib_s(p.anon, &p, rep);
			dr[rep] = read_mib_s(p.dev, &p, rep, &bad);
			ar[rep] = read_mib_s(p.anon, &p, rep, &bad);
		}
		rw[rep] = dw[rep] / aw[rep];
		rr[rep] = dr[rep] / ar[rep];
	}
	mh_check(&r, bad == 0, "read back what was written", "%zu bad words", bad);
	mh_metric(&r, "bytes", bytes);
	mh_metric(&r, "repeat", n);
	mh_figure(&r, "device_write_mib_s", dw, n);
	mh_figure(&r, "anon_write_mib_s", aw, n);
	mh_figure(&r, "write_ratio_device_vs_anon", rw, n);
	mh_figure(&r, "device_read_mib_s", dr, n);
	mh_figure(&r, "anon_read_mib_s", ar, n);
	mh_figure(&r, "read_ratio_device_vs_anon", rr, n);
	munmap((void *)p.dev, bytes);
	munmap((void *)p.anon, bytes);
	close(fd);
	return mh_finish(&r);
}
