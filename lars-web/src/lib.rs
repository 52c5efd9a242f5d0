//! The lars web console: a server-rendered web application (and the JSON REST
//! API behind it) to register modids and cmdids, edit their routes, and see
//! route versions, pending changes and call status, over the same store as
//! the lars services.
//!
//! Every route change goes through [`lars_store::RouteAdmin`] (one
//! transaction writing the routes, a new `RouteVersion` and `RouteChange`
//! rows), so the dns pushes it to agents within seconds. Users log in with a
//! name and an argon2-hashed password (table `lars_users`); the browser never
//! sees database credentials. Sessions live in memory and travel in an
//! `HttpOnly`, `SameSite=Strict` cookie; every form carries a CSRF token. The
//! JSON API accepts the session cookie plus an `X-CSRF-Token` header, or a
//! bearer token from `POST /api/login`. See `docs/web.md` for the API.
//!
//! Principal types:
//! - [`WebConfig`]: where to listen and how cookies and sessions behave.
//! - [`serve`] starts the console on its own thread and returns a
//!   [`WebHandle`] (its [`local_addr`](WebHandle::local_addr), and
//!   [`stop`](WebHandle::stop) which joins).
//! - [`add_user`] creates a console user (the `lars web add-user` command).
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = lars_store::open(&format!("sqlite://{}/lars.db", dir.path().display()))?;
//! lars_web::add_user(&store, "admin", "correct horse battery staple")?;
//!
//! let config = lars_web::WebConfig {
//!     addr: "127.0.0.1:0".parse()?, // any free port
//!     ..lars_web::WebConfig::default()
//! };
//! let web = lars_web::serve(config, store)?;
//! println!("console on http://{}", web.local_addr());
//! web.stop();
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]
// Handlers return a ready `Response` as the error of their small parsing
// helpers; boxing it would only add noise.
#![allow(clippy::result_large_err)]

mod api;
mod app;
mod auth;
mod pages;
mod session;
mod validate;
mod views;

use std::net::{SocketAddr, TcpListener};
use std::thread::JoinHandle;
use std::time::Duration;

use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use lars_store::{Store, StoreError, UserStore};
use tokio::sync::watch;

/// The console's default listen address, as the issue asks: loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";

/// How the console listens and keeps sessions.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Listen address (default `127.0.0.1:8080`; port 0 picks a free one).
    pub addr: SocketAddr,
    /// Whether the session cookie carries the `Secure` flag (default true).
    /// Browsers accept secure cookies over plain http on `127.0.0.1` and
    /// `localhost` (both count as secure contexts); turn it off only when the
    /// console is reached over plain http on another host name.
    pub secure_cookies: bool,
    /// How long a logged-in session stays valid without a request (default
    /// 12 hours).
    pub session_idle: Duration,
    /// Upper bound on live sessions (default 10 000); beyond it the oldest
    /// anonymous (not logged in) sessions are dropped first.
    pub max_sessions: usize,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            // The literal is a valid socket address.
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            secure_cookies: true,
            session_idle: Duration::from_secs(12 * 3600),
            max_sessions: 10_000,
        }
    }
}

/// Why the console could not start, or a user could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server's runtime or thread could not be created.
    #[error("cannot start the web server: {0}")]
    Runtime(std::io::Error),
    /// A store operation failed (for example the user name is taken).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A user name or password is not acceptable.
    #[error("invalid user: {0}")]
    InvalidUser(String),
    /// The password could not be hashed.
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// The running console. [`stop`](WebHandle::stop) (or dropping the handle)
/// shuts it down and joins its thread.
#[derive(Debug)]
pub struct WebHandle {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl WebHandle {
    /// The address the console listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in flight finish (at most a few
    /// seconds), and joins the server thread.
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
    let router = app::router(app::AppState::new(config, store));
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
        })
        .map_err(WebError::Runtime)?;
    tracing::info!(%addr, "web console listening");
    Ok(WebHandle {
        addr,
        shutdown,
        thread: Some(thread),
    })
}

/// Creates a console user with an argon2id hash of `password`
/// (the `lars web add-user` command). Names are 1..=190 bytes without
/// control characters; passwords at least 8 characters.
pub fn add_user(store: &Store, name: &str, password: &str) -> Result<(), WebError> {
    let name = validate::user_name(name).map_err(WebError::InvalidUser)?;
    if password.chars().count() < 8 {
        return Err(WebError::InvalidUser(
            "the password must have at least 8 characters".into(),
        ));
    }
    let hash = hash_password(password)?;
    store.create_user(name, &hash)?;
    Ok(())
}

/// An argon2id PHC string of `password` with a fresh random salt.
pub(crate) fn hash_password(password: &str) -> Result<String, WebError> {
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| WebError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `hash`; false for a malformed
/// hash.
pub(crate) fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}
