/*
 * cove-init: PID 1 of every Cove container.
 *
 *     cove-init FD
 *
 * FD is this end of an AF_UNIX SOCK_SEQPACKET socketpair; the host holds the other end.  Init reaps
 * every process (it is PID 1, or at least a child subreaper) and spawns commands on request.  Output
 * never crosses the control socket: each SPAWN carries three fds (SCM_RIGHTS) that become the
 * command's stdin, stdout and stderr, and the host reads the pipes itself.
 *
 * Messages (one seqpacket each, integers little-endian):
 *   host -> init  SPAWN         u8 op=1, u8 pad[3], u32 id, u32 argc, u32 envc, then NUL-terminated
 *                               cwd, argv[0..argc), env[0..envc); exactly 3 fds attached
 *                 SIGNAL        u8 op=2, u8 pad[3], u32 id, u32 signo
 *                 SPAWN_PTY     u8 op=3, u8 pad[3], u32 id, u32 argc, u32 envc, u16 rows, u16 cols,
 *                               then the strings as for SPAWN; no fds attached
 *   init -> host  STARTED       u8 op=1, u8 pad[3], u32 id, i32 pid; for SPAWN_PTY the terminal's
 *                               master end attached (the command has the other end as its stdin,
 *                               stdout, stderr and controlling terminal)
 *                 SPAWN_FAILED  u8 op=2, u8 pad[3], u32 id, i32 errno
 *                 EXITED        u8 op=3, u8 pad[3], u32 id, i32 wait_status
 *
 * A terminal is allocated here, inside the container, from the container's own devpts instance (so
 * the command sees /dev/pts/N as any terminal program expects); only the master's fd leaves.
 *
 * It must not depend on anything in the image, so it is built with `cc -static` and uses only libc.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { OP_SPAWN = 1, OP_SIGNAL = 2, OP_SPAWN_PTY = 3 };
enum { OP_STARTED = 1, OP_SPAWN_FAILED = 2, OP_EXITED = 3 };

#define MAX_JOBS 4096
#define MAX_MSG (256 * 1024)
/* Room for more fds than a SPAWN may carry, so that extra ones arrive (and get closed) and the
 * message is rejected, instead of being silently truncated to a plausible-looking 3. */
#define MAX_FDS 16

struct job {
    uint32_t id;
    pid_t pid; /* 0: free slot */
};

struct proc {
    pid_t pid, ppid, sid;
    char state;
};

static struct job jobs[MAX_JOBS];
static int ctl;
static unsigned char msg[MAX_MSG];

static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Sends a reply, with ``fd`` attached when it is >= 0. A failed send means the host is gone; the
 * next recvmsg sees EOF and shuts down. */
static void reply_fd(unsigned char op, uint32_t id, int32_t value, int fd) {
    unsigned char b[12] = {op};
    put_u32(b + 4, id);
    put_u32(b + 8, (uint32_t)value);
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } cbuf;
    struct iovec iov = {b, sizeof b};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
        mh.msg_control = cbuf.buf;
        mh.msg_controllen = sizeof cbuf.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    while (sendmsg(ctl, &mh, MSG_NOSIGNAL) < 0 && errno == EINTR) {
    }
}

static void reply(unsigned char op, uint32_t id, int32_t value) { reply_fd(op, id, value, -1); }

static struct job *find_job(uint32_t id, pid_t pid) {
    for (int i = 0; i < MAX_JOBS; i++)
        if (jobs[i].pid && (pid ? jobs[i].pid == pid : jobs[i].id == id)) return &jobs[i];
    return NULL;
}

static int by_pid(const void *a, const void *b) {
    pid_t x = ((const struct proc *)a)->pid, y = ((const struct proc *)b)->pid;
    return (x > y) - (x < y);
}

/* Snapshot of /proc (pid, ppid, session, state), sorted by pid; *out is malloc'd. An image without
 * /proc mounted just gives an empty list. */
static size_t snapshot(struct proc **out) {
    size_t n = 0, cap = 0;
    struct proc *ps = NULL;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char *end, path[64], buf[512];
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0) continue;
        snprintf(path, sizeof path, "/proc/%ld/stat", pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t r = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (r <= 0) continue;
        buf[r] = 0;
        /* "pid (comm) state ppid pgrp session ...": comm may hold spaces and ')', so parse from the
         * last ')'. */
        struct proc p = {.pid = (pid_t)pid};
        char *c = strrchr(buf, ')');
        if (!c || sscanf(c + 1, " %c %d %*d %d", &p.state, &p.ppid, &p.sid) != 3) continue;
        if (n == cap) {
            struct proc *grown = realloc(ps, (cap = cap ? 2 * cap : 256) * sizeof *ps);
            if (!grown) break;
            ps = grown;
        }
        ps[n++] = p;
    }
    if (d) closedir(d);
    if (n) qsort(ps, n, sizeof *ps, by_pid);
    *out = ps;
    return n;
}

