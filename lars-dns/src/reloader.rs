//! The reloader thread (the original's "backend thread"): watches
//! `RouteVersion`, reloads and swaps the table, pushes changed keys to their
//! subscribers through each connection's own worker loop, and rides out store
//! outages with backoff.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use hashbrown::HashMap;
use lars_core::ModKey;
use lars_lb::RouteTable;
use lars_net::{ConnId, ServerHandle};
use lars_store::{RouteRead, StoreError};

use crate::replica::{ReadState, Source};
use crate::shared::{Shared, Snapshot};

/// Longest wait between two attempts while the store fails.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub(crate) struct Reloader<S> {
    /// The primary (`[store] url`): every write, and the reads when there is
    /// no replica or the reads fell back.
    store: S,
    /// The read replica (`[store] read_url`), never written.
    replica: Option<Box<dyn RouteRead + Send>>,
    /// The replica's state (`Some` exactly when `replica` is).
    reads: Option<ReadState>,
    table: RouteTable,
    /// The `RouteVersion` whose changes were fully processed (the highest
    /// served: a replica's older version is never loaded).
    version: u64,
    shared: Arc<Shared>,
    server: ServerHandle,
    version_interval: Duration,
    reload_interval: Duration,
    last_full: Instant,
    failures: u32,
}

/// A replica, its state and where the start-up load came from.
pub(crate) struct ReplicaPart {
    pub(crate) store: Box<dyn RouteRead + Send>,
    pub(crate) state: ReadState,
}

