//! The pod's ZooKeeper session (SPEC §13, reference §2): connect to the
//! `host:port,...` ensemble, register the ephemeral sequential znode with
//! the breadcrumbs, keep the first index across reconnects, register again
//! after a session loss or on `/reset`, delete the znode on the way out.
//!
//! Kept small on purpose: one task owning one `zookeeper_client::Client`,
//! so it can later give way to the session shared with §11's coordination.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::{watch, Notify};
use zookeeper_client::{Acls, Client, CreateMode, Error as ZkError, SessionState};

/// The session timeout asked of ZooKeeper: past it without servo, the znode goes.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the leader (lowest live znode) is looked at again.
const LEADER_REFRESH: Duration = Duration::from_secs(5);

/// The registration of this pod, and what it is now.
pub struct Registry {
    hosts: String,
    /// `/ochopod/clusters/<ns>.<cluster>`.
    cluster_dir: String,
    /// The znode's name before its sequence number.
    id: String,
    breadcrumbs: Map<String, Value>,
    /// The index shown by the tools (`<ns>.<cluster> #<index>`): one more
    /// than the sequence number of the first znode, kept across
    /// re-registrations. 0: none yet.
    index: AtomicI64,
    /// Whether a znode of this pod exists in a live session now.
    registered: AtomicBool,
    /// Whether this pod's znode is the oldest of its cluster.
    leader: AtomicBool,
    /// The znode's path while registered.
    node: Mutex<Option<String>>,
    reset: Notify,
    stop: watch::Sender<bool>,
    /// Set once the znode is gone after `stop`.
    stopped: watch::Sender<bool>,
}

fn persistent() -> zookeeper_client::CreateOptions<'static> {
    CreateMode::Persistent.with_acls(Acls::anyone_all())
}

fn ephemeral_sequential() -> zookeeper_client::CreateOptions<'static> {
    CreateMode::EphemeralSequential.with_acls(Acls::anyone_all())
}

/// Resolves once `deregister` was called (the guard `wait_for` returns is
/// not held across the select's other branches).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The sequence number at the end of a znode's name (`<id>.0000000003` → 3).
pub fn sequence_of(name: &str) -> Option<i64> {
    name.rsplit_once('.')?.1.parse().ok()
}