/* A job called setsid(), so its pid is its process group and its session.  Killing the group gets
 * the usual pipelines and background jobs; scanning sessions also gets children that moved to
 * another group (job-control shells) but stayed in the session.  A process that calls setsid()
 * itself escapes both; only the shutdown sweep (or the namespace ending) catches it. */
static void kill_job(pid_t pid, int signo) {
    struct proc *ps;
    size_t n = snapshot(&ps);
    kill(-pid, signo);
    for (size_t i = 0; i < n; i++)
        if (ps[i].sid == pid && ps[i].pid != pid) kill(ps[i].pid, signo);
    free(ps);
}

/* Reaps every exited child; only jobs are reported, orphans we inherited are just collected. */
static void reap(void) {
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        struct job *j = find_job(0, pid);
        if (j) {
            reply(OP_EXITED, j->id, status);
            j->pid = 0;
        }
    }
}

static int descends_from_me(const struct proc *ps, size_t n, pid_t pid) {
    pid_t me = getpid();
    for (size_t depth = 0; pid > 1 && depth <= n; depth++) {
        if (pid == me) return 1;
        struct proc key = {.pid = pid}, *p = bsearch(&key, ps, n, sizeof *ps, by_pid);
        if (!p) return 0;
        pid = p->ppid;
    }
    return 0;
}

/* The host is gone.  As PID 1, kill(-1) takes everything in the namespace (and our exit would
 * anyway).  Otherwise (tests, development) kill(-1) would hit every process of our user, so kill our
 * descendants instead: being a subreaper, everything we ever spawned is still below us.  Repeat
 * while some are alive, since a process may fork between the scan and the kill. */
static void kill_everything(void) {
    if (getpid() == 1) {
        kill(-1, SIGKILL);
        return;
    }
    for (int round = 0; round < 50; round++) {
        struct proc *ps;
        size_t n = snapshot(&ps), alive = 0;
        for (size_t i = 0; i < n; i++) {
            if (ps[i].state != 'Z' && descends_from_me(ps, n, ps[i].ppid)) {
                kill(ps[i].pid, SIGKILL);
                alive++;
            }
        }
        free(ps);
        reap();
        if (!alive) break;
        nanosleep(&(struct timespec){.tv_nsec = 20 * 1000 * 1000}, NULL);
    }
}

/* What spawn() hands the child, and where the child leaves errno if chdir or execve fails. */
struct spawn_args {
    const int *fds;
    const char *cwd;
    char **argv, **envp;
    int ctty; /* make fds[0] the controlling terminal of the new session */
    int err;
};

/* Signals whose disposition is not SIG_DFL (ignored by us or by whoever started us): a child resets
 * exactly these. Init never changes a disposition after startup, so the set is fixed there. */
static uint64_t non_default;
/* The child's stack: it runs in our memory (CLONE_VM) while we are suspended (CLONE_VFORK). */
static char child_stack[64 * 1024] __attribute__((aligned(16)));

struct kernel_sigaction {
    void (*handler)(int);
    unsigned long flags;
    void (*restorer)(void);
    uint64_t mask;
};

/* Runs in the cloned child, on child_stack, in init's memory until execve: becomes the command or
 * leaves errno in args->err and exits 127. It only makes system calls and writes args->err, so
 * sharing init's memory (init is suspended meanwhile) is safe, as in posix_spawn. */
