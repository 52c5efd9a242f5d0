//! The state the dns's worker loops, its reloader and its status page share:
//! the published route [`Snapshot`] (reply frames encoded once), the
//! subscriptions, counters and store health.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use hashbrown::{HashMap, HashSet};
use lars_core::proto::{GetRouteRequest, GetRouteResponse, GetRouteResponseExt};
use lars_core::{Chain, MessageId, ModKey, frame};
use lars_lb::{Routes, Subscriptions};
use lars_net::{Conn, Frame, NetStats};
use lars_store::StoreError;

use crate::replica::ReadState;
use crate::stats::{self, DnsStats, ReadStats, StoreHealth};

/// One published generation of the routes, with each key's reply frame
/// encoded once (header included) so that answering is a copy.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) routes: Arc<Routes>,
    pub(crate) frames: HashMap<ModKey, Bytes>,
    pub(crate) hosts: usize,
    /// The store's `RouteVersion` this generation was loaded at.
    pub(crate) store_version: u64,
    /// Whether an empty answer is marked `confirmed_empty`: only when the
    /// table has keys (an empty table looks like a wrong or wiped store,
    /// which agents' empty-route protection should ride out).
    pub(crate) confirm_empty: bool,
}

impl Snapshot {
    pub(crate) fn new(routes: Arc<Routes>, store_version: u64) -> Self {
        let frames = routes
            .iter()
            .map(|(k, hosts)| (*k, route_frame(*k, hosts)))
            .collect();
        let hosts = routes.values().map(|h| h.len()).sum();
        let confirm_empty = !routes.is_empty();
        Self {
            routes,
            frames,
            hosts,
            store_version,
            confirm_empty,
        }
    }

    /// The reply frame for `key`: its hosts, or an empty list (marked
    /// `confirmed_empty` when the table has keys).
    pub(crate) fn frame(&self, key: ModKey) -> Bytes {
        match self.frames.get(&key) {
            Some(f) => f.clone(),
            None if self.confirm_empty => confirmed_empty_frame(key),
            None => route_frame(key, &[]),
        }
    }
}

