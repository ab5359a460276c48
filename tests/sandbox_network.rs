//! SPEC §5.3: no network: only Unix sockets, only loopback, no route to the
//! host's listeners or abstract sockets.
//!
//! Part of the sandbox escape suite (one file per SPEC §5 item, sharing
//! `tests/support/escape.rs`): every guarantee attempted from inside
//! `servo sandbox` by `tests/support/probe.py`. Each probe also runs outside
//! the sandbox (as root on the host, or in throwaway namespaces from
//! `unshare` when the action is destructive), where it must work or fail for
//! another reason than the sandbox's refusal, so a test cannot pass because
//! the probe itself is broken.
//!
//! Runs as root only: `require_root()` skips elsewhere and fails under CI=true.

mod support;

use support::escape::{check, expect, marker, outside, outside_unshared, Jail, EPERM};
use support::require_root;

#[test]
fn s5_3_only_unix_sockets_can_be_made() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    // (name, family, type)
    for (name, family, kind) in [
        ("AF_INET", "2", "1"),
        ("AF_INET udp", "2", "2"),
        ("AF_INET6", "10", "1"),
        ("AF_NETLINK", "16", "3"),
        ("AF_PACKET", "17", "3"),
    ] {
        let host = outside_unshared(&jail.workdir(), "socket", &[family, kind]);
        expect(
            &host,
            "ok",
            "§5.3 (control)",
            &format!("socket({name}) outside"),
        );
        let inside = jail.probe("socket", &[family, kind]);
        expect(
            &inside,
            EPERM,
            "§5.3/§5.6 network",
            &format!("socket({name}) must be refused with EPERM"),
        );
    }
    let unix = jail.probe("socket", &["1", "1"]);
    expect(&unix, "ok", "§5.3", "AF_UNIX sockets must work");
}

#[test]
fn s5_3_no_route_to_a_host_listener() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port().to_string();
    let host = outside(&jail.workdir(), "connect", &["127.0.0.1", &port]);
    expect(
        &host,
        "ok",
        "§5.3 (control)",
        "the host connects to its listener",
    );
    while listener.accept().is_ok() {}
    let inside = jail.probe("connect", &["127.0.0.1", &port]);
    check(
        inside.verdict() != "ok",
        "§5.3 network namespace",
        "the script reached a TCP listener on the host's 127.0.0.1",
        &inside,
    );
    check(
        listener.accept().is_err(),
        "§5.3 network namespace",
        "the host listener accepted a connection from the sandbox",
        &inside,
    );
}

#[test]
fn s5_3_only_loopback_exists() {
    if !require_root() {
        return;
    }
    let jail = Jail::new();
    let host = outside(&jail.workdir(), "ifaces", &[]);
    let host_ifaces: Vec<String> = serde_json::from_value(host.json()).expect("list");
    check(
        host_ifaces.iter().any(|i| i != "lo"),
        "§5.3 (control)",
        "the host has an interface besides lo",
        &host,
    );
    let inside = jail.probe("ifaces", &[]);
    let ifaces: Vec<String> = serde_json::from_value(inside.json()).expect("list");
    check(
        ifaces == ["lo"],
        "§5.3 network namespace",
        "only the loopback interface may exist",
        &inside,
    );
}

#[test]
fn s5_3_host_abstract_unix_sockets_are_unreachable() {
    if !require_root() {
        return;
    }
    use std::os::linux::net::SocketAddrExt;
    let jail = Jail::new();
    let name = marker("abstract");
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .expect("abstract address");
    let listener = std::os::unix::net::UnixListener::bind_addr(&addr).expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let host = outside(&jail.workdir(), "connect_abstract", &[&name]);
    expect(
        &host,
        "ok",
        "§5.3 (control)",
        "the host connects to its abstract socket",
    );
    while listener.accept().is_ok() {}
    let inside = jail.probe("connect_abstract", &[&name]);
    expect(
        &inside,
        "errno=111",
        "§5.3 network namespace",
        "a host abstract AF_UNIX socket must be unreachable (ECONNREFUSED)",
    );
    check(
        listener.accept().is_err(),
        "§5.3 network namespace",
        "the host's abstract socket accepted a connection from the sandbox",
        &inside,
    );
}
