// SPDX-License-Identifier: GPL-2.0
/*
 * umem_opens: the driver writes into the shared page itself. On every open
 * it stores its open count into the last u64 of the page
 * (UMEM_OPENS_OFFSET, umem_layout.h); the word, read through a mapping made
 * earlier, must equal the driver's `opens` counter right after each open,
 * whether this process or another one opened the device.
 *
 * usage: umem_opens DEVICE
 */
#include "umem_layout.h"

/* Opens after the mapping exists: each must show up in the mapped word. */
#define MORE_OPENS	3

/* Runs in a child: one more open, from another process. */
static int open_once(void *arg)
{
	int fd = open(arg, O_RDWR);

	if (fd < 0)
		return 1;
	close(fd);
	return 0;
}

static void check_word(struct mh_report *r, volatile uint64_t *word, const char *device,
		       const char *name)
{
	long opens = mh_param(device, "opens");

	mh_check(r, opens > 0 && *word == (uint64_t)opens, name,
		 "word %llu, opens counter %ld", (unsigned long long)*word, opens);
}

static void check_more_opens(struct mh_report *r, volatile uint64_t *word, const char *device)
{
	uint64_t before;
	int i, fd;

	for (i = 0; i < MORE_OPENS; i++) {
		before = *word;
		fd = mh_open_device(r, device);
		if (fd < 0)
			return;
		check_word(r, word, device, "word-follows-open");
		mh_check(r, *word == before + 1, "word-counts-one-open",
			 "open %d: word %llu, was %llu", i, (unsigned long long)*word,
			 (unsigned long long)before);
		close(fd);
	}
}

int main(int argc, char **argv)
{
	struct mh_report r = { 0 };
	size_t page = umem_page();
	volatile uint64_t *word;
	void *map;
	int fd, status;

	if (argc != 2)
		return 2;
	map = umem_open_page(&r, argv[1], page, &fd);
	if (map == MAP_FAILED)
		return mh_finish(&r);
	word = umem_word(map, UMEM_OPENS_OFFSET(page));
	check_word(&r, word, argv[1], "word-after-mmap");
	check_more_opens(&r, word, argv[1]);

	status = mh_in_child(open_once, argv[1]);
	mh_check(&r, status == 0, "other-process-open", "child status %d", status);
	check_word(&r, word, argv[1], "word-follows-other-process-open");

	mh_metric(&r, "opens", mh_param(argv[1], "opens"));
	mh_metric(&r, "opens_word", *word);
	munmap(map, page);
	close(fd);
	return mh_finish(&r);
}
