/*
 * cove-launch: starts one container and exits, leaving its init running (a runc-free `runc run --detach`).
 *
 *     cove-launch OP ARGS... -- ARGV...
 *
 * Run as host root. It interprets nothing: launch.py derives the plan, a flat list of operations with
 * fixed arities, from the same OCI config (spec.py's build_spec) runc would get, and this program
 * performs them in order. The operations (all numbers hex unless said otherwise):
 *
 *   report FD                     where the result goes: "<host pid>\n", or "error: <message>\n"
 *   clone FLAGS                   namespaces to clone (CLONE_NEW*; CLONE_NEWCGROUP goes to `cgroupns`)
 *   uidmap TEXT / gidmap TEXT     the contents written to the child's uid_map / gid_map
 *   cgroup DIR                    a cgroup v1 directory to join: the parent opens DIR/tasks, the child
 *                                 writes "0" to it (one thread, itself: no global cgroup lock, whose
 *                                 RCU grace period a pid written to cgroup.procs waits for, 10-15 ms)
 *   cgroup2 DIR                   the cgroup v2 directory the child is cloned into (CLONE_INTO_CGROUP)
 *   cgroupns                      the child unshares a cgroup namespace once it is in its cgroups
 *   loopback                      bring up "lo" in the new network namespace (runc does for a new one)
 *   seccomp FILE                  a BPF program (struct sock_filter[]), loaded just before execve
 *   root PATH                     the container's root filesystem (a host path)
 *   hostname NAME
 *   mount MODE DEST SOURCE FSTYPE FLAGS DATA
 *                                 a new filesystem at DEST (resolved inside the root); MODE "mkdir"
 *                                 creates a missing DEST, "tmpfs" too and gives the new root the mode
 *                                 of the directory it covers (as runc), "strict" wants a real directory
 *                                 (no symlink on the way; proc and sysfs, as runc insists)
 *   bind DEST HOSTSOURCE FLAGS    bind mount of a host path (opened by host root before the child
 *                                 becomes container root); then a remount with FLAGS if they ask for
 *                                 more than MS_BIND|MS_REC
 *   remount DEST FLAGS            mount(NULL, DEST, NULL, FLAGS|MS_REMOUNT)
 *   symlink DEST TARGET           (an existing DEST is removed first)
 *   pivot                         pivot_root into the root; later paths are the container's
 *   readonly PATH                 runc's readonlyPaths: bind onto itself, remount read-only
 *   mask PATH                     runc's maskedPaths: /dev/null over a file, empty ro tmpfs over a dir
 *   rlimit RESOURCE SOFT HARD     (decimal)
 *   umask MODE                    (octal)
 *   cwd PATH
 *   caps BOUNDING EFFECTIVE PERMITTED INHERITABLE AMBIENT
 *   nnp                           PR_SET_NO_NEW_PRIVS
 *   env NAME=VALUE
 *
 * Paths inside the container are resolved with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) from
 * the root and mounted onto /proc/self/fd/N: the container's writable layer may hold symlinks meant
 * to send a mount elsewhere. The child opens the host paths (root, bind sources) right after clone,
 * while it still has host root's fsuid (owner of Cove's 0700 data dir) and before it becomes container
 * root, so they are opened in its own mount namespace (a bind mount's source must be there) and
 * container root never walks a host path.
 *
 * stdin (the control socket), stdout and stderr pass to the init; every other fd is closed at exec.
 * Any failure: one line on the report fd, exit status 1, and no child left.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/filter.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef PROC_SUPER_MAGIC
#define PROC_SUPER_MAGIC 0x9fa0
#endif
#ifndef SYSFS_MAGIC
#define SYSFS_MAGIC 0x62656572
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

#define MAX_OPS 256
#define MAX_ENV 256

enum kind {
    OP_ROOT, OP_HOSTNAME, OP_MOUNT, OP_BIND, OP_REMOUNT, OP_SYMLINK, OP_PIVOT, OP_READONLY, OP_MASK,
    OP_RLIMIT, OP_UMASK, OP_CWD, OP_CAPS, OP_NNP,
};

struct op {
    enum kind kind;
    char *a[6];
    unsigned long long n[5];
    int fd; /* bind: the source, opened by the child as host root */
};

