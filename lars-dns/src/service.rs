//! The service: start-up (load, publish, listen), the TCP server wired to the
//! [`Shared`] request handler, the status page, and stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::config::DnsConfig;
use lars_core::MessageId;
use lars_lb::RouteTable;
use lars_net::http::{HttpHandler, HttpStats};
use lars_net::{HttpResponse, NetError, NetStats, StatusServer, TcpServer};
use lars_store::{RouteRead, StoreError};

use crate::reloader::{Reloader, ReplicaPart};
use crate::replica::ReadState;
use crate::shared::{Shared, Snapshot};
use crate::stats::{self, DnsStats};

/// Why the dns could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The store could not be read at start-up (e.g. the database is
    /// unreachable). After start-up store trouble never stops the service.
    #[error("cannot load the routes at start-up")]
    Store(#[source] StoreError),
    /// The TCP listener or a worker loop could not be started (a bind
    /// error, the usual cause, names the address).
    #[error("cannot start the dns server")]
    Listen {
        /// The configured `[reactor] ip:port`.
        addr: SocketAddr,
        /// The reactor's error.
        #[source]
        source: NetError,
    },
    /// The HTTP status listener could not be started (a bind error names
    /// the address).
    #[error("cannot start the dns status listener")]
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
        match &config.store_read_url {
            None => Self::start_inner(config, store, None),
            Some(url) => {
                let replica = lars_store::replica::open_replica(url).map_err(DnsError::Store)?;
                let shown = replica.shown_url();
                Self::start_inner(config, store, Some((Box::new(replica), shown)))
            }
        }
    }

    /// [`start`](Self::start) reading the routes from `replica` (the
    /// replica of `store`; `[store] read_url` is not opened). Everything the
    /// dns writes goes to `store`. See docs/dns.md for the rules.
    pub fn start_with_replica<S, R>(
        config: DnsConfig,
        store: S,
        replica: R,
    ) -> Result<DnsHandle, DnsError>
    where
        S: RouteRead + Send + 'static,
        R: RouteRead + Send + std::fmt::Debug + 'static,
    {
        let shown = format!("{replica:?}");
        Self::start_inner(config, store, Some((Box::new(replica), shown)))
    }

    fn start_inner<S>(
        config: DnsConfig,
        store: S,
        replica: Option<(Box<dyn RouteRead + Send>, String)>,
    ) -> Result<DnsHandle, DnsError>
    where
        S: RouteRead + Send + 'static,
    {
        if config.version_interval.is_zero() || config.reload_interval.is_zero() {
            return Err(DnsError::Config(
                "[dns] version_interval and reload_interval must be positive".into(),
            ));
        }
        let (version, loaded, replica) = match replica {
            None => {
                let version = store.version().map_err(DnsError::Store)?;
                let loaded = store.load_routes().map_err(DnsError::Store)?;
                (version, loaded, None)
            }
            Some((r, shown)) => {
                let (version, loaded, state) = first_load(&config, &store, r.as_ref(), shown)?;
                let part = ReplicaPart { store: r, state };
                (version, loaded, Some(part))
            }
        };
        // The rows up to the loaded version are processed. Without a
        // replica every row goes (the original's start-up); with one only
        // those (a lagging replica has not shown the newer ones yet), and
        // only on the primary, best effort.
        let cleared = match &replica {
            None => store.delete_changes(None).map_err(DnsError::Store)?,
            Some(_) => store.delete_changes(Some(version)).unwrap_or_else(|e| {
                tracing::warn!(
                    "cannot prune RouteChange rows on the primary at start-up: {}",
                    lars_store::Chain(&e)
                );
                0
            }),
        };
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
        let shared = Arc::new(Shared::new(snapshot, config.max_unhosted_subscriptions));
        shared.watch.set_stall_after(config.store_stall_timeout);
        if let Some(r) = &replica {
            shared.set_reads(&r.state);
        }

        let addr = SocketAddr::V4(config.reactor.addr);
        let sh = Arc::clone(&shared);
        let sh_unsub = Arc::clone(&shared);
        let sh_close = Arc::clone(&shared);
        let router = lars_net::Router::new()
            .route(MessageId::GetRouteRequest, move |conn, f| {
                sh.on_request(conn, f);
            })
            .route(MessageId::UnsubscribeRoute, move |conn, f| {
                sh_unsub.on_unsubscribe(conn, f);
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
                let counted = Arc::<HttpStats>::default();
                let handler = status_handler(Arc::clone(&shared), Arc::clone(&net), &counted);
                match StatusServer::start_with_stats(addr, handler, counted) {
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
            replica,
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

    /// The bound address of the `[tls]` listener, if there is one (with
    /// `[tls] port = 0`, the port the system chose).
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.server.tls_local_addr()
    }

    /// The bound status listener address, when `[http]` is configured.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(StatusServer::local_addr)
    }

    /// Counters and state, as `/status` shows them.
    pub fn stats(&self) -> DnsStats {
        let mut s = self.shared.stats(&self.net);
        s.http = self
            .http
            .as_ref()
            .map(|h| h.stats().snapshot())
            .unwrap_or_default();
        s
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

/// The start-up load with a replica: from the replica, or from the primary
/// when the replica is behind it; when the replica cannot be read and
/// `[store] read_fallback_after` is not 0, from the primary (counted as a
/// fallback; the reloader tries the replica again later).
fn first_load<S: RouteRead>(
    config: &DnsConfig,
    store: &S,
    replica: &dyn RouteRead,
    shown: String,
) -> Result<(u64, lars_store::RouteSnapshot, ReadState), DnsError> {
    let mut state = ReadState::new(shown, config.read_fallback_after, config.read_max_lag);
    let now = std::time::Instant::now();
    let from_replica = replica
        .version()
        .and_then(|v| replica.load_routes().map(|l| (v, l)));
    match from_replica {
        Ok((v, loaded)) => {
            state.replica_ok(now, v);
            if let Ok(p) = store.version() {
                state.primary_seen(now, p);
            }
            // Behind the primary at start-up: a restarted dns must not
            // answer its agents with routes older than they may have had
            // from it (or another dns) before. Start from the primary's
            // table; the replica is read once it has that version (until
            // then its answers are stale).
            if let Some(p) = state.primary_version.filter(|&p| p > v) {
                match store.load_routes() {
                    Ok(newer) => {
                        tracing::info!(
                            replica = %state.shown_url,
                            replica_version = v,
                            primary_version = p,
                            "the replica is behind the primary at start-up: starting from the \
                             primary's table; the replica is read once it has caught up"
                        );
                        return Ok((p, newer, state));
                    }
                    Err(e) => tracing::warn!(
                        "the primary's routes cannot be read at start-up, starting from the \
                         replica's (version {v}, the primary has {p}): {}",
                        lars_store::Chain(&e)
                    ),
                }
            }
            tracing::info!(
                replica = %state.shown_url,
                version = v,
                behind = state.primary_version.map_or(0, |p| p.saturating_sub(v)),
                "routes read from the replica; writes go to the primary"
            );
            Ok((v, loaded, state))
        }
        Err(e) if config.read_fallback_after.is_zero() => Err(DnsError::Store(e)),
        Err(e) => {
            let version = store.version().map_err(DnsError::Store)?;
            let loaded = store.load_routes().map_err(DnsError::Store)?;
            state.replica_failed(now);
            state.primary_seen(now, version);
            state.fall_back(
                now,
                format!(
                    "the replica cannot be read at start-up: {}",
                    lars_store::Chain(&e)
                ),
            );
            Ok((version, loaded, state))
        }
    }
}

fn status_handler(shared: Arc<Shared>, net: Arc<NetStats>, http: &Arc<HttpStats>) -> HttpHandler {
    let http = Arc::clone(http);
    let stats = move || DnsStats {
        http: http.snapshot(),
        ..shared.stats(&net)
    };
    Arc::new(move |req| {
        if req.method != "GET" {
            return HttpResponse::bad_request("only GET\n").status(405);
        }
        match req.path.as_str() {
            "/status" => {
                let s = stats();
                match serde_json::to_string_pretty(&s) {
                    Ok(body) => HttpResponse::json(body + "\n"),
                    Err(e) => HttpResponse::text(format!("{e}\n")).status(500),
                }
            }
            "/metrics" => {
                let mut r = HttpResponse::text(stats::prometheus(&stats()));
                r.content_type = "text/plain; version=0.0.4; charset=utf-8".into();
                r
            }
            _ => HttpResponse::not_found(),
        }
    })
}
