//! `GET /versions`: the route version and the pending `RouteChange` rows.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use maud::html;

use super::{PageResult, key_path, page};
use crate::session::SessionInfo;
use crate::state::AppState;
use crate::views;

/// `GET /versions`.
pub(crate) async fn versions(
    State(state): State<AppState>,
    Extension(s): Extension<SessionInfo>,
) -> PageResult {
    let v = state.console().versions().await?;
    let body = html! {
        h1 { "Versions" }
        div.stats {
            div.stat { span.muted { "Current route version" } b #version { (v.version) } }
            div.stat { span.muted { "Pending changes" } b #pending { (v.changes.len()) } }
        }
        p.muted { "Each change writes a new RouteVersion and one RouteChange row per key. The dns notices the new version,
                   pushes the changed keys to subscribed agents, then deletes the rows it handled." }
        h2 { "Pending changes" }
        table #changes-table {
            tr { th { "Change id" } th { "Key" } th.num { "Version" } th { "Written" } }
            @for c in &v.changes {
                tr {
                    td { (c.id) }
                    td { a href=(key_path(c.key)) { (c.key) } }
                    td.num { (c.version) }
                    td { @if c.version > 1_000_000_000 { (views::time(i64::try_from(c.version).unwrap_or(0))) } }
                }
            }
            @if v.changes.is_empty() { tr { td colspan="4" .muted { "None: every change has been pushed." } } }
        }
    };
    Ok(page(&s, "/versions", StatusCode::OK, "Versions", body))
}
