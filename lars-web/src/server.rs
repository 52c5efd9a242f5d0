//! [`serve`]: the console on its own thread and tokio runtime, and the
//! [`WebHandle`] that stops it.

use std::net::{SocketAddr, TcpListener};
use std::thread::JoinHandle;
use std::time::Duration;

use lars_store::Store;
use tokio::sync::watch;

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

/// Starts the console on `config.addr` over `store`, on its own thread with a
/// two-worker tokio runtime; returns once the socket is bound.
pub fn serve(config: WebConfig, store: Store) -> Result<WebHandle, WebError> {
    let listener = TcpListener::bind(config.addr).map_err(|source| WebError::Bind {
        addr: config.addr,
        source,
    })?;
    let addr = listener.local_addr().map_err(WebError::Runtime)?;
    listener.set_nonblocking(true).map_err(WebError::Runtime)?;
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
                let server = axum::serve(listener, router).with_graceful_shutdown(async move {
                    let _ = graceful_rx.wait_for(|stop| *stop).await;
                });
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
    tracing::info!(%addr, "web console listening");
    Ok(WebHandle {
        addr,
        state,
        shutdown,
        thread: Some(thread),
    })
}
