//! The console's use-cases, written once for the HTML pages and the JSON
//! API: each takes typed values (path segments already parsed by
//! [`crate::extract`]) or what the user typed ([`crate::input`]), runs its
//! store calls on tokio's blocking pool, and returns a typed result or a
//! [`ConsoleError`]. Nothing here knows about HTTP, HTML or JSON.
//!
//! One file per area, like the pages and the API: [`routes`],
//! [`descriptions`], [`status`], [`users`]; the overview and the versions
//! are here.

pub(crate) mod checker;
pub(crate) mod descriptions;
pub(crate) mod routes;
pub(crate) mod status;
mod throttle;
pub(crate) mod users;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use lars_core::ModKey;
use lars_store::{
    CallStatusRow, DescKind, Descriptions, RouteAdmin, RouteChange, RouteFilter, RouteRead,
    StatsStore, Store,
};

use crate::config::WebConfig;
use crate::error::ConsoleError;
use crate::stats::{Counters, LogGate, WebStats};
use checker::Checker;
use throttle::Throttle;

/// The use-cases over one store (cheap to clone).
#[derive(Debug, Clone)]
pub(crate) struct Console {
    store: Store,
    throttle: Arc<Throttle>,
    checker: Arc<Checker>,
    counters: Arc<Counters>,
    /// One warning per period for logins refused as busy.
    busy_log: Arc<LogGate>,
}

/// What the overview shows.
#[derive(Debug, Clone)]
pub(crate) struct Overview {
    pub version: u64,
    pub pending_changes: usize,
    pub keys: usize,
    pub hosts: usize,
    pub mods: usize,
    pub cmds: usize,
    /// The latest status rows that say overloaded.
    pub overloaded: Vec<CallStatusRow>,
}

/// The route version and the `RouteChange` rows the dns has not handled yet.
#[derive(Debug, Clone)]
pub(crate) struct Versions {
    pub version: u64,
    /// Oldest first.
    pub changes: Vec<RouteChange>,
}

impl Console {
    /// The use-cases over `store` with `config`'s login limits; starts the
    /// password check threads.
    pub(crate) fn new(store: Store, config: &WebConfig) -> std::io::Result<Self> {
        Ok(Self {
            store,
            throttle: Arc::new(Throttle::new(config.login_throttle)),
            checker: Arc::new(Checker::start(
                config.max_password_checks,
                config.password_check_wait,
            )?),
            counters: Arc::new(Counters::default()),
            busy_log: Arc::new(LogGate::new(std::time::Duration::from_secs(10))),
        })
    }

    /// The password check threads (stopped and joined when the console
    /// stops).
    pub(crate) fn checker(&self) -> &Arc<Checker> {
        &self.checker
    }

    /// The counters.
    pub(crate) fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// The counters as a snapshot, with `sessions` live sessions.
    pub(crate) fn stats(&self, sessions: usize) -> WebStats {
        let c = &self.counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        WebStats {
            logins_ok: get(&c.logins_ok),
            logins_failed: get(&c.logins_failed),
            logins_throttled: get(&c.logins_throttled),
            logins_busy: get(&c.logins_busy),
            hosts_rejected: get(&c.hosts_rejected),
            throttle_entries: self.throttle.len() as u64,
            sessions: sessions as u64,
        }
    }

    /// Runs blocking store work on tokio's blocking pool.
    async fn run<T, F>(&self, f: F) -> Result<T, ConsoleError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, ConsoleError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| ConsoleError::Internal(format!("store task failed: {e}")))?
    }

    /// Versions, counts and the overloaded hosts.
    pub(crate) async fn overview(&self) -> Result<Overview, ConsoleError> {
        self.run(|st| {
            let routes = st.list_routes(RouteFilter::default())?;
            let keys: BTreeSet<ModKey> = routes.iter().map(|r| r.key).collect();
            Ok(Overview {
                version: st.version()?,
                pending_changes: st.pending_changes()?.len(),
                keys: keys.len(),
                hosts: routes.len(),
                mods: st.descriptions(DescKind::Mod, None)?.len(),
                cmds: st.descriptions(DescKind::Cmd, None)?.len(),
                overloaded: st
                    .call_status(None)?
                    .into_iter()
                    .filter(|r| r.overload)
                    .collect(),
            })
        })
        .await
    }

    /// The route version and the pending changes.
    pub(crate) async fn versions(&self) -> Result<Versions, ConsoleError> {
        self.run(|st| {
            Ok(Versions {
                version: st.version()?,
                changes: st.pending_changes()?,
            })
        })
        .await
    }
}
