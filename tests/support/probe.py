#!/usr/bin/python3
"""Sandbox escape probes (SPEC §5), run by the tests/sandbox_*.rs suite.

`python3 probe.py CHECK [ARGS...]` attempts one action and prints, as its last
line, `RESULT ok [detail]` (the action worked), `RESULT errno=N [detail]` (the
kernel refused it with errno N) or `RESULT <word> [detail]`. The same check
runs outside the sandbox (where it must work, or fail for a reason other than
EPERM) and inside (where it must be refused), so no test passes by accident.

Standard library only. Raw system calls go through ctypes with x86_64 numbers.
"""

import ctypes
import errno
import json
import mmap
import os
import socket
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

# x86_64 system call numbers.
NR = {
    "getpid": 39,
    "clone": 56,
    "ptrace": 101,
    "chroot": 161,
    "mount": 165,
    "umount2": 166,
    "pivot_root": 155,
    "sethostname": 170,
    "init_module": 175,
    "delete_module": 176,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "kexec_load": 246,
    "open_by_handle_at": 304,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "finit_module": 313,
    "bpf": 321,
    "kexec_file_load": 320,
    "userfaultfd": 323,
    "perf_event_open": 298,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "clone3": 435,
    "ioctl": 16,
    "socket": 41,
}

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
SIGCHLD = 17


def result(what, detail=""):
    print(("RESULT %s %s" % (what, detail)).rstrip(), flush=True)


def raw(name_or_nr, *args):
    """A raw system call with every argument passed as a 64-bit long;
    returns (return value, errno)."""
    nr = NR[name_or_nr] if isinstance(name_or_nr, str) else name_or_nr
    cargs = []
    for a in args:
        if isinstance(a, bytes):
            cargs.append(ctypes.c_char_p(a))
        elif isinstance(a, ctypes.Array):
            cargs.append(ctypes.cast(a, ctypes.c_void_p))
        elif a is None:
            cargs.append(ctypes.c_void_p(0))
        else:
            cargs.append(ctypes.c_long(a))
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(nr), *cargs)
    return ret, ctypes.get_errno()


def report_raw(ret, err, detail=""):
    if ret == -1:
        result("errno=%d" % err, detail)
    else:
        result("ok", ("ret=%d %s" % (ret, detail)).strip())


def report_exc(e, detail=""):
    if isinstance(e, OSError) and e.errno is not None:
        result("errno=%d" % e.errno, detail)
    else:
        result("error", "%s: %s" % (type(e).__name__, e))


# ---------------------------------------------------------------- §5.1 PID


def own_pids():
    return sorted(int(p) for p in os.listdir("/proc") if p.isdigit())


def check_pids():
    """Prints the process ids this process can see."""
    pids = own_pids()
    result("pids=%d" % len(pids), json.dumps(pids))


def check_pid1():
    """Tries to read PID 1's environment."""
    try:
        with open("/proc/1/environ", "rb") as f:
            data = f.read()
        result("ok", "bytes=%d" % len(data))
    except OSError as e:
        report_exc(e)


def check_daemon(marker):
    """Leaves a daemon behind (double fork + setsid) that rewrites a heartbeat
    file in the current directory; the marker is in its command line."""
    beat = os.path.abspath("heartbeat")
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        code = (
            "import os,sys,time\n"
            "while True:\n"
            "  open(sys.argv[1],'w').write(str(time.time()))\n"
            "  time.sleep(0.05)\n"
        )
        devnull = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.execv(sys.executable, [sys.executable, "-c", code, beat, marker])
    os.waitpid(pid, 0)
    # Wait for the first heartbeat so the daemon is known to run.
    for _ in range(200):
        if os.path.exists(beat):
            break
        time.sleep(0.01)
    result("ok" if os.path.exists(beat) else "no-heartbeat")


# --------------------------------------------------------------- §5.2 mounts


