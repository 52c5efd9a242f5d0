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
//! - [`add_user`] creates a console user (the `lars web add-user` command);
//!   [`set_password`] sets or resets one (`lars web set-password`).
//! - [`WebStats`]: what the console's limits turned away
//!   ([`WebHandle::stats`], `GET /api/stats`).
//!
//! Inside, each use-case (list routes, show a key, edit a host, save a
//! description, call status, log in, ...) is written once in `console` and
//! returns a typed result or a `ConsoleError`; `pages` renders it as HTML
//! and `api` as JSON, one small module per area, and `extract` parses the
//! key and host path segments once. `docs/web.md` maps the modules.
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

mod api;
mod app;
mod config;
mod console;
mod error;
mod extract;
#[doc(hidden)]
pub mod fuzzing;
mod input;
mod pages;
mod server;
mod session;
mod state;
mod stats;
mod validate;
mod views;

pub use config::{DEFAULT_ADDR, LoginThrottle, WebConfig};
pub use console::users::{PasswordSet, add_user, set_password};
pub use error::WebError;
pub use server::{WebHandle, WebTls, serve, serve_https};
pub use stats::WebStats;
