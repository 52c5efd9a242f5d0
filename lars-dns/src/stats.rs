//! What `/status` and `/metrics` show.

use lars_net::ConnLimitStats;
use lars_net::http::PromText;

use serde::Serialize;

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
    /// subscriptions to keys without hosts (10,000).
    pub unhosted_refused: u64,
    /// `GetRouteResponse`s pushed to subscribers after a change.
    pub pushes: u64,
    /// Table swaps that changed something, start-up load included.
    pub reloads: u64,
    /// When the table was last (re)loaded from the store, unix seconds.
    pub last_reload_unix: Option<u64>,
    /// The store's health as the reloader sees it.
    pub store: StoreHealth,
}

/// The store's health as the reloader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StoreHealth {
    /// False while store reads fail (the last good table is served).
    pub healthy: bool,
    /// When the current state began, unix seconds.
    pub since_unix: u64,
    /// Failed store rounds since start-up.
    pub failures: u64,
    /// The last error while failing.
    pub last_error: Option<String>,
}

pub(crate) use lars_core::time::unix_secs;

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
    s.tcp_limits.prometheus("lars_dns", &mut out);
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
            },
        };
        let text = prometheus(&s);
        assert!(text.contains("\nlars_dns_route_version 7\n"));
        assert!(text.contains("\nlars_dns_store_up 0\n"));
        assert!(text.contains("# TYPE lars_dns_requests_total counter\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.split_once(' ').unwrap();
            assert!(name.starts_with("lars_dns_"), "{line}");
            value.parse::<u64>().unwrap();
        }
    }
}