def check_read(path):
    """Tries to read a file or list a directory."""
    try:
        if os.path.isdir(path):
            n = len(os.listdir(path))
            result("ok", "entries=%d" % n)
        else:
            with open(path, "rb") as f:
                n = len(f.read(4096))
            result("ok", "bytes=%d" % n)
    except OSError as e:
        report_exc(e)


def check_exists(path):
    result("exists" if os.path.lexists(path) else "absent", path)


def check_write(directory):
    """Tries to create (and then removes) a file in a directory."""
    path = os.path.join(directory, "servo-probe-%d" % os.getpid())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b"x")
        os.close(fd)
        os.unlink(path)
        result("ok", path)
    except OSError as e:
        report_exc(e, path)


def check_cat(path):
    """Prints a file's text as one JSON string."""
    try:
        with open(path) as f:
            result("ok", json.dumps(f.read()))
    except OSError as e:
        report_exc(e)


def check_listdir(path):
    try:
        result("ok", json.dumps(sorted(os.listdir(path))))
    except OSError as e:
        report_exc(e)


def check_blockdev():
    """Looks for a block device anywhere reachable (outside /proc and the
    big system trees), then tries to make one with mknod."""
    import stat

    found = []
    for top in ("/dev", "/tmp", "/work", "/run", "/etc", "/opt", "/var", "/mnt"):
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                try:
                    if stat.S_ISBLK(os.lstat(p).st_mode):
                        found.append(p)
                except OSError:
                    pass
            if len(found) > 5:
                break
    node = os.path.join(os.getcwd(), "blk-%d" % os.getpid())
    try:
        os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(7, 0))
        os.unlink(node)
        made = "mknod=ok"
    except OSError as e:
        made = "mknod=errno%d" % e.errno
    result("found=%d" % len(found), "%s %s" % (made, json.dumps(found[:5])))


# -------------------------------------------------------------- §5.3 network


def check_socket(family, kind):
    """socket(family, type, 0) as a raw call."""
    ret, err = raw("socket", int(family), int(kind), 0)
    if ret >= 0:
        os.close(ret)
    report_raw(ret, err)


def check_connect(host, port):
    try:
        s = socket.create_connection((host, int(port)), timeout=2)
        s.close()
        result("ok")
    except OSError as e:
        report_exc(e)


def check_connect_abstract(name):
    """Connects to an abstract AF_UNIX socket (per network namespace)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect("\0" + name)
        result("ok")
    except OSError as e:
        report_exc(e)
    finally:
        s.close()


def check_ifaces():
    """Interface names from /proc/self/net/dev."""
    with open("/proc/self/net/dev") as f:
        names = [l.split(":")[0].strip() for l in f.readlines()[2:]]
    result("ok", json.dumps(sorted(names)))


# ------------------------------------------------------------ §5.4 IPC/UTS


def check_hostname():
    result("ok", socket.gethostname())


def check_sethostname():
    name = b"escaped"
    ret = libc.sethostname(name, len(name))
    report_raw(ret, ctypes.get_errno())


def check_shm(key):
    """shmget(key, 0, 0): does a segment with this key exist here?"""
    libc.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
    ctypes.set_errno(0)
    ret = libc.shmget(int(key), 0, 0)
    report_raw(ret, ctypes.get_errno())


# ---------------------------------------------------------- §5.5 privileges


def check_ids():
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            status[k] = v.strip()
    info = {
        "uid": os.getresuid(),
        "gid": os.getresgid(),
        "groups": os.getgroups(),
        "caps": {k: status.get(k) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")},
        "no_new_privs": status.get("NoNewPrivs"),
        "seccomp": status.get("Seccomp"),
    }
    result("ok", json.dumps(info, sort_keys=True))


def check_setuid0():
    try:
        os.setuid(0)
        result("ok")
    except OSError as e:
        report_exc(e)


def check_rlimit_raise(name):
    """Tries to lift a resource limit's hard (and soft) value to infinity."""
    import resource

    which = getattr(resource, "RLIMIT_" + name.upper())
    soft, hard = resource.getrlimit(which)
    inf = resource.RLIM_INFINITY
    try:
        resource.setrlimit(which, (inf, inf))
        result("ok", "was soft=%d hard=%d" % (soft, hard))
    except ValueError as e:
        # Python's answer to EPERM from setrlimit.
        result("refused", "soft=%d hard=%d %s" % (soft, hard, e))
    except OSError as e:
        report_exc(e, "soft=%d hard=%d" % (soft, hard))