static struct op ops[MAX_OPS];
static int nops;
static char *envp[MAX_ENV + 1];
static int nenv;
static char *cgroup_dirs[32];
static int cgroup_fds[32];
static int ncgroups;
static char *cgroup2_dir;
static char *uidmap, *gidmap, *seccomp_file;
static unsigned long clone_flags;
static int cgroupns, loopback;
static int report_fd = 2;
static char **exec_argv;

static struct sock_filter *filter;
static unsigned short filter_len;

static unsigned long unshare_flags; /* namespaces made by the child once it is container root */
static int err_fd = -1;   /* child -> parent: an error line; closes (exec) on success */
static int root_fd = -1;  /* where container paths resolve from */
static pid_t child_pid;

/* -- failures -------------------------------------------------------------------------------- */

static void report(const char *text) {
    size_t len = strlen(text);
    while (len > 0) {
        ssize_t n = write(report_fd, text, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        text += n;
        len -= (size_t)n;
    }
}

/* In the parent: report, make sure no child is left, exit. */
__attribute__((noreturn, format(printf, 1, 2))) static void fail(const char *fmt, ...) {
    char line[1024];
    int saved = errno;
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(line, sizeof line, "error: ");
    n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    if (saved && n < (int)sizeof line - 2) snprintf(line + n, sizeof line - (size_t)n, ": %s", strerror(saved));
    strncat(line, "\n", sizeof line - strlen(line) - 1);
    if (child_pid > 0) {
        kill(child_pid, SIGKILL);
        while (waitpid(child_pid, NULL, 0) < 0 && errno == EINTR) {}
    }
    report(line);
    _exit(1);
}

/* In the child: the error goes to the parent, which reports it and reaps us. */
__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...) {
    char line[1024];
    int saved = errno;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if (n > (int)sizeof line - 1) n = (int)sizeof line - 1;
    if (saved) n += snprintf(line + n, sizeof line - (size_t)n, ": %s", strerror(saved));
    if (n > (int)sizeof line - 1) n = (int)sizeof line - 1;
    if (write(err_fd, line, (size_t)n) < 0) {}
    _exit(1);
}

/* -- the plan ---------------------------------------------------------------------------------- */

static unsigned long long hex(const char *s) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 16);
    if (errno || *end || !*s) { errno = 0; fail("bad number %s", s); }
    return v;
}

static unsigned long long dec(const char *s) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || !*s) { errno = 0; fail("bad number %s", s); }
    return v;
}

static struct op *add(enum kind kind) {
    if (nops == MAX_OPS) { errno = 0; fail("too many operations"); }
    struct op *op = &ops[nops++];
    op->kind = kind;
    op->fd = -1;
    return op;
}

