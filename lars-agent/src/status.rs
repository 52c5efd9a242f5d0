//! The `[http]` status pages: `GET /status`, `GET /routes?modid=&cmdid=`,
//! `GET /metrics`.
// An I/O shell: clock, threads and locks are its business (see clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use lars_core::ModKey;
use lars_lb::{HostState, HostView, LoadBalanceConfig, Policy, RouteStatus};
use lars_net::http::PromText;
use lars_net::http::{HttpHandler, HttpStats};
use lars_net::{HttpRequest, HttpResponse};
use serde_json::{Value, json};

use crate::core::AgentCore;
use crate::stats::AgentStats;

/// Where the pages read from: the shards' cores, the counters, the
/// addresses. The agent's shared state implements it; this module knows
/// nothing of shards' loops.
pub(crate) trait Shards: Send + Sync + 'static {
    /// The counters now.
    fn stats(&self) -> AgentStats;
    /// `f` on every shard's core (bounded wait).
    fn ask_all<T: Send + 'static>(
        &self,
        f: impl Fn(&AgentCore) -> T + Send + Sync + Clone + 'static,
    ) -> Vec<T>;
    /// `f` on the core of the shard owning `key` (bounded wait); `None` when
    /// the shard did not answer.
    fn ask<T: Send + 'static>(
        &self,
        key: ModKey,
        f: impl FnOnce(&AgentCore) -> T + Send + 'static,
    ) -> Option<T>;
    /// The agent's addresses.
    fn addrs(&self) -> Addrs;
    /// Datagrams the kernel dropped on the agent's UDP sockets (full
    /// receive buffers), when the kernel says.
    fn udp_drops(&self) -> Option<u64>;
}

/// The addresses an agent listens on and talks to.
#[derive(Debug, Clone)]
pub(crate) struct Addrs {
    pub(crate) udp: Vec<std::net::SocketAddrV4>,
    pub(crate) shards: usize,
    pub(crate) dns: crate::links::DnsStatus,
    /// Each reporter link: its address and whether it is connected.
    pub(crate) reporters: Vec<(std::net::SocketAddrV4, bool)>,
}

/// Per-shard gauges, computed on the shard's loop.
#[derive(Debug, Clone, Default)]
struct Gauges {
    keys: usize,
    unknown_keys: usize,
    idle: usize,
    overload: usize,
    pending_report_keys: usize,
    /// Per reporter link: (keys owned, keys pending, keys held).
    links: Vec<(usize, usize, usize)>,
}

fn gauges(shared: &impl Shards) -> Gauges {
    shared
        .ask_all(|core| {
            let r = core.routes();
            let mut g = Gauges {
                keys: r.len(),
                unknown_keys: r.empty_keys(),
                pending_report_keys: core.pending_report_keys(),
                links: core
                    .reporter_links()
                    .iter()
                    .map(|l| (l.keys, l.pending, l.held))
                    .collect(),
                ..Gauges::default()
            };
            for k in r.keys() {
                if let Some(lb) = r.lb(k) {
                    g.idle += lb.idle_len();
                    g.overload += lb.overload_len();
                }
            }
            g
        })
        .into_iter()
        .fold(Gauges::default(), |a, g| Gauges {
            keys: a.keys + g.keys,
            unknown_keys: a.unknown_keys + g.unknown_keys,
            idle: a.idle + g.idle,
            overload: a.overload + g.overload,
            pending_report_keys: a.pending_report_keys + g.pending_report_keys,
            links: (0..a.links.len().max(g.links.len()))
                .map(|i| {
                    let x = a.links.get(i).copied().unwrap_or_default();
                    let y = g.links.get(i).copied().unwrap_or_default();
                    (x.0 + y.0, x.1 + y.1, x.2 + y.2)
                })
                .collect(),
        })
}

pub(crate) fn handler(shared: Arc<impl Shards>, http: &Arc<HttpStats>) -> HttpHandler {
    let http = Arc::clone(http);
    Arc::new(move |req: &HttpRequest| {
        if req.method != "GET" {
            return HttpResponse::text("GET only\n").status(405);
        }
        match req.path.as_str() {
            "/status" => status(shared.as_ref(), &http),
            "/routes" => routes(shared.as_ref(), req),
            "/metrics" => metrics(shared.as_ref(), &http),
            _ => HttpResponse::not_found(),
        }
    })
}