def check_exec_euid(path):
    """Runs `path -u` (a setuid-root copy of id) and reports the euid it printed."""
    import subprocess

    out = subprocess.run([path, "-u"], capture_output=True, text=True)
    result("euid=%s" % out.stdout.strip(), out.stderr.strip())


def check_neighbours(marker, other_marker, other_path):
    """Says `ready`, waits for the host's `go` file, then looks for the other
    run's process and workdir."""
    open("ready", "w").close()
    for _ in range(1000):
        if os.path.exists("go"):
            break
        time.sleep(0.01)
    seen = []
    for p in os.listdir("/proc"):
        # Our own command line names the other marker.
        if p.isdigit() and int(p) != os.getpid():
            try:
                with open("/proc/%s/cmdline" % p, "rb") as f:
                    if other_marker.encode() in f.read():
                        seen.append(int(p))
            except OSError:
                pass
    reach = os.path.lexists(other_path)
    result("seen=%d" % len(seen), "other_workdir=%s" % ("reachable" if reach else "absent"))


# ------------------------------------------------------------ §5.6 seccomp


def sys_ptrace():
    """PTRACE_ATTACH to our own child (allowed for an ordinary user)."""
    child = os.fork()
    if child == 0:
        time.sleep(30)
        os._exit(0)
    try:
        ret, err = raw("ptrace", 16, child, 0, 0)
        report_raw(ret, err)
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)


def sys_process_vm(which):
    """Reads or writes our own memory through process_vm_readv/writev."""
    src = ctypes.create_string_buffer(b"servo-probe", 16)
    dst = ctypes.create_string_buffer(16)

    class Iovec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    local = Iovec(ctypes.cast(dst, ctypes.c_void_p), 16)
    remote = Iovec(ctypes.cast(src, ctypes.c_void_p), 16)
    ret, err = raw(
        which, os.getpid(), ctypes.addressof(local), 1, ctypes.addressof(remote), 1, 0
    )
    report_raw(ret, err)


def sys_clone(flags):
    """Raw clone(flags | SIGCHLD) with a copied stack (a fork): the child exits at once."""
    ret, err = raw("clone", flags | SIGCHLD, 0, 0, 0, 0)
    if ret == 0:
        os._exit(0)
    if ret > 0:
        os.waitpid(ret, 0)
    report_raw(ret, err)


def sys_mmap_i386():
    """Calls getpid through the i386 entry (int 0x80) from an RWX page."""
    code = b"\xb8\x14\x00\x00\x00\xcd\x80\xc3"  # mov eax,20; int 0x80; ret
    try:
        page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except OSError as e:
        report_exc(e, "mmap PROT_EXEC refused")
        return
    page.write(code)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
    fn = ctypes.CFUNCTYPE(ctypes.c_long)(addr)
    print("calling int 0x80", flush=True)
    ret = fn()
    ret32 = ctypes.c_int32(ret & 0xFFFFFFFF).value
    if ret32 < 0:
        result("errno=%d" % -ret32, "i386")
    else:
        result("ok", "ret=%d pid=%d" % (ret32, os.getpid()))


