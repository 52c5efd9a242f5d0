//! `/routes/{modid}/{cmdid}`: one key's hosts, with forms to edit a host in
//! place, remove one, add one, replace the whole list, or delete the key.

use std::collections::HashMap;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use lars_core::{HostAddr, ModKey};
use maud::{PreEscaped, html};

use super::{PageResult, Q, done, key_path, page, redirect_done};
use crate::error::ConsoleError;
use crate::extract::{FormBody, KeyPath};
use crate::input::{Fields, HostInput, HostList};
use crate::session::SessionInfo;
use crate::state::AppState;
use crate::validate::{self, FieldErrors};
use crate::views::{alert, csrf_field, field, flash};

/// The form that failed, shown again with what was typed.
#[derive(Debug, Default)]
enum Failed {
    #[default]
    None,
    /// The add form.
    Add(HostInput, FieldErrors),
    /// The edit form of host `.0`.
    Edit(HostAddr, HostInput, FieldErrors),
    /// The replace form: the text and its error.
    Replace(String, String),
    /// A note above the list (the host is gone).
    Alert(String),
}

async fn render(
    state: &AppState,
    s: &SessionInfo,
    key: ModKey,
    q: &HashMap<String, String>,
    failed: Failed,
    status: StatusCode,
) -> PageResult {
    let view = state.console().key(key).await?;
    let hosts = &view.hosts;
    let base = key_path(key);
    let no_errors = FieldErrors::new();
    let (add, add_errors) = match &failed {
        Failed::Add(typed, e) => (typed.clone(), e),
        _ => (HostInput::default(), &no_errors),
    };
    let (replace_text, replace_err) = match &failed {
        Failed::Replace(t, e) => (t.clone(), Some(e.as_str())),
        _ => (
            hosts
                .iter()
                .map(|h| h.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
            None,
        ),
    };
    let note = match &failed {
        Failed::Alert(m) => Some(m.as_str()),
        _ => None,
    };
    let body = html! {
        h1 { "Routes of " (key.modid) "/" (key.cmdid) " "
             span.muted style="font-size:14px;font-weight:normal" { "version " span #version { (view.version) } } }
        p.muted {
            "modid " (key.modid) ": " (view.mod_desc.as_deref().unwrap_or("no description")) " · cmdid " (key.cmdid) ": "
            (view.cmd_desc.as_deref().unwrap_or("no description")) " · " a href=(format!("/status/{}/{}", key.modid, key.cmdid)) { "call status" }
        }
        (flash(done(q)))
        (alert(note))
        table #hosts-table {
            tr { th { "Host (edit ip and port, then Save)" } th {} }
            @for h in hosts {
                @let (typed, errs) = match &failed {
                    Failed::Edit(old, typed, e) if old == h => (typed.clone(), e.clone()),
                    _ => (HostInput { ip: h.ipv4().to_string(), port: h.port.to_string() }, FieldErrors::new()),
                };
                tr data-host=(h) {
                    td {
                        form.inline method="post" action=(format!("{base}/edit")) {
                            (csrf_field(&s.csrf))
                            input type="hidden" name="old" value=(h);
                            (field("ip", "ip", &typed.ip, &errs, 16, Some(&format!("edit-ip-{h}"))))
                            (field("port", "port", &typed.port, &errs, 7, Some(&format!("edit-port-{h}"))))
                            div.field { label { (PreEscaped("&nbsp;")) } button.plain type="submit" { "Save" } }
                        }
                    }
                    td {
                        form.inline method="post" action=(format!("{base}/remove")) {
                            (csrf_field(&s.csrf))
                            input type="hidden" name="host" value=(h);
                            button.danger type="submit" { "Remove" }
                        }
                    }
                }
            }
            @if hosts.is_empty() { tr { td colspan="2" .muted { "No hosts: agents asking for this key get an empty list." } } }
        }
        div.card style="margin-top:16px" {
            h2 style="margin-top:0" { "Add a host" }
            form.row method="post" action=(format!("{base}/add")) {
                (csrf_field(&s.csrf))
                (field("ip", "ip", &add.ip, add_errors, 16, Some("key-add-ip")))
                (field("port", "port", &add.port, add_errors, 7, Some("key-add-port")))
                div.field { label { (PreEscaped("&nbsp;")) } button #key-add type="submit" { "Add host" } }
            }
        }
        div.card {
            h2 style="margin-top:0" { "Replace the list" }
            form method="post" action=(format!("{base}/replace")) {
                (csrf_field(&s.csrf))
                div.field {
                    label for="hosts" { "one a.b.c.d:port per line; an empty list deletes the key" }
                    textarea.bad[replace_err.is_some()] #hosts name="hosts" rows="5" cols="40" { (replace_text) }
                    @if let Some(e) = replace_err { span.err data-field="hosts" { (e) } }
                }
                p { button type="submit" { "Replace" } }
            }
        }
        @if !hosts.is_empty() {
            form method="post" action=(format!("{base}/delete")) {
                (csrf_field(&s.csrf))
                button.danger #delete-key type="submit" { "Delete all routes of " (key.modid) "/" (key.cmdid) }
            }
        }
    };
    Ok(page(s, "/routes", status, &format!("Routes {key}"), body))
}

/// The page again after a failed write: a host that is gone becomes a note
/// above the list, field errors go next to their fields (`failed` puts
/// them in the right form); anything else is an error page.
async fn again(
    state: &AppState,
    s: &SessionInfo,
    key: ModKey,
    e: ConsoleError,
    failed: impl FnOnce(FieldErrors) -> Failed,
) -> PageResult {
    let status = e.status();
    let failed = match e {
        ConsoleError::NotFound(m) => Failed::Alert(m),
        e => failed(e.form_errors()?.0),
    };
    render(state, s, key, &HashMap::new(), failed, status).await
}

/// A host named by a hidden form field (`old`, `host`).
fn form_host(
    f: &HashMap<String, String>,
    name: &str,
    what: &str,
) -> Result<HostAddr, ConsoleError> {
    validate::host_text(&f.text(name)).map_err(|_| {
        ConsoleError::invalid(name, format!("The form names no valid host to {what}."))
    })
}

/// `GET /routes/{modid}/{cmdid}`.
pub(crate) async fn key(
    State(st): State<AppState>,
    Extension(s): Extension<SessionInfo>,
    KeyPath(key): KeyPath,
    Query(q): Q,
) -> PageResult {
    render(&st, &s, key, &q, Failed::None, StatusCode::OK).await
}

/// `POST /routes/{modid}/{cmdid}/add` (`ip`, `port`).
pub(crate) async fn add(
    State(st): State<AppState>,
    Extension(s): Extension<SessionInfo>,
    KeyPath(key): KeyPath,
    FormBody(f): FormBody,
) -> PageResult {
    let typed = HostInput::read(&f);
    match st.console().add_host(key, &typed).await {
        Ok(v) => Ok(redirect_done(&key_path(key), "added", Some(v))),
        Err(e) => again(&st, &s, key, e, |errors| Failed::Add(typed, errors)).await,
    }
}

/// `POST /routes/{modid}/{cmdid}/edit` (`old`, `ip`, `port`).
pub(crate) async fn edit(
    State(st): State<AppState>,
    Extension(s): Extension<SessionInfo>,
    KeyPath(key): KeyPath,
    FormBody(f): FormBody,
) -> PageResult {
    let old = form_host(&f, "old", "change")?;
    let typed = HostInput::read(&f);
    match st.console().edit_host(key, old, &typed).await {
        Ok(v) => Ok(redirect_done(&key_path(key), "edited", Some(v))),
        Err(e) => again(&st, &s, key, e, |errors| Failed::Edit(old, typed, errors)).await,
    }
}

/// `POST /routes/{modid}/{cmdid}/remove` (`host`).
pub(crate) async fn remove(
    State(st): State<AppState>,
    Extension(s): Extension<SessionInfo>,
    KeyPath(key): KeyPath,
    FormBody(f): FormBody,
) -> PageResult {
    let host = form_host(&f, "host", "remove")?;
    match st.console().remove_host(key, host).await {
        Ok(v) => Ok(redirect_done(&key_path(key), "removed", Some(v))),
        Err(e) => again(&st, &s, key, e, |_| Failed::None).await,
    }
}

/// `POST /routes/{modid}/{cmdid}/replace` (`hosts`, one per line).
pub(crate) async fn replace(
    State(st): State<AppState>,
    Extension(s): Extension<SessionInfo>,
    KeyPath(key): KeyPath,
    FormBody(f): FormBody,
) -> PageResult {
    let text = f.text("hosts");
    match st
        .console()
        .replace_hosts(key, &HostList::Lines(text.clone()))
        .await
    {
        Ok(v) => Ok(redirect_done(&key_path(key), "replaced", Some(v))),
        Err(e) => {
            again(&st, &s, key, e, |mut errors| {
                Failed::Replace(text, errors.remove("hosts").unwrap_or_default())
            })
            .await
        }
    }
}

/// `POST /routes/{modid}/{cmdid}/delete`: back to the routes list.
pub(crate) async fn delete(State(st): State<AppState>, KeyPath(key): KeyPath) -> PageResult {
    let v = st.console().delete_key(key).await?;
    Ok(redirect_done("/routes", "key-deleted", Some(v)))
}