/// An empty `GetRouteResponse` for `key` carrying our field 4,
/// `confirmed_empty = true` (declared as `GetRouteResponseExt`, encoded in
/// the same body): a lars agent drops the key's hosts even under empty-route
/// protection; an original agent skips the field.
pub(crate) fn confirmed_empty_frame(key: ModKey) -> Bytes {
    use prost::Message as _;
    let (modid, cmdid) = key.to_wire();
    let mut body = GetRouteResponse {
        modid,
        cmdid,
        host: Vec::new(),
    }
    .encode_to_vec();
    body.extend(
        GetRouteResponseExt {
            confirmed_empty: true,
        }
        .encode_to_vec(),
    );
    let mut out = bytes::BytesMut::with_capacity(frame::HEADER_LEN + body.len());
    match frame::encode_raw(MessageId::GetRouteResponse.into(), &body, &mut out) {
        Ok(()) => out.freeze(),
        // A few bytes always fit a frame.
        Err(_) => route_frame(key, &[]),
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
struct ConnKeys {
    keys: HashSet<ModKey>,
    /// Of `keys`, those that had no hosts when subscribed (bounded by
    /// `[dns] max_unhosted_subscriptions`).
    unhosted: HashSet<ModKey>,
    /// The limit was logged for this connection.
    warned: bool,
}

/// State shared by the worker loops, the reloader and the status listener.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) snapshot: ArcSwap<Snapshot>,
    pub(crate) subs: Mutex<Subscriptions>,
    requests: AtomicU64,
    bad_requests: AtomicU64,
    unsubscribes: AtomicU64,
    unhosted_refused: AtomicU64,
    /// Subscriptions one connection may hold to keys that had no hosts when
    /// it asked (`[dns] max_unhosted_subscriptions`): beyond it such a key
    /// is answered (empty) but not subscribed, so a client asking for
    /// endless unknown keys (an original agent keeps every key it was asked
    /// for) cannot grow the dns without bound. It loses nothing: agents pull
    /// a key they use again after `update_timeout` (15 s by default), as the
    /// original does, and so see hosts added later.
    max_unhosted: usize,
    pub(crate) pushes: AtomicU64,
    pub(crate) reloads: AtomicU64,
    health: Mutex<HealthState>,
    /// The reloader's store rounds in flight (stall detection, ages).
    pub(crate) watch: stats::StoreWatch,
    /// The replica as the reloader last saw it (`None`: no `read_url`).
    pub(crate) reads: Mutex<Option<ReadState>>,
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
    pub(crate) fn new(snapshot: Snapshot, max_unhosted: usize) -> Self {
        Self {
            max_unhosted,
            snapshot: ArcSwap::from_pointee(snapshot),
            subs: Mutex::new(Subscriptions::default()),
            requests: AtomicU64::new(0),
            bad_requests: AtomicU64::new(0),
            unsubscribes: AtomicU64::new(0),
            unhosted_refused: AtomicU64::new(0),
            pushes: AtomicU64::new(0),
            reloads: AtomicU64::new(1),
            health: Mutex::new(HealthState {
                healthy: true,
                last_error: None,
                failures: 0,
                last_reload: Some(SystemTime::now()),
                since: SystemTime::now(),
            }),
            watch: stats::StoreWatch::default(),
            reads: Mutex::new(None),
        }
    }

    pub(crate) fn subs(&self) -> MutexGuard<'_, Subscriptions> {
        // The subscriptions are plain maps updated in single calls: a panic
        // elsewhere cannot leave them half-changed.
        self.subs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the reloader's view of the replica.
    pub(crate) fn set_reads(&self, r: &ReadState) {
        *self.reads.lock().unwrap_or_else(|p| p.into_inner()) = Some(r.clone());
    }

    fn health(&self) -> MutexGuard<'_, HealthState> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `GetRouteRequest` body of `f` (also the body of an unsubscribe),
    /// or `None` after counting a malformed one in `bad_requests`.
    fn decode_request(&self, conn: &Conn, f: &Frame) -> Option<GetRouteRequest> {
        match f.message() {
            Ok(r) => Some(r),
            Err(e) => {
                self.bad_requests.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("{} from {}: {}", conn.id(), conn.peer_addr(), Chain(&e));
                None
            }
        }
    }

    /// `GetRouteRequest`: subscribe, then answer from the snapshot. The
    /// order matters: the reloader swaps first and reads the subscriptions
    /// second, so either this reply sees the new table or the push comes.
    pub(crate) fn on_request(&self, conn: &mut Conn, f: Frame) {
        let Some(req) = self.decode_request(conn, &f) else {
            return;
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        let key = ModKey::from_wire(req.modid, req.cmdid);
        if conn.data::<ConnKeys>().is_none() {
            conn.set_data(ConnKeys::default());
        }
        let hosted = self.snapshot.load().frames.contains_key(&key);
        let new = match conn.data_mut::<ConnKeys>() {
            Some(ck) if ck.keys.contains(&key) => false,
            Some(ck) if !hosted && ck.unhosted.len() >= self.max_unhosted => {
                self.unhosted_refused.fetch_add(1, Ordering::Relaxed);
                if !std::mem::replace(&mut ck.warned, true) {
                    tracing::warn!(
                        peer = %conn.peer_addr(),
                        limit = self.max_unhosted,
                        "this connection holds the most subscriptions to keys without hosts; \
                         further ones are answered without subscribing (counted in \
                         unhosted_refused)"
                    );
                }
                false
            }
            Some(ck) => {
                ck.keys.insert(key);
                if !hosted {
                    ck.unhosted.insert(key);
                }
                true
            }
            None => false, // set above
        };
        if new {
            self.subs().subscribe(conn.id().0, key);
        }
        // Read after subscribing (see above): a swap in between is pushed.
        conn.send_frames(&self.snapshot.load().frame(key));
    }

    /// `UnsubscribeRoute` (ours, msgid 101): the agent forgot the key; drop
    /// this connection's subscription to it. Unknown keys are ignored.
    pub(crate) fn on_unsubscribe(&self, conn: &mut Conn, f: Frame) {
        let Some(req) = self.decode_request(conn, &f) else {
            return;
        };
        let key = ModKey::from_wire(req.modid, req.cmdid);
        let had = conn.data_mut::<ConnKeys>().is_some_and(|ck| {
            ck.unhosted.remove(&key);
            ck.keys.remove(&key)
        });
        if had {
            self.subs().unsubscribe(conn.id().0, key);
            self.unsubscribes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A connection closed: forget its subscriptions at once; its id is
    /// never reused, so nothing can be pushed to a successor.
    pub(crate) fn on_close(&self, conn: &mut Conn) {
        if conn.data::<ConnKeys>().is_some_and(|k| !k.keys.is_empty()) {
            self.subs().unsubscribe_all(conn.id().0);
        }
    }

    /// Unsubscribes received that dropped a subscription.
    pub(crate) fn unsubscribes(&self) -> u64 {
        self.unsubscribes.load(Ordering::Relaxed)
    }

    /// Requests answered without subscribing: the connection held
    /// `[dns] max_unhosted_subscriptions` subscriptions to keys without
    /// hosts.
    pub(crate) fn unhosted_refused(&self) -> u64 {
        self.unhosted_refused.load(Ordering::Relaxed)
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
                "store failing, serving the last good table (version {}, {} keys): {}",
                snap.store_version,
                snap.routes.len(),
                lars_store::Chain(e)
            );
            h.healthy = false;
            h.since = SystemTime::now();
        }
        h.last_error = Some(lars_store::Chain(e).to_string());
    }

    pub(crate) fn stats(&self, net: &NetStats) -> DnsStats {
        let snap = self.snapshot.load();
        let (sub_conns, sub_keys) = {
            let s = self.subs();
            (s.connections(), s.keys())
        };
        let h = self.health();
        let mut out = DnsStats {
            route_version: snap.store_version,
            keys: snap.routes.len(),
            hosts: snap.hosts,
            connections: net.open.load(Ordering::Relaxed),
            tcp_limits: net.snapshot().limits(),
            http: Default::default(), // the status server's: see DnsHandle::stats
            subscribed_connections: sub_conns,
            subscribed_keys: sub_keys,
            requests: self.requests.load(Ordering::Relaxed),
            bad_requests: self.bad_requests.load(Ordering::Relaxed),
            unsubscribes: self.unsubscribes(),
            unhosted_refused: self.unhosted_refused(),
            pushes: self.pushes.load(Ordering::Relaxed),
            reloads: self.reloads.load(Ordering::Relaxed),
            last_reload_unix: h.last_reload.map(stats::unix_secs),
            store: StoreHealth {
                healthy: h.healthy,
                since_unix: stats::unix_secs(h.since),
                failures: h.failures,
                last_error: h.last_error.clone(),
                last_ok_age_secs: 0,
                round_in_flight_secs: 0,
                stalls: 0,
            },
            reads: self
                .reads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map_or_else(ReadStats::default, |r| {
                    ReadStats::of(r, std::time::Instant::now())
                }),
        };
        self.watch.apply(&mut out.store, std::time::Instant::now());
        out
    }
}
