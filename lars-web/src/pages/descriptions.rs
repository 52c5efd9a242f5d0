//! `/mods` and `/cmds`: list, search, add, edit and delete descriptions.

use std::collections::HashMap;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use lars_store::DescKind;
use maud::{PreEscaped, html};

use super::{PageResult, Q, done, page, redirect_done};
use crate::console::descriptions::code_field;
use crate::extract::{DescPath, FormBody};
use crate::input::{self, DescInput};
use crate::session::SessionInfo;
use crate::state::AppState;
use crate::validate::FieldErrors;
use crate::views::{csrf_field, field, flash};

/// The page's path and title.
fn meta(kind: DescKind) -> (&'static str, &'static str) {
    match kind {
        DescKind::Mod => ("/mods", "ModIDs"),
        DescKind::Cmd => ("/cmds", "CmdIDs"),
    }
}

/// The list page, with the add form holding `typed` and its `errors`.
async fn render(
    state: &AppState,
    s: &SessionInfo,
    kind: DescKind,
    q: &HashMap<String, String>,
    typed: &DescInput,
    errors: &FieldErrors,
    status: StatusCode,
) -> PageResult {
    let (path, title) = meta(kind);
    let field_name = code_field(kind);
    let search = input::search(q);
    let rows = state.console().descriptions(kind, search.clone()).await?;
    let body = html! {
        h1 { (title) }
        (flash(done(q)))
        div.card {
            h2 style="margin-top:0" { "Add or change a description" }
            form.row method="post" action=(path) {
                (csrf_field(&s.csrf))
                (field(field_name, field_name, &typed.code, errors, 12, None))
                (field("content", "description", &typed.content, errors, 60, None))
                div.field { label { (PreEscaped("&nbsp;")) } button #desc-save type="submit" { "Save" } }
            }
        }
        form.row method="get" action=(path) style="margin-bottom:10px" {
            input name="q" value=(search.as_deref().unwrap_or("")) placeholder="search id or text" size="30";
            button.plain type="submit" { "Search" }
            @if search.is_some() { a href=(path) { "clear" } }
        }
        table #desc-table {
            tr { th { (field_name) } th { "Description" } th {} }
            @for d in &rows {
                tr {
                    td { a href=(format!("/routes?{field_name}={}", d.code)) { (d.code) } }
                    td {
                        form.inline method="post" action=(path) {
                            (csrf_field(&s.csrf))
                            input type="hidden" name=(field_name) value=(d.code);
                            input name="content" value=(d.content) size="60";
                            button.plain type="submit" { "Save" }
                        }
                    }
                    td {
                        form.inline method="post" action=(format!("{path}/{}/delete", d.code)) {
                            (csrf_field(&s.csrf))
                            button.danger type="submit" { "Delete" }
                        }
                    }
                }
            }
            @if rows.is_empty() { tr { td colspan="3" .muted { "None yet." } } }
        }
    };
    Ok(page(s, path, status, title, body))
}

async fn list(
    state: AppState,
    s: SessionInfo,
    kind: DescKind,
    q: HashMap<String, String>,
) -> PageResult {
    let typed = DescInput::default();
    render(
        &state,
        &s,
        kind,
        &q,
        &typed,
        &FieldErrors::new(),
        StatusCode::OK,
    )
    .await
}

async fn save(
    state: AppState,
    s: SessionInfo,
    kind: DescKind,
    f: HashMap<String, String>,
) -> PageResult {
    let typed = DescInput::read(&f, code_field(kind));
    let (errors, status) = match state.console().save_description(kind, &typed).await {
        Ok(_) => return Ok(redirect_done(meta(kind).0, "saved", None)),
        Err(e) => e.form_errors()?,
    };
    render(&state, &s, kind, &HashMap::new(), &typed, &errors, status).await
}

/// `GET /mods?q=`.
pub(crate) async fn mods(
    State(st): State<AppState>,
    Extension(s): Extension<SessionInfo>,
    Query(q): Q,
) -> PageResult {
    list(st, s, DescKind::Mod, q).await
}

/// `POST /mods` (`modid`, `content`).
pub(crate) async fn mods_save(
    State(st): State<AppState>,
    Extension(s): Extension<SessionInfo>,
    FormBody(f): FormBody,
) -> PageResult {
    save(st, s, DescKind::Mod, f).await
}

/// `GET /cmds?q=`.
pub(crate) async fn cmds(
    State(st): State<AppState>,
    Extension(s): Extension<SessionInfo>,
    Query(q): Q,
) -> PageResult {
    list(st, s, DescKind::Cmd, q).await
}

/// `POST /cmds` (`cmdid`, `content`).
pub(crate) async fn cmds_save(
    State(st): State<AppState>,
    Extension(s): Extension<SessionInfo>,
    FormBody(f): FormBody,
) -> PageResult {
    save(st, s, DescKind::Cmd, f).await
}

/// `POST /mods/{modid}/delete`, `POST /cmds/{cmdid}/delete`.
pub(crate) async fn delete(State(st): State<AppState>, p: DescPath) -> PageResult {
    st.console().delete_description(p.kind, p.code).await?;
    Ok(redirect_done(meta(p.kind).0, "deleted", None))
}