fn status(shared: &impl Shards, http: &HttpStats) -> HttpResponse {
    let s = shared.stats();
    let g = gauges(shared);
    // What the shards' balancers were built with (every shard has the same).
    let lb = shared
        .ask_all(|core| core.routes().config().clone())
        .into_iter()
        .next();
    let addrs = shared.addrs();
    let body = json!({
        "policy": lb.as_ref().map(|c| c.policy.to_string()),
        "loadbalance": lb.as_ref().map(loadbalance_section),
        "udp": addrs.udp.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "udp_kernel_drops": shared.udp_drops(),
        "shards": addrs.shards,
        "keys": g.keys,
        "unknown_keys": g.unknown_keys,
        "unknown_keys_refused": s.unknown_keys_refused,
        "keys_expired": s.keys_expired,
        "hosts": { "idle": g.idle, "overload": g.overload },
        "requests": {
            "get_host": s.get_host,
            "get_host_succ": s.get_host_succ,
            "get_host_overload": s.get_host_overload,
            "get_host_noexist": s.get_host_noexist,
            "get_route": s.get_route,
            "garbage": s.garbage,
            "forwarded": s.forwarded,
        },
        "reports": s.reports,
        "transitions": s.transitions,
        "dns": {
            "addr": addrs.dns.current.or(addrs.dns.order.first().copied()).map(|a| a.to_string()),
            "addrs": addrs.dns.order.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "in_use": addrs.dns.current.map(|a| a.to_string()),
            "failovers": addrs.dns.failovers,
            "silences": addrs.dns.silences,
            "keepalives": addrs.dns.keepalives,
            "connected": s.dns_connected,
            "connects": s.dns_connects,
            "pulls": s.pulls,
            "unsubscribes": s.unsubscribes,
            "routes_applied": s.routes_applied,
            "routes_deleted": s.routes_deleted,
            "empty_routes_kept": s.empty_routes_kept,
        },
        "reporter": {
            "addr": addrs.reporters.first().map(|r| r.0.to_string()),
            "links": addrs.reporters.iter().enumerate().map(|(i, (addr, connected))| {
                let (keys, pending, held) = g.links.get(i).copied().unwrap_or_default();
                json!({
                    "addr": addr.to_string(),
                    "connected": connected,
                    "keys": keys,
                    "pending_keys": pending,
                    "held_keys": held,
                })
            }).collect::<Vec<_>>(),
            "handoffs": s.reporter_handoffs,
            "connected": s.reporter_connected,
            "connects": s.reporter_connects,
            "messages": s.report_messages,
            "pending_keys": g.pending_report_keys,
            "dropped_keys": s.report_keys_dropped,
            "counter_restarts": s.counter_restarts,
        },
        "links": {
            "connect_failures": s.link_connect_failures,
            "tls_failures": s.link_tls_failures,
        },
        "http": http.snapshot(),
    });
    HttpResponse::json(body.to_string())
}

/// The `[loadbalance]` section in use, keyed as in the conf file
/// (durations in seconds).
fn loadbalance_section(c: &LoadBalanceConfig) -> Value {
    let a = &c.adaptive;
    json!({
        "policy": c.policy.to_string(),
        "probe_num": c.probe_num,
        "init_succ_cnt": c.init_succ_cnt,
        "init_err_cnt": c.init_err_cnt,
        "err_rate": c.err_rate,
        "succ_rate": c.succ_rate,
        "contin_err_limit": c.contin_err_limit,
        "contin_succ_limit": c.contin_succ_limit,
        "window_err_rate": c.window_err_rate,
        "idle_timeout": c.idle_timeout.as_secs_f64(),
        "overload_timeout": c.overload_timeout.as_secs_f64(),
        "update_timeout": c.update_timeout.as_secs_f64(),
        "timecost_unit_ms": c.timecost_unit_ms,
        "empty_route_protection": c.empty_route_protection,
        "eject_consecutive": a.eject_consecutive,
        "outlier_significance": a.outlier_significance,
        "stats_half_life": a.stats_half_life.as_secs_f64(),
        "probe_interval": a.probe_interval.as_secs_f64(),
        "probe_interval_max": a.probe_interval_max.as_secs_f64(),
        "strike_forgive": a.strike_forgive.as_secs_f64(),
        "slow_start": a.slow_start.as_secs_f64(),
        "max_ejection_percent": a.max_ejection_percent,
        "latency_tolerance": a.latency_tolerance,
        "latency_half_life": a.latency_half_life.as_secs_f64(),
    })
}

/// Seconds, to the millisecond.
fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e3).round() / 1e3
}