impl<S: RouteRead> Reloader<S> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        store: S,
        replica: Option<ReplicaPart>,
        table: RouteTable,
        version: u64,
        shared: Arc<Shared>,
        server: ServerHandle,
        version_interval: Duration,
        reload_interval: Duration,
    ) -> Self {
        let (replica, reads) = match replica {
            Some(r) => (Some(r.store), Some(r.state)),
            None => (None, None),
        };
        Self {
            store,
            replica,
            reads,
            table,
            version,
            shared,
            server,
            version_interval,
            reload_interval,
            last_full: Instant::now(),
            failures: 0,
        }
    }

    /// Runs until `stop` fires or its sender is dropped.
    pub(crate) fn run(mut self, stop: &Receiver<()>) {
        loop {
            match stop.recv_timeout(self.delay()) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
            self.shared.watch.begin(Instant::now());
            let round = self.tick(Instant::now());
            self.shared.watch.end(Instant::now(), round.is_ok());
            if let Some(r) = &self.reads {
                self.shared.set_reads(r);
            }
            match round {
                Ok(reloaded) => {
                    self.failures = 0;
                    self.shared.store_ok(reloaded);
                }
                Err(e) => {
                    self.failures = self.failures.saturating_add(1);
                    self.shared.store_failed(&e);
                }
            }
        }
    }

    /// The wait before the next round (see [`backoff`]).
    fn delay(&self) -> Duration {
        backoff(self.version_interval, self.failures)
    }

    /// One round. Returns whether the table was loaded from the store.
    fn tick(&mut self, now: Instant) -> Result<bool, StoreError> {
        let (Some(replica), Some(reads)) = (self.replica.as_deref(), self.reads.as_mut()) else {
            let v = self.store.version()?;
            return self.round(Source::Primary, v, now);
        };
        if reads.source == Source::Replica {
            match replica.version() {
                Ok(v) => {
                    reads.replica_ok(now, v);
                    // The lag check: the primary's version, now and then
                    // (its failure does not matter to the reads).
                    if reads.primary_check_due(now, self.reload_interval) {
                        match self.store.version() {
                            Ok(p) => reads.primary_seen(now, p),
                            Err(e) => tracing::debug!(
                                "lag check: the primary's version cannot be read: {}",
                                lars_store::Chain(&e)
                            ),
                        }
                    }
                    if !reads.too_far_behind(now) {
                        return self.round(Source::Replica, v, now);
                    }
                    let behind = reads.primary_version.unwrap_or(0).saturating_sub(v);
                    reads.fall_back(
                        now,
                        format!(
                            "the replica stayed behind the primary longer than read_max_lag \
                             ({behind} versions)"
                        ),
                    );
                }
                Err(e) => {
                    if !reads.replica_failed(now) {
                        return Err(e);
                    }
                    reads.fall_back(
                        now,
                        format!(
                            "the replica failed for read_fallback_after: {}",
                            lars_store::Chain(&e)
                        ),
                    );
                }
            }
        } else if reads.probe_due(now) {
            match replica.version() {
                Ok(v) => {
                    reads.replica_ok(now, v);
                    if v >= self.version && !reads.too_far_behind(now) {
                        reads.back_to_replica();
                        return self.round(Source::Replica, v, now);
                    }
                    reads.stale(now, Source::Replica, v, self.version);
                }
                Err(e) => {
                    reads.replica_failed(now);
                    tracing::debug!("the replica still fails: {}", lars_store::Chain(&e));
                }
            }
        }
        let v = self.store.version()?;
        if let Some(reads) = self.reads.as_mut() {
            reads.primary_seen(now, v);
        }
        self.round(Source::Primary, v, now)
    }

    /// The store `source` names.
    fn reader(&self, source: Source) -> &dyn RouteRead {
        match (source, self.replica.as_deref()) {
            (Source::Replica, Some(r)) => r,
            _ => &self.store,
        }
    }

    /// Counts a stale read of `version` from `source`.
    fn stale(&mut self, now: Instant, source: Source, version: u64) {
        let served = self.version;
        if let Some(r) = self.reads.as_mut() {
            r.stale(now, source, version, served);
        }
    }

    /// The rest of a round once `source` answered version `v`: load, swap
    /// and push on a new version (or every `reload_interval`). A replica's
    /// version older than the one served is ignored (stale); the primary,
    /// the truth, is followed even backwards (a restored backup), as before
    /// replicas existed.
    fn round(&mut self, source: Source, v: u64, now: Instant) -> Result<bool, StoreError> {
        if source == Source::Replica && v < self.version {
            self.stale(now, source, v);
            return Ok(false);
        }
        if v != self.version {
            let loaded = self.reader(source).load_routes()?;
            if source == Source::Replica {
                // The version and the rows are two reads: a replica that
                // went back in between (a failover to a lagging one) must
                // not swap in older rows.
                let again = self.reader(source).version()?;
                if again < v {
                    self.stale(now, source, again);
                    return Ok(false);
                }
            }
            let mut keys = self.swap(loaded, v);
            self.last_full = now;
            // Push even if reading the changes fails: the keys whose hosts
            // differ are known already. The version is only marked done once
            // the RouteChange keys were pushed too.
            let changed = self.reader(source).changed_keys(v);
            if let Ok(c) = &changed {
                keys.extend_from_slice(c);
                keys.sort_unstable();
                keys.dedup();
            }
            self.push(&keys);
            let changed = changed?;
            self.version = v;
            if !changed.is_empty() {
                self.prune(v)?;
            }
            Ok(true)
        } else if now.duration_since(self.last_full) >= self.reload_interval {
            let loaded = self.reader(source).load_routes()?;
            let keys = self.swap(loaded, v);
            self.last_full = now;
            if !keys.is_empty() {
                tracing::info!(
                    keys = keys.len(),
                    "periodic reload found changes without a version bump"
                );
            }
            self.push(&keys);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Deletes the processed `RouteChange` rows (version <= `v`) on the
    /// primary, never on the replica. With a replica this is best effort:
    /// the reads do not depend on the primary, and a row left behind is
    /// pruned with the next change. Rows newer than `v` (not yet on a
    /// lagging replica) are kept, and a change is never missed anyway:
    /// pushes come from comparing whole tables, the rows only add keys.
    fn prune(&self, v: u64) -> Result<(), StoreError> {
        match self.store.delete_changes(Some(v)) {
            Ok(_) => Ok(()),
            Err(e) if self.replica.is_some() => {
                tracing::warn!(
                    version = v,
                    "cannot prune RouteChange rows on the primary (retried with the next \
                     change): {}",
                    lars_store::Chain(&e)
                );
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Loads `loaded` into the back buffer, swaps it in and publishes the
    /// snapshot; returns the keys whose hosts differ.
    fn swap(&mut self, loaded: lars_store::RouteSnapshot, version: u64) -> Vec<ModKey> {
        let next = RouteTable::build(
            loaded
                .routes
                .into_iter()
                .flat_map(|(k, hosts)| hosts.into_iter().map(move |h| (k, h))),
        );
        let changed = self.table.reload(next);
        let old = self.shared.snapshot.load();
        if !changed.is_empty() || old.store_version != version {
            let snap = Snapshot::new(self.table.current(), version);
            tracing::info!(
                version,
                keys = snap.routes.len(),
                hosts = snap.hosts,
                changed = changed.len(),
                "route table swapped"
            );
            self.shared.snapshot.store(Arc::new(snap));
            if !changed.is_empty() {
                self.shared.reloads.fetch_add(1, Ordering::Relaxed);
            }
        }
        changed
    }

    /// Pushes `keys` (from the current snapshot) to every connection
    /// subscribed to some of them, each through its own worker loop.
    fn push(&self, keys: &[ModKey]) {
        if keys.is_empty() {
            return;
        }
        let snap = self.shared.snapshot.load();
        let frames: HashMap<ModKey, Bytes> = keys.iter().map(|k| (*k, snap.frame(*k))).collect();
        let targets = self.shared.subs().publish(keys);
        let conns = targets.len();
        for (conn, ks) in targets {
            let out: Vec<Bytes> = ks.iter().filter_map(|k| frames.get(k).cloned()).collect();
            let shared = Arc::clone(&self.shared);
            // A connection closed meanwhile is skipped by the loop: its id is
            // never reused, so no other connection can receive this.
            self.server.with_conn(ConnId(conn), move |c| {
                for f in &out {
                    c.send_frames(f);
                }
                shared.pushes.fetch_add(out.len() as u64, Ordering::Relaxed);
            });
        }
        tracing::debug!(keys = keys.len(), conns, "pushed changed routes");
    }
}

/// The wait before the next round: `interval`, doubled per consecutive
/// failure up to `min(10 x interval, 30 s)`.
fn backoff(interval: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return interval;
    }
    let cap = (interval * 10).min(MAX_BACKOFF).max(interval);
    let factor = 1u32 << failures.min(16);
    interval.saturating_mul(factor).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        assert_eq!(backoff(s(1), 0), s(1));
        assert_eq!(backoff(s(1), 1), s(2));
        assert_eq!(backoff(s(1), 3), s(8));
        assert_eq!(backoff(s(1), 4), s(10));
        assert_eq!(backoff(s(1), u32::MAX), s(10));
        assert_eq!(backoff(ms(100), 2), ms(400));
        assert_eq!(backoff(ms(100), 9), s(1));
        assert_eq!(backoff(s(5), 9), s(30));
        assert_eq!(backoff(s(60), 3), s(60));
    }
}