static void parse(int argc, char **argv) {
    int i = 1;
#define NEED(k) do { if (i + (k) >= argc) { errno = 0; fail("%s needs %d arguments", argv[i], (k)); } } while (0)
    while (i < argc) {
        const char *w = argv[i];
        struct op *op;
        if (!strcmp(w, "--")) {
            exec_argv = &argv[i + 1];
            if (!exec_argv[0]) { errno = 0; fail("nothing to execute"); }
            return;
        } else if (!strcmp(w, "report")) {
            NEED(1); report_fd = (int)dec(argv[i + 1]); i += 2;
        } else if (!strcmp(w, "clone")) {
            NEED(1); clone_flags = (unsigned long)hex(argv[i + 1]); i += 2;
        } else if (!strcmp(w, "uidmap")) {
            NEED(1); uidmap = argv[i + 1]; i += 2;
        } else if (!strcmp(w, "gidmap")) {
            NEED(1); gidmap = argv[i + 1]; i += 2;
        } else if (!strcmp(w, "cgroup")) {
            NEED(1);
            if (ncgroups == 32) { errno = 0; fail("too many cgroups"); }
            cgroup_dirs[ncgroups++] = argv[i + 1]; i += 2;
        } else if (!strcmp(w, "cgroup2")) {
            NEED(1); cgroup2_dir = argv[i + 1]; i += 2;
        } else if (!strcmp(w, "cgroupns")) {
            cgroupns = 1; i += 1;
        } else if (!strcmp(w, "loopback")) {
            loopback = 1; i += 1;
        } else if (!strcmp(w, "seccomp")) {
            NEED(1); seccomp_file = argv[i + 1]; i += 2;
        } else if (!strcmp(w, "env")) {
            NEED(1);
            if (nenv == MAX_ENV) { errno = 0; fail("too many environment variables"); }
            envp[nenv++] = argv[i + 1]; i += 2;
        } else if (!strcmp(w, "root")) {
            NEED(1); op = add(OP_ROOT); op->a[0] = argv[i + 1]; i += 2;
        } else if (!strcmp(w, "hostname")) {
            NEED(1); op = add(OP_HOSTNAME); op->a[0] = argv[i + 1]; i += 2;
        } else if (!strcmp(w, "mount")) {
            NEED(6); op = add(OP_MOUNT);
            op->a[0] = argv[i + 1]; op->a[1] = argv[i + 2]; op->a[2] = argv[i + 3]; op->a[3] = argv[i + 4];
            op->n[0] = hex(argv[i + 5]); op->a[4] = argv[i + 6];
            if (strcmp(op->a[0], "mkdir") && strcmp(op->a[0], "tmpfs") && strcmp(op->a[0], "strict")) {
                errno = 0;
                fail("bad mount mode %s", op->a[0]);
            }
            i += 7;
        } else if (!strcmp(w, "bind")) {
            NEED(3); op = add(OP_BIND); op->a[0] = argv[i + 1]; op->a[1] = argv[i + 2]; op->n[0] = hex(argv[i + 3]);
            i += 4;
        } else if (!strcmp(w, "remount")) {
            NEED(2); op = add(OP_REMOUNT); op->a[0] = argv[i + 1]; op->n[0] = hex(argv[i + 2]); i += 3;
        } else if (!strcmp(w, "symlink")) {
            NEED(2); op = add(OP_SYMLINK); op->a[0] = argv[i + 1]; op->a[1] = argv[i + 2]; i += 3;
        } else if (!strcmp(w, "pivot")) {
            add(OP_PIVOT); i += 1;
        } else if (!strcmp(w, "readonly")) {
            NEED(1); op = add(OP_READONLY); op->a[0] = argv[i + 1]; i += 2;
        } else if (!strcmp(w, "mask")) {
            NEED(1); op = add(OP_MASK); op->a[0] = argv[i + 1]; i += 2;
        } else if (!strcmp(w, "rlimit")) {
            NEED(3); op = add(OP_RLIMIT);
            op->n[0] = dec(argv[i + 1]); op->n[1] = dec(argv[i + 2]); op->n[2] = dec(argv[i + 3]); i += 4;
        } else if (!strcmp(w, "umask")) {
            NEED(1); op = add(OP_UMASK); op->n[0] = strtoull(argv[i + 1], NULL, 8); i += 2;
        } else if (!strcmp(w, "cwd")) {
            NEED(1); op = add(OP_CWD); op->a[0] = argv[i + 1]; i += 2;
        } else if (!strcmp(w, "caps")) {
            NEED(5); op = add(OP_CAPS);
            for (int k = 0; k < 5; k++) op->n[k] = hex(argv[i + 1 + k]);
            i += 6;
        } else if (!strcmp(w, "nnp")) {
            add(OP_NNP); i += 1;
        } else {
            errno = 0;
            fail("unknown operation %s", w);
        }
    }
#undef NEED
    errno = 0;
    fail("no -- before the command");
}

static void read_filter(void) {
    if (!seccomp_file) return;
    int fd = open(seccomp_file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail("opening the seccomp program");
    struct stat st;
    if (fstat(fd, &st) < 0) fail("reading the seccomp program");
    if (st.st_size <= 0 || st.st_size % (off_t)sizeof(struct sock_filter) ||
        st.st_size / (off_t)sizeof(struct sock_filter) > BPF_MAXINSNS) {
        errno = 0;
        fail("the seccomp program has a bad size (%lld bytes)", (long long)st.st_size);
    }
    filter = malloc((size_t)st.st_size);
    if (!filter) fail("allocating the seccomp program");
    size_t done = 0;
    while (done < (size_t)st.st_size) {
        ssize_t n = read(fd, (char *)filter + done, (size_t)st.st_size - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) fail("reading the seccomp program");
        done += (size_t)n;
    }
    close(fd);
    filter_len = (unsigned short)(st.st_size / (off_t)sizeof(struct sock_filter));
}

/* -- the parent's side ------------------------------------------------------------------------- */

static void write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) fail("opening %s", path);
    size_t len = strlen(text);
    ssize_t n = write(fd, text, len);
    if (n < 0 || (size_t)n != len) fail("writing %s", path);
    close(fd);
}

