#!/usr/bin/env python3
"""The cost of --coordination per v2 run (issue 16): one servo alone and one
coordinating through a local ZooKeeper, side by side, each sent the same
trivial v2-signed run in turn; prints the p50/p90 of each and the difference.

Usage (as root): bench/coordination_latency.py SERVO_BINARY [RUNS]
Needs Debian's zookeeper package (java) and python3.
"""
import hashlib, hmac, http.client, io, json, os, socket, statistics, subprocess
import sys, tarfile, tempfile, time

JAR = "/usr/share/java/zookeeper.jar"
TOKEN = "bench-token-0123456789abcdefABCDEF"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_zk(tmp):
    port = free_port()
    cfg = os.path.join(tmp, "zoo.cfg")
    with open(cfg, "w") as f:
        f.write(f"tickTime=500\ndataDir={tmp}/zkdata\nclientPort={port}\n"
                "clientPortAddress=127.0.0.1\nadmin.enableServer=false\n"
                "4lw.commands.whitelist=ruok\n")
    log = open(os.path.join(tmp, "zk.log"), "w")
    proc = subprocess.Popen(["java", "-cp", JAR, "-Xmx256m",
                             "org.apache.zookeeper.server.ZooKeeperServerMain", cfg],
                            stdout=log, stderr=log)
    for _ in range(600):
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5) as s:
                s.sendall(b"ruok")
                if s.recv(4) == b"imok":
                    return proc, port
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("ZooKeeper did not start")


def start_servo(binary, tmp, name, uids, extra):
    state = os.path.join(tmp, name)
    os.makedirs(state)
    err = os.path.join(state, "stderr")
    proc = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--state-dir", state,
                             "--token", TOKEN, "--uid-range", uids] + extra,
                            stdout=subprocess.DEVNULL, stderr=open(err, "w"))
    for _ in range(600):
        text = open(err).read()
        if "listening on " in text:
            addr = text.split("listening on ")[1].split()[0]
            host, port = addr.rsplit(":", 1)
            return proc, (host, int(port))
        time.sleep(0.05)
    raise SystemExit(f"servo {name} did not start: {open(err).read()}")


def run(addr, tgz):
    ts = str(int(time.time()))
    text = f"v2\n{ts}\nPOST\n/run/ok.py\ndefault\n{hashlib.sha256(tgz).hexdigest()}"
    sig = hmac.new(TOKEN.encode(), text.encode(), hashlib.sha256).hexdigest()
    # Each archive is unique (bundle_unique), so each signature is.
    conn = http.client.HTTPConnection(*addr, timeout=30)
    t0 = time.perf_counter()
    conn.request("POST", "/run/ok.py", body=tgz, headers={
        "Content-Type": "application/gzip", "Accept": "application/json",
        "X-Signature": f"v2={sig}", "X-Servo-Timestamp": ts})
    resp = conn.getresponse()
    body = resp.read()
    elapsed = time.perf_counter() - t0
    conn.close()
    if resp.status != 200 or json.loads(body)["ok"] != 1:
        raise SystemExit(f"run failed: {resp.status} {body[:300]}")
    return elapsed


def main():
    binary = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    with tempfile.TemporaryDirectory() as tmp:
        zk, port = start_zk(tmp)
        procs = [zk]
        try:
            alone, a_addr = start_servo(binary, tmp, "alone", "102000-102099", [])
            procs.append(alone)
            shared, s_addr = start_servo(binary, tmp, "shared", "102100-102199",
                                         ["--coordination", f"zk://127.0.0.1:{port}/bench"])
            procs.append(shared)
            for _ in range(300):
                conn = http.client.HTTPConnection(*s_addr)
                conn.request("GET", "/health")
                if json.loads(conn.getresponse().read())["cluster"]["coordination"] == "zookeeper":
                    break
                time.sleep(0.1)
            times = {"alone": [], "zookeeper": []}
            for i in range(runs + 5):
                # A unique archive per run: a unique v2 signature.
                base = bundle_unique(i)
                for name, addr in (("alone", a_addr), ("zookeeper", s_addr)):
                    t = run(addr, base[name])
                    if i >= 5:
                        times[name].append(t * 1000)
            for name, xs in times.items():
                xs.sort()
                print(f"{name:10} p50 {statistics.median(xs):7.2f} ms  p90 {xs[int(len(xs) * 0.9)]:7.2f} ms  ({len(xs)} runs)")
            print(f"added p50 (end to end, noisy on a busy machine): "
                  f"{statistics.median(times['zookeeper']) - statistics.median(times['alone']):+.2f} ms")
            # servo's own measure of the step: tenant place + replay check.
            for name, addr in (("alone", a_addr), ("zookeeper", s_addr)):
                conn = http.client.HTTPConnection(*addr)
                conn.request("GET", "/metrics")
                text = conn.getresponse().read().decode()
                values = {}
                for line in text.splitlines():
                    if line.startswith("servo_coordination_seconds"):
                        key, value = line.rsplit(" ", 1)
                        values[key] = float(value)
                count = values["servo_coordination_seconds_count"]
                mean = values["servo_coordination_seconds_sum"] / count * 1000
                under = {b: values[f'servo_coordination_seconds_bucket{{le="{b}"}}'] / count
                         for b in ("0.001", "0.0025", "0.005")}
                print(f"{name:10} coordination step mean {mean:.2f} ms; "
                      + ", ".join(f"<= {float(b) * 1000:g} ms: {v:.0%}" for b, v in under.items()))
        finally:
            for p in reversed(procs):
                p.terminate()
                p.wait()


def bundle_unique(i):
    out = {}
    for name in ("alone", "zookeeper"):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for fname, data in (("ok.py", b"print('ok')\n"), ("n", f"{name} {i} {time.time()}".encode())):
                info = tarfile.TarInfo(fname)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        out[name] = buf.getvalue()
    return out


if __name__ == "__main__":
    main()