/// One host of `/routes`: its state and counters, and its policy state as
/// seconds from `now`.
fn host_json(v: &HostView, cfg: &LoadBalanceConfig, totals: (u32, u32), now: Instant) -> Value {
    let c = v.counters;
    let from_now = |t: Instant| secs(t.saturating_duration_since(now));
    let next_probe = v.probe_at.map(from_now);
    // When an out-of-rotation host can be back at the earliest: classic, at
    // the end of its overload_timeout; adaptive, at its next probe (back if
    // the probe succeeds).
    let ejected_until = match (v.state, cfg.policy) {
        (HostState::Idle, _) => None,
        // (checked: a huge overload_timeout from the conf must not panic)
        (HostState::Overload, Policy::Classic) => {
            v.since.checked_add(cfg.overload_timeout).map(from_now)
        }
        (HostState::Overload, Policy::Adaptive) => next_probe,
    };
    json!({
        "host": v.addr.to_string(),
        "state": match v.state { HostState::Idle => "idle", HostState::Overload => "overload" },
        "since_s": secs(now.saturating_duration_since(v.since)),
        "ejected_until_s": ejected_until,
        "next_probe_s": next_probe,
        "latency_ms": v.latency_ms.map(|ms| (ms * 1e3).round() / 1e3),
        "weight": v.weight,
        "strikes": v.strikes,
        "vsucc": c.vsucc, "verr": c.verr, "rsucc": c.rsucc, "rerr": c.rerr,
        "contin_succ": c.contin_succ, "contin_err": c.contin_err,
        "succ_total": totals.0, "err_total": totals.1,
    })
}

fn routes(shared: &impl Shards, req: &HttpRequest) -> HttpResponse {
    let id = |name: &str| req.query(name).and_then(|v| v.parse::<u32>().ok());
    let (Some(modid), Some(cmdid)) = (id("modid"), id("cmdid")) else {
        return HttpResponse::bad_request("modid and cmdid (unsigned integers) are required\n");
    };
    let key = ModKey::new(modid, cmdid);
    let answer = shared.ask(key, move |core| -> Option<Value> {
        let now = Instant::now();
        let r = core.routes();
        let cfg = r.config();
        let lb = r.lb(key)?;
        let mut hosts: Vec<_> = lb.hosts().filter_map(|h| lb.host(h)).collect();
        hosts.sort_unstable_by_key(|v| v.addr);
        let hosts: Vec<Value> = hosts
            .iter()
            .map(|v| host_json(v, cfg, core.cumulative(key, v.addr), now))
            .collect();
        let status = route_status(r.status(key), !hosts.is_empty());
        Some(json!({
            "modid": modid,
            "cmdid": cmdid,
            "status": status,
            "policy": cfg.policy.to_string(),
            "hosts": hosts,
        }))
    });
    match answer {
        Some(Some(v)) => HttpResponse::json(v.to_string()),
        Some(None) => HttpResponse::not_found(),
        None => HttpResponse::text("agent busy\n").status(503),
    }
}

/// The `status` of a key in `/routes`: `pulling` while a pull is in flight,
/// `serving` when it has hosts, `new` (no hosts yet) otherwise.
fn route_status(status: Option<RouteStatus>, has_hosts: bool) -> &'static str {
    match status {
        Some(RouteStatus::Pulling) => "pulling",
        _ if has_hosts => "serving",
        _ => "new",
    }
}

