//! Coordination through ZooKeeper (SPEC §11), with the `zookeeper-client`
//! crate. Under the chroot:
//!
//! - `/replay/<expiry>-<hex signature>`: one persistent node per accepted
//!   v2 signature, created exclusively ("node exists" = replayed); removed
//!   once expired, by any instance, every minute.
//! - `/groups/<tenant>/<group>/lock-<seq>`: the lock recipe. Ephemeral
//!   sequential nodes; the lowest holds the group, each waiter watches its
//!   predecessor; a node goes when its run ends or its session dies. Each
//!   node's data is `<run> <RFC 3339 time>`, for the waiting line.
//! - `/tenants/<tenant>/runs/run-<seq>`: one ephemeral sequential node per
//!   running run; the first `concurrent_runs` of them may run.
//! - `/instances/instance-<seq>`: one ephemeral node per live instance.
//!
//! The session is opened in the background and reopened by itself when it
//! expires; while there is none (or it is cut off), [`Zk::available`] is
//! false and what needs it is refused.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use zookeeper_client::{Acls, Client, CreateMode, CreateOptions, Error as ZkError, SessionState};

use super::{
    ClusterStatus, CoordError, GroupError, Holder, PlaceError, Seen, TenantPlace, ZkTarget,
};

/// Longest a single ZooKeeper request may take before it counts as down.
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the instance count is refreshed.
const REFRESH: Duration = Duration::from_secs(2);
/// How often expired replay nodes are removed.
const REPLAY_SWEEP: Duration = Duration::from_secs(60);

fn persistent() -> CreateOptions<'static> {
    CreateMode::Persistent.with_acls(Acls::anyone_all())
}

fn container() -> CreateOptions<'static> {
    CreateMode::Container.with_acls(Acls::anyone_all())
}

fn ephemeral_sequential() -> CreateOptions<'static> {
    CreateMode::EphemeralSequential.with_acls(Acls::anyone_all())
}

async fn op<T>(f: impl std::future::Future<Output = Result<T, ZkError>>) -> Result<T, ZkError> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(r) => r,
        Err(_) => Err(ZkError::Timeout),
    }
}

fn down(e: impl std::fmt::Display) -> CoordError {
    CoordError::Down(format!("ZooKeeper: {e}"))
}

/// Opens a ZooKeeper session on `hosts` (`host:port[,host:port...]`) and
/// returns its client rooted at `chroot` (e.g. `/servo`), which is created
/// when missing. For sharing one session, clone the client (or
/// `Client::chroot` another root from a clone of an unrooted one).
pub async fn connect(
    hosts: &str,
    chroot: &str,
    session_timeout: Duration,
) -> Result<Client, CoordError> {
    let connecting = Client::connector()
        .with_session_timeout(session_timeout)
        .with_connection_timeout(session_timeout.min(Duration::from_secs(5)))
        .connect(hosts);
    let root = tokio::time::timeout(session_timeout + OP_TIMEOUT, connecting)
        .await
        .map_err(|_| down("no session within the session timeout"))?
        .map_err(down)?;
    let chroot = chroot.trim_end_matches('/');
    if chroot.is_empty() {
        return Ok(root);
    }
    op(root.mkdir(chroot, &persistent())).await.map_err(down)?;
    root.chroot(chroot.to_string())
        .map_err(|_| CoordError::Down(format!("bad ZooKeeper chroot {chroot}")))
}

#[derive(Clone, Copy, Debug)]
struct Status {
    /// Which session (1, 2, ... as they are opened; 0: none yet).
    session: u64,
    connected: bool,
    /// When `connected` last changed.
    since: Instant,
}

pub struct Zk {
    target: ZkTarget,
    /// What the instance node says (e.g. the listen address).
    instance: String,
    status: watch::Sender<Status>,
    client: Mutex<Option<Client>>,
    instances: AtomicUsize,
    /// Nodes to delete (session number, path): groups and places given
    /// back. Deleted by the supervisor while that session is connected; a
    /// node of an ended session went with it.
    releases: Mutex<Vec<(u64, String)>>,
    release_wanted: tokio::sync::Notify,
}

