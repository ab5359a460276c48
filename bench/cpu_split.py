#!/usr/bin/env python3
"""Where the throughput row's CPU goes (docs/performance.md, "Where a run's
CPU goes"): 32 clients post the 10 KB bundle to servo, then run the kernel
floor the same way, in alternating slices; for each slice, runs per second
and CPU per run: the whole machine's (/proc/stat), servo's server threads,
its launcher (with the children it reaped), and this client's own.

Usage (as root, after bench/run has built both binaries):
  SERVO_BENCH_FLOOR=target/<host>/release/bench-floor \\
    bench/cpu_split.py target/<host>/release/servo [SECONDS [ROUNDS]]
Standard library only; uses bench.py's server harness and bundle.
"""
import os
import shutil
import resource
import subprocess
import sys
import tempfile
import threading
import time

if len(sys.argv) < 2 or not os.environ.get("SERVO_BENCH_FLOOR"):
    sys.exit(__doc__)
SECONDS = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
# bench.py reads the servo binary from its command line when imported.
sys.argv = [sys.argv[0], sys.argv[1]]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

CLIENTS = 32
TICKS = os.sysconf("SC_CLK_TCK")


def machine_busy():
    """Ticks the machine spent on anything but idle and iowait."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return sum(ticks) - ticks[3] - ticks[4]


def process_ticks(pid, with_reaped_children=False):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime, stime; then cutime, cstime (children waited for).
    return sum(int(x) for x in fields[11:15 if with_reaped_children else 13])


def own_cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main():
    tmp = tempfile.mkdtemp(prefix="servo-cpu-split-")
    bench.TMP = tmp
    state = os.path.join(tmp, "state")
    os.mkdir(state)
    server = bench.Server(state)
    try:
        archive = bench.hi_bundle()
        root = bench.floor_root(tmp)
        for _ in range(20):
            server.post(archive, "hi.py")
        with open("/proc/%d/task/%d/children" % (server.proc.pid, server.proc.pid)) as f:
            launcher = int(f.read().split()[0])

        def via_servo():
            status, _ = server.post(archive, "hi.py")
            return status == 200

        def via_floor():
            argv = [bench.FLOOR, root, bench.PY, "-c", "print('hi')"]
            return subprocess.run(argv, stdout=subprocess.DEVNULL).returncode == 0

        def slice_of(work):
            done, lock = [0], threading.Lock()
            end = time.time() + SECONDS

            def client():
                while time.time() < end:
                    if work():
                        with lock:
                            done[0] += 1

            threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
            busy, srv = machine_busy(), process_ticks(server.proc.pid)
            lau, mine, t = process_ticks(launcher, True), own_cpu(), time.time()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            n = max(done[0], 1)
            per_run = lambda ticks: ticks * 1000.0 / TICKS / n  # noqa: E731
            return {
                "rate": done[0] / (time.time() - t),
                "machine": per_run(machine_busy() - busy),
                "server": per_run(process_ticks(server.proc.pid) - srv),
                "launcher": per_run(process_ticks(launcher, True) - lau),
                "client": (own_cpu() - mine) * 1000.0 / n,
            }

        print("%d clients, %.0f s slices, servo and the floor alternating; CPU in ms per run"
              % (CLIENTS, SECONDS))
        for r in range(ROUNDS):
            s, f = slice_of(via_servo), slice_of(via_floor)
            print("round %d: servo %.1f runs/s, %.2f ms (server %.2f, launcher %.2f, client %.2f)"
                  " | floor %.1f runs/s, %.2f ms (client %.2f) | servo/floor %.2f"
                  % (r, s["rate"], s["machine"], s["server"], s["launcher"], s["client"],
                     f["rate"], f["machine"], f["client"], s["rate"] / f["rate"]), flush=True)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
