//! [`serve`]: the console on its own thread and tokio runtime, and the
//! [`WebHandle`] that stops it; [`serve_https`]: the same over TLS.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use lars_net::ServerTls;
use lars_store::Store;
use tokio::sync::{mpsc, watch};

use crate::app;
use crate::config::WebConfig;
use crate::error::WebError;
use crate::state::AppState;
use crate::stats::WebStats;

/// The running console. [`stop`](WebHandle::stop) (or dropping the handle)
/// shuts it down and joins its thread.
#[derive(Debug)]
pub struct WebHandle {
    addr: SocketAddr,
    state: AppState,
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl WebHandle {
    /// The address the console listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The console's counters (logins refused as busy or throttled, `Host`
    /// headers refused, ...), as `GET /api/stats` shows them.
    pub fn stats(&self) -> WebStats {
        self.state.stats()
    }

    /// Stops accepting, lets requests in flight finish (at most a few
    /// seconds), and joins the server thread and the password check
    /// threads.
    pub fn stop(mut self) {
        self.shutdown_and_join();
    }

    /// Blocks until the server ends by itself (it only ends after a stop or a
    /// fatal error); for binaries that serve until killed.
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("web server thread panicked");
            }
        }
    }

    fn shutdown_and_join(&mut self) {
        self.shutdown.send_replace(true);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("web server thread panicked");
            }
        }
    }
}

impl Drop for WebHandle {
    fn drop(&mut self) {
        self.shutdown_and_join();
    }
}

/// The console's certificate and key (PEM) for HTTPS: `lars web --tls-cert
/// --tls-key`, the same files as the dns' and reporter's `[tls]`. They are
/// reloaded with every TLS configuration of the process by
/// `lars_net::reload_tls` (SIGHUP in `lars web`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebTls {
    /// The certificate chain (PEM).
    pub cert: PathBuf,
    /// The private key (PEM).
    pub key: PathBuf,
}

/// A TLS handshake must finish within this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS connections whose handshake is done, waiting for the server to take
/// them.
const HANDSHAKEN_QUEUE: usize = 64;

/// Starts the console on `config.addr` over `store`, on its own thread with a
/// two-worker tokio runtime; returns once the socket is bound.
pub fn serve(config: WebConfig, store: Store) -> Result<WebHandle, WebError> {
    start(config, store, None)
}

/// [`serve`] over HTTPS: the certificate and key are loaded now (a bad file
/// is an error naming it), handshakes run beside the server (a slow one
/// holds no one else up, and is cut after 10 s).
pub fn serve_https(config: WebConfig, store: Store, tls: &WebTls) -> Result<WebHandle, WebError> {
    let tls = ServerTls::from_pem_files(&tls.cert, &tls.key).map_err(|e| {
        WebError::Runtime(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            e.to_string(),
        ))
    })?;
    start(config, store, Some(tls))
}

/// A listener that hands axum TLS streams whose handshake is done.
struct HttpsListener {
    ready: mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        SocketAddr,
    )>,
    addr: SocketAddr,
}

impl axum::serve::Listener for HttpsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task ended (the runtime is stopping).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// Accepts TCP connections and runs each TLS handshake in a task of its
/// own, passing the finished ones to the server.
async fn accept_tls(
    listener: tokio::net::TcpListener,
    tls: ServerTls,
    ready: mpsc::Sender<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        SocketAddr,
    )>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("web console: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // The configuration of the moment: a reload applies to the next
        // handshake.
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
        let ready = ready.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = ready.send((stream, peer)).await;
                }
                Ok(Err(e)) => tracing::info!("web console: TLS handshake from {peer} failed: {e}"),
                Err(_) => tracing::info!(
                    "web console: TLS handshake from {peer} not done within {HANDSHAKE_TIMEOUT:?}"
                ),
            }
        });
    }
}

fn start(config: WebConfig, store: Store, tls: Option<ServerTls>) -> Result<WebHandle, WebError> {
    let listener = TcpListener::bind(config.addr).map_err(|source| WebError::Bind {
        addr: config.addr,
        source,
    })?;
    let addr = listener.local_addr().map_err(WebError::Runtime)?;
    listener.set_nonblocking(true).map_err(WebError::Runtime)?;
    let https = tls.is_some();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .thread_name("lars-web")
        .enable_all()
        .build()
        .map_err(WebError::Runtime)?;
    let (shutdown, mut rx) = watch::channel(false);
    let state = AppState::new(config, store, addr).map_err(WebError::Runtime)?;
    let checker = std::sync::Arc::clone(state.console().checker());
    let router = app::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let thread = std::thread::Builder::new()
        .name("lars-web".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("web listener: {e}");
                        return;
                    }
                };
                let mut graceful_rx = rx.clone();
                let graceful = async move {
                    let _ = graceful_rx.wait_for(|stop| *stop).await;
                };
                let server = match tls {
                    None => {
                        Box::pin(axum::serve(listener, router).with_graceful_shutdown(graceful).into_future())
                            as std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>
                    }
                    Some(tls) => {
                        let (tx, ready) = mpsc::channel(HANDSHAKEN_QUEUE);
                        tokio::spawn(accept_tls(listener, tls, tx));
                        let https = HttpsListener { ready, addr };
                        use axum::serve::ListenerExt as _;
                        // tap_io: axum gives a tapped listener's streams
                        // their SocketAddr as ConnectInfo.
                        Box::pin(
                            axum::serve(https.tap_io(|_| ()), router)
                                .with_graceful_shutdown(graceful)
                                .into_future(),
                        )
                    }
                };
                // Bounds the graceful phase: idle keep-alive connections must
                // not hold the stop forever.
                let deadline = async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                    tokio::time::sleep(Duration::from_secs(3)).await;
                };
                tokio::select! {
                    r = server => if let Err(e) = r {
                        tracing::error!("web server: {e}");
                    },
                    () = deadline => tracing::warn!("web server: connections still open at stop, closing"),
                }
            });
            runtime.shutdown_timeout(Duration::from_secs(2));
            checker.stop();
        })
        .map_err(WebError::Runtime)?;
    tracing::info!(%addr, https, "web console listening");
    Ok(WebHandle {
        addr,
        state,
        shutdown,
        thread: Some(thread),
    })
}
