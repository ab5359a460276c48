"""The figures of SPEC §9, each measured side by side with its peer.

Run through bench/run (which builds servo in release mode). Prints one
table: servo's figure, the peer's, the ratio or difference, the target, and
whether it is met; then the machine it ran on. Standard library only.
"""

import hashlib
import hmac
import http.client
import io
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

SERVO = os.path.abspath(sys.argv[1])
QUICK = "--quick" in sys.argv
# bench/floor.c, built by bench/run when a C compiler is there: the kernel
# work of SPEC §5 and nothing else, the floor under servo's figures.
FLOOR = os.environ.get("SERVO_BENCH_FLOOR") or None
PY = "/usr/bin/python3"
TOKEN = "bench-token-0123456789abcdef"
DEVNULL = subprocess.DEVNULL


def ms(seconds):
    return seconds * 1000.0


def pct(values, p):
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100.0 * (len(values) - 1)))))
    return values[k]


def timed_run(argv, cwd=None):
    t = time.perf_counter()
    subprocess.run(argv, stdout=DEVNULL, stderr=DEVNULL, check=True, cwd=cwd)
    return time.perf_counter() - t


# ---------------------------------------------------------------- the server


class Server:
    def __init__(self, state, *extra):
        self.state = state
        self.log = open(os.path.join(state, "servo.stderr"), "w+")
        self.proc = subprocess.Popen(
            [SERVO, "serve", "--listen", "127.0.0.1:0", "--state-dir", state,
             "--token", TOKEN, "--audit", os.path.join(state, "audit.log")] + list(extra),
            stdout=DEVNULL, stderr=self.log, stdin=DEVNULL)
        deadline = time.time() + 30
        while True:
            self.log.seek(0)
            m = re.search(r"listening on ([0-9.]+):(\d+)", self.log.read())
            if m:
                self.host, self.port = m.group(1), int(m.group(2))
                return
            if self.proc.poll() is not None or time.time() > deadline:
                self.log.seek(0)
                sys.exit("servo did not start:\n" + self.log.read())
            time.sleep(0.02)

    def status(self, key):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0  # MiB
        return 0.0

    def post(self, archive, scripts, signature=None, timeout=120):
        sig = signature or "sha1=" + hmac.new(TOKEN.encode(), archive, hashlib.sha1).hexdigest()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request("POST", "/run/" + scripts, body=archive, headers={
                "Content-Type": "application/gzip", "Accept": "application/json",
                "X-Signature": sig})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def make_bundle(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


HI_BUNDLE = None


def hi_bundle():
    """~10 KB: the script and incompressible filler."""
    global HI_BUNDLE
    if HI_BUNDLE is None:
        HI_BUNDLE = make_bundle({"hi.py": b"print('hi')\n", "filler.bin": os.urandom(10000)})
    return HI_BUNDLE


# ---------------------------------------------------------------- the figures

rows = []


def row(figure, servo, peer, relation, target, met):
    rows.append((figure, servo, peer, relation, target, "yes" if met else "NO"))


def reference(figure, value, peer, relation):
    """A row without a target: what the floor program measured."""
    rows.append((figure, value, peer, relation, "(reference)", "-"))


def sandbox_start(tmp):
    n = 60 if QUICK else 200
    work = os.path.join(tmp, "sbwork")
    os.makedirs(work, exist_ok=True)
    state = os.path.join(tmp, "sbstate")
    bare = ["/bin/true"]
    servo = [SERVO, "sandbox", "--state-dir", state, "--workdir", work, "--", "/bin/true"]
    bwrap = ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr",
             "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/lib", "/lib",
             "--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev",
             "--tmpfs", "/tmp", "/bin/true"]
    cmds = {"bare": bare, "servo": servo, "bwrap": bwrap}
    if FLOOR:
        cmds["floor"] = [FLOOR, floor_root(tmp), "/bin/true"]
    for argv in cmds.values():
        for _ in range(10):
            timed_run(argv)
    t = {k: [] for k in cmds}
    for _ in range(n):  # interleaved: all see the same machine
        for k, argv in cmds.items():
            t[k].append(timed_run(argv))
    # servo sandbox keeps its prepared root pinned in the state dir: let go.
    subprocess.run(["umount", "--lazy", os.path.join(state, "sandbox", "root.mnt")], check=False)
    med = {k: statistics.median(v) for k, v in t.items()}
    so, bo = med["servo"] - med["bare"], med["bwrap"] - med["bare"]
    row("sandbox start overhead (median of %d)" % n, "%.2f ms" % ms(so),
        "bwrap %.2f ms" % ms(bo), "%.2f x bwrap" % (so / bo), "<= 0.5 x bwrap", so <= 0.5 * bo)
    if FLOOR:
        fo = med["floor"] - med["bare"]
        reference("  kernel floor (bench/floor.c), same", "%.2f ms" % ms(fo),
                  "bwrap %.2f ms" % ms(bo), "%.2f x bwrap" % (fo / bo))