static int child(void *p) {
    struct spawn_args *a = p;
    /* Ignored dispositions and the blocked mask survive execve; the command must not inherit ours,
     * nor what Cove's own parent ignored. The raw syscall also resets the realtime signals glibc
     * reserves (32, 33), which its sigaction() refuses to touch. No CLONE_SIGHAND: the table reset
     * here is the child's own. */
    struct kernel_sigaction dfl = {SIG_DFL, 0, NULL, 0};
    for (int s = 1; s <= 64; s++)
        if (non_default >> (s - 1) & 1) syscall(SYS_rt_sigaction, s, &dfl, NULL, sizeof dfl.mask);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    setsid();
    /* Received fds are >= 3 (main keeps 0-2 occupied), so these dup2s cannot clobber each other. */
    for (int i = 0; i < 3; i++)
        if (dup2(a->fds[i], i) < 0) goto fail;
    if (a->ctty && ioctl(0, TIOCSCTTY, 0) < 0) goto fail;
    /* Close everything else (no CLONE_FILES: the fd table is the child's own copy). */
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 3U, ~0U, 0U) < 0)
#endif
    {
        long max = sysconf(_SC_OPEN_MAX);
        for (long fd = 3; fd < (max > 0 ? max : 65536); fd++) close((int)fd);
    }
    /* Init may run with a low OOM score so the kernel spares it; commands must not inherit that.
     * Going back up to 0 needs no privilege, and failure (no /proc) is harmless. */
    int oom = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (oom >= 0) {
        if (write(oom, "0", 1) < 0) {
        }
        close(oom);
    }
    if (chdir(a->cwd) == 0) execve(a->argv[0], a->argv, a->envp);
fail:
    a->err = errno ? errno : EINVAL;
    _exit(127);
}

/* Records which signals a child must reset. */
static void note_inherited_state(void) {
    for (int s = 1; s <= 64; s++) {
        struct kernel_sigaction old;
        if (syscall(SYS_rt_sigaction, s, NULL, &old, sizeof old.mask) == 0 && old.handler == SIG_DFL) continue;
        non_default |= (uint64_t)1 << (s - 1);
    }
}

/* A new terminal from the container's devpts: *master and *slave (both CLOEXEC), sized rows x cols.
 * /dev/pts/ptmx rather than /dev/ptmx: the latter lives on the container's writable /dev tmpfs, where
 * the command could have put anything; the devpts mount cannot be changed without CAP_SYS_ADMIN.
 * TIOCGPTPEER opens the peer without a path at all. Returns 0 or an errno. */
static int open_pty(uint16_t rows, uint16_t cols, int *master, int *slave) {
    int zero = 0;
    *master = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
    if (*master < 0) return errno;
    struct winsize ws = {.ws_row = rows, .ws_col = cols};
    if (ioctl(*master, TIOCSPTLCK, &zero) < 0 || ioctl(*master, TIOCSWINSZ, &ws) < 0 ||
        (*slave = ioctl(*master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) {
        int err = errno;
        close(*master);
        return err;
    }
    return 0;
}

/* Starts the job a SPAWN or SPAWN_PTY message describes; returns 0 (STARTED sent) or the errno to
 * report. */
static int spawn(uint32_t id, size_t len, const int *fds, int nfds, int pty) {
    size_t head = pty ? 20 : 16;
    if (len < head || nfds != (pty ? 0 : 3)) return EINVAL;
    uint32_t argc = get_u32(msg + 8), envc = get_u32(msg + 12);
    /* Every string takes at least its NUL byte: this bounds the counts, in 64 bits so no overflow. */
    if (argc == 0 || (uint64_t)argc + envc + 1 > len - head || find_job(id, 0)) return EINVAL;
    struct job *slot = NULL;
    for (int i = 0; i < MAX_JOBS && !slot; i++)
        if (!jobs[i].pid) slot = &jobs[i];
    if (!slot) return EAGAIN;

    /* strs = cwd, argv[0..argc), NULL, env[0..envc), NULL: argv and envp point into it. */
    size_t nstr = 1 + (size_t)argc + envc;
    char **strs = malloc((nstr + 2) * sizeof *strs);
    if (!strs) return ENOMEM;
    char *p = (char *)msg + head, *end = (char *)msg + len;
    size_t k = 0;
    for (; k < nstr; k++) {
        char *nul = memchr(p, 0, (size_t)(end - p));
        if (!nul) break;
        strs[k <= argc ? k : k + 1] = p;
        p = nul + 1;
    }
    if (k != nstr || p != end) { /* an unterminated string, or bytes trailing the last one */
        free(strs);
        return EINVAL;
    }
    strs[argc + 1] = NULL;
    strs[nstr + 1] = NULL;

    int master = -1, slave = -1, ttys[3];
    if (pty) {
        uint16_t rows = (uint16_t)(msg[16] | msg[17] << 8), cols = (uint16_t)(msg[18] | msg[19] << 8);
        int err = open_pty(rows, cols, &master, &slave);
        if (err) {
            free(strs);
            return err;
        }
        ttys[0] = ttys[1] = ttys[2] = slave;
        fds = ttys;
    }
    /* CLONE_VFORK suspends us until the child's execve succeeds or it exits, so args.err then says
     * which: exactly one of STARTED or SPAWN_FAILED per SPAWN, without a pipe or a copied address
     * space (CLONE_VM). */
    struct spawn_args args = {fds, strs[0], strs + 1, strs + argc + 2, pty, 0};
    pid_t pid = clone(child, child_stack + sizeof child_stack, CLONE_VM | CLONE_VFORK | SIGCHLD, &args);
    int err = pid < 0 ? errno : args.err;
    free(strs);
    if (slave >= 0) close(slave);
    if (pid < 0 || err) { /* on err the child _exits; reap() collects it silently */
        if (master >= 0) close(master);
        return err;
    }
    slot->id = id;
    slot->pid = pid;
    reply_fd(OP_STARTED, id, pid, master);
    if (master >= 0) close(master);
    return 0;
}

/* Handles one message; returns 0 once the host is gone (EOF or error). */
static int handle_control(void) {
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(MAX_FDS * sizeof(int))];
    } cbuf;
    struct iovec iov = {msg, sizeof msg};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf,
                        .msg_controllen = sizeof cbuf.buf};
    /* CLOEXEC so received fds never leak into children forked for other jobs. */
    ssize_t n = recvmsg(ctl, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0) return errno == EINTR || errno == EAGAIN;
    int fds[MAX_FDS], nfds = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k && nfds < MAX_FDS; i++)
            memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
    }
    /* The host never sends empty messages, so 0 bytes means EOF. */
    int alive = n > 0;
    int truncated = (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0;
    if (alive && (msg[0] == OP_SPAWN || msg[0] == OP_SPAWN_PTY)) {
        uint32_t id = n >= 8 ? get_u32(msg + 4) : 0;
        int err = truncated ? EINVAL : spawn(id, (size_t)n, fds, nfds, msg[0] == OP_SPAWN_PTY);
        if (err) reply(OP_SPAWN_FAILED, id, err);
    } else if (alive && msg[0] == OP_SIGNAL && n == 12 && !truncated) {
        struct job *j = find_job(get_u32(msg + 4), 0);
        if (j) kill_job(j->pid, (int)get_u32(msg + 8));
    } /* anything else is garbage: ignored */
    for (int i = 0; i < nfds; i++) close(fds[i]);
    return alive;
}