impl Registry {
    pub fn new(hosts: &str, qualified: &str, breadcrumbs: Map<String, Value>) -> Registry {
        let mut id = [0u8; 16];
        // A random id; the sequence number makes the name unique anyway.
        let _ = getrandom::fill(&mut id);
        let hex = hex::encode(id);
        Registry {
            hosts: hosts.to_string(),
            cluster_dir: format!("/ochopod/clusters/{qualified}"),
            id: format!(
                "{}-{}-{}-{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            ),
            breadcrumbs,
            index: AtomicI64::new(0),
            registered: AtomicBool::new(false),
            leader: AtomicBool::new(false),
            node: Mutex::new(None),
            reset: Notify::new(),
            stop: watch::channel(false).0,
            stopped: watch::channel(false).0,
        }
    }

    /// The pod's index (None before the first registration).
    pub fn index(&self) -> Option<i64> {
        Some(self.index.load(Ordering::SeqCst)).filter(|i| *i > 0)
    }

    pub fn is_registered(&self) -> bool {
        self.registered.load(Ordering::SeqCst)
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    /// `/reset`: delete the znode and register again (same index).
    pub fn reset(&self) {
        self.reset.notify_one();
    }

    /// Deletes the znode and ends the session; waits at most `within`.
    pub async fn deregister(&self, within: Duration) {
        let mut stopped = self.stopped.subscribe();
        self.stop.send_replace(true);
        let _ = tokio::time::timeout(within, stopped.wait_for(|s| *s)).await;
    }

    fn data(&self, seq: Option<i64>) -> Vec<u8> {
        let mut crumbs = self.breadcrumbs.clone();
        if let Some(seq) = seq {
            crumbs.insert("seq".into(), json!(seq));
        }
        Value::Object(crumbs).to_string().into_bytes()
    }

    /// Creates the znode (and the cluster's directories); returns its path.
    async fn register(&self, client: &Client) -> Result<String, ZkError> {
        let pods = format!("{}/pods", self.cluster_dir);
        client.mkdir(&pods, &persistent()).await?;
        match client
            .create(&format!("{}/hash", self.cluster_dir), b"", &persistent())
            .await
        {
            Ok(_) | Err(ZkError::NodeExists) => {}
            Err(e) => return Err(e),
        }
        let known = self.index();
        let (_, seq) = client
            .create(
                &format!("{pods}/{}.", self.id),
                &self.data(known),
                &ephemeral_sequential(),
            )
            .await?;
        let path = format!("{pods}/{}.{seq}", self.id);
        *self.node.lock().unwrap_or_else(|p| p.into_inner()) = Some(path.clone());
        if known.is_none() {
            // The first index is known only now: it goes into the data.
            // ZooKeeper counts from 0; the tools show a cluster's first pod
            // as #1 (the original servo's `marathon.servo #1`).
            let index = seq.into_i64() + 1;
            self.index.store(index, Ordering::SeqCst);
            client
                .set_data(&path, &self.data(Some(index)), None)
                .await?;
        }
        self.registered.store(true, Ordering::SeqCst);
        tracing::info!(
            "ochopod: registered as {} #{} ({path})",
            self.cluster_dir.trim_start_matches("/ochopod/clusters/"),
            self.index.load(Ordering::SeqCst)
        );
        self.refresh_leader(client).await;
        Ok(path)
    }

    async fn unregister(&self, client: &Client) {
        self.registered.store(false, Ordering::SeqCst);
        let node = self.node.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(node) = node {
            match client.delete(&node, None).await {
                Ok(()) | Err(ZkError::NoNode) => {}
                Err(e) => tracing::warn!("ochopod: cannot delete {node}: {e}"),
            }
        }
    }

    async fn refresh_leader(&self, client: &Client) {
        let Some(mine) = self
            .node
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_deref()
            .and_then(sequence_of)
        else {
            return;
        };
        if let Ok(kids) = client
            .list_children(&format!("{}/pods", self.cluster_dir))
            .await
        {
            let lowest = kids.iter().filter_map(|k| sequence_of(k)).min();
            self.leader
                .store(lowest.is_none_or(|l| l >= mine), Ordering::SeqCst);
        }
    }

    /// Keeps the pod registered until `deregister`.
    pub async fn run(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let mut backoff = Duration::from_millis(250);
        'session: loop {
            let stop_asked = *stop.borrow();
            if stop_asked {
                break;
            }
            let connect = Client::connector()
                .with_session_timeout(SESSION_TIMEOUT)
                .connect(&self.hosts);
            let client = tokio::select! {
                c = connect => c,
                _ = stopping(&mut stop) => break,
            };
            let client = match client {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("ochopod: cannot reach ZooKeeper at {}: {e}", self.hosts);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stopping(&mut stop) => break,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            let mut states = client.state_watcher();
            if let Err(e) = self.register(&client).await {
                tracing::warn!("ochopod: cannot register in ZooKeeper: {e}");
                self.registered.store(false, Ordering::SeqCst);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            backoff = Duration::from_millis(250);
            loop {
                tokio::select! {
                    state = states.changed() => match state {
                        SessionState::Expired | SessionState::Closed | SessionState::AuthFailed => {
                            tracing::warn!("ochopod: ZooKeeper session {state}: registering again");
                            self.registered.store(false, Ordering::SeqCst);
                            self.node.lock().unwrap_or_else(|p| p.into_inner()).take();
                            continue 'session;
                        }
                        SessionState::Disconnected => {
                            tracing::warn!("ochopod: disconnected from ZooKeeper; reconnecting");
                        }
                        _ => tracing::info!("ochopod: ZooKeeper session {state}"),
                    },
                    _ = self.reset.notified() => {
                        tracing::info!("ochopod: reset: registering again");
                        self.unregister(&client).await;
                        if let Err(e) = self.register(&client).await {
                            tracing::warn!("ochopod: cannot register in ZooKeeper: {e}");
                            continue 'session;
                        }
                    }
                    _ = tokio::time::sleep(LEADER_REFRESH) => self.refresh_leader(&client).await,
                    _ = stopping(&mut stop) => {
                        self.unregister(&client).await;
                        break 'session;
                    }
                }
            }
        }
        self.registered.store(false, Ordering::SeqCst);
        self.stopped.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers() {
        assert_eq!(sequence_of("ab-cd.0000000003"), Some(3));
        assert_eq!(sequence_of("x.y.0000000012"), Some(12));
        assert_eq!(sequence_of("nope"), None);
    }
}