/// Creates the ephemeral sequential node `dir/<prefix><seq>` and returns its
/// name, creating `dir` (as containers, which ZooKeeper removes once empty)
/// when missing.
async fn create_sequential_in(
    client: &Client,
    dir: &str,
    prefix: &str,
    data: &[u8],
) -> Result<String, ZkError> {
    let path = format!("{dir}/{prefix}");
    for _ in 0..3 {
        match op(client.create(&path, data, &ephemeral_sequential())).await {
            Ok((_, seq)) => return Ok(format!("{prefix}{seq}")),
            Err(ZkError::NoNode) => op(client.mkdir(dir, &container())).await?,
            Err(e) => return Err(e),
        }
    }
    Err(ZkError::NoNode)
}

impl Zk {
    /// The coordinator; nothing is connected until [`Zk::run`] is spawned.
    pub fn new(target: ZkTarget, instance: String) -> Arc<Zk> {
        let (status, _) = watch::channel(Status {
            session: 0,
            connected: false,
            since: Instant::now(),
        });
        Arc::new(Zk {
            target,
            instance,
            status,
            client: Mutex::new(None),
            instances: AtomicUsize::new(0),
            releases: Mutex::new(Vec::new()),
            release_wanted: tokio::sync::Notify::new(),
        })
    }

    fn set_connected(&self, session: u64, connected: bool) {
        self.status.send_modify(|s| {
            if s.session != session || s.connected != connected {
                s.since = Instant::now();
            }
            s.session = session;
            s.connected = connected;
        });
    }

    pub fn available(&self) -> bool {
        self.status.borrow().connected
    }

    pub fn status(&self) -> ClusterStatus {
        if self.available() {
            ClusterStatus {
                instances: self.instances.load(Ordering::Relaxed),
                coordination: "zookeeper",
            }
        } else {
            ClusterStatus {
                instances: 0,
                coordination: "down",
            }
        }
    }

