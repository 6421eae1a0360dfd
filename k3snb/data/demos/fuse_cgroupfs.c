/* A read-only FUSE filesystem shaped like a cgroup v1 tree (notebook 07; seed-catalog §7.3 describes
 * the research's Exp 07 program: libfuse 2 API, getattr/readdir/open/read/statfs, static values).
 * Written for the kit from that description. Build:
 *   gcc -Wall -O2 fuse_cgroupfs.c -o fuse_cgroupfs $(pkg-config fuse --cflags --libs)
 * Run: fuse_cgroupfs -d MOUNTPOINT   (-d: libfuse prints every request and its reply on stderr)
 * With K3SNB_FUSE_ACCESS=1 it also answers FUSE_ACCESS (allow); without, libfuse replies ENOSYS to it,
 * which Linux takes as "not implemented: allow" (the research's program had no access handler).
 * statfs fills a struct statvfs, which has no f_type: a FUSE server cannot choose the magic statfs(2)
 * reports — the kernel (or gVisor's sentry) sets it.
 */
#define FUSE_USE_VERSION 26
#include <errno.h>
#include <fuse.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

struct entry { const char *path; const char *value; };

static const char *dirs[] = {"/", "/cpu", "/cpuacct", "/memory", "/pids", NULL};
static const struct entry files[] = {
    {"/cpu/cpu.shares", "1024\n"},
    {"/cpu/cpu.cfs_period_us", "100000\n"},
    {"/cpu/cpu.cfs_quota_us", "-1\n"},
    {"/cpuacct/cpuacct.usage", "0\n"},
    {"/cpuacct/cpuacct.usage_percpu", "0 0 0 0\n"},
    {"/memory/memory.limit_in_bytes", "9223372036854771712\n"},
    {"/memory/memory.usage_in_bytes", "209715200\n"},
    {"/pids/pids.max", "max\n"},
    {"/pids/pids.current", "1\n"},
    {NULL, NULL},
};

static int is_dir(const char *p) {
    for (int i = 0; dirs[i]; i++)
        if (strcmp(dirs[i], p) == 0) return 1;
    return 0;
}

static const struct entry *find(const char *p) {
    for (int i = 0; files[i].path; i++)
        if (strcmp(files[i].path, p) == 0) return &files[i];
    return NULL;
}

static int cg_getattr(const char *path, struct stat *st) {
    memset(st, 0, sizeof(*st));
    if (is_dir(path)) {
        st->st_mode = S_IFDIR | 0755;
        st->st_nlink = 2;
        return 0;
    }
    const struct entry *e = find(path);
    if (!e) return -ENOENT;
    st->st_mode = S_IFREG | 0644;
    st->st_nlink = 1;
    st->st_size = (off_t)strlen(e->value);
    return 0;
}

static int cg_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off, struct fuse_file_info *fi) {
    (void)off; (void)fi;
    if (!is_dir(path)) return -ENOENT;
    fill(buf, ".", NULL, 0);
    fill(buf, "..", NULL, 0);
    size_t n = strlen(path);
    if (strcmp(path, "/") == 0) {
        for (int i = 1; dirs[i]; i++) fill(buf, dirs[i] + 1, NULL, 0);
        return 0;
    }
    for (int i = 0; files[i].path; i++)
        if (strncmp(files[i].path, path, n) == 0 && files[i].path[n] == '/') fill(buf, files[i].path + n + 1, NULL, 0);
    return 0;
}

static int cg_open(const char *path, struct fuse_file_info *fi) {
    if (!find(path)) return -ENOENT;
    if ((fi->flags & O_ACCMODE) != O_RDONLY) return -EACCES;
    return 0;
}

static int cg_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
    (void)fi;
    const struct entry *e = find(path);
    if (!e) return -ENOENT;
    size_t len = strlen(e->value);
    if ((size_t)off >= len) return 0;
    if (off + size > len) size = len - off;
    memcpy(buf, e->value + off, size);
    return (int)size;
}

static int cg_statfs(const char *path, struct statvfs *sv) {
    (void)path;
    memset(sv, 0, sizeof(*sv));
    sv->f_bsize = sv->f_frsize = 4096;
    sv->f_files = sv->f_ffree = 1000;
    sv->f_namemax = 255;
    return 0;
}

static int cg_access(const char *path, int mask) {
    (void)mask;
    return (is_dir(path) || find(path)) ? 0 : -ENOENT;
}

static struct fuse_operations ops = {
    .getattr = cg_getattr, .readdir = cg_readdir, .open = cg_open, .read = cg_read, .statfs = cg_statfs,
};

int main(int argc, char *argv[]) {
    if (getenv("K3SNB_FUSE_ACCESS")) ops.access = cg_access;
    return fuse_main(argc, argv, &ops, NULL);
}
