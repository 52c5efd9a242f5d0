//! What `/status` and `/metrics` show.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use lars_net::ConnLimitStats;
use lars_net::http::PromText;

use serde::Serialize;

use crate::replica::{ReadState, Source};

/// A point-in-time view of the dns (the `/status` JSON body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DnsStats {
    /// The store's `RouteVersion` of the table being served.
    pub route_version: u64,
    /// Keys in the table being served.
    pub keys: usize,
    /// Hosts in the table being served (over all keys).
    pub hosts: usize,
    /// TCP connections open now.
    pub connections: u64,
    /// What the TCP server's connection limits did (`[reactor] maxConn`,
    /// `maxConnPerPeer`, `idleTimeout`, `frameTimeout`).
    pub tcp_limits: ConnLimitStats,
    /// What the status HTTP server (`[http]`) answered and refused, by reason.
    pub http: lars_net::http::HttpStatsSnapshot,
    /// Connections subscribed to at least one key.
    pub subscribed_connections: usize,
    /// Keys with at least one subscriber.
    pub subscribed_keys: usize,
    /// `GetRouteRequest`s answered.
    pub requests: u64,
    /// `GetRouteRequest`s whose body did not decode (skipped).
    pub bad_requests: u64,
    /// `UnsubscribeRoute`s (ours, msgid 101) that dropped a subscription.
    pub unsubscribes: u64,
    /// Requests answered without subscribing: the connection held the most
    /// subscriptions to keys without hosts (`[dns] max_unhosted_subscriptions`).
    pub unhosted_refused: u64,
    /// `GetRouteResponse`s pushed to subscribers after a change.
    pub pushes: u64,
    /// Table swaps that changed something, start-up load included.
    pub reloads: u64,
    /// When the table was last (re)loaded from the store, unix seconds.
    pub last_reload_unix: Option<u64>,
    /// The store's health as the reloader sees it.
    pub store: StoreHealth,
    /// Where the routes are read from, and the replica's lag as seen.
    pub reads: ReadStats,
}

/// Where the routes are read from (`[store] read_url`), and the replica's
/// lag as the reloader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ReadStats {
    /// `"primary"` (no replica configured, or fallen back) or `"replica"`.
    pub reading: &'static str,
    /// The replica's URL (password redacted); `None`: none configured.
    pub replica_url: Option<String>,
    /// The replica's `RouteVersion` at its last answer.
    pub replica_version: Option<u64>,
    /// The primary's `RouteVersion` at its last check (every
    /// `reload_interval` while the replica is read, every round while the
    /// primary is).
    pub primary_version: Option<u64>,
    /// The primary's version minus the replica's, as last seen (0: caught
    /// up or unknown).
    pub version_behind: u64,
    /// How long the replica's version has been below the primary's, seconds
    /// (0: not behind).
    pub behind_secs: u64,
    /// Seconds since the replica last answered (`None`: never did).
    pub replica_last_ok_age_secs: Option<u64>,
    /// Versions older than the one served, answered by a store and ignored.
    pub stale_reads: u64,
    /// Times the reads turned to the primary.
    pub fallbacks: u64,
    /// Why the reads are on the primary while a replica is configured.
    pub fallback_reason: Option<String>,
}

impl Default for ReadStats {
    fn default() -> Self {
        Self {
            reading: "primary",
            replica_url: None,
            replica_version: None,
            primary_version: None,
            version_behind: 0,
            behind_secs: 0,
            replica_last_ok_age_secs: None,
            stale_reads: 0,
            fallbacks: 0,
            fallback_reason: None,
        }
    }
}