def check_sys(case):
    """One refused system call family (SPEC §5.6), attempted for real or with
    arguments that fail for another reason than EPERM outside the sandbox."""
    tiocsti, tioclinux = 0x5412, 0x541C
    simple = {
        "mount": ("mount", b"none", b"/nonexistent-servo-probe", b"tmpfs", 0, None),
        "umount2": ("umount2", b"/nonexistent-servo-probe", 0),
        "pivot_root": ("pivot_root", b"/nonexistent-servo-probe", b"/nonexistent-servo-probe2"),
        "chroot": ("chroot", b"/nonexistent-servo-probe"),
        # unshare(0) is a no-op that always succeeds: only a filter refuses it.
        "unshare_noop": ("unshare", 0),
        "unshare_newuser": ("unshare", CLONE_NEWUSER),
        "setns": ("setns", -1, 0),
        # clone3(NULL, 0): EINVAL outside; the clone3 filter answers ENOSYS.
        "clone3": ("clone3", None, 0),
        "bpf": ("bpf", 0, None, 0),
        "perf_event_open": ("perf_event_open", None, 0, -1, -1, 0),
        "userfaultfd": ("userfaultfd", 0),
        "io_uring_setup": ("io_uring_setup", 1, None),
        "io_uring_enter": ("io_uring_enter", -1, 0, 0, 0, None, 0),
        "io_uring_register": ("io_uring_register", -1, 0, None, 0),
        # KEYCTL_GET_KEYRING_ID of the session keyring: works for anyone.
        "keyctl": ("keyctl", 0, -3, 0),
        "add_key": ("add_key", b"servo_no_such_key_type", b"probe", b"x", 1, -2),
        "request_key": ("request_key", b"user", b"servo-no-such-key", None, 0),
        "kexec_load": ("kexec_load", 0, 0, None, 0xFFFF0000),
        "kexec_file_load": ("kexec_file_load", -1, -1, 0, None, 0xFFFF),
        "init_module": ("init_module", None, 0, b""),
        "finit_module": ("finit_module", -1, b"", 0),
        "delete_module": ("delete_module", b"servo_no_such_module", 0),
        "open_by_handle_at": ("open_by_handle_at", -1, None, 0),
        # fd 0 is /dev/null: ENOTTY outside, refused by the filter inside.
        "ioctl_tiocsti": ("ioctl", 0, tiocsti, None),
        "ioctl_tiocsti_high_bits": ("ioctl", 0, 0x1_0000_0000 | tiocsti, None),
        "ioctl_tiocsti_all_high_bits": ("ioctl", 0, -0x1_0000_0000 | tiocsti, None),
        "ioctl_tioclinux": ("ioctl", 0, tioclinux, None),
        "ioctl_tioclinux_high_bits": ("ioctl", 0, 0x1_0000_0000 | tioclinux, None),
        # TCGETS on /dev/null: ENOTTY everywhere (ordinary ioctls still pass).
        "ioctl_tcgets": ("ioctl", 0, 0x5401, None),
        "x32_getpid": (NR["getpid"] | 0x40000000,),
    }
    if case in simple:
        ret, err = raw(*simple[case])
        if ret >= 0 and case in ("userfaultfd", "io_uring_setup"):
            os.close(ret)
        report_raw(ret, err, case)
    elif case == "ptrace":
        sys_ptrace()
    elif case in ("process_vm_readv", "process_vm_writev"):
        sys_process_vm(case)
    elif case == "clone_newuser":
        sys_clone(CLONE_NEWUSER)
    elif case == "clone_newns":
        sys_clone(CLONE_NEWNS)
    elif case == "clone_plain":
        sys_clone(0)
    elif case == "i386_int80":
        sys_mmap_i386()
    else:
        result("unknown-case", case)


def check_ordinary():
    """What scripts need must still work: threads, fork/exec, multiprocessing
    over an AF_UNIX socket pair, /dev/urandom."""
    import multiprocessing
    import subprocess
    import threading

    out = []
    box = []
    t = threading.Thread(target=lambda: box.append(sum(range(1000))))
    t.start()
    t.join()
    out.append("thread=%s" % (box == [499500]))
    out.append("subprocess=%d" % subprocess.run(["/bin/true"]).returncode)
    a, b = socket.socketpair(socket.AF_UNIX)
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=lambda s: s.sendall(b"pong"), args=(b,))
    p.start()
    got = a.recv(4)
    p.join()
    out.append("multiprocessing=%s" % (got == b"pong" and p.exitcode == 0))
    with open("/dev/urandom", "rb") as f:
        out.append("urandom=%d" % len(f.read(32)))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.close()
    out.append("unix_socket=True")
    ok = out == ["thread=True", "subprocess=0", "multiprocessing=True", "urandom=32", "unix_socket=True"]
    result("ok" if ok else "broken", " ".join(out))