fn metrics(shared: &impl Shards, http: &HttpStats) -> HttpResponse {
    let s = shared.stats();
    let g = gauges(shared);
    let mut out = PromText::default();
    let mut m = |name: &str, kind: &str, help: &str, v: u64| out.metric(name, kind, help, v);
    if let Some(d) = shared.udp_drops() {
        m(
            "lars_agent_udp_kernel_drops_total",
            "counter",
            "Datagrams the kernel dropped on the agent's UDP sockets (receive buffer full)",
            d,
        );
    }
    m(
        "lars_agent_get_host_total",
        "counter",
        "GetHostRequests answered",
        s.get_host,
    );
    m(
        "lars_agent_get_host_succ_total",
        "counter",
        "GetHost answered with a host",
        s.get_host_succ,
    );
    m(
        "lars_agent_get_host_overload_total",
        "counter",
        "GetHost answered RET_OVERLOAD",
        s.get_host_overload,
    );
    m(
        "lars_agent_get_host_noexist_total",
        "counter",
        "GetHost answered RET_NOEXIST",
        s.get_host_noexist,
    );
    m(
        "lars_agent_reports_total",
        "counter",
        "ReportRequests applied",
        s.reports,
    );
    m(
        "lars_agent_get_route_total",
        "counter",
        "API GetRouteRequests answered",
        s.get_route,
    );
    m(
        "lars_agent_garbage_total",
        "counter",
        "Datagrams dropped as garbage",
        s.garbage,
    );
    m(
        "lars_agent_forwarded_total",
        "counter",
        "Requests handled by another shard",
        s.forwarded,
    );
    m(
        "lars_agent_transitions_total",
        "counter",
        "Host state changes",
        s.transitions,
    );
    m(
        "lars_agent_dns_pulls_total",
        "counter",
        "GetRouteRequests sent to the dns",
        s.pulls,
    );
    m(
        "lars_agent_dns_routes_applied_total",
        "counter",
        "Routes received from the dns",
        s.routes_applied,
    );
    m(
        "lars_agent_dns_connected",
        "gauge",
        "1 when the dns is connected",
        u64::from(s.dns_connected),
    );
    m(
        "lars_agent_dns_failovers_total",
        "counter",
        "Connections established to another dns than the one before ([dnsserver] addrs)",
        s.dns_failovers,
    );
    m(
        "lars_agent_link_connect_failures_total",
        "counter",
        "Failed TCP connects to the dns or a reporter",
        s.link_connect_failures,
    );
    m(
        "lars_agent_link_tls_failures_total",
        "counter",
        "Failed TLS handshakes with the dns or a reporter",
        s.link_tls_failures,
    );
    m(
        "lars_agent_reporter_messages_total",
        "counter",
        "ReportStatusRequests sent",
        s.report_messages,
    );
    m(
        "lars_agent_reporter_handoffs_total",
        "counter",
        "Keys whose statistics moved to another reporter ([reporter] addrs)",
        s.reporter_handoffs,
    );
    m(
        "lars_agent_reporter_dropped_keys_total",
        "counter",
        "Keys refused by the full pending-report set",
        s.report_keys_dropped,
    );
    m(
        "lars_agent_reporter_counter_restarts_total",
        "counter",
        "Host counters restarted from zero (announced with a (0, 0) report)",
        s.counter_restarts,
    );
    m(
        "lars_agent_reporter_connected",
        "gauge",
        "1 when the reporter is connected",
        u64::from(s.reporter_connected),
    );
    m(
        "lars_agent_reporter_pending_keys",
        "gauge",
        "Keys waiting for the reporter",
        g.pending_report_keys as u64,
    );
    m("lars_agent_keys", "gauge", "Keys known", g.keys as u64);
    m(
        "lars_agent_unknown_keys",
        "gauge",
        "Keys known without hosts",
        g.unknown_keys as u64,
    );
    m(
        "lars_agent_unknown_keys_refused_total",
        "counter",
        "New unknown keys answered NOEXIST without a pull ([agent] max_unknown_keys reached)",
        s.unknown_keys_refused,
    );
    m(
        "lars_agent_keys_expired_total",
        "counter",
        "Keys without hosts forgotten after [agent] unknown_key_expiry without use",
        s.keys_expired,
    );
    m(
        "lars_agent_dns_unsubscribes_total",
        "counter",
        "Unsubscribes (msgid 101) sent to the dns for forgotten keys",
        s.unsubscribes,
    );
    m(
        "lars_agent_dns_routes_deleted_total",
        "counter",
        "Keys whose hosts the dns confirmed deleted (removed despite empty_route_protection)",
        s.routes_deleted,
    );
    m(
        "lars_agent_dns_empty_routes_kept_total",
        "counter",
        "Unconfirmed empty answers for keys with hosts, kept through by empty_route_protection",
        s.empty_routes_kept,
    );
    m(
        "lars_agent_hosts_idle",
        "gauge",
        "Hosts in idle lists",
        g.idle as u64,
    );
    m(
        "lars_agent_hosts_overload",
        "gauge",
        "Hosts in overload lists",
        g.overload as u64,
    );
    http.snapshot().prometheus("lars_agent", &mut out);
    HttpResponse::text(out.into_string()).header("Cache-Control", "no-store")
}

#[cfg(test)]
mod route_status_tests {
    use lars_lb::RouteStatus;

    use super::route_status;

    #[test]
    fn a_key_with_hosts_is_serving() {
        assert_eq!(route_status(Some(RouteStatus::New), true), "serving");
        assert_eq!(route_status(Some(RouteStatus::New), false), "new");
        assert_eq!(route_status(None, false), "new");
        assert_eq!(route_status(Some(RouteStatus::Pulling), true), "pulling");
    }
}
