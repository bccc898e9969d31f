// SPDX-License-Identifier: GPL-2.0
/*
 * umem_compat: 64-bit and 32-bit (compat) processes map different pages of
 * the one umem area, so only programs of the same data model share.
 *
 * Built twice (listed in both workloads and workloads_m32 of the spec): as
 * umem_compat and umem_compat-m32 next to each other. Each run claims its
 * own page (the other model's marker must be absent, then it writes its
 * own), runs its sibling of the other data model as a peer that claims the
 * other page the same way, and then checks its own marker survived, also
 * across a fresh mapping. One run thus proves both directions; the 64-bit
 * run and the later -m32 run prove them again from either side. Both must
 * find the one area already allocated (no second allocation for compat)
 * and the driver's open count written into their page too. A 32-bit
 * kernel has one data model only: there the peer is not run.
 *
 * usage: umem_compat DEVICE          (the peer is run as: DEVICE --peer)
 */
#include "umem_layout.h"	/* first: it sets _FILE_OFFSET_BITS */

#ifdef __sun
#include <sys/systeminfo.h>
#else
#include <sys/utsname.h>
#endif

#if UINTPTR_MAX == UINT32_MAX
#define MODEL		"32-bit"
#define OWN_MARKER	UMEM_MARKER_32
#define OTHER_MARKER	UMEM_MARKER_64
#else
#define MODEL		"64-bit"
#define OWN_MARKER	UMEM_MARKER_64
#define OTHER_MARKER	UMEM_MARKER_32
#endif

/* The compat build is the 64-bit one's file name plus this. */
#define M32_SUFFIX	"-m32"
#define PEER_FLAG	"--peer"
#define EXEC_FAILED	127

struct peer {
	char path[512];
	const char *device;
};

/* Check the other model's marker is absent from our page, then write ours. */
static void claim_page(struct mh_report *r, void *map, size_t page)
{
	volatile uint64_t *marker = umem_word(map, UMEM_MARKER_OFFSET(page));

	mh_check(r, *marker != OTHER_MARKER, "other-model-marker-absent",
		 MODEL " page holds %#llx, the other model's marker", (unsigned long long)*marker);
	*marker = OWN_MARKER;
}

/* Whether the kernel runs programs of both data models (it is a 64-bit one). */
static int two_models(void)
{
#ifdef __sun
	char isa[32];
#else
	struct utsname u;
#endif

	if (OWN_MARKER == UMEM_MARKER_64)
		return 1;
#ifdef __sun
	/* uname -m says i86pc under either kernel; only a 64-bit one names a 64-bit ISA. */
	return sysinfo(SI_ARCHITECTURE_64, isa, sizeof(isa)) > 0;
#else
	return uname(&u) == 0 && strstr(u.machine, "64") != NULL;
#endif
}

/* The sibling build of the other data model, in the same directory as we are. */
static int find_peer(struct peer *p, const char *self)
{
	size_t len = strlen(self), suffix = strlen(M32_SUFFIX);

	if (OWN_MARKER == UMEM_MARKER_64)
		snprintf(p->path, sizeof(p->path), "%s%s", self, M32_SUFFIX);
	else if (len > suffix && strcmp(self + len - suffix, M32_SUFFIX) == 0)
		snprintf(p->path, sizeof(p->path), "%.*s", (int)(len - suffix), self);
	else
		return -1;
	return access(p->path, X_OK);
}

static int exec_peer(void *arg)
{
	struct peer *p = arg;

	execl(p->path, p->path, p->device, PEER_FLAG, (char *)NULL);
	return EXEC_FAILED;
}

static void check_peer(struct mh_report *r, const char *self, const char *device)
{
	struct peer p = { .device = device };
	int status;

	if (find_peer(&p, self) != 0) {
		mh_check(r, 0, "peer-present", "no other-model build next to %s: list umem_compat "
			 "in both workloads and workloads_m32", self);
		return;
	}
	status = mh_in_child(exec_peer, &p);
	mh_check(r, status == 0, "peer-passes", "%s exited %d (its FAIL lines are on stderr)",
		 p.path, status);
}

/* The peer: claim the other page, report failures by exit status only. */
static int peer(const char *device)
{
	struct mh_report r = { 0 };
	size_t page = umem_page();
	int fd = mh_open_device(&r, device);
	void *map;

	if (fd < 0)
		return 1;
	map = umem_map(fd, page, 0);
	mh_check(&r, map != MAP_FAILED, "peer-mmap", "%s", strerror(errno));
	if (map != MAP_FAILED) {
		claim_page(&r, map, page);
		munmap(map, page);
	}
	close(fd);
	return r.failures ? 1 : 0;
}

static void check_area(struct mh_report *r, const char *device, void *map, size_t page)
{
	long resident = mh_param(device, "resident_pages");
	long opens = mh_param(device, "opens");
	uint64_t word = *umem_word(map, UMEM_OPENS_OFFSET(page));

	mh_check(r, resident == UMEM_AREA_PAGES, "one-area-for-both-models",
		 "resident_pages %ld, want %d", resident, UMEM_AREA_PAGES);
	mh_check(r, opens > 0 && word == (uint64_t)opens, "driver-writes-" MODEL "-page",
		 "opens word %llu, opens counter %ld", (unsigned long long)word, opens);
}

static void check_own_marker(struct mh_report *r, void *map, size_t page, const char *name)
{
	uint64_t marker = *umem_word(map, UMEM_MARKER_OFFSET(page));

	mh_check(r, marker == OWN_MARKER, name, MODEL " page holds %#llx, want %#llx",
		 (unsigned long long)marker, OWN_MARKER);
}

int main(int argc, char **argv)
{
	struct mh_report r = { 0 };
	size_t page = umem_page();
	void *map;
	int fd;

	if (argc == 3 && strcmp(argv[2], PEER_FLAG) == 0)
		return peer(argv[1]);
	if (argc != 2)
		return 2;
	map = umem_open_page(&r, argv[1], page, &fd);
	if (map == MAP_FAILED)
		return mh_finish(&r);
	check_area(&r, argv[1], map, page);
	claim_page(&r, map, page);
	if (two_models()) {
		check_peer(&r, argv[0], argv[1]);
		check_own_marker(&r, map, page, "own-marker-survives-peer");
	}

	munmap(map, page);
	map = umem_map(fd, page, 0);
	mh_check(&r, map != MAP_FAILED, "remap", "%s", strerror(errno));
	if (map != MAP_FAILED) {
		check_own_marker(&r, map, page, "own-marker-survives-remap");
		munmap(map, page);
	}
	mh_metric(&r, "pointer_bits", sizeof(void *) * 8);
	mh_metric(&r, "data_models", two_models() ? 2 : 1);
	close(fd);
	return mh_finish(&r);
}