/* -- the child's side: paths inside the container ---------------------------------------------- */

static int openat2_in_root(const char *path, int flags, unsigned long long resolve) {
    struct open_how how = {.flags = (unsigned long long)(flags | O_PATH | O_CLOEXEC),
                           .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | resolve};
    while (*path == '/') path++;
    if (!*path) path = ".";
    int fd;
    do {
        fd = (int)syscall(SYS_openat2, root_fd, path, &how, sizeof how);
    } while (fd < 0 && (errno == EAGAIN || errno == EINTR));
    return fd;
}

enum create { NO_CREATE, CREATE_DIR, CREATE_FILE };

/* An O_PATH fd for PATH inside the root; with CREATE_*, missing components are made (directories
 * 0755; a missing last component, with CREATE_FILE, an empty file 0755 as runc makes it). A dangling
 * symlink on the way is followed, inside the root, and what it names is made (as runc's SecureJoin and
 * MkdirAll would), at most 40 times. -1 with errno set. */
static int resolve(const char *path, enum create create, int strict) {
    unsigned long long extra = strict ? RESOLVE_NO_SYMLINKS : 0;
    int fd = openat2_in_root(path, 0, extra);
    if (fd >= 0 || errno != ENOENT || create == NO_CREATE) return fd;
    char buf[4096];
    if (strlen(path) >= sizeof buf) { errno = ENAMETOOLONG; return -1; }
    strcpy(buf, path);
    for (int hops = 0; hops < 40; hops++) {
        int parent = openat2_in_root("/", O_DIRECTORY, 0);
        if (parent < 0) return -1;
        char *p = buf;
        int restart = 0;
        for (;;) {
            while (*p == '/') p++;
            if (!*p) return parent;
            char *end = strchr(p, '/');
            int last = 1;
            if (end) {
                char *q = end;
                while (*q == '/') q++;
                last = !*q;
                *end = '\0';
            }
            int is_file = last && create == CREATE_FILE;
            int next = openat2_in_root(buf, is_file ? 0 : O_DIRECTORY, extra);
            if (next < 0 && errno == ENOENT) {
                /* The name is one component, made in a directory already resolved inside the root. */
                int r;
                if (is_file) {
                    r = openat(parent, p, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0755);
                    if (r >= 0) close(r);
                } else {
                    r = mkdirat(parent, p, 0755);
                }
                if (r < 0 && errno != EEXIST) { int e = errno; close(parent); errno = e; return -1; }
                next = openat2_in_root(buf, is_file ? 0 : O_DIRECTORY, extra);
                if (next < 0 && errno == ENOENT && r < 0 && !strict) {
                    /* A dangling symlink: go on with what it names (relative to its directory). */
                    char target[4096], joined[4096];
                    ssize_t n = readlinkat(parent, p, target, sizeof target - 1);
                    if (n < 0) { int e = errno; close(parent); errno = e; return -1; }
                    target[n] = '\0';
                    const char *rest = end && !last ? end + 1 : "";
                    int w;
                    if (target[0] == '/') {
                        w = snprintf(joined, sizeof joined, "%s/%s", target, rest);
                    } else {
                        *p = '\0'; /* buf is now the symlink's directory, with a trailing slash */
                        w = snprintf(joined, sizeof joined, "%s%s/%s", buf, target, rest);
                    }
                    close(parent);
                    if (w < 0 || (size_t)w >= sizeof buf) { errno = ENAMETOOLONG; return -1; }
                    strcpy(buf, joined);
                    restart = 1;
                    break;
                }
            }
            int e = errno;
            close(parent);
            if (next < 0) { errno = e; return -1; }
            parent = next;
            if (!end || last) return parent;
            *end = '/';
            p = end + 1;
        }
        if (!restart) break;
    }
    errno = ELOOP;
    return -1;
}

