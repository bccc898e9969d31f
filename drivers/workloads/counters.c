// SPDX-License-Identifier: GPL-2.0
/*
 * counters: print a driver's counters as one JSON object, for the harness's
 * checks where there is no sysfs (illumos: the MH_IOC_COUNTERS snapshot).
 * Run as `counters DEVICE`; exit 1 when the driver has no such request.
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "mmap_harness.h"

int main(int argc, char **argv)
{
	struct mh_counters c;
	int fd;

	if (argc != 2 || (fd = open(argv[1], O_RDWR)) < 0)
		return 2;
	if (ioctl(fd, MH_IOC_COUNTERS, &c) != 0)
		return 1;
	close(fd);
	printf("{\"live_pages\": %llu, \"resident_pages\": %llu, \"maps\": %llu, "
	       "\"opens\": %llu, \"faults\": %llu, \"dups\": %llu, \"unmaps\": %llu}\n",
	       (unsigned long long)c.live_pages, (unsigned long long)c.resident_pages,
	       (unsigned long long)c.maps, (unsigned long long)c.opens,
	       (unsigned long long)c.faults, (unsigned long long)c.dups,
	       (unsigned long long)c.unmaps);
	return 0;
}
