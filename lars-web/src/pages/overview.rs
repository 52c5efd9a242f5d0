//! `GET /`: route version, pending changes, counts, overloaded hosts.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use maud::html;

use super::{PageResult, page};
use crate::session::SessionInfo;
use crate::state::AppState;
use crate::views;

/// `GET /`.
pub(crate) async fn overview(
    State(state): State<AppState>,
    Extension(s): Extension<SessionInfo>,
) -> PageResult {
    let o = state.console().overview().await?;
    let body = html! {
        h1 { "Overview" }
        div.stats {
            div.stat { span.muted { "Route version" } b #version { (o.version) } }
            div.stat { span.muted { "Pending changes" } b { a href="/versions" { (o.pending_changes) } } }
            div.stat { span.muted { "Keys / hosts" } b { a href="/routes" { (o.keys) " / " (o.hosts) } } }
            div.stat { span.muted { "ModIDs / CmdIDs described" } b { (o.mods) " / " (o.cmds) } }
            div.stat { span.muted { "Overloaded hosts" } b { a href="/status" { (o.overloaded.len()) } } }
        }
        @if !o.overloaded.is_empty() {
            h2 { "Overloaded now" }
            table {
                tr { th { "Key" } th { "Host" } th.num { "Successes" } th.num { "Errors" } th { "Reported" } }
                @for r in &o.overloaded {
                    tr.overload {
                        td { a href=(format!("/status/{}/{}", r.key.modid, r.key.cmdid)) { (r.key) } }
                        td { (r.host) } td.num { (r.succ_cnt) } td.num { (r.err_cnt) } td { (views::time(r.ts)) }
                    }
                }
            }
        }
    };
    Ok(page(&s, "/", StatusCode::OK, "Overview", body))
}
