//! [`WebConfig`]: where the console listens, how it keeps sessions, and the
//! limits that keep it serving under a flood of logins.

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
    /// Host names (besides IP literals and `localhost`) the console answers
    /// to in the `Host` header; anything else is refused with 421 (DNS
    /// rebinding). `name` allows that name on any port, `name:port` only
    /// on that port. Default empty.
    pub allowed_hosts: Vec<String>,
    /// Password checks (argon2, ~19 MiB each) running at once (default 2,
    /// at least 1). Each runs on one of this many dedicated threads.
    pub max_password_checks: usize,
    /// How long a login waits for a free password check before it is
    /// answered 503 `busy` with `Retry-After` (default 1 s).
    pub password_check_wait: Duration,
    /// Backoff after failed logins, per user name and client address.
    pub login_throttle: LoginThrottle,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            // The literal is a valid socket address.
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            secure_cookies: true,
            session_idle: Duration::from_secs(12 * 3600),
            max_sessions: 10_000,
            allowed_hosts: Vec::new(),
            max_password_checks: 2,
            password_check_wait: Duration::from_secs(1),
            login_throttle: LoginThrottle::default(),
        }
    }
}

/// The login backoff: failed logins are counted per (user name, client
/// address; an IPv6 client by its /64). After `free_failures` failures each
/// further failure blocks that pair for `first_backoff`, doubling up to
/// `max_backoff`. The same name from another address is not affected. An
/// entry is forgotten when it has been quiet for `max_backoff` after its
/// block ended, or when a login of that pair succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginThrottle {
    /// Failures before the first block (default 5).
    pub free_failures: u32,
    /// The first block (default 1 s).
    pub first_backoff: Duration,
    /// The longest block (default 15 min).
    pub max_backoff: Duration,
    /// Most (name, address) pairs remembered (default 10 000); when full,
    /// expired entries go first, then the least recently failed.
    pub max_entries: usize,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self {
            free_failures: 5,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(15 * 60),
            max_entries: 10_000,
        }
    }
}
