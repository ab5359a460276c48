//! What several servo instances share (SPEC §11), behind one API the server
//! uses whether it runs alone or with others:
//!
//! - the v2 replay cache ([`Coordination::remember_v2`]),
//! - concurrency groups ([`Coordination::acquire_group`]): one run at a time
//!   per tenant and group, in arrival order,
//! - each tenant's `concurrent_runs` across instances
//!   ([`Coordination::tenant_place`]),
//! - the registry of live instances ([`Coordination::status`]).
//!
//! Alone ([`local`]), all of it lives in this process (the replay cache in
//! `STATE/replay`, see `server::replay`). With `--coordination zk://...`
//! ([`zk`]) it lives in ZooKeeper; while ZooKeeper cannot be reached, what
//! needs it fails closed ([`CoordError::Down`], answered 503).
//!
//! Sharing the session with other parts of servo (Ochothon pod
//! registration, SPEC §13): [`connect`] opens a session from a host list and
//! a chroot, and [`Coordination::zk_client`] gives the live one, rooted at
//! servo's chroot; `client.clone().chroot("/ochopod")` roots a clone of it
//! elsewhere on the same session (zookeeper-client replaces the root). When
//! a session expires servo opens another: a user watches
//! `client.state_watcher()` for `Expired` and then asks `zk_client` again
//! (ephemeral nodes of the old session are gone by then).

pub mod local;
pub mod zk;

use std::sync::Arc;
use std::time::Duration;

pub use zk::connect;

/// Where the ZooKeeper ensemble servo coordinates through is (§11).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZkTarget {
    /// `host:port[,host:port...]`.
    pub hosts: String,
    /// The chroot, e.g. `/servo` (never `/` alone, never a trailing `/`).
    pub chroot: String,
    pub session_timeout: std::time::Duration,
}

/// How long a run waits for its concurrency group by default (§11).
pub const DEFAULT_CONCURRENCY_WAIT_S: u64 = 1800;

/// Whether `name` is a valid concurrency group name: `[A-Za-z0-9._-]{1,64}`
/// (§11), which also makes it a safe ZooKeeper node name (`.`/`..` excluded).
pub fn valid_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Why a coordinated step could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// ZooKeeper cannot be reached (or the session was lost): refuse what
    /// needs it, with 503 and Retry-After.
    #[error("coordination unavailable: {0}")]
    Down(String),
}

/// What the replay cache says about a v2 signature.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    Fresh,
    Replayed,
    Full,
}

/// The holder of a concurrency group, as a waiting run's log shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub run: String,
    /// RFC 3339.
    pub since: String,
}

/// Why a run did not get its concurrency group.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("concurrency group {0} busy")]
    Busy(String),
    #[error("concurrency group {0} unavailable ({1})")]
    Down(String, String),
}

/// A concurrency group held by a run; released when dropped (or, with
/// ZooKeeper, when this instance's session ends).
pub enum GroupHold {
    Local(local::LocalHold),
    Zk(zk::ZkHold),
}

impl GroupHold {
    /// Resolves when the hold can no longer be trusted (the ZooKeeper
    /// session expired, or was cut off long enough that it may have): the
    /// run must stop before it overlaps another holder. Never, alone.
    pub async fn lost(&self) {
        match self {
            GroupHold::Local(_) => std::future::pending().await,
            GroupHold::Zk(h) => h.lost().await,
        }
    }
}

/// One of a tenant's `concurrent_runs` places across instances; given back
/// when dropped.
pub enum TenantPlace {
    /// Alone: the server's own count is the whole count.
    Local,
    Zk(zk::ZkPlace),
}

/// Why a tenant place was not given.
#[derive(Debug)]
pub enum PlaceError {
    /// The tenant has its `concurrent_runs` running (across instances).
    Busy,
    Down(String),
}

/// `/health`'s `cluster` object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    pub instances: usize,
    /// `"local"`, `"zookeeper"` or `"down"`.
    pub coordination: &'static str,
}

pub enum Coordination {
    Local(local::Local),
    Zk(Arc<zk::Zk>),
}

impl Coordination {
    pub fn local() -> Coordination {
        Coordination::Local(local::Local::default())
    }

    /// Coordinating through ZooKeeper, once [`Coordination::start`] has
    /// been called; until connected, [`Coordination::available`] is false.
    pub fn zookeeper(target: ZkTarget, instance: String) -> Coordination {
        Coordination::Zk(zk::Zk::new(target, instance))
    }

    /// Connects in the background, and reconnects whenever the session is
    /// lost, for as long as the runtime runs. Within a tokio runtime.
    pub fn start(&self) {
        if let Coordination::Zk(z) = self {
            tokio::spawn(Arc::clone(z).run());
        }
    }

    /// Whether what needs coordination can be done now.
    pub fn available(&self) -> bool {
        match self {
            Coordination::Local(_) => true,
            Coordination::Zk(z) => z.available(),
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, Coordination::Zk(_))
    }

    pub fn status(&self) -> ClusterStatus {
        match self {
            Coordination::Local(_) => ClusterStatus {
                instances: 1,
                coordination: "local",
            },
            Coordination::Zk(z) => z.status(),
        }
    }

    /// The live ZooKeeper session's client (rooted at the chroot), when
    /// coordinating through ZooKeeper and connected.
    pub fn zk_client(&self) -> Option<zookeeper_client::Client> {
        match self {
            Coordination::Local(_) => None,
            Coordination::Zk(z) => z.client().ok(),
        }
    }

    /// Remembers a v2 signature until `expiry` (unix seconds) unless some
    /// instance accepted it before. Alone, the caller uses the local file
    /// cache instead (`None` here means: not handled).
    pub async fn remember_v2(&self, mac: &[u8], expiry: u64) -> Option<Result<Seen, CoordError>> {
        match self {
            Coordination::Local(_) => None,
            Coordination::Zk(z) => Some(z.remember_v2(mac, expiry).await),
        }
    }

    /// One of `tenant`'s `limit` places across instances (`limit` 0: no
    /// limit, nothing to take).
    pub async fn tenant_place(
        &self,
        tenant: &str,
        limit: u64,
        run: &str,
    ) -> Result<TenantPlace, PlaceError> {
        match self {
            Coordination::Zk(z) if limit > 0 => z.tenant_place(tenant, limit, run).await,
            _ => Ok(TenantPlace::Local),
        }
    }

    /// Waits, in arrival order, for `tenant`'s concurrency group `group`,
    /// at most `wait`. When it must wait, `on_wait` is called once with the
    /// current holder (None when it could not be told).
    pub async fn acquire_group(
        &self,
        tenant: &str,
        group: &str,
        run: &str,
        wait: Duration,
        on_wait: impl FnOnce(Option<Holder>),
    ) -> Result<GroupHold, GroupError> {
        match self {
            Coordination::Local(l) => l
                .acquire(tenant, group, run, wait, on_wait)
                .await
                .map(GroupHold::Local),
            Coordination::Zk(z) => z
                .acquire(tenant, group, run, wait, on_wait)
                .await
                .map(GroupHold::Zk),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names() {
        for ok in ["prod", "a.b_c-1", &"g".repeat(64)] {
            assert!(valid_group_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a b", "a/b", "é", &"g".repeat(65)] {
            assert!(!valid_group_name(bad), "{bad}");
        }
    }
}
