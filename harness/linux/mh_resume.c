/*
 * mh_resume SECONDS.NANOSECONDS HEX
 *
 * Run first in a guest restored from a snapshot (harness/snapshot.py): every
 * restore of one snapshot wakes with the same clock and the same kernel
 * random state. This removes its own file (it runs once), sets CLOCK_REALTIME
 * to the host's time, credits the host's random bytes (HEX) to the kernel's
 * input pool (RNDADDENTROPY) and makes the kernel reseed its CRNG from that
 * pool at once (RNDRESEEDCRNG): writing to /dev/urandom alone would only mix
 * the bytes in, to be used at the CRNG's next scheduled reseed.
 *
 * No libc: the guest has none to spare, and the binary travels inside the
 * command that runs it, so it must stay a few kilobytes. For x86-64 and
 * i386 guests (the 32-bit clock_settime: good until 2038).
 * Exit status: 0 done, 2 bad arguments, 3 clock, 4 open, 5 entropy, 6 reseed.
 */
#include <linux/random.h>
#include <linux/time.h>
#include <asm/unistd.h>

#define MAX_BYTES 64

#if defined(__x86_64__)
static long sys(long n, long a, long b, long c)
{
	long ret;

	__asm__ volatile ("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c)
			  : "rcx", "r11", "memory");
	return ret;
}
#elif defined(__i386__)
static long sys(long n, long a, long b, long c)
{
	long ret;

	__asm__ volatile ("int $0x80" : "=a"(ret) : "a"(n), "b"(a), "c"(b), "d"(c)
			  : "memory");
	return ret;
}
#else
#error "mh_resume: x86-64 and i386 guests only"
#endif

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* "S.N": whole seconds, then exactly nine digits of nanoseconds. */
static int parse_time(const char *s, struct timespec *ts)
{
	long sec = 0, nsec = 0;
	int digits = 0;

	for (; *s >= '0' && *s <= '9'; s++)
		sec = sec * 10 + (*s - '0');
	if (*s++ != '.')
		return -1;
	for (; *s >= '0' && *s <= '9'; s++, digits++)
		nsec = nsec * 10 + (*s - '0');
	if (*s || digits != 9)
		return -1;
	ts->tv_sec = sec;
	ts->tv_nsec = nsec;
	return 0;
}

static int run(int argc, char **argv)
{
	struct {
		struct rand_pool_info info;
		unsigned char bytes[MAX_BYTES];
	} pool;
	struct timespec now;
	const char *hex;
	int n = 0, fd;

	sys(__NR_unlink, (long)argv[0], 0, 0);
	if (argc != 3 || parse_time(argv[1], &now))
		return 2;
	for (hex = argv[2]; hex[0] && hex[1] && n < MAX_BYTES; hex += 2, n++) {
		int hi = hexval(hex[0]), lo = hexval(hex[1]);

		if (hi < 0 || lo < 0)
			return 2;
		pool.bytes[n] = (unsigned char)(hi << 4 | lo);
	}
	if (*hex || n == 0)
		return 2;
	if (sys(__NR_clock_settime, CLOCK_REALTIME, (long)&now, 0))
		return 3;
	fd = (int)sys(__NR_open, (long)"/dev/urandom", 1 /* O_WRONLY */, 0);
	if (fd < 0)
		return 4;
	pool.info.entropy_count = n * 8;
	pool.info.buf_size = n;
	if (sys(__NR_ioctl, fd, RNDADDENTROPY, (long)&pool))
		return 5;
	if (sys(__NR_ioctl, fd, RNDRESEEDCRNG, 0))
		return 6;
	return 0;
}

void start(long *sp)
{
	sys(__NR_exit, run((int)sp[0], (char **)(sp + 1)), 0, 0);
}

/* The kernel's initial stack: argc, then argv; start() gets its address. */
#if defined(__x86_64__)
__asm__(".globl _start\n_start:\n\tmov %rsp, %rdi\n\tand $-16, %rsp\n\tcall start\n");
#else
__asm__(".globl _start\n_start:\n\tmov %esp, %eax\n\tand $-16, %esp\n\tsub $12, %esp\n"
	"\tpush %eax\n\tcall start\n");
#endif
