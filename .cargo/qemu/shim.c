/*
 * What qemu-user lacks for our aarch64 tests, supplied in the emulated
 * process (loaded with LD_PRELOAD by .cargo/qemu/aarch64, the aarch64 test
 * runner; never part of a build). Two gaps, both in qemu-user 7.2 (Debian
 * 12); the shim takes itself out of LD_PRELOAD once loaded, so the host
 * programs a test starts (such as mkfifo) do not inherit an aarch64 library.
 *
 * 1. termios2. serialport (the bridge's port) opens every port with the
 * termios2 ioctls TCGETS2/TCSETS2, which take any baud rate. qemu-user does
 * not translate them and answers ENOSYS ("Function not implemented"), so no
 * port opens under emulation, not even a pseudo-terminal; distributions
 * still patched 10.1 for it. The classic TCGETS/TCSETS* ioctls are
 * translated, so ioctl() answers the four termios2 requests with those,
 * carrying the speed as its Bnnn code (every rate the bridge uses has one:
 * 1_000_000 is B1000000); a rate without a code is refused with EINVAL and
 * a message. Every other request goes to the kernel unchanged.
 *
 * 2. /proc/cpuinfo. qemu-user passes the host's file through, which on an
 * x86-64 host describes no Arm core; ONNX Runtime's CPU detection
 * (pytorch/cpuinfo) then finds no processor and dereferences NULL while
 * loading (SIGSEGV before the first session). open() and openat() of
 * /proc/cpuinfo answer with the file a Cortex-A72 board shows (the core
 * qemu emulates, -cpu cortex-a72), one entry per configured CPU.
 */
#define _GNU_SOURCE
#include <asm/ioctls.h>
#include <asm/termbits.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static const struct {
    unsigned code;
    unsigned rate;
} rates[] = {
    {B0, 0}, {B50, 50}, {B75, 75}, {B110, 110}, {B134, 134}, {B150, 150},
    {B200, 200}, {B300, 300}, {B600, 600}, {B1200, 1200}, {B1800, 1800},
    {B2400, 2400}, {B4800, 4800}, {B9600, 9600}, {B19200, 19200},
    {B38400, 38400}, {B57600, 57600}, {B115200, 115200}, {B230400, 230400},
    {B460800, 460800}, {B500000, 500000}, {B576000, 576000},
    {B921600, 921600}, {B1000000, 1000000}, {B1152000, 1152000},
    {B1500000, 1500000}, {B2000000, 2000000}, {B2500000, 2500000},
    {B3000000, 3000000}, {B3500000, 3500000}, {B4000000, 4000000},
};

__attribute__((constructor)) static void leave_the_environment(void) {
    unsetenv("LD_PRELOAD");
}

static long raw_ioctl(int fd, unsigned long request, void *arg) {
    return syscall(SYS_ioctl, fd, request, arg);
}

/* The rate of a Bnnn code; 0 for an unknown code. */
static unsigned rate_of(unsigned code) {
    for (unsigned i = 0; i < sizeof rates / sizeof rates[0]; i++)
        if (rates[i].code == code) return rates[i].rate;
    return 0;
}

/* The Bnnn code of a rate, or -1. */
static int code_of(unsigned rate) {
    for (unsigned i = 0; i < sizeof rates / sizeof rates[0]; i++)
        if (rates[i].rate == rate) return (int)rates[i].code;
    return -1;
}

static int get2(int fd, struct termios2 *t) {
    struct termios k;
    if (raw_ioctl(fd, TCGETS, &k) < 0) return -1;
    t->c_iflag = k.c_iflag;
    t->c_oflag = k.c_oflag;
    t->c_cflag = k.c_cflag;
    t->c_lflag = k.c_lflag;
    t->c_line = k.c_line;
    for (int i = 0; i < NCCS; i++) t->c_cc[i] = k.c_cc[i];
    t->c_ospeed = rate_of(k.c_cflag & CBAUD);
    unsigned in = (k.c_cflag >> IBSHIFT) & CBAUD;
    t->c_ispeed = in ? rate_of(in) : t->c_ospeed;
    return 0;
}