static const char *fdpath(int fd, char *buf, size_t size) {
    snprintf(buf, size, "/proc/self/fd/%d", fd);
    return buf;
}

static long fs_type(int fd) {
    struct statfs sfs;
    if (fstatfs(fd, &sfs) < 0) die("statfs");
    return (long)sfs.f_type;
}

static int is_proc(int fd) { return fs_type(fd) == PROC_SUPER_MAGIC; }

/* runc refuses bind mounts inside /proc; this refuses them inside sysfs as well. */
static int is_proc_or_sys(int fd) {
    long type = fs_type(fd);
    return type == PROC_SUPER_MAGIC || type == SYSFS_MAGIC;
}

/* The mount flags a statfs shows that a remount must keep (a user namespace cannot clear them). */
static unsigned long locked_flags(int fd) {
    struct statfs sfs;
    if (fstatfs(fd, &sfs) < 0) return 0;
    return (unsigned long)sfs.f_flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME |
                                          MS_NODIRATIME | MS_RELATIME);
}

static void remount_at(const char *dest, unsigned long flags, int source_fd) {
    char p[64];
    int fd = resolve(dest, NO_CREATE, 0);
    if (fd < 0) die("remount: resolving %s", dest);
    if (mount(NULL, fdpath(fd, p, sizeof p), NULL, flags | MS_REMOUNT, NULL) < 0) {
        /* As runc: retry keeping what the source's mount has locked (read-only, nosuid...). */
        unsigned long locked = locked_flags(source_fd >= 0 ? source_fd : fd);
        if (errno != EPERM || (flags | locked) == flags ||
            mount(NULL, p, NULL, flags | locked | MS_REMOUNT, NULL) < 0)
            die("remounting %s", dest);
    }
    close(fd);
}

static void do_mount(struct op *op) {
    const char *mode = op->a[0], *dest = op->a[1], *source = op->a[2], *fstype = op->a[3], *data = op->a[4];
    int strict = !strcmp(mode, "strict"), tmpfs = !strcmp(mode, "tmpfs");
    char p[64];
    mode_t covered = 0;
    if (tmpfs) { /* runc chmods a tmpfs to the mode of the directory it covers, if there was one */
        int existing = resolve(dest, NO_CREATE, 0);
        struct stat st;
        if (existing >= 0 && fstat(existing, &st) == 0) covered = st.st_mode & 07777;
        if (existing >= 0) close(existing);
    }
    int fd = resolve(dest, CREATE_DIR, strict);
    if (fd < 0) die("mounting %s on %s: resolving the target", fstype, dest);
    struct stat st;
    if (fstat(fd, &st) < 0) die("stat %s", dest);
    if (strict && !S_ISDIR(st.st_mode)) { errno = 0; die("%s must be mounted on an ordinary directory", fstype); }
    if (!strict && is_proc(fd)) { errno = 0; die("%s cannot be mounted on %s: it is inside /proc", fstype, dest); }
    if (mount(source, fdpath(fd, p, sizeof p), fstype, op->n[0], *data ? data : NULL) < 0)
        die("mounting %s on %s", fstype, dest);
    close(fd);
    if (covered) {
        fd = resolve(dest, NO_CREATE, 0);
        if (fd < 0 || chmod(fdpath(fd, p, sizeof p), covered) < 0) die("chmod %s", dest);
        close(fd);
    }
}

static void do_bind(struct op *op) {
    const char *dest = op->a[0];
    unsigned long flags = op->n[0];
    char s[64], t[64];
    struct stat st;
    if (fstat(op->fd, &st) < 0) die("stat %s", op->a[1]);
    int fd = resolve(dest, S_ISDIR(st.st_mode) ? CREATE_DIR : CREATE_FILE, 0);
    if (fd < 0) die("bind mount on %s: resolving the target", dest);
    if (is_proc_or_sys(fd)) { errno = 0; die("bind mount on %s: the target is in /proc or /sys", dest); }
    if (mount(fdpath(op->fd, s, sizeof s), fdpath(fd, t, sizeof t), NULL, MS_BIND | (flags & MS_REC), NULL) < 0)
        die("bind mount on %s", dest);
    close(fd);
    if (flags & ~(unsigned long)(MS_BIND | MS_REC | MS_REMOUNT)) remount_at(dest, flags, op->fd);
}

