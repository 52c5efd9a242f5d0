//! The `[http]` status pages: `GET /status`, `GET /routes?modid=&cmdid=`,
//! `GET /metrics`.

use std::fmt::Write as _;
use std::sync::Arc;

use lars_core::ModKey;
use lars_lb::{HostState, RouteStatus};
use lars_net::http::HttpHandler;
use lars_net::{HttpRequest, HttpResponse};
use serde_json::{Value, json};

use crate::agent::Shared;

/// Per-shard gauges, computed on the shard's loop.
#[derive(Debug, Clone, Copy, Default)]
struct Gauges {
    keys: usize,
    idle: usize,
    overload: usize,
    pending_report_keys: usize,
}

fn gauges(shared: &Shared) -> Gauges {
    shared
        .ask_all(|s| {
            let r = s.core.routes();
            let mut g = Gauges {
                keys: r.len(),
                pending_report_keys: s.core.pending_report_keys(),
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
            idle: a.idle + g.idle,
            overload: a.overload + g.overload,
            pending_report_keys: a.pending_report_keys + g.pending_report_keys,
        })
}

pub(crate) fn handler(shared: Arc<Shared>) -> HttpHandler {
    Arc::new(move |req: &HttpRequest| {
        if req.method != "GET" {
            return HttpResponse::text("GET only\n").status(405);
        }
        match req.path.as_str() {
            "/status" => status(&shared),
            "/routes" => routes(&shared, req),
            "/metrics" => metrics(&shared),
            _ => HttpResponse::not_found(),
        }
    })
}

fn status(shared: &Shared) -> HttpResponse {
    let s = shared.stats();
    let g = gauges(shared);
    let body = json!({
        "udp": shared.udp_addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "shards": shared.handles.len(),
        "keys": g.keys,
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
            "addr": shared.dns_addr.to_string(),
            "connected": s.dns_connected,
            "connects": s.dns_connects,
            "pulls": s.pulls,
            "routes_applied": s.routes_applied,
        },
        "reporter": {
            "addr": shared.reporter_addr.to_string(),
            "connected": s.reporter_connected,
            "connects": s.reporter_connects,
            "messages": s.report_messages,
            "pending_keys": g.pending_report_keys,
            "dropped_keys": s.report_keys_dropped,
            "counter_restarts": s.counter_restarts,
        },
    });
    HttpResponse::json(body.to_string())
}

fn routes(shared: &Shared, req: &HttpRequest) -> HttpResponse {
    let id = |name: &str| req.query(name).and_then(|v| v.parse::<u32>().ok());
    let (Some(modid), Some(cmdid)) = (id("modid"), id("cmdid")) else {
        return HttpResponse::bad_request("modid and cmdid (unsigned integers) are required\n");
    };
    let key = ModKey::new(modid, cmdid);
    let answer = shared.ask(key, move |s| -> Option<Value> {
        let r = s.core.routes();
        let lb = r.lb(key)?;
        let mut hosts: Vec<_> = lb.hosts().filter_map(|h| lb.host(h)).collect();
        hosts.sort_unstable_by_key(|v| v.addr);
        let hosts: Vec<Value> = hosts
            .iter()
            .map(|v| {
                let c = v.counters;
                let (succ, err) = s.core.cumulative(key, v.addr);
                json!({
                    "host": v.addr.to_string(),
                    "state": match v.state { HostState::Idle => "idle", HostState::Overload => "overload" },
                    "vsucc": c.vsucc, "verr": c.verr, "rsucc": c.rsucc, "rerr": c.rerr,
                    "contin_succ": c.contin_succ, "contin_err": c.contin_err,
                    "succ_total": succ, "err_total": err,
                })
            })
            .collect();
        let status = match r.status(key) {
            Some(RouteStatus::Pulling) => "pulling",
            _ => "new",
        };
        Some(json!({ "modid": modid, "cmdid": cmdid, "status": status, "hosts": hosts }))
    });
    match answer {
        Some(Some(v)) => HttpResponse::json(v.to_string()),
        Some(None) => HttpResponse::not_found(),
        None => HttpResponse::text("agent busy\n").status(503),
    }
}

fn metrics(shared: &Shared) -> HttpResponse {
    let s = shared.stats();
    let g = gauges(shared);
    let mut out = String::new();
    let mut m = |name: &str, kind: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    };
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
        "lars_agent_reporter_messages_total",
        "counter",
        "ReportStatusRequests sent",
        s.report_messages,
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
    HttpResponse::text(out).header("Cache-Control", "no-store")
}
