/*
 * The kernel floor of SPEC §5, for bench/run: what running CMD costs when a
 * program does nothing but the kernel work the sandbox cannot skip, and does
 * it the cheapest way. A memory + pids cgroup is made, joined and removed;
 * one clone makes the mount, PID, network, IPC and UTS namespaces; PID 1 in
 * there mounts a tmpfs root with /usr read-only, /bin /lib /lib64 links and
 * a tmpfs /tmp, pivots into it, forks CMD (which mounts its /proc) and waits.
 *
 * Not a sandbox: no seccomp, no uid change, no capability drop, no /dev, no
 * /etc, no /work, no relay socket, no rlimits. servo does all of those, so
 * servo's figures cannot beat this program's; bench/run prints both so that a
 * target below this floor shows as such.
 *
 * Usage (root): floor ROOTDIR CMD [ARGS...]; ROOTDIR is an empty directory.
 * The cgroup goes under servo's own `servo/sandbox` parent (made by a
 * `servo sandbox` call, which bench/run makes first).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char *what)
{
    fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
    _exit(125);
}

static void write_file(const char *dir, const char *file, const char *value)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, value, strlen(value)) < 0)
        die(path);
    close(fd);
}

static void sub(char *out, size_t n, const char *root, const char *name)
{
    snprintf(out, n, "%s/%s", root, name);
}

/* PID 1 of the new namespaces: the root, then CMD as its child. */
static int init(const char *root, char **cmd)
{
    char p[512];
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        die("make / private");
    if (mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755") < 0)
        die("mount the root tmpfs");
    sub(p, sizeof p, root, "usr");
    if (mkdir(p, 0755) < 0 || mount("/usr", p, NULL, MS_BIND | MS_REC, NULL) < 0 ||
        mount(NULL, p, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
        die("bind /usr read-only");
    const char *links[][2] = {{"bin", "usr/bin"}, {"lib", "usr/lib"}, {"lib64", "usr/lib64"}};
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++) {
        sub(p, sizeof p, root, links[i][0]);
        if (symlink(links[i][1], p) < 0)
            die("link a system directory");
    }
    sub(p, sizeof p, root, "tmp");
    if (mkdir(p, 01777) < 0 || mount("tmpfs", p, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m") < 0)
        die("mount /tmp");
    sub(p, sizeof p, root, "proc");
    if (mkdir(p, 0555) < 0)
        die("make /proc");
    sub(p, sizeof p, root, "old");
    if (mkdir(p, 0700) < 0 || chdir(root) < 0 || syscall(SYS_pivot_root, ".", "old") < 0 ||
        chdir("/") < 0 || umount2("/old", MNT_DETACH) < 0)
        die("pivot into the root");
    pid_t child = fork();
    if (child < 0)
        die("fork the command");
    if (child == 0) {
        if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
            die("mount /proc");
        execv(cmd[0], cmd);
        die(cmd[0]);
    }
    int status;
    if (waitpid(child, &status, 0) < 0)
        die("wait for the command");
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: floor ROOTDIR CMD [ARGS...]\n");
        return 2;
    }
    /* The job's group(s): v2 if the unified hierarchy is mounted, else v1. */
    char groups[2][256];
    int n = 0;
    if (access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0) {
        snprintf(groups[n++], sizeof groups[0], "/sys/fs/cgroup/servo/sandbox/floor-%d", getpid());
    } else {
        snprintf(groups[n++], sizeof groups[0], "/sys/fs/cgroup/memory/servo/sandbox/floor-%d", getpid());
        snprintf(groups[n++], sizeof groups[0], "/sys/fs/cgroup/pids/servo/sandbox/floor-%d", getpid());
    }
    int v2 = n == 1;
    for (int i = 0; i < n; i++) {
        char parent[sizeof groups];
        snprintf(parent, sizeof parent, "%s", groups[i]);
        *strrchr(parent, '/') = '\0';
        if (!v2 && mkdir(parent, 0755) < 0 && errno != EEXIST) /* v2 needs servo's set-up */
            die(parent);
        if (mkdir(groups[i], 0755) < 0)
            die(groups[i]);
    }
    write_file(groups[0], v2 ? "memory.max" : "memory.limit_in_bytes", "1073741824");
    write_file(groups[n - 1], "pids.max", "256");

    /* The child waits on `gate` until it is in its group(s). */
    int gate[2];
    if (pipe2(gate, O_CLOEXEC) < 0)
        die("pipe");
    pid_t pid = syscall(SYS_clone, CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC |
                                       CLONE_NEWUTS | SIGCHLD, 0, 0, 0, 0);
    if (pid < 0)
        die("clone the namespaces");
    if (pid == 0) {
        char c;
        close(gate[1]);
        if (read(gate[0], &c, 1) != 0)
            die("wait for the cgroup");
        _exit(init(argv[1], argv + 2));
    }
    close(gate[0]);
    char num[32];
    snprintf(num, sizeof num, "%d", pid);
    for (int i = 0; i < n; i++)
        write_file(groups[i], "cgroup.procs", num);
    close(gate[1]);
    int status;
    if (waitpid(pid, &status, 0) < 0)
        die("wait for PID 1");
    for (int i = 0; i < n; i++)
        if (rmdir(groups[i]) < 0)
            die(groups[i]);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