static void do_symlink(struct op *op) {
    const char *dest = op->a[0], *target = op->a[1];
    char dir[4096];
    if (strlen(dest) >= sizeof dir) { errno = ENAMETOOLONG; die("%s", dest); }
    strcpy(dir, dest);
    char *slash = strrchr(dir, '/');
    const char *name = dest;
    if (slash) { *slash = '\0'; name = slash + 1; }
    int fd = resolve(slash && *dir ? dir : "/", CREATE_DIR, 0);
    if (fd < 0) die("symlink %s: resolving its directory", dest);
    if (unlinkat(fd, name, 0) < 0 && errno != ENOENT) die("removing %s", dest);
    if (symlinkat(target, fd, name) < 0) die("symlink %s", dest);
    close(fd);
}

static void do_pivot(void) {
    int old_root = open("/", O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    if (old_root < 0) die("opening /");
    if (fchdir(root_fd) < 0) die("chdir to the root");
    if (syscall(SYS_pivot_root, ".", ".") < 0) die("pivot_root");
    if (fchdir(old_root) < 0) die("chdir to the old root");
    /* Slave first, so the detach never propagates to the host (as runc). */
    if (mount(NULL, ".", NULL, MS_SLAVE | MS_REC, NULL) < 0) die("making the old root a slave");
    if (umount2(".", MNT_DETACH) < 0) die("detaching the old root");
    if (chdir("/") < 0) die("chdir /");
    close(old_root);
    close(root_fd);
    root_fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0) die("opening the new root");
}

static void do_readonly(const char *path) {
    char p[64];
    int fd = resolve(path, NO_CREATE, 0);
    if (fd < 0) {
        if (errno == ENOENT) return;
        die("read-only %s", path);
    }
    fdpath(fd, p, sizeof p);
    if (mount(p, p, NULL, MS_BIND | MS_REC, NULL) < 0) die("read-only %s: bind", path);
    close(fd);
    fd = resolve(path, NO_CREATE, 0);
    if (fd < 0) die("read-only %s", path);
    struct statfs sfs;
    if (fstatfs(fd, &sfs) < 0) die("statfs %s", path);
    unsigned long keep = (unsigned long)sfs.f_flags & (MS_NOSUID | MS_NODEV | MS_NOEXEC);
    if (mount(NULL, fdpath(fd, p, sizeof p), NULL, keep | MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) < 0)
        die("read-only %s: remount", path);
    close(fd);
}

static void do_mask(const char *path) {
    char s[64], t[64];
    int fd = resolve(path, NO_CREATE, 0);
    if (fd < 0) {
        if (errno == ENOENT) return;
        die("masking %s", path);
    }
    struct stat st;
    if (fstat(fd, &st) < 0) die("stat %s", path);
    if (S_ISDIR(st.st_mode)) {
        if (mount("tmpfs", fdpath(fd, t, sizeof t), "tmpfs", MS_RDONLY, NULL) < 0) die("masking %s", path);
    } else {
        int null = resolve("/dev/null", NO_CREATE, 0);
        if (null < 0) die("masking %s: /dev/null", path);
        if (mount(fdpath(null, s, sizeof s), fdpath(fd, t, sizeof t), NULL, MS_BIND, NULL) < 0)
            die("masking %s", path);
        close(null);
    }
    close(fd);
}

static void do_caps(struct op *op) {
    unsigned long long bounding = op->n[0];
    for (int cap = 0; cap < 64; cap++) {
        if (bounding & (1ULL << cap)) continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
            if (errno == EINVAL) break; /* past the kernel's last capability */
            die("dropping capability %d from the bounding set", cap);
        }
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0) die("clearing ambient capabilities");
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    for (int k = 0; k < 2; k++) {
        data[k].effective = (uint32_t)(op->n[1] >> (32 * k));
        data[k].permitted = (uint32_t)(op->n[2] >> (32 * k));
        data[k].inheritable = (uint32_t)(op->n[3] >> (32 * k));
    }
    if (syscall(SYS_capset, &header, data) < 0) die("setting capabilities");
    for (int cap = 0; cap < 64; cap++) {
        if (!(op->n[4] & (1ULL << cap))) continue;
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) < 0) die("raising ambient capability %d", cap);
    }
}

