//! [`AppState`]: what every handler shares (the use-cases, the sessions,
//! the config) and the session cookie it sets.

use std::sync::Arc;

use axum::http::header;
use axum::response::Response;
use lars_store::Store;

use crate::config::WebConfig;
use crate::console::Console;
use crate::error::ConsoleError;
use crate::session::{SessionInfo, Sessions};

/// The session cookie's name.
pub(crate) const COOKIE: &str = "lars_session";

/// State shared by every handler: the use-cases, the sessions, the config.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    console: Console,
    sessions: Sessions,
    config: WebConfig,
}

impl AppState {
    pub(crate) fn new(config: WebConfig, store: Store) -> Self {
        Self {
            inner: Arc::new(Shared {
                console: Console::new(store),
                sessions: Sessions::new(config.session_idle, config.max_sessions),
                config,
            }),
        }
    }

    /// The use-cases.
    pub(crate) fn console(&self) -> &Console {
        &self.inner.console
    }

    pub(crate) fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    /// A new session (anonymous for `None`); an internal error when the OS
    /// has no randomness for its id.
    pub(crate) fn new_session(&self, user: Option<String>) -> Result<SessionInfo, ConsoleError> {
        self.sessions()
            .create(user)
            .ok_or_else(|| ConsoleError::Internal("no randomness for a session".into()))
    }

    /// Adds the `Set-Cookie` header carrying session `id` (or removing the
    /// cookie for `None`).
    pub(crate) fn set_cookie(&self, resp: &mut Response, id: Option<&str>) {
        let secure = if self.inner.config.secure_cookies {
            "; Secure"
        } else {
            ""
        };
        let value = match id {
            Some(id) => format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{secure}"),
            None => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
        };
        if let Ok(v) = value.parse() {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
}
