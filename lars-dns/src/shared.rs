//! The state the dns's worker loops, its reloader and its status page share:
//! the published route [`Snapshot`] (reply frames encoded once), the
//! subscriptions, counters and store health.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use hashbrown::{HashMap, HashSet};
use lars_core::proto::{GetRouteRequest, GetRouteResponse};
use lars_core::{MessageId, ModKey, frame};
use lars_lb::{Routes, Subscriptions};
use lars_net::{Conn, Frame, NetStats};
use lars_store::StoreError;

use crate::stats::{self, DnsStats, StoreHealth};

/// One published generation of the routes, with each key's reply frame
/// encoded once (header included) so that answering is a copy.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) routes: Arc<Routes>,
    pub(crate) frames: HashMap<ModKey, Bytes>,
    pub(crate) hosts: usize,
    /// The store's `RouteVersion` this generation was loaded at.
    pub(crate) store_version: u64,
}

impl Snapshot {
    pub(crate) fn new(routes: Arc<Routes>, store_version: u64) -> Self {
        let frames = routes
            .iter()
            .map(|(k, hosts)| (*k, route_frame(*k, hosts)))
            .collect();
        let hosts = routes.values().map(|h| h.len()).sum();
        Self {
            routes,
            frames,
            hosts,
            store_version,
        }
    }

    /// The reply frame for `key`: its hosts, or an empty list.
    pub(crate) fn frame(&self, key: ModKey) -> Bytes {
        match self.frames.get(&key) {
            Some(f) => f.clone(),
            None => route_frame(key, &[]),
        }
    }
}

/// Encodes `GetRouteResponse` for `key` and `hosts` as one whole frame.
pub(crate) fn route_frame(key: ModKey, hosts: &[lars_core::HostAddr]) -> Bytes {
    let (modid, cmdid) = key.to_wire();
    let resp = GetRouteResponse {
        modid,
        cmdid,
        host: hosts.iter().map(|h| h.to_proto()).collect(),
    };
    // A key has at most a few thousand hosts (8-12 bytes each) in any sane
    // deployment; if a list ever exceeds a frame, send what fits.
    match frame::to_bytes(MessageId::GetRouteResponse.into(), &resp) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(%key, hosts = hosts.len(), "route too large for one frame: {e}");
            let fit = frame::MAX_BODY_LEN / 12;
            route_frame(key, &hosts[..fit.min(hosts.len())])
        }
    }
}

/// Per-connection state kept on its worker loop: the keys it subscribed to,
/// so that only the first request for a key takes the subscriptions lock.
#[derive(Debug, Default)]
struct ConnKeys(HashSet<ModKey>);

/// State shared by the worker loops, the reloader and the status listener.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) snapshot: ArcSwap<Snapshot>,
    pub(crate) subs: Mutex<Subscriptions>,
    requests: AtomicU64,
    bad_requests: AtomicU64,
    pub(crate) pushes: AtomicU64,
    pub(crate) reloads: AtomicU64,
    health: Mutex<HealthState>,
}

#[derive(Debug)]
struct HealthState {
    healthy: bool,
    last_error: Option<String>,
    failures: u64,
    last_reload: Option<SystemTime>,
    since: SystemTime,
}

impl Shared {
    /// Shared state serving `snapshot`, as loaded at start-up.
    pub(crate) fn new(snapshot: Snapshot) -> Self {
        Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            subs: Mutex::new(Subscriptions::default()),
            requests: AtomicU64::new(0),
            bad_requests: AtomicU64::new(0),
            pushes: AtomicU64::new(0),
            reloads: AtomicU64::new(1),
            health: Mutex::new(HealthState {
                healthy: true,
                last_error: None,
                failures: 0,
                last_reload: Some(SystemTime::now()),
                since: SystemTime::now(),
            }),
        }
    }

    pub(crate) fn subs(&self) -> MutexGuard<'_, Subscriptions> {
        // The subscriptions are plain maps updated in single calls: a panic
        // elsewhere cannot leave them half-changed.
        self.subs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn health(&self) -> MutexGuard<'_, HealthState> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `GetRouteRequest`: subscribe, then answer from the snapshot. The
    /// order matters: the reloader swaps first and reads the subscriptions
    /// second, so either this reply sees the new table or the push comes.
    pub(crate) fn on_request(&self, conn: &mut Conn, f: Frame) {
        let req: GetRouteRequest = match f.message() {
            Ok(r) => r,
            Err(e) => {
                self.bad_requests.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("{} from {}: {e}", conn.id(), conn.peer_addr());
                return;
            }
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        let key = ModKey::from_wire(req.modid, req.cmdid);
        let new = match conn.data_mut::<ConnKeys>() {
            Some(keys) => keys.0.insert(key),
            None => {
                let mut keys = ConnKeys::default();
                keys.0.insert(key);
                conn.set_data(keys);
                true
            }
        };
        if new {
            self.subs().subscribe(conn.id().0, key);
        }
        let snap = self.snapshot.load();
        match snap.frames.get(&key) {
            Some(frame) => conn.send_frames(frame),
            None => conn.send_frames(&route_frame(key, &[])),
        }
    }

    /// A connection closed: forget its subscriptions at once; its id is
    /// never reused, so nothing can be pushed to a successor.
    pub(crate) fn on_close(&self, conn: &mut Conn) {
        if conn.data::<ConnKeys>().is_some_and(|k| !k.0.is_empty()) {
            self.subs().unsubscribe_all(conn.id().0);
        }
    }

    /// Records a successful store round.
    pub(crate) fn store_ok(&self, reloaded: bool) {
        let mut h = self.health();
        if reloaded {
            h.last_reload = Some(SystemTime::now());
        }
        if !h.healthy {
            let down = h.since.elapsed().unwrap_or(Duration::ZERO);
            tracing::info!(
                "store recovered after {:.1} s; routes are current again",
                down.as_secs_f64()
            );
            h.healthy = true;
            h.last_error = None;
            h.since = SystemTime::now();
        }
    }

    /// Records a failed store round; logs only when the state changes.
    pub(crate) fn store_failed(&self, e: &StoreError) {
        let mut h = self.health();
        h.failures += 1;
        if h.healthy {
            let snap = self.snapshot.load();
            tracing::warn!(
                "store failing, serving the last good table (version {}, {} keys): {e}",
                snap.store_version,
                snap.routes.len()
            );
            h.healthy = false;
            h.since = SystemTime::now();
        }
        h.last_error = Some(e.to_string());
    }

    pub(crate) fn stats(&self, net: &NetStats) -> DnsStats {
        let snap = self.snapshot.load();
        let (sub_conns, sub_keys) = {
            let s = self.subs();
            (s.connections(), s.keys())
        };
        let h = self.health();
        DnsStats {
            route_version: snap.store_version,
            keys: snap.routes.len(),
            hosts: snap.hosts,
            connections: net.open.load(Ordering::Relaxed),
            tcp_limits: net.snapshot().limits(),
            subscribed_connections: sub_conns,
            subscribed_keys: sub_keys,
            requests: self.requests.load(Ordering::Relaxed),
            bad_requests: self.bad_requests.load(Ordering::Relaxed),
            pushes: self.pushes.load(Ordering::Relaxed),
            reloads: self.reloads.load(Ordering::Relaxed),
            last_reload_unix: h.last_reload.map(stats::unix_secs),
            store: StoreHealth {
                healthy: h.healthy,
                since_unix: stats::unix_secs(h.since),
                failures: h.failures,
                last_error: h.last_error.clone(),
            },
        }
    }
}
