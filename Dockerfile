# servo: build with the Rust toolchain, ship a small Debian image with the
# binary, Python 3 (with requests and pyyaml for scripts) and the policies.
#
#   docker build -t servo .
#   docker run -d --privileged --cgroupns=host -p 5000:5000 -v servo-state:/var/lib/servo servo
#
# Privileges: servo runs as root in the container and builds a sandbox per
# script (mount/PID/net/IPC/UTS namespaces, mounts, pivot_root, setuid to its
# uid range, its own seccomp filter, cgroup limits). Instead of --privileged:
#   --cap-add SYS_ADMIN --security-opt seccomp=unconfined \
#   --security-opt apparmor=unconfined \
#   --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw   (cgroup limits)
# Without them `servo serve` exits at once saying what is missing.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY policy ./policy
COPY python ./python
# A static-pie binary: no dynamic loader on each `servo sandbox` and sandbox
# start (0.6 ms of 4.6, docs/performance.md); ASLR is kept.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN host=$(rustc -vV | sed -n 's/^host: //p') \
 && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$host" \
 && mkdir -p target/release \
 && cp "target/$host/release/servo" target/release/servo

FROM debian:bookworm-slim
# Unpinned on purpose: bookworm's point releases replace these versions, and
# a pin would break the build rather than make it reproducible.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-requests python3-yaml ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/servo /usr/local/bin/servo
COPY policy /etc/servo/policy
ENV SERVO_STATE_DIR=/var/lib/servo \
    SERVO_LISTEN=0.0.0.0:5000 \
    SERVO_PYTHON=/usr/bin/python3
VOLUME /var/lib/servo
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s CMD ["python3", "-c", "import urllib.request as u, sys; sys.exit(0 if u.urlopen('http://127.0.0.1:5000/health').status == 200 else 1)"]
ENTRYPOINT ["/usr/local/bin/servo"]
CMD ["serve"]
