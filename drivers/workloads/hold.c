// SPDX-License-Identifier: GPL-2.0
/*
 * hold: keep a mapping of DEVICE alive until killed, so the harness can
 * check that the module refuses to unload under it. Maps one page at
 * offset 0; a device with no fixed area (dmabuf) gets a buffer first.
 * Prints "holding" once the mapping exists.
 */
#include "mh_workload.h"
#include "mmap_harness.h"

int main(int argc, char **argv)
{
	long page = sysconf(_SC_PAGESIZE);
	struct mh_alloc alloc = { .size = page };
	off_t offset = 0;
	void *map;
	int fd;

	if (argc != 2)
		return 2;
	fd = open(argv[1], O_RDWR);
	if (fd < 0)
		return 2;
	map = mmap(NULL, page, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		if (ioctl(fd, MH_IOC_ALLOC, &alloc) != 0)
			return 3;
		offset = alloc.handle;
		map = mmap(NULL, page, PROT_READ, MAP_SHARED, fd, offset);
		if (map == MAP_FAILED)
			return 4;
	}
	close(fd);	/* the mapping alone must keep the module busy */
	printf("holding\n");
	fflush(stdout);
	for (;;)
		pause();
}
