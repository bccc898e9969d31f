// SPDX-License-Identifier: GPL-2.0
/*
 * umem_fork: a child inherits the umem mapping across fork. The device is
 * closed before the fork, so the child reaches the page through the
 * inherited mapping alone; it sees what the parent wrote, the parent sees
 * what it writes, and the driver counts the child's copy of the VMA
 * (vm_ops->open on fork, ->close when the child exits).
 *
 * usage: umem_fork DEVICE
 */
#include "umem_layout.h"

/* First scratch word: the parent's value, then the child's answer. */
#define PARENT_VALUE	0x706172656e742121ULL
#define CHILD_VALUE	0x6368696c64212121ULL

/* What the child reports through its exit status. */
enum child_status { CHILD_OK, CHILD_STALE, CHILD_NOT_COUNTED };

struct inherit {
	const char *device;
	void *map;
	long maps_before;
};

static int child(void *arg)
{
	const struct inherit *in = arg;
	volatile uint64_t *word = umem_word(in->map, 0);

	if (*word != PARENT_VALUE)
		return CHILD_STALE;
	*word = CHILD_VALUE;
	/* Only this child runs next to the parent: its copy adds exactly one VMA. */
	if (mh_param(in->device, "maps") != in->maps_before + 1)
		return CHILD_NOT_COUNTED;
	return CHILD_OK;
}

int main(int argc, char **argv)
{
	struct mh_report r = { 0 };
	struct inherit in = { 0 };
	size_t page = umem_page();
	volatile uint64_t *word;
	long maps_after;
	int fd, status;

	if (argc != 2)
		return 2;
	in.device = argv[1];
	fd = mh_open_device(&r, in.device);
	if (fd < 0)
		return mh_finish(&r);
	in.map = umem_map(fd, page, 0);
	mh_check(&r, in.map != MAP_FAILED, "mmap", "%s", strerror(errno));
	close(fd);	/* from here on only the mapping reaches the page */
	if (in.map == MAP_FAILED)
		return mh_finish(&r);

	word = umem_word(in.map, 0);
	*word = PARENT_VALUE;
	in.maps_before = mh_param(in.device, "maps");
	status = mh_in_child(child, &in);
	mh_check(&r, status == CHILD_OK, "child-inherits-mapping",
		 "child status %d (1 parent value not seen, 2 VMA copy not counted)", status);
	mh_check(&r, *word == CHILD_VALUE, "parent-sees-child-write",
		 "word 0 is %#llx, want %#llx", (unsigned long long)*word, CHILD_VALUE);
	maps_after = mh_param(in.device, "maps");
	mh_check(&r, maps_after == in.maps_before, "child-exit-closes-its-vma",
		 "maps %ld after the child exited, %ld before the fork", maps_after,
		 in.maps_before);

	mh_metric(&r, "maps_with_child", in.maps_before + 1);
	munmap(in.map, page);
	return mh_finish(&r);
}
