//! `GET /status` (every key with call status) and `GET
//! /status/{modid}/{cmdid}` (each host's counters and a chart of the last
//! hour).

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use maud::html;

use super::{PageResult, key_path, page};
use crate::extract::KeyPath;
use crate::input::DEFAULT_MINUTES;
use crate::session::SessionInfo;
use crate::state::AppState;
use crate::views::{self, chart};

/// `GET /status`: every key with call status, with last-hour totals.
pub(crate) async fn status(
    State(st): State<AppState>,
    Extension(s): Extension<SessionInfo>,
) -> PageResult {
    let keys = st.console().status_by_key().await?;
    let body = html! {
        h1 { "Call status" }
        p.muted { "Latest counters reported by the agents (ServerCallStatus) and totals of the last hour." }
        table #status-table {
            tr { th { "Key" } th.num { "Hosts" } th { "Overloaded" } th.num { "Successes (1 h)" } th.num { "Errors (1 h)" } th { "Last report" } }
            @for (k, v) in &keys {
                tr.overload[v.overloaded > 0] {
                    td { a href=(format!("/status/{}/{}", k.modid, k.cmdid)) { (k) } }
                    td.num { (v.hosts) }
                    td { @if v.overloaded == 0 { span.badge.ok { "none" } } @else { span.badge.bad { (v.overloaded) } } }
                    td.num { (v.succ) } td.num { (v.err) }
                    td { @if v.last > 0 { (views::time(v.last)) } }
                }
            }
            @if keys.is_empty() { tr { td colspan="6" .muted { "No call status reported yet." } } }
        }
    };
    Ok(page(&s, "/status", StatusCode::OK, "Call status", body))
}

/// `GET /status/{modid}/{cmdid}`: each host's latest counters and a chart
/// of the last hour.
pub(crate) async fn key_status(
    State(st): State<AppState>,
    Extension(s): Extension<SessionInfo>,
    KeyPath(key): KeyPath,
) -> PageResult {
    let ks = st.console().key_status(key, DEFAULT_MINUTES).await?;
    let points: Vec<(i64, u64, u64)> = ks
        .history
        .iter()
        .map(|m| (m.minute, m.succ, m.err))
        .collect();
    let over = ks.rows.iter().filter(|r| r.overload).count();
    let (rejected, claimed) = ks.rejected.iter().fold((0u64, 0u64), |(n, c), r| {
        (n + r.reports, c.saturating_add(r.calls))
    });
    let body = html! {
        h1 { "Call status of " (key) }
        p.muted { a href=(key_path(key)) { "routes of " (key) } " · " a href="/status" { "all keys" } }
        @if over > 0 { div.alert { (over) " host report(s) say overloaded." } }
        @if rejected > 0 {
            div.alert #clipped {
                "Clipped: the reporters rejected " (rejected) " report(s) of this key in the last hour, claiming "
                (claimed) " calls that could not have happened (trust limits); they are not counted below."
            }
        }
        div.card { h2 style="margin-top:0" { "Last hour, per minute (UTC)" } (chart(&points)) }
        table #host-status {
            tr { th { "Host" } th { "Caller" } th.num { "Successes" } th.num { "Errors" } th { "State" } th { "Reported" } }
            @for r in &ks.rows {
                tr.overload[r.overload] {
                    td { (r.host) }
                    td { (std::net::Ipv4Addr::from_bits(r.caller)) }
                    td.num { (r.succ_cnt) } td.num { (r.err_cnt) }
                    td { @if r.overload { span.badge.bad { "overloaded" } } @else { span.badge.ok { "ok" } } }
                    td { (views::time(r.ts)) }
                }
            }
            @if ks.rows.is_empty() { tr { td colspan="6" .muted { "No reports for this key." } } }
        }
    };
    Ok(page(
        &s,
        "/status",
        StatusCode::OK,
        &format!("Status {key}"),
        body,
    ))
}
