/* k3snb LD_PRELOAD path shim: K3SNB_FROM=/prefix K3SNB_TO=/other rewrites paths in libc calls. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *map(const char *p, char *buf, size_t n) {
    const char *from = getenv("K3SNB_FROM"), *to = getenv("K3SNB_TO");
    if (!p || !from || !to) return p;
    size_t lf = strlen(from);
    if (strncmp(p, from, lf) != 0) return p;
    if (snprintf(buf, n, "%s%s", to, p + lf) >= (int)n) return p;
    return buf;
}

#define MODE_ARG(flags) mode_t mode = 0; \
    if ((flags) & (O_CREAT | O_TMPFILE)) { va_list ap; va_start(ap, flags); mode = va_arg(ap, int); va_end(ap); }

int open(const char *p, int flags, ...) {
    char b[4096]; MODE_ARG(flags);
    int (*real)(const char *, int, ...) = dlsym(RTLD_NEXT, "open");
    return real(map(p, b, sizeof b), flags, mode);
}
int open64(const char *p, int flags, ...) {
    char b[4096]; MODE_ARG(flags);
    int (*real)(const char *, int, ...) = dlsym(RTLD_NEXT, "open64");
    return real(map(p, b, sizeof b), flags, mode);
}
int openat(int d, const char *p, int flags, ...) {
    char b[4096]; MODE_ARG(flags);
    int (*real)(int, const char *, int, ...) = dlsym(RTLD_NEXT, "openat");
    return real(d, map(p, b, sizeof b), flags, mode);
}
int openat64(int d, const char *p, int flags, ...) {
    char b[4096]; MODE_ARG(flags);
    int (*real)(int, const char *, int, ...) = dlsym(RTLD_NEXT, "openat64");
    return real(d, map(p, b, sizeof b), flags, mode);
}
FILE *fopen(const char *p, const char *m) {
    char b[4096];
    FILE *(*real)(const char *, const char *) = dlsym(RTLD_NEXT, "fopen");
    return real(map(p, b, sizeof b), m);
}
FILE *fopen64(const char *p, const char *m) {
    char b[4096];
    FILE *(*real)(const char *, const char *) = dlsym(RTLD_NEXT, "fopen64");
    return real(map(p, b, sizeof b), m);
}
