// SPDX-License-Identifier: GPL-2.0
/*
 * fuzz: random mmap, munmap, mprotect, mremap, madvise, fork, touches and
 * ioctls against DEVICE, with random offsets, lengths, protections and
 * flags. Most calls are meant to fail; what must not happen is a kernel
 * crash, a leak (the harness checks after every driver), this program
 * dying, or a call that cannot be refused failing: every fork (and its
 * child's exit status 0) and every munmap of a mapping this program holds.
 * The first such failure fails the run, with its op and errno. The seed is
 * printed, so a failure replays with
 *   MH_FUZZ_SEED=<seed> fuzz DEVICE   (or mmap-harness run --fuzz-seed <seed>)
 * MH_FUZZ_OPS sets the number of calls (default 10000).
 */
#define _GNU_SOURCE	/* mremap */
#include "mh_workload.h"
#include "mmap_harness.h"

#define DEFAULT_OPS	10000
#define MAX_MAPS	32
#define MAX_HANDLES	16
#define MAX_PAGES	8	/* longest mapping tried, in pages */
#define MAX_PGOFF	16	/* largest offset tried, in pages */
#define CHILD_TOUCHES	8

enum op { OP_MMAP, OP_MUNMAP, OP_MPROTECT, OP_MREMAP, OP_MADVISE, OP_FORK,
	  OP_TOUCH, OP_ALLOC, OP_FREE, OP_TRANSFER, OP_COUNT };

/* How often each call is picked, in percent; fork is slow under emulation. */
static const unsigned int weights[OP_COUNT] = {
	[OP_MMAP] = 20, [OP_MUNMAP] = 10, [OP_MPROTECT] = 10, [OP_MREMAP] = 8,
	[OP_MADVISE] = 8, [OP_FORK] = 1, [OP_TOUCH] = 25, [OP_ALLOC] = 6,
	[OP_FREE] = 6, [OP_TRANSFER] = 6,
};

struct mapping {
	uint8_t *addr;
	size_t len;
};

/* The first call that should have worked and did not. */
struct broken {
	const char *what;	/* NULL while every such call worked */
	unsigned long at;	/* its index in the sequence, from 0 */
	int err;		/* its errno, or 0 for a child's exit status */
	int status;		/* the child's exit status (128 + signal) */
};

struct state {
	int fd;
	long page;
	struct mapping maps[MAX_MAPS];
	uint64_t handles[MAX_HANDLES];
	unsigned long done[OP_COUNT];
	unsigned long failed[OP_COUNT];
	unsigned long signals;
	unsigned long at;	/* index of the call being made */
	struct broken broken;
};

static uint64_t rng_state;

/* splitmix64: tiny, and the same sequence on every libc and data model. */
static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static unsigned long below(unsigned long n)
{
	return n ? rnd() % n : 0;
}

static enum op random_op(void)
{
	unsigned long pick = below(100);
	int op;

	for (op = 0; op < OP_COUNT - 1; op++) {
		if (pick < weights[op])
			break;
		pick -= weights[op];
	}
	return (enum op)op;
}

static int random_prot(void)
{
	static const int prots[] = { PROT_NONE, PROT_READ, PROT_WRITE,
				     PROT_READ | PROT_WRITE };

	return prots[below(sizeof(prots) / sizeof(prots[0]))];
}

static struct mapping *random_map(struct state *s)
{
	struct mapping *m = &s->maps[below(MAX_MAPS)];

	return m->addr ? m : NULL;
}

static off_t random_offset(struct state *s)
{
	uint64_t h = s->handles[below(MAX_HANDLES)];

	/* Half the time a buffer handle (dmabuf), else any page offset. */
	if (h && below(2))
		return (off_t)h;
	return (off_t)(below(MAX_PGOFF) * s->page);
}

/* Record a call that must work and failed with `err`; only the first is kept. */
static void must_work(struct state *s, int ok, const char *what, int err, int status)
{
	if (ok || s->broken.what)
		return;
	s->broken = (struct broken){ .what = what, .at = s->at, .err = err, .status = status };
}

/* Unmap part of a mapping we hold: that cannot be refused. */
static void unmap_held(struct state *s, void *addr, size_t len)
{
	int ret = munmap(addr, len);

	must_work(s, ret == 0, "munmap", errno, 0);
}

static int do_mmap(struct state *s)
{
	struct mapping *slot = &s->maps[below(MAX_MAPS)];
	size_t len = (1 + below(MAX_PAGES)) * s->page;
	int flags = below(4) ? MAP_SHARED : MAP_PRIVATE;
	void *p;

	if (slot->addr)
		return 0;
	p = mmap(NULL, len, random_prot(), flags, s->fd, random_offset(s));
	if (p == MAP_FAILED)
		return -1;
	slot->addr = p;
	slot->len = len;
	return 0;
}

static int do_munmap(struct state *s)
{
	struct mapping *m = random_map(s);
	size_t pages, first;

	if (!m)
		return 0;
	pages = m->len / s->page;
	first = below(pages);
	if (first == 0) {	/* whole mapping */
		unmap_held(s, m->addr, m->len);
		m->addr = NULL;
		return 0;
	}
	/* A partial unmap from `first` to the end splits the VMA. */
	unmap_held(s, m->addr + first * s->page, m->len - first * s->page);
	m->len = first * s->page;
	return 0;
}