__attribute__((noreturn)) static void child(int release_fd) {
    char byte;
    /* Nothing may inspect or ptrace us while host resources are open (as runc's nsexec). */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) die("prctl dumpable");
    ssize_t got;
    do { got = read(release_fd, &byte, 1); } while (got < 0 && errno == EINTR);
    if (got != 1) _exit(1); /* the parent failed (and reports it) or died */
    close(release_fd);

    /* Into the container's cgroups, before anything is charged to it. */
    for (int i = 0; i < ncgroups; i++) {
        if (write(cgroup_fds[i], "0", 1) != 1) die("joining %s", cgroup_dirs[i]);
        close(cgroup_fds[i]);
    }

    /* Host paths, opened with host root's fsuid in our own mount namespace. */
    for (int i = 0; i < nops; i++) {
        if (ops[i].kind == OP_ROOT) {
            if (root_fd >= 0) { errno = 0; die("more than one root"); }
            root_fd = open(ops[i].a[0], O_PATH | O_DIRECTORY | O_CLOEXEC);
            if (root_fd < 0) die("opening the root filesystem");
        } else if (ops[i].kind == OP_BIND) {
            ops[i].fd = open(ops[i].a[1], O_PATH | O_CLOEXEC);
            if (ops[i].fd < 0) die("opening the source of %s", ops[i].a[0]);
        }
    }
    if (root_fd < 0) { errno = 0; die("no root filesystem"); }

    /* Container root from here on (host uid uid_base). As runc's nsexec, the other namespaces are
     * made after setresuid and before setresgid: they are the same either way, but the ipc
     * namespace's mqueue root takes its owner from these credentials (root:nogroup, as under runc). */
    if (setresuid(0, 0, 0) < 0) die("setresuid");
    if (unshare_flags && unshare((int)unshare_flags) < 0) die("unshare namespaces");
    if (setgroups(0, NULL) < 0) die("setgroups");
    if (setresgid(0, 0, 0) < 0) die("setresgid");
    if (cgroupns && unshare(CLONE_NEWCGROUP) < 0) die("unshare cgroup namespace");
    if (loopback) {
        int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct ifreq ifr;
        memset(&ifr, 0, sizeof ifr);
        strcpy(ifr.ifr_name, "lo");
        if (sock < 0 || ioctl(sock, SIOCGIFFLAGS, &ifr) < 0) die("reading the loopback's flags");
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(sock, SIOCSIFFLAGS, &ifr) < 0) die("bringing up the loopback");
        close(sock);
    }

    /* / recursively slave, so nothing mounted here propagates to the host; the root bound onto
     * itself (a detached recursive copy attached over it), the mount pivot_root goes into. */
    if (mount(NULL, "/", NULL, MS_SLAVE | MS_REC, NULL) < 0) die("making / a slave");
    int tree = (int)syscall(SYS_open_tree, root_fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_EMPTY_PATH);
    if (tree < 0) die("copying the root filesystem's mount");
    if (syscall(SYS_move_mount, tree, "", root_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
        die("binding the root filesystem onto itself");
    close(root_fd);
    root_fd = tree;

    for (int i = 0; i < nops; i++) {
        struct op *op = &ops[i];
        switch (op->kind) {
        case OP_ROOT: break;
        case OP_HOSTNAME:
            if (sethostname(op->a[0], strlen(op->a[0])) < 0) die("sethostname");
            break;
        case OP_MOUNT: do_mount(op); break;
        case OP_BIND: do_bind(op); break;
        case OP_REMOUNT: remount_at(op->a[0], op->n[0], -1); break;
        case OP_SYMLINK: do_symlink(op); break;
        case OP_PIVOT: do_pivot(); break;
        case OP_READONLY: do_readonly(op->a[0]); break;
        case OP_MASK: do_mask(op->a[0]); break;
        case OP_RLIMIT: {
            struct rlimit rl = {.rlim_cur = op->n[1], .rlim_max = op->n[2]};
            if (setrlimit((int)op->n[0], &rl) < 0) die("setrlimit %llu", op->n[0]);
            break;
        }
        case OP_UMASK: umask((mode_t)op->n[0]); break;
        case OP_CWD:
            if (chdir(op->a[0]) < 0) die("chdir %s", op->a[0]);
            break;
        case OP_CAPS: do_caps(op); break;
        case OP_NNP:
            if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) die("no_new_privs");
            break;
        }
    }
    for (int i = 0; i < nops; i++)
        if (ops[i].fd >= 0) close(ops[i].fd);
    close(root_fd);
    /* Only stdin (the control socket), stdout and stderr reach the init; the error pipe closes at exec. */
    if (syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC) < 0) die("close_range");
    if (filter) {
        struct sock_fprog prog = {.len = filter_len, .filter = filter};
        if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) die("loading the seccomp filter");
    }
    /* The init starts with no signal blocked and every disposition the default (what it gets from
     * runc, whose Go init handles every signal, so exec resets them), whatever the caller had. */
    sigset_t none;
    sigemptyset(&none);
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig != SIGKILL && sig != SIGSTOP) signal(sig, SIG_DFL);
    }
    if (sigprocmask(SIG_SETMASK, &none, NULL) < 0) die("sigprocmask");
    envp[nenv] = NULL;
    execve(exec_argv[0], exec_argv, envp);
    die("executing %s", exec_argv[0]);
}