int main(int argc, char **argv) {
    char *end = NULL;
    long fd = argc == 2 ? strtol(argv[1], &end, 10) : -1;
    int type = 0;
    socklen_t tlen = sizeof type;
    if (argc != 2 || *end || end == argv[1] || fd < 0 || fd > INT_MAX ||
        getsockopt((int)fd, SOL_SOCKET, SO_TYPE, &type, &tlen) < 0 || type != SOCK_SEQPACKET) {
        fprintf(stderr, "usage: cove-init FD  (FD: a SOCK_SEQPACKET control socket)\n");
        return 2;
    }
    ctl = (int)fd;
    fcntl(ctl, F_SETFD, FD_CLOEXEC);

    /* Keep 0-2 occupied so that received fds are always >= 3 (see child()). */
    for (;;) {
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null < 0) null = fcntl(ctl, F_DUPFD_CLOEXEC, 0); /* images may lack /dev/null */
        if (null < 0) break;
        if (null > 2) {
            close(null);
            break;
        }
    }

    /* Orphans reparent to us even when we are not PID 1 (tests), so we can reap and kill them. */
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    /* Commands run as the same uid as us: without this they could ptrace us and speak to Cove in
     * our name. Children are dumpable again after their execve. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    /* As PID 1 the kernel already shields us from signals we don't handle; outside a namespace we
     * must not die from a stray terminal or shell signal either. */
    int ignored[] = {SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGQUIT, SIGUSR1, SIGUSR2, SIGTSTP, SIGTTIN, SIGTTOU};
    for (size_t i = 0; i < sizeof ignored / sizeof *ignored; i++) signal(ignored[i], SIG_IGN);
    note_inherited_state();

    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    int sfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0) {
        perror("cove-init: signalfd");
        return 1;
    }

    struct pollfd pfds[2] = {{.fd = ctl, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
    for (;;) {
        if (poll(pfds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (pfds[1].revents) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) > 0) {
            }
            reap();
        }
        if (pfds[0].revents && !handle_control()) break;
    }
    kill_everything();
    return 0;
}