impl ReadStats {
    /// The view of `r` at `now`.
    pub(crate) fn of(r: &ReadState, now: Instant) -> Self {
        let age = |t: Instant| now.saturating_duration_since(t).as_secs();
        Self {
            reading: match r.source {
                Source::Primary => "primary",
                Source::Replica => "replica",
            },
            replica_url: Some(r.shown_url.clone()),
            replica_version: r.replica_version,
            primary_version: r.primary_version,
            version_behind: match (r.primary_version, r.replica_version) {
                (Some(p), Some(v)) => p.saturating_sub(v),
                _ => 0,
            },
            behind_secs: r.behind_since().map_or(0, age),
            replica_last_ok_age_secs: r.last_ok.map(age),
            stale_reads: r.stale_reads,
            fallbacks: r.fallbacks,
            fallback_reason: r.fallback_reason.clone(),
        }
    }
}

/// The store's health as the reloader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StoreHealth {
    /// False while store reads fail, and while a store round has been in
    /// flight longer than `[dns] store_stall_timeout` (the database is not
    /// answering); the last good table is served meanwhile.
    pub healthy: bool,
    /// Seconds since the last store round that succeeded (a version poll or
    /// a reload; the start-up load counts).
    pub last_ok_age_secs: u64,
    /// How long the store round in progress has been running, seconds (0:
    /// none in progress).
    pub round_in_flight_secs: u64,
    /// Store rounds that stayed in flight longer than `store_stall_timeout`
    /// (each counted once).
    pub stalls: u64,
    /// When the current state began, unix seconds.
    pub since_unix: u64,
    /// Failed store rounds since start-up.
    pub failures: u64,
    /// The last error while failing.
    pub last_error: Option<String>,
}

pub(crate) use lars_core::time::unix_secs;

/// Watches the reloader's store rounds: when the one in progress began,
/// when one last succeeded, and whether one has stalled (in flight longer
/// than `[dns] store_stall_timeout`). A stalled round is logged and counted
/// once, when `/status` or `/metrics` first sees it or when it ends,
/// whichever comes first.
#[derive(Debug)]
pub(crate) struct StoreWatch {
    state: Mutex<WatchState>,
}

#[derive(Debug)]
struct WatchState {
    stall_after: Duration,
    round_since: Option<Instant>,
    last_ok: Instant,
    stalls: u64,
    stall_reported: bool,
}

impl Default for StoreWatch {
    fn default() -> Self {
        Self {
            state: Mutex::new(WatchState {
                stall_after: DEFAULT_STORE_STALL_TIMEOUT,
                round_since: None,
                last_ok: Instant::now(),
                stalls: 0,
                stall_reported: false,
            }),
        }
    }
}

/// The default of `[dns] store_stall_timeout`.
pub(crate) const DEFAULT_STORE_STALL_TIMEOUT: Duration = Duration::from_secs(15);