    /// The live session's client, rooted at the chroot.
    pub fn client(&self) -> Result<Client, CoordError> {
        if !self.available() {
            return Err(CoordError::Down("ZooKeeper is unreachable".into()));
        }
        self.client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| CoordError::Down("no ZooKeeper session".into()))
    }

    /// Opens sessions, one after the other, for as long as servo runs.
    pub async fn run(self: Arc<Self>) {
        let mut session = 0u64;
        let mut failures = 0u32;
        loop {
            let client = match self.open().await {
                Ok(c) => c,
                Err(e) => {
                    if failures % 30 == 0 {
                        tracing::warn!(
                            "coordination: cannot reach ZooKeeper at {}: {e}; retrying",
                            self.target.hosts
                        );
                    }
                    failures += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            failures = 0;
            session += 1;
            *self.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(client.clone());
            self.refresh(&client).await;
            self.set_connected(session, true);
            tracing::info!(
                "coordination: ZooKeeper session {:#x} on {}{}",
                client.session_id().0,
                self.target.hosts,
                self.target.chroot
            );
            let mut states = client.state_watcher();
            let mut tick = tokio::time::interval(REFRESH);
            let mut last_sweep = Instant::now();
            // Cut off this long, the session may have expired on the server
            // (and another instance taken our groups) without our knowing:
            // give it up, so that our runs holding groups stop (ZkHold::lost)
            // and its nodes go with it, and open another.
            let grace = grace(self.target.session_timeout);
            let mut cut_off: Option<tokio::time::Instant> = None;
            loop {
                tokio::select! {
                    state = states.changed() => match state {
                        SessionState::SyncConnected => {
                            tracing::info!("coordination: reconnected to ZooKeeper");
                            cut_off = None;
                            self.set_connected(session, true);
                            self.drain_releases(&client, session).await;
                        }
                        SessionState::Disconnected | SessionState::ConnectedReadOnly => {
                            tracing::warn!("coordination: disconnected from ZooKeeper");
                            cut_off.get_or_insert_with(|| tokio::time::Instant::now() + grace);
                            self.set_connected(session, false);
                        }
                        SessionState::Expired | SessionState::Closed | SessionState::AuthFailed => {
                            tracing::warn!("coordination: ZooKeeper session ended ({state:?}); opening another");
                            break;
                        }
                    },
                    _ = tokio::time::sleep_until(cut_off.unwrap_or_else(tokio::time::Instant::now)), if cut_off.is_some() => {
                        tracing::warn!(
                            "coordination: cut off from ZooKeeper for {} ms: giving the session up \
                             (runs holding concurrency groups stop) and opening another",
                            grace.as_millis()
                        );
                        break;
                    }
                    _ = self.release_wanted.notified() => {
                        if self.available() {
                            self.drain_releases(&client, session).await;
                        }
                    }
                    _ = tick.tick() => {
                        if self.available() {
                            self.refresh(&client).await;
                            if last_sweep.elapsed() >= REPLAY_SWEEP {
                                last_sweep = Instant::now();
                                sweep_replay(&client).await;
                            }
                        }
                    }
                }
            }
            *self.client.lock().unwrap_or_else(|p| p.into_inner()) = None;
            // A new session number: holds of the old one are lost, and
            // their nodes went (or go) with it.
            self.set_connected(session + 1, false);
            self.releases
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            // The last clones go as the runs notice; the session then closes.
            drop(client);
        }
    }

    /// Asks for `path` of `session` to be deleted (a hold or place given back).
    fn release(&self, session: u64, path: String) {
        self.releases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((session, path));
        self.release_wanted.notify_one();
    }

    async fn drain_releases(&self, client: &Client, session: u64) {
        let pending = std::mem::take(&mut *self.releases.lock().unwrap_or_else(|p| p.into_inner()));
        let mut failed = Vec::new();
        for (s, path) in pending {
            if s != session {
                continue;
            }
            match op(client.delete(&path, None)).await {
                Ok(()) | Err(ZkError::NoNode) => {}
                Err(e) => {
                    tracing::debug!("coordination: cannot delete {path} yet: {e}");
                    failed.push((s, path));
                }
            }
        }
        if !failed.is_empty() {
            self.releases
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(failed);
        }
    }

    /// A session with the layout in place and this instance registered.
    async fn open(&self) -> Result<Client, CoordError> {
        let client = connect(
            &self.target.hosts,
            &self.target.chroot,
            self.target.session_timeout,
        )
        .await?;
        for dir in ["/replay", "/groups", "/tenants", "/instances"] {
            op(client.mkdir(dir, &persistent())).await.map_err(down)?;
        }
        create_sequential_in(&client, "/instances", "instance-", self.instance.as_bytes())
            .await
            .map_err(down)?;
        Ok(client)
    }

    async fn refresh(&self, client: &Client) {
        if let Ok(children) = op(client.list_children("/instances")).await {
            self.instances.store(children.len(), Ordering::Relaxed);
        }
    }

    pub async fn remember_v2(&self, mac: &[u8], expiry: u64) -> Result<Seen, CoordError> {
        let client = self.client()?;
        let path = format!("/replay/{expiry:012}-{}", hex::encode(mac));
        match op(client.create(&path, b"", &persistent())).await {
            Ok(_) => Ok(Seen::Fresh),
            Err(ZkError::NodeExists) => Ok(Seen::Replayed),
            Err(e) => Err(down(e)),
        }
    }

    pub async fn tenant_place(
        self: &Arc<Self>,
        tenant: &str,
        limit: u64,
        run: &str,
    ) -> Result<TenantPlace, PlaceError> {
        let session = self.status.borrow().session;
        let client = self.client().map_err(|e| PlaceError::Down(e.to_string()))?;
        let dir = format!("/tenants/{tenant}/runs");
        let name = create_sequential_in(&client, &dir, "run-", run.as_bytes())
            .await
            .map_err(|e| PlaceError::Down(e.to_string()))?;
        let place = ZkPlace {
            zk: Arc::clone(self),
            session,
            path: format!("{dir}/{name}"),
        };
        let mut children = op(client.list_children(&dir))
            .await
            .map_err(|e| PlaceError::Down(e.to_string()))?;
        children.sort();
        match children.iter().position(|c| *c == name) {
            Some(i) if (i as u64) < limit => Ok(TenantPlace::Zk(place)),
            Some(_) => Err(PlaceError::Busy),
            None => Err(PlaceError::Down("the session ended".into())),
        }
    }

    pub async fn acquire(
        self: &Arc<Self>,
        tenant: &str,
        group: &str,
        run: &str,
        wait: Duration,
        on_wait: impl FnOnce(Option<Holder>),
    ) -> Result<ZkHold, GroupError> {
        let deadline = tokio::time::Instant::now() + wait;
        let status = self.status.subscribe();
        let session = status.borrow().session;
        let unavailable =
            |e: &dyn std::fmt::Display| GroupError::Down(group.to_string(), e.to_string());
        let client = self.client().map_err(|e| unavailable(&e))?;
        let dir = format!("/groups/{tenant}/{group}");
        let data = format!("{run} {}", crate::audit::rfc3339_now());
        let name = create_sequential_in(&client, &dir, "lock-", data.as_bytes())
            .await
            .map_err(|e| unavailable(&e))?;
        let hold = ZkHold {
            zk: Arc::clone(self),
            path: format!("{dir}/{name}"),
            session,
            status,
            session_timeout: self.target.session_timeout,
        };
        let mut on_wait = Some(on_wait);
        loop {
            if hold.is_lost() {
                return Err(unavailable(&"the ZooKeeper session was lost"));
            }
            let mut children = op(client.list_children(&dir))
                .await
                .map_err(|e| unavailable(&e))?;
            children.retain(|c| c.starts_with("lock-"));
            children.sort();
            let Some(i) = children.iter().position(|c| *c == name) else {
                return Err(unavailable(&"the ZooKeeper session was lost"));
            };
            if i == 0 {
                return Ok(hold);
            }
            if on_wait.is_some() {
                let holder = match op(client.get_data(&format!("{dir}/{}", children[0]))).await {
                    Ok((data, _)) => {
                        let text = String::from_utf8_lossy(&data).into_owned();
                        text.split_once(' ').map(|(r, s)| Holder {
                            run: r.to_string(),
                            since: s.to_string(),
                        })
                    }
                    // The holder just left: look again (it may be our turn).
                    Err(ZkError::NoNode) => continue,
                    Err(_) => None,
                };
                if let Some(f) = on_wait.take() {
                    f(holder);
                }
            }
            let predecessor = format!("{dir}/{}", children[i - 1]);
            let (stat, watcher) = op(client.check_and_watch_stat(&predecessor))
                .await
                .map_err(|e| unavailable(&e))?;
            if stat.is_none() {
                continue;
            }
            tokio::select! {
                _ = watcher.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(GroupError::Busy(group.to_string()));
                }
                _ = hold.lost() => {
                    return Err(unavailable(&"the ZooKeeper session was lost"));
                }
            }
        }
    }
}

