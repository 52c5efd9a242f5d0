//! [`AppState`]: what every handler shares (the use-cases, the sessions,
//! the config, the `Host` names the console answers to) and the session
//! cookie it sets.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::http::header;
use axum::response::Response;
use lars_store::Store;

use crate::config::WebConfig;
use crate::console::Console;
use crate::error::ConsoleError;
use crate::session::{SessionInfo, Sessions};
use crate::stats::{LogGate, WebStats};

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
    hosts: HostCheck,
    /// One warning per period for refused `Host` headers.
    host_log: LogGate,
}

impl AppState {
    /// The state of a console listening on `local` (the bound address, so
    /// port 0 is resolved); starts the password check threads.
    pub(crate) fn new(config: WebConfig, store: Store, local: SocketAddr) -> std::io::Result<Self> {
        Ok(Self {
            inner: Arc::new(Shared {
                console: Console::new(store, &config)?,
                sessions: Sessions::new(config.session_idle, config.max_sessions),
                hosts: HostCheck::new(local.port(), &config.allowed_hosts),
                host_log: LogGate::new(std::time::Duration::from_secs(10)),
                config,
            }),
        })
    }

    /// The use-cases.
    pub(crate) fn console(&self) -> &Console {
        &self.inner.console
    }

    pub(crate) fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    /// The counters.
    pub(crate) fn stats(&self) -> WebStats {
        self.console().stats(self.sessions().len())
    }

    /// `Ok` when the console answers to `host` (the request's `Host`
    /// header, `None` when it had none); else the 421 error, counted and
    /// logged (at most once per 10 s).
    pub(crate) fn check_host(&self, host: Option<&str>) -> Result<(), ConsoleError> {
        let hosts = &self.inner.hosts;
        if host.is_some_and(|h| hosts.allows(h)) {
            return Ok(());
        }
        let shown = host.unwrap_or("(none)");
        let total = crate::stats::Counters::bump(&self.console().counters().hosts_rejected);
        if self.inner.host_log.open(std::time::Instant::now()) {
            tracing::warn!(
                host = shown,
                refused_total = total,
                "refused a request for a host name the console does not answer to \
                 (add it with --allowed-host if it is yours)"
            );
        }
        Err(ConsoleError::Host(format!(
            "this console does not answer to the host name {shown:?} (DNS rebinding \
             protection): it answers to IP addresses and localhost on port {}, and to \
             the names configured as allowed hosts (lars web --allowed-host NAME)",
            hosts.port
        )))
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

/// The `Host` names the console answers to: any IP literal and `localhost`
/// on its own port (a DNS rebinding attack needs a name the attacker
/// controls, so IP literals are safe), plus the configured names.
#[derive(Debug, Clone)]
pub(crate) struct HostCheck {
    port: u16,
    /// Lower-case names, each with the only port it is allowed on (`None`:
    /// any).
    names: Vec<(String, Option<u16>)>,
}

/// `host[:port]` split, the name lower-cased without a trailing dot and
/// without the brackets of an IPv6 literal; `None` when malformed.
fn split_host(h: &str) -> Option<(String, Option<u16>)> {
    let h = h.trim();
    let (name, port) = if let Some(rest) = h.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (inside, port)
    } else {
        match h.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (h, None),
        }
    };
    let port = match port {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
        None => None,
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    (!name.is_empty()).then_some((name, port))
}

impl HostCheck {
    pub(crate) fn new(port: u16, allowed: &[String]) -> Self {
        let names = allowed
            .iter()
            .filter_map(|a| {
                let parsed = split_host(a);
                if parsed.is_none() {
                    tracing::warn!(host = a, "ignoring a malformed allowed host");
                }
                parsed
            })
            .collect();
        Self { port, names }
    }

    /// Whether a request with `Host: host` is for this console.
    pub(crate) fn allows(&self, host: &str) -> bool {
        let Some((name, port)) = split_host(host) else {
            return false;
        };
        // No port in the header means the scheme's default (http: 80).
        let on = |p: u16| port.unwrap_or(80) == p;
        if name == "localhost" || name.parse::<IpAddr>().is_ok() {
            return on(self.port);
        }
        self.names
            .iter()
            .any(|(n, p)| *n == name && p.is_none_or(on))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_the_console_answers_to() {
        let h = HostCheck::new(
            8080,
            &["Console.Example.com".into(), "proxy.example:8443".into()],
        );
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST:8080",
            "[::1]:8080",
            "10.1.2.3:8080",
            "console.example.com",
            "console.example.com.:9999",
            "proxy.example:8443",
        ] {
            assert!(h.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "evil.example",
            "127.0.0.1:8081",
            "localhost",
            "proxy.example:8080",
            "proxy.example",
            "127.0.0.1:",
            "[::1",
            "::1:8080",
            "",
            "localhost.evil.example:8080",
        ] {
            assert!(!h.allows(bad), "{bad}");
        }
        let on80 = HostCheck::new(80, &[]);
        assert!(on80.allows("localhost") && on80.allows("127.0.0.1"));
    }
}
