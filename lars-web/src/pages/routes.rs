//! `GET /routes` (all routes grouped by key, filtered by modid/cmdid) and
//! `POST /routes` (add a host to a key).

use std::collections::{BTreeMap, HashMap};

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use lars_core::ModKey;
use lars_store::RouteRow;
use maud::{PreEscaped, html};

use super::{PageResult, Q, done, key_path, page, redirect_done};
use crate::extract::FormBody;
use crate::input::{self, RouteInput};
use crate::session::SessionInfo;
use crate::state::AppState;
use crate::validate::FieldErrors;
use crate::views::{csrf_field, field, flash};

/// The routes page, its add form holding `typed` and `errors`.
async fn render(
    state: &AppState,
    s: &SessionInfo,
    q: &HashMap<String, String>,
    typed: &RouteInput,
    errors: &FieldErrors,
    status: StatusCode,
) -> PageResult {
    // A bad filter is shown next to its field and ignored.
    let (filter, ferr) = input::filter(q);
    let list = state.console().routes(filter).await?;
    let names = state.console().names().await?;
    let mut by_key: BTreeMap<ModKey, Vec<&RouteRow>> = BTreeMap::new();
    for r in &list.rows {
        by_key.entry(r.key).or_default().push(r);
    }
    let fv = |n: &str| q.get(n).cloned().unwrap_or_default();
    let body = html! {
        h1 { "Routes " span.muted style="font-size:14px;font-weight:normal" { "version " span #version { (list.version) } } }
        (flash(done(q)))
        div.card {
            h2 style="margin-top:0" { "Add a host" }
            form.row #add-route method="post" action="/routes" {
                (csrf_field(&s.csrf))
                (field("modid", "modid", &typed.modid, errors, 10, Some("add-modid")))
                (field("cmdid", "cmdid", &typed.cmdid, errors, 10, Some("add-cmdid")))
                (field("ip", "ip", &typed.host.ip, errors, 16, Some("add-ip")))
                (field("port", "port", &typed.host.port, errors, 7, Some("add-port")))
                div.field { label { (PreEscaped("&nbsp;")) } button #add-host type="submit" { "Add host" } }
            }
        }
        form.row method="get" action="/routes" style="margin-bottom:10px" {
            (field("modid", "filter modid", &fv("modid"), &ferr, 10, Some("filter-modid")))
            (field("cmdid", "filter cmdid", &fv("cmdid"), &ferr, 10, Some("filter-cmdid")))
            div.field { label { (PreEscaped("&nbsp;")) } div.row { button.plain type="submit" { "Filter" } a href="/routes" { "all" } } }
        }
        table #routes-table {
            tr { th { "modid" } th { "cmdid" } th { "Description" } th { "Hosts" } th {} }
            @for (key, hosts) in &by_key {
                tr {
                    td { (key.modid) } td { (key.cmdid) }
                    td {
                        (names.mods.get(&key.modid).map(String::as_str).unwrap_or("—"))
                        " / "
                        (names.cmds.get(&key.cmdid).map(String::as_str).unwrap_or("—"))
                    }
                    td.hosts { @for h in hosts { code { (h.host) } " " } }
                    td { a href=(key_path(*key)) { "edit" } " · "
                         a href=(format!("/status/{}/{}", key.modid, key.cmdid)) { "status" } }
                }
            }
            @if by_key.is_empty() { tr { td colspan="5" .muted { "No routes." } } }
        }
    };
    Ok(page(s, "/routes", status, "Routes", body))
}

/// `GET /routes?modid=&cmdid=`.
pub(crate) async fn routes(
    State(st): State<AppState>,
    Extension(s): Extension<SessionInfo>,
    Query(q): Q,
) -> PageResult {
    let typed = RouteInput::default();
    render(&st, &s, &q, &typed, &FieldErrors::new(), StatusCode::OK).await
}

/// `POST /routes` (`modid`, `cmdid`, `ip`, `port`): adds one host to a key
/// and goes to the key's page.
pub(crate) async fn add(
    State(st): State<AppState>,
    Extension(s): Extension<SessionInfo>,
    FormBody(f): FormBody,
) -> PageResult {
    let typed = RouteInput::read(&f);
    let (errors, status) = match st.console().add_route(&typed).await {
        Ok((key, v)) => return Ok(redirect_done(&key_path(key), "added", Some(v))),
        Err(e) => e.form_errors()?,
    };
    render(&st, &s, &HashMap::new(), &typed, &errors, status).await
}