# ---------------------------------------------------------- §5.7 resources


def check_forkbomb(marker=""):
    """Every process forks until the kernel says no; the first then fails."""
    forks = 0
    me = os.getpid()
    while True:
        try:
            pid = os.fork()
        except OSError as e:
            if os.getpid() == me:
                result("errno=%d" % e.errno, "forks=%d" % forks)
                sys.exit(1)
            time.sleep(60)
            os._exit(0)
        if pid == 0:
            continue
        forks += 1


def check_membomb():
    chunks = []
    for i in range(4096):
        chunks.append(bytearray(b"\x01" * (1 << 20)))
        if i % 16 == 0:
            print("allocated %d MiB" % (i + 1), flush=True)
    result("ok", "allocated 4 GiB")


def check_cpuspin():
    print("spinning", flush=True)
    while True:
        pass


def check_fill(path, mib):
    """Writes up to `mib` MiB to `path`; reports how far it got."""
    written = 0
    block = b"\0" * (1 << 16)
    try:
        with open(path, "wb", buffering=0) as f:
            while written < int(mib) << 20:
                written += f.write(block)
        result("ok", "written=%d" % written)
    except OSError as e:
        report_exc(e, "written=%d" % written)


def check_flood(mib):
    block = "x" * 1023 + "\n"
    out = sys.stdout
    for _ in range(int(mib) * 1024):
        out.write(block)
    out.flush()
    result("ok")


# -------------------------------------------------------------- §5.9 secrets


def check_environ():
    with open("/proc/self/environ", "rb") as f:
        raw_env = f.read().decode(errors="replace")
    env = dict(kv.split("=", 1) for kv in raw_env.split("\0") if kv)
    result("ok", json.dumps(env, sort_keys=True))


def check_grep_proc(reversed_secret):
    """Looks for a string in every readable /proc/*/environ and cmdline. It
    comes reversed, so that this probe's own command line does not hold it."""
    secret = reversed_secret[::-1]
    hits = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        for name in ("environ", "cmdline"):
            try:
                with open("/proc/%s/%s" % (p, name), "rb") as f:
                    if secret.encode() in f.read():
                        hits.append("%s/%s" % (p, name))
            except OSError:
                pass
    result("hits=%d" % len(hits), json.dumps(hits))


def check_fds():
    """Lists this process's open descriptors and what they point to."""
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            pass  # the directory listing's own descriptor, closed by now
    result("ok", json.dumps(fds, sort_keys=True))


def check_stdin():
    import stat

    st = os.fstat(0)
    link = os.readlink("/proc/self/fd/0")
    kind = "chr" if stat.S_ISCHR(st.st_mode) else "other"
    result("ok", "%s %s %d:%d" % (link, kind, os.major(st.st_rdev), os.minor(st.st_rdev)))


def check_tty():
    info = "sid=%s" % (os.getsid(0) == os.getpid())
    try:
        fd = os.open("/dev/tty", os.O_RDWR)
        os.close(fd)
        result("ok", info)
    except OSError as e:
        report_exc(e, info)


def main():
    if len(sys.argv) < 2:
        result("usage", "probe.py CHECK [ARGS...]")
        sys.exit(2)
    fn = globals().get("check_" + sys.argv[1])
    if fn is None:
        result("unknown-check", sys.argv[1])
        sys.exit(2)
    fn(*sys.argv[2:])


if __name__ == "__main__":
    main()
