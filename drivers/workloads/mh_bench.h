/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Repetition and summary for the bench_* workloads. Each figure is measured
 * MH_BENCH_REPEAT times (from the environment; MH_BENCH_DEFAULT_REPEAT when
 * unset) and printed as its median with its spread:
 *   "NAME": median, "NAME_spread": [min, first quartile, third quartile, max]
 * A figure's unit is its name's suffix: _mib_s, _us, _ns_per_page, _ratio.
 */
#ifndef MH_BENCH_H
#define MH_BENCH_H

#include "mh_workload.h"

#define MH_BENCH_DEFAULT_REPEAT	15
#define MH_BENCH_MIN_REPEAT	3
#define MH_BENCH_MAX_REPEAT	1000
#define MH_MIB			(1024.0 * 1024.0)
#define MH_NS_PER_S		1e9
#define MH_US_PER_S		1e6
#define MH_BENCH_CANNOT		2	/* exit status: the benchmark could not run */

static inline int mh_bench_repeat(void)
{
	const char *text = getenv("MH_BENCH_REPEAT");
	long n = text ? strtol(text, NULL, 10) : MH_BENCH_DEFAULT_REPEAT;

	if (n < MH_BENCH_MIN_REPEAT)
		return MH_BENCH_MIN_REPEAT;
	return n > MH_BENCH_MAX_REPEAT ? MH_BENCH_MAX_REPEAT : (int)n;
}

static int mh_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Quantile q of n sorted samples, interpolated between neighbours. */
static inline double mh_quantile(const double *sorted, int n, double q)
{
	double at = q * (n - 1);
	int lo = (int)at;

	if (lo >= n - 1)
		return sorted[n - 1];
	return sorted[lo] + (at - lo) * (sorted[lo + 1] - sorted[lo]);
}

static inline void mh_figure(struct mh_report *r, const char *name, const double *samples,
			     int n)
{
	double sorted[MH_BENCH_MAX_REPEAT];

	memcpy(sorted, samples, n * sizeof(double));
	qsort(sorted, n, sizeof(double), mh_cmp_double);
	mh_append(r->metrics, ", \"%s\": %.6g, \"%s_spread\": [%.6g, %.6g, %.6g, %.6g]",
		  name, mh_quantile(sorted, n, 0.5), name, sorted[0],
		  mh_quantile(sorted, n, 0.25), mh_quantile(sorted, n, 0.75), sorted[n - 1]);
}

/* A benchmark that cannot run says why in its one JSON object; returns -1. */
static inline int mh_bench_say(const char *what, int err)
{
	printf("{\"ok\": false, \"error\": \"%s: %s\"}\n", what, strerror(err));
	return -1;
}

/* The same, as main()'s exit status. */
static inline int mh_bench_fail(const char *what, int err)
{
	mh_bench_say(what, err);
	return MH_BENCH_CANNOT;
}

/*
 * Open the device (the program's only argument) and read the size of its
 * area: the descriptor, or -1 after saying why.
 */
static inline int mh_bench_open(int argc, char **argv, long *bytes)
{
	int fd;

	if (argc != 2)
		return mh_bench_say("usage: BENCH DEVICE", EINVAL);
	*bytes = mh_param(argv[1], "area_bytes");
	if (*bytes <= 0)
		return mh_bench_say("area_bytes parameter", ENOENT);
	fd = open(argv[1], O_RDWR);
	if (fd < 0)
		return mh_bench_say("open", errno);
	return fd;
}

#endif /* MH_BENCH_H */