def floor_root(tmp):
    """The empty directory bench/floor.c mounts its root on."""
    root = os.path.join(tmp, "floor-root")
    os.makedirs(root, exist_ok=True)
    return root


def end_to_end(server):
    n = 60 if QUICK else 200
    archive = hi_bundle()
    for _ in range(10):
        server.post(archive, "hi.py")
        timed_run([PY, "-c", "print('hi')"])
    servo, bare = [], []
    for _ in range(n):
        t = time.perf_counter()
        status, body = server.post(archive, "hi.py")
        servo.append(time.perf_counter() - t)
        if status != 200 or json.loads(body).get("ok") != 1:
            sys.exit("end-to-end run failed: %d %s" % (status, body[:300]))
        bare.append(timed_run([PY, "-c", "print('hi')"]))
    for p, limit in ((50, 5.0), (99, 15.0)):
        s, b = ms(pct(servo, p)), ms(pct(bare, p))
        row("end-to-end %d KB bundle, p%d" % (len(archive) // 1000, p), "%.1f ms" % s,
            "bare python3 %.1f ms" % b, "+%.1f ms" % (s - b), "<= bare + %d ms" % limit,
            s - b <= limit)


def throughput(server):
    seconds = 5 if QUICK else 20
    clients = 32
    archive = hi_bundle()

    def hammer(work, counts, errors):
        end = time.time() + seconds
        while time.time() < end:
            try:
                ok = work()
            except Exception:  # noqa: BLE001 - any failure counts
                ok = False
            if ok:
                counts.append(1)
            else:
                errors.append(1)

    def via_servo():
        status, body = server.post(archive, "hi.py")
        return status == 200 and json.loads(body).get("ok") == 1

    def bare():
        return subprocess.run([PY, "-c", "print('hi')"], stdout=DEVNULL).returncode == 0

    def floor():
        argv = [FLOOR, floor_root(TMP), PY, "-c", "print('hi')"]
        return subprocess.run(argv, stdout=DEVNULL).returncode == 0

    rates = {}
    errs = {}
    kinds = [("servo", via_servo), ("bare", bare)] + ([("floor", floor)] if FLOOR else [])
    for name, work in kinds:
        counts, errors = [], []
        threads = [threading.Thread(target=hammer, args=(work, counts, errors))
                   for _ in range(clients)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        rates[name] = len(counts) / (time.perf_counter() - t)
        errs[name] = len(errors)
    ratio = rates["servo"] / rates["bare"]
    row("throughput, %d clients for %d s" % (clients, seconds),
        "%.1f runs/s, %d errors" % (rates["servo"], errs["servo"]),
        "bare python3 %.1f/s" % rates["bare"], "%.0f %%" % (100 * ratio),
        ">= 80 %, no errors", ratio >= 0.8 and errs["servo"] == 0)
    if FLOOR:
        reference("  kernel floor (bench/floor.c), same",
                  "%.1f runs/s, %d errors" % (rates["floor"], errs["floor"]),
                  "bare python3 %.1f/s" % rates["bare"],
                  "%.0f %%" % (100 * rates["floor"] / rates["bare"]))


def upload_verification(tmp):
    size = 100 << 20
    path = os.path.join(tmp, "big.tgz")
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    state = tempfile.mkdtemp(dir=tmp)
    server = Server(state, "--max-upload", str(size + (1 << 20)))
    try:
        body = open(path, "rb").read()
        runs = 3 if QUICK else 5
        ossl, srv = [], []
        hwm_before = server.status("VmHWM")
        for _ in range(runs):
            ossl.append(timed_run(["openssl", "dgst", "-sha1", "-hmac", TOKEN, path]))
            t = time.perf_counter()
            status, _ = server.post(body, "x.py", signature="sha1=" + "0" * 40)
            srv.append(time.perf_counter() - t)
            if status != 403:
                sys.exit("expected 403 for a wrong signature, got %d" % status)
        growth = server.status("VmHWM") - hwm_before
    finally:
        server.stop()
    o, s = statistics.median(ossl), statistics.median(srv)
    row("100 MiB upload, time to 403 (median of %d)" % runs, "%.0f ms" % ms(s),
        "openssl dgst %.0f ms" % ms(o), "%.0f %% of openssl's speed" % (100 * o / s),
        ">= 50 %", o / s >= 0.5)
    row("peak RSS growth during that upload", "%.1f MiB" % growth, "", "", "< 32 MiB",
        growth < 32)


def relay(server):
    calls = 200 if QUICK else 1000
    script = ("import os, socket, threading, time\n"
              "import servo as pkg\n"
              "from servo import servo\n"
              "CALLS = %d\n"
              "path = '/tmp/echo.sock'\n"
              "srv = socket.socket(socket.AF_UNIX)\n"
              "srv.bind(path)\n"
              "srv.listen(64)\n"
              "BODY = b'{\"ok\": true, \"ms\": 0, \"out\": \"{}\"}'\n"
              "RESP = b'HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: %%d\\r\\n\\r\\n' %% len(BODY) + BODY\n"
              "def serve():\n"
              "    while True:\n"
              "        c, _ = srv.accept()\n"
              "        data = b''\n"
              "        while b'\\r\\n\\r\\n' not in data:\n"
              "            chunk = c.recv(65536)\n"
              "            if not chunk:\n"
              "                break\n"
              "            data += chunk\n"
              "        c.sendall(RESP)\n"
              "        c.close()\n"
              "threading.Thread(target=serve, daemon=True).start()\n"
              "real = os.environ['SERVO_SOCKET']\n"
              "os.environ['SERVO_SOCKET'] = path\n"
              "t = time.perf_counter()\n"
              "for _ in range(CALLS):\n"
              "    pkg._post('/shell', headers={'X-Shell': 'ls -j'})\n"
              "echo = time.perf_counter() - t\n"
              "os.environ['SERVO_SOCKET'] = real\n"
              "with servo() as proxy:\n"
              "    t = time.perf_counter()\n"
              "    for _ in range(CALLS):\n"
              "        proxy('ls')\n"
              "    relayed = time.perf_counter() - t\n"
              "    print('BENCH', echo, relayed)\n") % calls
    archive = make_bundle({"relay.py": script.encode()})
    status, body = server.post(archive, "relay.py")
    log = json.loads(body).get("log", [])
    line = next((l for l in log if l.startswith("BENCH ")), None)
    if status != 200 or line is None:
        sys.exit("relay benchmark failed: %d %s" % (status, body[:500]))
    echo, relayed = (float(x) for x in line.split()[1:])
    added = ms(relayed - echo) / calls
    row("relay: %d sequential proxy('ls')" % calls, "%.3f ms/call" % ms(relayed / calls),
        "Unix-socket echo %.3f ms/call" % ms(echo / calls), "+%.3f ms/call" % added,
        "<= +1 ms/call", added <= 1.0)


def idle_rss(server, when):
    time.sleep(1)
    rss = server.status("VmRSS")
    row("idle server RSS (%s)" % when, "%.1f MiB" % rss, "", "", "<= 16 MiB", rss <= 16)


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()
    return "%s; %d cores; %s %s; load before %.2f" % (
        cpu, os.cpu_count(), platform.system(), platform.release(), load[0])


def main():
    started = time.time()
    global TMP
    tmp = TMP = tempfile.mkdtemp(prefix="servo-bench-")
    host = machine()
    try:
        sandbox_start(tmp)
        state = tempfile.mkdtemp(dir=tmp)
        server = Server(state)
        try:
            idle_rss(server, "after start")
            end_to_end(server)
            throughput(server)
            relay(server)
            idle_rss(server, "after the load")
        finally:
            server.stop()
        upload_verification(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    widths = [max(len(str(r[i])) for r in rows + [HEADER]) for i in range(len(HEADER))]
    fmt = " | ".join("%%-%ds" % w for w in widths)
    print(fmt % HEADER)
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(fmt % r)
    if not FLOOR:
        print("\n(no C compiler: the kernel-floor reference rows were left out)")
    print("\nmachine: %s; took %.0f s" % (host, time.time() - started))
    return 0 if all(r[5] != "NO" for r in rows) else 1


HEADER = ("figure", "servo", "peer", "servo vs peer", "target", "met")
TMP = None

if __name__ == "__main__":
    sys.exit(main())