int main(int argc, char **argv) {
    parse(argc, argv);
    if (!uidmap || !gidmap || !(clone_flags & CLONE_NEWUSER) || !(clone_flags & CLONE_NEWNS)) {
        errno = 0;
        fail("a user and a mount namespace, and the maps, are required");
    }
    read_filter();

    int release[2], errors[2];
    if (pipe2(release, O_CLOEXEC) < 0 || pipe2(errors, O_CLOEXEC) < 0) fail("pipe");
    /* The cgroups' files, opened by host root: the child joins through them (the kernel checks the
     * opener's credentials), and is born in the cgroup v2 one. */
    for (int i = 0; i < ncgroups; i++) {
        char tasks[4096];
        snprintf(tasks, sizeof tasks, "%s/tasks", cgroup_dirs[i]);
        cgroup_fds[i] = open(tasks, O_WRONLY | O_CLOEXEC);
        if (cgroup_fds[i] < 0) fail("opening %s", tasks);
    }
    int cgroup2_fd = -1;
    if (cgroup2_dir) {
        cgroup2_fd = open(cgroup2_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (cgroup2_fd < 0) fail("opening %s", cgroup2_dir);
    }

    /* User, pid and mount namespaces at once (the child must be pid 1 and open host paths in its own
     * mount namespace); the others once it is container root. */
    unsigned long at_clone = clone_flags & (CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS);
    unshare_flags = clone_flags & ~at_clone;
    struct clone_args args = {.flags = at_clone, .exit_signal = SIGCHLD};
    if (cgroup2_fd >= 0) {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = (unsigned long long)cgroup2_fd;
    }
    pid_t pid = (pid_t)syscall(SYS_clone3, &args, sizeof args);
    if (pid < 0) fail("clone");
    if (pid == 0) {
        close(release[1]);
        close(errors[0]);
        err_fd = errors[1];
        child(release[0]);
    }
    child_pid = pid;
    signal(SIGPIPE, SIG_IGN); /* a child that died early shows as an error, not as our death */
    close(release[0]);
    close(errors[1]);

    char path[128];
    snprintf(path, sizeof path, "/proc/%d/uid_map", pid);
    write_file(path, uidmap);
    snprintf(path, sizeof path, "/proc/%d/gid_map", pid);
    write_file(path, gidmap);
    for (int i = 0; i < ncgroups; i++) close(cgroup_fds[i]);
    if (cgroup2_fd >= 0) close(cgroup2_fd);
    if (write(release[1], "1", 1) != 1) fail("releasing the container's init");
    close(release[1]);

    char message[1024];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(errors[0], message + len, sizeof message - 1 - len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        len += (size_t)n;
        if (len == sizeof message - 1) break;
    }
    message[len] = '\0';
    if (len > 0) {
        errno = 0;
        fail("%s", message);
    }
    /* The pipe closed: the child either executed the init or died before writing a word. */
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) {
        child_pid = 0;
        errno = 0;
        fail("the container's init exited during setup (status %d)", status);
    }
    dprintf(report_fd, "%d\n", pid);
    return 0;
}