static int do_mremap(struct state *s)
{
	struct mapping *m = random_map(s);
	size_t len = (1 + below(MAX_PAGES)) * s->page;
	void *p;

	if (!m)
		return 0;
#ifdef MREMAP_MAYMOVE
	p = mremap(m->addr, m->len, len, below(2) ? MREMAP_MAYMOVE : 0);
#else
	p = MAP_FAILED;	/* no mremap(2) (illumos): the op is a refused call */
#endif
	if (p == MAP_FAILED)
		return -1;
	m->addr = p;
	m->len = len;
	return 0;
}

static int do_madvise(struct state *s)
{
	static const int advice[] = { MADV_DONTNEED, MADV_WILLNEED, MADV_NORMAL,
				      MADV_RANDOM, MADV_SEQUENTIAL };
	struct mapping *m = random_map(s);

	if (!m)
		return 0;
	return madvise(m->addr, m->len, advice[below(sizeof(advice) / sizeof(advice[0]))]);
}

static void touch_random(struct state *s)
{
	struct mapping *m = random_map(s);

	if (m && mh_touch(m->addr + below(m->len), below(2)))
		s->signals++;
}

static int child_body(void *arg)
{
	struct state *s = arg;
	int i;

	for (i = 0; i < CHILD_TOUCHES; i++)
		touch_random(s);
	return 0;
}

/* A fork must work, and so must its child, which only touches our mappings. */
static int do_fork(struct state *s)
{
	int status = mh_in_child(child_body, s);

	/* -1: fork or waitpid failed, with errno; else the child's status. */
	must_work(s, status == 0, status < 0 ? "fork" : "fork child", status < 0 ? errno : 0,
		  status);
	return status == 0 ? 0 : -1;
}

static int do_ioctl(struct state *s, enum op op)
{
	uint64_t *h = &s->handles[below(MAX_HANDLES)];
	struct mh_alloc alloc = { .size = below((MAX_PAGES + 1) * s->page) };
	struct mh_transfer xfer;
	uint8_t data[64];

	switch (op) {
	case OP_ALLOC:
		if (ioctl(s->fd, MH_IOC_ALLOC, &alloc) != 0)
			return -1;
		*h = alloc.handle;
		return 0;
	case OP_FREE:
		return ioctl(s->fd, MH_IOC_FREE, h);
	default:
		memset(data, (int)below(256), sizeof(data));
		xfer.offset = (uint64_t)random_offset(s) + below(2 * s->page);
		xfer.len = below(sizeof(data) + 1);
		xfer.src = (uintptr_t)data;
		return ioctl(s->fd, MH_IOC_TRANSFER, &xfer);
	}
}

static int step(struct state *s, enum op op)
{
	struct mapping *m;

	switch (op) {
	case OP_MMAP:
		return do_mmap(s);
	case OP_MUNMAP:
		return do_munmap(s);
	case OP_MPROTECT:
		m = random_map(s);
		return m ? mprotect(m->addr, m->len, random_prot()) : 0;
	case OP_MREMAP:
		return do_mremap(s);
	case OP_MADVISE:
		return do_madvise(s);
	case OP_FORK:
		return do_fork(s);
	case OP_TOUCH:
		touch_random(s);
		return 0;
	default:
		return do_ioctl(s, op);
	}
}

static void report_broken(struct mh_report *r, const struct broken *b)
{
	if (b->err)
		mh_check(r, !b->what, "must-work", "op %lu %s: errno %d (%s)", b->at, b->what,
			 b->err, strerror(b->err));
	else
		mh_check(r, !b->what, "must-work", "op %lu %s: exit status %d", b->at, b->what,
			 b->status);
}

static unsigned long env_or(const char *name, unsigned long fallback)
{
	const char *v = getenv(name);

	return v && *v ? strtoul(v, NULL, 0) : fallback;
}

int main(int argc, char **argv)
{
	struct state s = { .page = sysconf(_SC_PAGESIZE) };
	unsigned long ops, seed;
	struct mh_report r = { 0 };
	int k;

	if (argc != 2)
		return 2;
	/* 32 bits: printed and typed back exactly, on 32- and 64-bit builds alike. */
	seed = env_or("MH_FUZZ_SEED", ((unsigned long)time(NULL) ^ (unsigned long)getpid()))
	       & 0xffffffffUL;
	ops = env_or("MH_FUZZ_OPS", DEFAULT_OPS);
	rng_state = seed;
	s.fd = mh_open_device(&r, argv[1]);
	if (s.fd < 0)
		return mh_finish(&r);
	for (s.at = 0; s.at < ops; s.at++) {
		enum op op = random_op();

		s.done[op]++;
		if (step(&s, op) != 0)
			s.failed[op]++;
	}
	for (k = 0; k < MAX_MAPS; k++)
		if (s.maps[k].addr)
			unmap_held(&s, s.maps[k].addr, s.maps[k].len);
	close(s.fd);	/* the driver frees what is left of ours */
	report_broken(&r, &s.broken);
	mh_append(r.metrics, ", \"seed\": %lu", seed);
	mh_metric(&r, "ops", (double)ops);
	mh_metric(&r, "mmaps_ok", (double)(s.done[OP_MMAP] - s.failed[OP_MMAP]));
	mh_metric(&r, "ioctls_ok", (double)(s.done[OP_ALLOC] + s.done[OP_FREE] +
		  s.done[OP_TRANSFER] - s.failed[OP_ALLOC] - s.failed[OP_FREE] -
		  s.failed[OP_TRANSFER]));
	mh_metric(&r, "signals_caught", (double)s.signals);
	return mh_finish(&r);
}
