//! [`WebConfig`]: where the console listens and how it keeps sessions.

use std::net::SocketAddr;
use std::time::Duration;

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