/// Removes replay nodes whose window has closed.
async fn sweep_replay(client: &Client) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let Ok(children) = op(client.list_children("/replay")).await else {
        return;
    };
    for child in children {
        let expired = child
            .split_once('-')
            .and_then(|(e, _)| e.parse::<u64>().ok())
            .is_some_and(|e| e < now);
        if expired {
            let _ = op(client.delete(&format!("/replay/{child}"), None)).await;
        }
    }
}

/// How long cut off from ZooKeeper before the session is given up (and
/// with it the groups it holds): within the session timeout, so that the
/// runs stop before the server can expire it and hand a group to another.
fn grace(session_timeout: Duration) -> Duration {
    session_timeout * 2 / 3
}

pub struct ZkPlace {
    zk: Arc<Zk>,
    session: u64,
    path: String,
}

impl Drop for ZkPlace {
    fn drop(&mut self) {
        self.zk
            .release(self.session, std::mem::take(&mut self.path));
    }
}

pub struct ZkHold {
    zk: Arc<Zk>,
    path: String,
    session: u64,
    status: watch::Receiver<Status>,
    session_timeout: Duration,
}

impl ZkHold {
    /// After this long cut off from ZooKeeper, the session may have expired
    /// there (and another instance taken the group) without this client
    /// being told: the hold counts as lost before that can happen.
    fn grace(&self) -> Duration {
        grace(self.session_timeout)
    }

    fn is_lost(&self) -> bool {
        let s = *self.status.borrow();
        s.session != self.session || (!s.connected && s.since.elapsed() >= self.grace())
    }

    pub async fn lost(&self) {
        let mut status = self.status.clone();
        loop {
            let s = *status.borrow_and_update();
            if s.session != self.session {
                return;
            }
            if s.connected {
                if status.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            } else {
                let deadline = s.since + self.grace();
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline.into()) => return,
                    changed = status.changed() => if changed.is_err() {
                        tokio::time::sleep_until(deadline.into()).await;
                        return;
                    },
                }
            }
        }
    }
}

impl Drop for ZkHold {
    fn drop(&mut self) {
        self.zk
            .release(self.session, std::mem::take(&mut self.path));
    }
}
