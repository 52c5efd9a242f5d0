//! The service: the TCP server and its request handler, the shared snapshot
//! and subscriptions, start-up and stop.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use hashbrown::{HashMap, HashSet};
use lars_core::config::DnsConfig;
use lars_core::proto::{GetRouteRequest, GetRouteResponse};
use lars_core::{MessageId, ModKey, frame};
use lars_lb::{RouteTable, Routes, Subscriptions};
use lars_net::http::HttpHandler;
use lars_net::{Conn, Frame, HttpResponse, NetError, NetStats, StatusServer, TcpServer};
use lars_store::{RouteRead, StoreError};

use crate::reloader::Reloader;
use crate::stats::{self, DnsStats, StoreHealth};

/// Why the dns could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The store could not be read at start-up (e.g. the database is
    /// unreachable). After start-up store trouble never stops the service.
    #[error("cannot load the routes at start-up")]
    Store(#[source] StoreError),
    /// The TCP listener or a worker loop could not be started.
    #[error("cannot start the dns server on {addr}")]
    Listen {
        /// The configured `[reactor] ip:port`.
        addr: SocketAddr,
        /// The reactor's error.
        #[source]
        source: NetError,
    },
    /// The HTTP status listener could not be started.
    #[error("cannot start the status listener on {addr}")]
    Http {
        /// The configured `[http] ip:port`.
        addr: SocketAddr,
        /// The reactor's error.
        #[source]
        source: NetError,
    },
    /// The reloader thread could not be spawned.
    #[error("cannot spawn the reloader thread")]
    Thread(#[source] std::io::Error),
    /// A configuration value is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// The dns service. See [`Dns::start`].
#[derive(Debug)]
pub struct Dns;

impl Dns {
    /// Loads the routes from `store`, clears stale `RouteChange` rows (as the
    /// original does), starts the TCP server on `[reactor] ip:port` with
    /// `threadNum` worker loops and `maxConn`, the reloader thread and, when
    /// `[http]` is configured, the status listener.
    ///
    /// An unreachable store is an error here ([`DnsError::Store`]); after
    /// start-up the service rides out store outages on its last good table.
    pub fn start<S>(config: DnsConfig, store: S) -> Result<DnsHandle, DnsError>
    where
        S: RouteRead + Send + 'static,
    {
        if config.version_interval.is_zero() || config.reload_interval.is_zero() {
            return Err(DnsError::Config(
                "[dns] version_interval and reload_interval must be positive".into(),
            ));
        }
        let version = store.version().map_err(DnsError::Store)?;
        let loaded = store.load_routes().map_err(DnsError::Store)?;
        let cleared = store.delete_changes(None).map_err(DnsError::Store)?;
        let table = RouteTable::new(RouteTable::build(
            loaded
                .routes
                .into_iter()
                .flat_map(|(k, hosts)| hosts.into_iter().map(move |h| (k, h))),
        ));
        let snapshot = Snapshot::new(table.current(), version);
        tracing::info!(
            version,
            keys = snapshot.routes.len(),
            hosts = snapshot.hosts,
            skipped_rows = loaded.skipped,
            cleared_changes = cleared,
            "routes loaded"
        );
        let shared = Arc::new(Shared {
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
        });

        let addr = SocketAddr::V4(config.reactor.addr);
        let sh = Arc::clone(&shared);
        let sh_close = Arc::clone(&shared);
        let router = lars_net::Router::new().route(MessageId::GetRouteRequest, move |conn, f| {
            sh.on_request(conn, f);
        });
        let mut server = TcpServer::from_config(&config.reactor)
            .name("lars-dns")
            .router(router)
            .on_close(move |conn| sh_close.on_close(conn))
            .start()
            .map_err(|source| DnsError::Listen { addr, source })?;
        let net = server.stats();

        let http = match config.http.addr {
            None => None,
            Some(addr) => {
                let handler = status_handler(Arc::clone(&shared), Arc::clone(&net));
                match StatusServer::start(addr, handler) {
                    Ok(s) => Some(s),
                    Err(source) => {
                        server.join();
                        return Err(DnsError::Http { addr, source });
                    }
                }
            }
        };

        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let reloader = Reloader::new(
            store,
            table,
            version,
            Arc::clone(&shared),
            server.handle(),
            config.version_interval,
            config.reload_interval,
        );
        let reloader = std::thread::Builder::new()
            .name("lars-dns-reload".into())
            .spawn(move || reloader.run(&stop_rx));
        let reloader = match reloader {
            Ok(j) => j,
            Err(e) => {
                server.join();
                return Err(DnsError::Thread(e));
            }
        };
        tracing::info!(
            "dns serving on {} ({} worker loops, maxConn {})",
            server.local_addr(),
            config.reactor.thread_num,
            config.reactor.max_conn
        );
        Ok(DnsHandle {
            server,
            http,
            reloader: Some(reloader),
            stop_tx: Some(stop_tx),
            shared,
            net,
        })
    }
}

/// A running dns. Dropping it stops it (see [`DnsHandle::stop`]).
pub struct DnsHandle {
    server: TcpServer,
    http: Option<StatusServer>,
    reloader: Option<JoinHandle<()>>,
    stop_tx: Option<crossbeam_channel::Sender<()>>,
    shared: Arc<Shared>,
    net: Arc<NetStats>,
}

impl std::fmt::Debug for DnsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsHandle")
            .field("local_addr", &self.server.local_addr())
            .field("http_addr", &self.http_addr())
            .finish()
    }
}

impl DnsHandle {
    /// The bound TCP address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The bound status listener address, when `[http]` is configured.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(StatusServer::local_addr)
    }

    /// Counters and state, as `/status` shows them.
    pub fn stats(&self) -> DnsStats {
        self.shared.stats(&self.net)
    }

    /// Stops the reloader, the status listener and the server, and joins
    /// every thread. Idempotent.
    pub fn stop(&mut self) {
        // Dropping the sender wakes the reloader at once.
        if self.stop_tx.take().is_none() {
            return;
        }
        if let Some(j) = self.reloader.take() {
            if j.join().is_err() {
                tracing::error!("the reloader thread panicked");
            }
        }
        if let Some(mut h) = self.http.take() {
            h.stop();
        }
        self.server.join();
        tracing::info!("dns stopped");
    }
}

impl Drop for DnsHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

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
    fn on_request(&self, conn: &mut Conn, f: Frame) {
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
    fn on_close(&self, conn: &mut Conn) {
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

fn status_handler(shared: Arc<Shared>, net: Arc<NetStats>) -> HttpHandler {
    Arc::new(move |req| {
        if req.method != "GET" {
            return HttpResponse::bad_request("only GET\n").status(405);
        }
        match req.path.as_str() {
            "/status" => {
                let s = shared.stats(&net);
                match serde_json::to_string_pretty(&s) {
                    Ok(body) => HttpResponse::json(body + "\n"),
                    Err(e) => HttpResponse::text(format!("{e}\n")).status(500),
                }
            }
            "/metrics" => {
                let mut r = HttpResponse::text(stats::prometheus(&shared.stats(&net)));
                r.content_type = "text/plain; version=0.0.4; charset=utf-8".into();
                r
            }
            _ => HttpResponse::not_found(),
        }
    })
}
