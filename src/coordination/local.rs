//! Concurrency groups within one instance (SPEC §11): a fair (FIFO)
//! semaphore of one per tenant and group.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{GroupError, Holder};

type Key = (String, String);

#[derive(Default)]
pub struct Local {
    groups: Arc<Mutex<HashMap<Key, Arc<Group>>>>,
}

struct Group {
    /// One permit; tokio's semaphore serves waiters first come, first served.
    turn: Arc<Semaphore>,
    holder: Mutex<Option<Holder>>,
}

/// A group held; released (and forgotten when nobody waits) on drop.
pub struct LocalHold {
    key: Key,
    group: Arc<Group>,
    groups: Arc<Mutex<HashMap<Key, Arc<Group>>>>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for LocalHold {
    fn drop(&mut self) {
        *self.group.holder.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        // The map's reference and ours: nobody waits, nobody is about to.
        if Arc::strong_count(&self.group) == 2 {
            groups.remove(&self.key);
        }
        // The permit goes back after this, to the first waiter.
    }
}

impl Local {
    pub async fn acquire(
        &self,
        tenant: &str,
        group: &str,
        run: &str,
        wait: Duration,
        on_wait: impl FnOnce(Option<Holder>),
    ) -> Result<LocalHold, GroupError> {
        let key = (tenant.to_string(), group.to_string());
        let entry = {
            let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(groups.entry(key.clone()).or_insert_with(|| {
                Arc::new(Group {
                    turn: Arc::new(Semaphore::new(1)),
                    holder: Mutex::new(None),
                })
            }))
        };
        let permit = match Arc::clone(&entry.turn).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let holder = entry
                    .holder
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                on_wait(holder);
                match tokio::time::timeout(wait, Arc::clone(&entry.turn).acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => {
                        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
                        // Ours and the map's: forget an idle group.
                        if Arc::strong_count(&entry) == 2 && entry.turn.available_permits() == 1 {
                            groups.remove(&key);
                        }
                        return Err(GroupError::Busy(group.to_string()));
                    }
                }
            }
        };
        *entry.holder.lock().unwrap_or_else(|p| p.into_inner()) = Some(Holder {
            run: run.to_string(),
            since: crate::audit::rfc3339_now(),
        });
        Ok(LocalHold {
            key,
            group: entry,
            groups: Arc::clone(&self.groups),
            _permit: permit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_at_a_time_in_arrival_order_and_a_bounded_wait() {
        let local = Arc::new(Local::default());
        let first = local
            .acquire("t", "g", "r1", Duration::from_secs(1), |_| {
                panic!("no wait")
            })
            .await
            .unwrap();
        // Another tenant's group of the same name is another group.
        let other = local
            .acquire("u", "g", "r9", Duration::from_secs(1), |_| {
                panic!("no wait")
            })
            .await
            .unwrap();
        drop(other);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for run in ["r2", "r3", "r4"] {
            let (local, order) = (Arc::clone(&local), Arc::clone(&order));
            let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
            waiters.push(tokio::spawn(async move {
                let hold = local
                    .acquire("t", "g", run, Duration::from_secs(10), |h| {
                        let _ = seen_tx.send(h);
                    })
                    .await
                    .unwrap();
                order.lock().unwrap().push(run);
                tokio::time::sleep(Duration::from_millis(20)).await;
                drop(hold);
            }));
            // Each waits before the next arrives; the first sees r1 holding.
            let holder = seen_rx.await.unwrap();
            if run == "r2" {
                assert_eq!(holder.unwrap().run, "r1");
            }
        }
        drop(first);
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec!["r2", "r3", "r4"]);
        assert!(
            local.groups.lock().unwrap().is_empty(),
            "idle groups forgotten"
        );

        let held = local
            .acquire("t", "g", "r5", Duration::from_secs(1), |_| {})
            .await
            .unwrap();
        let t0 = std::time::Instant::now();
        let e = local
            .acquire("t", "g", "r6", Duration::from_millis(200), |_| {})
            .await
            .err()
            .unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(200));
        assert_eq!(e.to_string(), "concurrency group g busy");
        drop(held);
        assert!(local.groups.lock().unwrap().is_empty());
    }
}