static int set2(int fd, unsigned long classic, const struct termios2 *t) {
    struct termios k;
    k.c_iflag = t->c_iflag;
    k.c_oflag = t->c_oflag;
    k.c_cflag = t->c_cflag;
    k.c_lflag = t->c_lflag;
    k.c_line = t->c_line;
    for (int i = 0; i < NCCS; i++) k.c_cc[i] = t->c_cc[i];
    if ((k.c_cflag & CBAUD) == BOTHER) {
        int code = code_of(t->c_ospeed);
        if (code < 0) goto no_code;
        k.c_cflag = (k.c_cflag & ~CBAUD) | (unsigned)code;
    }
    if (((k.c_cflag >> IBSHIFT) & CBAUD) == BOTHER) {
        int code = t->c_ispeed == t->c_ospeed ? 0 : code_of(t->c_ispeed);
        if (code < 0) goto no_code;
        k.c_cflag = (k.c_cflag & ~(CBAUD << IBSHIFT)) | ((unsigned)code << IBSHIFT);
    }
    return (int)raw_ioctl(fd, classic, &k);
no_code:
    fprintf(stderr, "termios2 shim (qemu-user): %u/%u baud has no Bnnn code\n",
            t->c_ispeed, t->c_ospeed);
    errno = EINVAL;
    return -1;
}

int ioctl(int fd, unsigned long request, ...) {
    va_list ap;
    va_start(ap, request);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    switch (request) {
    case TCGETS2: return get2(fd, arg);
    case TCSETS2: return set2(fd, TCSETS, arg);
    case TCSETSW2: return set2(fd, TCSETSW, arg);
    case TCSETSF2: return set2(fd, TCSETSF, arg);
    default: return (int)raw_ioctl(fd, request, arg);
    }
}

/* A memory file holding a Cortex-A72's /proc/cpuinfo, read from its start. */
static int fake_cpuinfo(int flags) {
    long n = sysconf(_SC_NPROCESSORS_CONF);
    if (n < 1) n = 1;
    int fd = memfd_create("cpuinfo", (flags & O_CLOEXEC) ? MFD_CLOEXEC : 0);
    if (fd < 0) return -1;
    for (long i = 0; i < n; i++) {
        char entry[256];
        int len = snprintf(entry, sizeof entry,
                           "processor\t: %ld\n"
                           "BogoMIPS\t: 108.00\n"
                           "Features\t: fp asimd evtstrm crc32 cpuid\n"
                           "CPU implementer\t: 0x41\n"
                           "CPU architecture: 8\n"
                           "CPU variant\t: 0x0\n"
                           "CPU part\t: 0xd08\n"
                           "CPU revision\t: 3\n\n",
                           i);
        if (len < 0 || write(fd, entry, (size_t)len) != len) {
            close(fd);
            errno = EIO;
            return -1;
        }
    }
    lseek(fd, 0, SEEK_SET);
    return fd;
}

static int open_at(int dir, const char *path, int flags, mode_t mode) {
    if (path && strcmp(path, "/proc/cpuinfo") == 0) return fake_cpuinfo(flags);
    return (int)syscall(SYS_openat, dir, path, flags, mode);
}

/* The mode argument exists only when the flags create a file. */
#define MODE_ARG(flags, mode)                          \
    do {                                               \
        if ((flags) & (O_CREAT | O_TMPFILE)) {         \
            va_list ap;                                \
            va_start(ap, flags);                       \
            mode = va_arg(ap, mode_t);                 \
            va_end(ap);                                \
        }                                              \
    } while (0)

int open(const char *path, int flags, ...) {
    mode_t mode = 0;
    MODE_ARG(flags, mode);
    return open_at(AT_FDCWD, path, flags, mode);
}

int open64(const char *path, int flags, ...) {
    mode_t mode = 0;
    MODE_ARG(flags, mode);
    return open_at(AT_FDCWD, path, flags, mode);
}

int openat(int dir, const char *path, int flags, ...) {
    mode_t mode = 0;
    MODE_ARG(flags, mode);
    return open_at(dir, path, flags, mode);
}

int openat64(int dir, const char *path, int flags, ...) {
    mode_t mode = 0;
    MODE_ARG(flags, mode);
    return open_at(dir, path, flags, mode);
}
