//! [`AgentStats`]: the counters of a running agent, summed over its shards'
//! cores.

use crate::core::CoreCounters;

/// Counters of a running agent (see [`AgentHandle::stats`](crate::AgentHandle::stats)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AgentStats {
    /// GetHostRequests answered.
    pub get_host: u64,
    /// ... with a host (`RET_SUCC`).
    pub get_host_succ: u64,
    /// ... with `RET_OVERLOAD`.
    pub get_host_overload: u64,
    /// ... with `RET_NOEXIST`.
    pub get_host_noexist: u64,
    /// ReportRequests applied.
    pub reports: u64,
    /// API GetRouteRequests answered.
    pub get_route: u64,
    /// Datagrams dropped: bad size, unknown msgid, malformed body.
    pub garbage: u64,
    /// Requests that arrived on a port not owning their key (handled by the
    /// owning shard, answered from the arrival port).
    pub forwarded: u64,
    /// GetRouteRequests sent to the dns.
    pub pulls: u64,
    /// GetRouteResponses from the dns applied.
    pub routes_applied: u64,
    /// ReportStatusRequests sent to the reporter.
    pub report_messages: u64,
    /// Times a key could not join the bounded pending-report set.
    pub report_keys_dropped: u64,
    /// Host counters restarted from zero before passing 2^31 (each announced
    /// to the reporter by a `(0, 0)` report).
    pub counter_restarts: u64,
    /// Host state changes.
    pub transitions: u64,
    /// New unknown keys answered `RET_NOEXIST` without a pull: the keys
    /// without hosts were at `[agent] max_unknown_keys`.
    pub unknown_keys_refused: u64,
    /// Keys without hosts forgotten after `[agent] unknown_key_expiry`
    /// without use.
    pub keys_expired: u64,
    /// Unsubscribes (msgid 101) sent to the dns for forgotten keys.
    pub unsubscribes: u64,
    /// Keys whose hosts the dns confirmed deleted (`confirmed_empty`).
    pub routes_deleted: u64,
    /// Unconfirmed empty answers for keys with hosts, kept through by
    /// `empty_route_protection`.
    pub empty_routes_kept: u64,
    /// Whether the dns is connected.
    pub dns_connected: bool,
    /// Successful connects to the dns.
    pub dns_connects: u64,
    /// Connections established to another dns than the one before
    /// (`[dnsserver] addrs`).
    pub dns_failovers: u64,
    /// Keys whose statistics moved to another reporter link.
    pub reporter_handoffs: u64,
    /// Whether a reporter is connected (any of `[reporter] addrs`).
    pub reporter_connected: bool,
    /// Successful connects to the reporters (all links).
    pub reporter_connects: u64,
    /// TCP connects to the dns or a reporter that failed (refused,
    /// unreachable, timed out).
    pub link_connect_failures: u64,
    /// TLS handshakes with the dns or a reporter that failed (`[dnsserver] tls` /
    /// `[reporter] tls`: a certificate the agent does not trust, a refused
    /// client certificate, a plain port).
    pub link_tls_failures: u64,
}

impl AgentStats {
    /// The sum of cores' counters (connection fields left false/0).
    pub(crate) fn sum(cores: &[CoreCounters]) -> Self {
        let sum = |f: fn(&CoreCounters) -> u64| -> u64 { cores.iter().map(f).sum() };
        AgentStats {
            get_host: sum(|c| c.get_host),
            get_host_succ: sum(|c| c.get_host_succ),
            get_host_overload: sum(|c| c.get_host_overload),
            get_host_noexist: sum(|c| c.get_host_noexist),
            reports: sum(|c| c.reports),
            get_route: sum(|c| c.get_route),
            garbage: sum(|c| c.garbage),
            forwarded: sum(|c| c.forwarded),
            pulls: sum(|c| c.pulls),
            routes_applied: sum(|c| c.routes_applied),
            report_messages: sum(|c| c.report_messages),
            report_keys_dropped: sum(|c| c.report_keys_dropped),
            counter_restarts: sum(|c| c.counter_restarts),
            transitions: sum(|c| c.transitions),
            unknown_keys_refused: sum(|c| c.unknown_keys_refused),
            keys_expired: sum(|c| c.keys_expired),
            unsubscribes: sum(|c| c.unsubscribes),
            routes_deleted: sum(|c| c.routes_deleted),
            empty_routes_kept: sum(|c| c.empty_routes_kept),
            reporter_handoffs: sum(|c| c.reporter_handoffs),
            ..AgentStats::default()
        }
    }
}