impl StoreWatch {
    fn state(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the stall bound (`[dns] store_stall_timeout`).
    pub(crate) fn set_stall_after(&self, d: Duration) {
        self.state().stall_after = d;
    }

    /// A store round begins.
    pub(crate) fn begin(&self, now: Instant) {
        let mut s = self.state();
        s.round_since = Some(now);
        s.stall_reported = false;
    }

    /// The round begun last ended, successfully or not.
    pub(crate) fn end(&self, now: Instant, ok: bool) {
        let mut s = self.state();
        if let Some(since) = s.round_since.take() {
            s.report_stall(now.saturating_duration_since(since));
        }
        if ok {
            s.last_ok = now;
        }
    }

    /// Fills the watch's part of `h` at `now`: ages, stalls, and health
    /// false while the round in flight is past the bound.
    pub(crate) fn apply(&self, h: &mut StoreHealth, now: Instant) {
        let mut s = self.state();
        let in_flight = s
            .round_since
            .map(|since| now.saturating_duration_since(since));
        if let Some(age) = in_flight {
            if s.report_stall(age) {
                h.healthy = false;
                h.last_error = Some(format!(
                    "a store round has been in flight for {:.1} s",
                    age.as_secs_f64()
                ));
            }
        }
        h.round_in_flight_secs = in_flight.unwrap_or_default().as_secs();
        h.last_ok_age_secs = now.saturating_duration_since(s.last_ok).as_secs();
        h.stalls = s.stalls;
    }
}

impl WatchState {
    /// Whether a round `age` old is stalled; counts and logs it the first
    /// time.
    fn report_stall(&mut self, age: Duration) -> bool {
        if age <= self.stall_after {
            return false;
        }
        if !self.stall_reported {
            self.stall_reported = true;
            self.stalls += 1;
            tracing::warn!(
                secs = age.as_secs(),
                "a store round has been in flight longer than store_stall_timeout ({:.1} s): \
                 the database is not answering; serving the last good table",
                self.stall_after.as_secs_f64()
            );
        }
        true
    }
}

/// The Prometheus text exposition of `s`.
pub(crate) fn prometheus(s: &DnsStats) -> String {
    let mut out = PromText::default();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        out.metric(name, kind, help, value);
    };
    metric(
        "lars_dns_route_version",
        "gauge",
        "RouteVersion of the table being served.",
        s.route_version,
    );
    metric(
        "lars_dns_route_keys",
        "gauge",
        "Keys in the table being served.",
        s.keys as u64,
    );
    metric(
        "lars_dns_route_hosts",
        "gauge",
        "Hosts in the table being served.",
        s.hosts as u64,
    );
    metric(
        "lars_dns_connections",
        "gauge",
        "TCP connections open.",
        s.connections,
    );
    metric(
        "lars_dns_subscribed_connections",
        "gauge",
        "Connections subscribed to at least one key.",
        s.subscribed_connections as u64,
    );
    metric(
        "lars_dns_subscribed_keys",
        "gauge",
        "Keys with at least one subscriber.",
        s.subscribed_keys as u64,
    );
    metric(
        "lars_dns_requests_total",
        "counter",
        "GetRouteRequests answered.",
        s.requests,
    );
    metric(
        "lars_dns_bad_requests_total",
        "counter",
        "GetRouteRequests whose body did not decode.",
        s.bad_requests,
    );
    metric(
        "lars_dns_unsubscribes_total",
        "counter",
        "UnsubscribeRoutes (msgid 101) that dropped a subscription.",
        s.unsubscribes,
    );
    metric(
        "lars_dns_unhosted_subscriptions_refused_total",
        "counter",
        "Requests for keys without hosts answered without subscribing (per-connection limit).",
        s.unhosted_refused,
    );
    metric(
        "lars_dns_pushes_total",
        "counter",
        "GetRouteResponses pushed to subscribers.",
        s.pushes,
    );
    metric(
        "lars_dns_reloads_total",
        "counter",
        "Route table swaps that changed something.",
        s.reloads,
    );
    metric(
        "lars_dns_last_reload_timestamp_seconds",
        "gauge",
        "Unix time of the last successful load from the store.",
        s.last_reload_unix.unwrap_or(0),
    );
    metric(
        "lars_dns_store_up",
        "gauge",
        "1 while store reads succeed, 0 while the last good table is served.",
        u64::from(s.store.healthy),
    );
    metric(
        "lars_dns_store_failures_total",
        "counter",
        "Failed store rounds.",
        s.store.failures,
    );
    metric(
        "lars_dns_store_last_ok_age_seconds",
        "gauge",
        "Seconds since the last successful store round (version poll or reload).",
        s.store.last_ok_age_secs,
    );
    metric(
        "lars_dns_store_round_in_flight_seconds",
        "gauge",
        "Age of the store round in progress (0: none).",
        s.store.round_in_flight_secs,
    );
    metric(
        "lars_dns_store_stalls_total",
        "counter",
        "Store rounds in flight longer than store_stall_timeout.",
        s.store.stalls,
    );
    metric(
        "lars_dns_store_reading_replica",
        "gauge",
        "1 while the routes are read from the replica ([store] read_url), 0 from the primary.",
        u64::from(s.reads.reading == "replica"),
    );
    metric(
        "lars_dns_replica_version_behind",
        "gauge",
        "The primary's RouteVersion minus the replica's, as last seen.",
        s.reads.version_behind,
    );
    metric(
        "lars_dns_replica_behind_seconds",
        "gauge",
        "How long the replica's RouteVersion has been below the primary's (0: not behind).",
        s.reads.behind_secs,
    );
    metric(
        "lars_dns_replica_last_ok_age_seconds",
        "gauge",
        "Seconds since the replica last answered (0 when none is configured).",
        s.reads.replica_last_ok_age_secs.unwrap_or(0),
    );
    metric(
        "lars_dns_stale_reads_total",
        "counter",
        "Route versions older than the one served, answered by a store and ignored.",
        s.reads.stale_reads,
    );
    metric(
        "lars_dns_read_fallbacks_total",
        "counter",
        "Times the route reads turned from the replica to the primary.",
        s.reads.fallbacks,
    );
    s.tcp_limits.prometheus("lars_dns", &mut out);
    s.http.prometheus("lars_dns", &mut out);
    out.into_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_lines_are_well_formed() {
        let s = DnsStats {
            route_version: 7,
            keys: 2,
            hosts: 5,
            connections: 3,
            tcp_limits: ConnLimitStats::default(),
            http: Default::default(),
            subscribed_connections: 1,
            subscribed_keys: 1,
            requests: 10,
            bad_requests: 0,
            unsubscribes: 0,
            unhosted_refused: 0,
            pushes: 4,
            reloads: 2,
            last_reload_unix: Some(1_700_000_000),
            store: StoreHealth {
                healthy: false,
                since_unix: 1,
                failures: 3,
                last_error: Some("down".into()),
                last_ok_age_secs: 12,
                round_in_flight_secs: 11,
                stalls: 1,
            },
            reads: ReadStats {
                reading: "replica",
                stale_reads: 3,
                ..ReadStats::default()
            },
        };
        let text = prometheus(&s);
        assert!(text.contains("\nlars_dns_store_reading_replica 1\n"));
        assert!(text.contains("\nlars_dns_stale_reads_total 3\n"));
        assert!(text.contains("\nlars_dns_route_version 7\n"));
        assert!(text.contains("\nlars_dns_store_up 0\n"));
        assert!(text.contains("\nlars_dns_store_last_ok_age_seconds 12\n"));
        assert!(text.contains("\nlars_dns_store_stalls_total 1\n"));
        assert!(text.contains("# TYPE lars_dns_requests_total counter\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.split_once(' ').unwrap();
            assert!(name.starts_with("lars_dns_"), "{line}");
            value.parse::<u64>().unwrap();
        }
    }

    #[test]
    fn a_round_past_the_bound_is_unhealthy_and_counted_once() {
        let w = StoreWatch::default();
        w.set_stall_after(Duration::from_secs(10));
        let t0 = Instant::now();
        let health = |now| {
            let mut h = StoreHealth {
                healthy: true,
                since_unix: 0,
                failures: 0,
                last_error: None,
                last_ok_age_secs: 0,
                round_in_flight_secs: 0,
                stalls: 0,
            };
            w.apply(&mut h, now);
            h
        };
        w.begin(t0);
        let h = health(t0 + Duration::from_secs(5));
        assert!(h.healthy);
        assert_eq!((h.round_in_flight_secs, h.stalls), (5, 0));
        let h = health(t0 + Duration::from_secs(11));
        assert!(!h.healthy && h.last_error.is_some());
        assert_eq!((h.round_in_flight_secs, h.stalls), (11, 1));
        let h = health(t0 + Duration::from_secs(30));
        assert_eq!((h.last_ok_age_secs, h.stalls), (30, 1), "counted once");
        w.end(t0 + Duration::from_secs(31), true);
        let h = health(t0 + Duration::from_secs(32));
        assert!(h.healthy);
        assert_eq!(
            (h.round_in_flight_secs, h.last_ok_age_secs, h.stalls),
            (0, 1, 1)
        );
        // A long round nobody looked at is counted when it ends.
        w.begin(t0 + Duration::from_secs(40));
        w.end(t0 + Duration::from_secs(60), false);
        assert_eq!(health(t0 + Duration::from_secs(61)).stalls, 2);
    }
}
