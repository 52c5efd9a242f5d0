//! The server-rendered pages. Writes are plain HTML forms (POST, CSRF field
//! checked by the guard) answered with a redirect on success, or the same
//! page with the messages next to the fields (status 422) on error.

use std::collections::{BTreeMap, HashMap};

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use lars_core::{HostAddr, ModKey};
use lars_store::{
    CallStatusRow, DescKind, Description, Descriptions, RouteAdmin, RouteChange, RouteFilter,
    RouteRead, RouteRow, StatsStore,
};
use maud::{Markup, html};

use crate::api::{self, edit_host, hosts_of, now_secs, per_minute};
use crate::app::{AppError, AppState};
use crate::auth::form_fields;
use crate::session::SessionInfo;
use crate::validate::{self, FieldErrors};
use crate::views::{self, Frame, alert, chart, csrf_field, field, flash, page};

type Q = Query<HashMap<String, String>>;

fn frame<'a>(s: &'a SessionInfo, nav: &'a str) -> Frame<'a> {
    Frame {
        user: s.user.as_deref().unwrap_or(""),
        csrf: &s.csrf,
        nav,
    }
}

fn html(status: StatusCode, m: Markup) -> Response {
    (status, Html(m.into_string())).into_response()
}

/// A page saying what went wrong (no login needed to see it).
pub(crate) fn error_page(status: StatusCode, msg: &str) -> Response {
    html(
        status,
        views::bare(
            "Error",
            html! {
                h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
                div.alert #alert { (msg) }
                p { a href="/" { "Back to the console" } }
            },
        ),
    )
}

/// The error page of a failed store call.
pub(crate) fn app_error(e: AppError) -> Response {
    let (status, _, msg) = api::classify(&e);
    error_page(status, &msg)
}

/// The message of `?done=` after a redirect; fixed texts only, so a link
/// cannot put words in the console's mouth.
fn done(q: &HashMap<String, String>) -> Option<String> {
    let what = match q.get("done")?.as_str() {
        "saved" => "Saved.",
        "deleted" => "Deleted.",
        "added" => "Host added.",
        "edited" => "Host changed.",
        "removed" => "Host removed.",
        "replaced" => "Host list replaced.",
        "key-deleted" => "All routes of the key deleted.",
        _ => return None,
    };
    let v = q.get("v").and_then(|v| v.parse::<u64>().ok());
    Some(match v {
        Some(v) => {
            format!("{what} Route version is now {v}; the dns pushes it to agents within seconds.")
        }
        None => what.to_owned(),
    })
}

/// `GET /`: versions, counts, overloaded hosts.
pub(crate) async fn overview(
    State(state): State<AppState>,
    Extension(s): Extension<SessionInfo>,
) -> Response {
    let r = state
        .store(|st| {
            let version = st.version()?;
            let pending = st.pending_changes()?.len();
            let routes = st.list_routes(RouteFilter::default())?;
            let mods = st.descriptions(DescKind::Mod, None)?.len();
            let cmds = st.descriptions(DescKind::Cmd, None)?.len();
            let status = st.call_status(None)?;
            Ok((version, pending, routes, mods, cmds, status))
        })
        .await;
    let (version, pending, routes, mods, cmds, status) = match r {
        Ok(x) => x,
        Err(e) => return app_error(e),
    };
    let keys: std::collections::BTreeSet<ModKey> = routes.iter().map(|r| r.key).collect();
    let overloaded: Vec<&CallStatusRow> = status.iter().filter(|r| r.overload).collect();
    html(
        StatusCode::OK,
        page(
            frame(&s, "/"),
            "Overview",
            html! {
                h1 { "Overview" }
                div.stats {
                    div.stat { span.muted { "Route version" } b #version { (version) } }
                    div.stat { span.muted { "Pending changes" } b { a href="/versions" { (pending) } } }
                    div.stat { span.muted { "Keys / hosts" } b { a href="/routes" { (keys.len()) " / " (routes.len()) } } }
                    div.stat { span.muted { "ModIDs / CmdIDs described" } b { (mods) " / " (cmds) } }
                    div.stat { span.muted { "Overloaded hosts" } b { a href="/status" { (overloaded.len()) } } }
                }
                @if !overloaded.is_empty() {
                    h2 { "Overloaded now" }
                    table {
                        tr { th { "Key" } th { "Host" } th.num { "Successes" } th.num { "Errors" } th { "Reported" } }
                        @for r in &overloaded {
                            tr.overload {
                                td { a href=(format!("/status/{}/{}", r.key.modid, r.key.cmdid)) { (r.key) } }
                                td { (r.host) } td.num { (r.succ_cnt) } td.num { (r.err_cnt) } td { (views::time(r.ts)) }
                            }
                        }
                    }
                }
            },
        ),
    )
}

// ---- ModIDs and CmdIDs ----

struct DescPage {
    kind: DescKind,
    q: HashMap<String, String>,
    errors: FieldErrors,
    code: String,
    content: String,
    alert: Option<String>,
}

fn desc_meta(kind: DescKind) -> (&'static str, &'static str, &'static str) {
    match kind {
        DescKind::Mod => ("/mods", "ModIDs", "modid"),
        DescKind::Cmd => ("/cmds", "CmdIDs", "cmdid"),
    }
}

async fn render_desc(
    state: &AppState,
    s: &SessionInfo,
    p: DescPage,
    status: StatusCode,
) -> Response {
    let (path, title, field_name) = desc_meta(p.kind);
    let search =
        p.q.get("q")
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty());
    let kind = p.kind;
    let search2 = search.clone();
    let rows: Vec<Description> = match state
        .store(move |st| st.descriptions(kind, search2.as_deref()))
        .await
    {
        Ok(r) => r,
        Err(e) => return app_error(e),
    };
    let body = html! {
        h1 { (title) }
        (flash(done(&p.q)))
        (alert(p.alert.as_deref()))
        div.card {
            h2 style="margin-top:0" { "Add or change a description" }
            form.row method="post" action=(path) {
                (csrf_field(&s.csrf))
                (field(field_name, field_name, &p.code, &p.errors, 12, None))
                (field("content", "description", &p.content, &p.errors, 60, None))
                div.field { label { (maud::PreEscaped("&nbsp;")) } button #desc-save type="submit" { "Save" } }
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
    html(status, page(frame(s, path), title, body))
}

async fn desc_get(
    state: AppState,
    s: SessionInfo,
    kind: DescKind,
    q: HashMap<String, String>,
) -> Response {
    let p = DescPage {
        kind,
        q,
        errors: FieldErrors::new(),
        code: String::new(),
        content: String::new(),
        alert: None,
    };
    render_desc(&state, &s, p, StatusCode::OK).await
}

async fn desc_save(state: AppState, s: SessionInfo, kind: DescKind, body: Bytes) -> Response {
    let (path, _, field_name) = desc_meta(kind);
    let f = form_fields(&body);
    let code_text = f.get(field_name).cloned().unwrap_or_default();
    let content_text = f.get("content").cloned().unwrap_or_default();
    let mut errors = FieldErrors::new();
    let code =
        validate::id(field_name, &code_text).map_err(|e| errors.insert(field_name.into(), e));
    let content = validate::content(&content_text).map_err(|e| errors.insert("content".into(), e));
    let (Ok(code), Ok(content)) = (code, content) else {
        let p = DescPage {
            kind,
            q: HashMap::new(),
            errors,
            code: code_text,
            content: content_text,
            alert: None,
        };
        return render_desc(&state, &s, p, StatusCode::UNPROCESSABLE_ENTITY).await;
    };
    match state
        .store(move |st| st.set_description(kind, code, &content))
        .await
    {
        Ok(()) => Redirect::to(&format!("{path}?done=saved")).into_response(),
        Err(e) => app_error(e),
    }
}

async fn desc_delete(state: AppState, kind: DescKind, code: String) -> Response {
    let (path, _, field_name) = desc_meta(kind);
    let code = match validate::id(field_name, &code) {
        Ok(c) => c,
        Err(e) => return error_page(StatusCode::UNPROCESSABLE_ENTITY, &e),
    };
    match state
        .store(move |st| st.delete_description(kind, code))
        .await
    {
        Ok(()) => Redirect::to(&format!("{path}?done=deleted")).into_response(),
        Err(e) => app_error(e),
    }
}

/// `GET /mods`.
pub(crate) async fn mods(
    State(st): State<AppState>,
    Extension(s): Extension<SessionInfo>,
    Query(q): Q,
) -> Response {
    desc_get(st, s, DescKind::Mod, q).await
}
/// `POST /mods`.
pub(crate) async fn mods_save(
    State(st): State<AppState>,
    Extension(s): Extension<SessionInfo>,
    body: Bytes,
) -> Response {
    desc_save(st, s, DescKind::Mod, body).await
}
/// `POST /mods/{modid}/delete`.
pub(crate) async fn mods_delete(State(st): State<AppState>, Path(code): Path<String>) -> Response {
    desc_delete(st, DescKind::Mod, code).await
}
/// `GET /cmds`.
pub(crate) async fn cmds(
    State(st): State<AppState>,
    Extension(s): Extension<SessionInfo>,
    Query(q): Q,
) -> Response {
    desc_get(st, s, DescKind::Cmd, q).await
}
/// `POST /cmds`.
pub(crate) async fn cmds_save(
    State(st): State<AppState>,
    Extension(s): Extension<SessionInfo>,
    body: Bytes,
) -> Response {
    desc_save(st, s, DescKind::Cmd, body).await
}
/// `POST /cmds/{cmdid}/delete`.
pub(crate) async fn cmds_delete(State(st): State<AppState>, Path(code): Path<String>) -> Response {
    desc_delete(st, DescKind::Cmd, code).await
}

// ---- Routes ----

#[derive(Default)]
struct AddForm {
    modid: String,
    cmdid: String,
    ip: String,
    port: String,
    errors: FieldErrors,
}

async fn render_routes(
    state: &AppState,
    s: &SessionInfo,
    q: HashMap<String, String>,
    add: AddForm,
    status: StatusCode,
) -> Response {
    let mut ferr = FieldErrors::new();
    let f = api::filter(&q, &mut ferr);
    let r = state
        .store(move |st| {
            let mods: HashMap<u32, String> = st
                .descriptions(DescKind::Mod, None)?
                .into_iter()
                .map(|d| (d.code, d.content))
                .collect();
            let cmds: HashMap<u32, String> = st
                .descriptions(DescKind::Cmd, None)?
                .into_iter()
                .map(|d| (d.code, d.content))
                .collect();
            Ok((st.version()?, st.list_routes(f)?, mods, cmds))
        })
        .await;
    let (version, rows, mods, cmds) = match r {
        Ok(x) => x,
        Err(e) => return app_error(e),
    };
    let mut by_key: BTreeMap<ModKey, Vec<&RouteRow>> = BTreeMap::new();
    for r in &rows {
        by_key.entry(r.key).or_default().push(r);
    }
    let fv = |n: &str| q.get(n).cloned().unwrap_or_default();
    let body = html! {
        h1 { "Routes " span.muted style="font-size:14px;font-weight:normal" { "version " span #version { (version) } } }
        (flash(done(&q)))
        div.card {
            h2 style="margin-top:0" { "Add a host" }
            form.row #add-route method="post" action="/routes" {
                (csrf_field(&s.csrf))
                (field("modid", "modid", &add.modid, &add.errors, 10, Some("add-modid")))
                (field("cmdid", "cmdid", &add.cmdid, &add.errors, 10, Some("add-cmdid")))
                (field("ip", "ip", &add.ip, &add.errors, 16, Some("add-ip")))
                (field("port", "port", &add.port, &add.errors, 7, Some("add-port")))
                div.field { label { (maud::PreEscaped("&nbsp;")) } button #add-host type="submit" { "Add host" } }
            }
        }
        form.row method="get" action="/routes" style="margin-bottom:10px" {
            (field("modid", "filter modid", &fv("modid"), &ferr, 10, Some("filter-modid")))
            (field("cmdid", "filter cmdid", &fv("cmdid"), &ferr, 10, Some("filter-cmdid")))
            div.field { label { (maud::PreEscaped("&nbsp;")) } div.row { button.plain type="submit" { "Filter" } a href="/routes" { "all" } } }
        }
        table #routes-table {
            tr { th { "modid" } th { "cmdid" } th { "Description" } th { "Hosts" } th {} }
            @for (key, hosts) in &by_key {
                tr {
                    td { (key.modid) } td { (key.cmdid) }
                    td {
                        (mods.get(&key.modid).map(String::as_str).unwrap_or("—"))
                        " / "
                        (cmds.get(&key.cmdid).map(String::as_str).unwrap_or("—"))
                    }
                    td.hosts { @for h in hosts { code { (h.host) } " " } }
                    td { a href=(format!("/routes/{}/{}", key.modid, key.cmdid)) { "edit" } " · "
                         a href=(format!("/status/{}/{}", key.modid, key.cmdid)) { "status" } }
                }
            }
            @if by_key.is_empty() { tr { td colspan="5" .muted { "No routes." } } }
        }
    };
    html(status, page(frame(s, "/routes"), "Routes", body))
}

/// `GET /routes?modid=&cmdid=`.
pub(crate) async fn routes(
    State(st): State<AppState>,
    Extension(s): Extension<SessionInfo>,
    Query(q): Q,
) -> Response {
    render_routes(&st, &s, q, AddForm::default(), StatusCode::OK).await
}

/// `POST /routes`: adds one host to a key.
pub(crate) async fn routes_add(
    State(st): State<AppState>,
    Extension(s): Extension<SessionInfo>,
    body: Bytes,
) -> Response {
    let f = form_fields(&body);
    let get = |n: &str| f.get(n).cloned().unwrap_or_default();
    let mut add = AddForm {
        modid: get("modid"),
        cmdid: get("cmdid"),
        ip: get("ip"),
        port: get("port"),
        errors: FieldErrors::new(),
    };
    let key = validate::key(&add.modid, &add.cmdid, &mut add.errors);
    let host = validate::host(&add.ip, &add.port, "", &mut add.errors);
    let (Some(key), Some(host)) = (key, host) else {
        return render_routes(
            &st,
            &s,
            HashMap::new(),
            add,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    };
    match st.store(move |store| store.add_host(key, host)).await {
        Ok(v) => Redirect::to(&format!(
            "/routes/{}/{}?done=added&v={v}",
            key.modid, key.cmdid
        ))
        .into_response(),
        Err(AppError::Store(e)) if e.is_already_exists() => {
            add.errors
                .insert("ip".into(), format!("{host} is already a route of {key}"));
            render_routes(&st, &s, HashMap::new(), add, StatusCode::CONFLICT).await
        }
        Err(e) => app_error(e),
    }
}

/// What the key page shows besides its hosts: the form that failed.
#[derive(Default)]
struct KeyForms {
    add: AddForm,
    /// The host whose edit failed, with the typed values.
    edit: Option<(HostAddr, String, String, FieldErrors)>,
    replace: Option<(String, String)>,
    alert: Option<String>,
}

async fn render_key(
    state: &AppState,
    s: &SessionInfo,
    key: ModKey,
    q: HashMap<String, String>,
    forms: KeyForms,
    status: StatusCode,
) -> Response {
    let r = state
        .store(move |st| {
            let m = st.descriptions(DescKind::Mod, Some(&key.modid.to_string()))?;
            let c = st.descriptions(DescKind::Cmd, Some(&key.cmdid.to_string()))?;
            let desc = |v: Vec<Description>, code: u32| {
                v.into_iter().find(|d| d.code == code).map(|d| d.content)
            };
            Ok((
                st.version()?,
                hosts_of(st, key)?,
                desc(m, key.modid),
                desc(c, key.cmdid),
            ))
        })
        .await;
    let (version, hosts, mdesc, cdesc) = match r {
        Ok(x) => x,
        Err(e) => return app_error(e),
    };
    let base = format!("/routes/{}/{}", key.modid, key.cmdid);
    let list_text = hosts
        .iter()
        .map(|h| h.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let (replace_text, replace_err) = match &forms.replace {
        Some((t, e)) => (t.clone(), Some(e.clone())),
        None => (list_text, None),
    };
    let body = html! {
        h1 { "Routes of " (key.modid) "/" (key.cmdid) " "
             span.muted style="font-size:14px;font-weight:normal" { "version " span #version { (version) } } }
        p.muted {
            "modid " (key.modid) ": " (mdesc.as_deref().unwrap_or("no description")) " · cmdid " (key.cmdid) ": "
            (cdesc.as_deref().unwrap_or("no description")) " · " a href=(format!("/status/{}/{}", key.modid, key.cmdid)) { "call status" }
        }
        (flash(done(&q)))
        (alert(forms.alert.as_deref()))
        table #hosts-table {
            tr { th { "Host (edit ip and port, then Save)" } th {} }
            @for h in &hosts {
                @let (ip, port, errs) = match &forms.edit {
                    Some((old, ip, port, e)) if old == h => (ip.clone(), port.clone(), e.clone()),
                    _ => (h.ipv4().to_string(), h.port.to_string(), FieldErrors::new()),
                };
                tr data-host=(h) {
                    td {
                        form.inline method="post" action=(format!("{base}/edit")) {
                            (csrf_field(&s.csrf))
                            input type="hidden" name="old" value=(h);
                            (field("ip", "ip", &ip, &errs, 16, Some(&format!("edit-ip-{h}"))))
                            (field("port", "port", &port, &errs, 7, Some(&format!("edit-port-{h}"))))
                            div.field { label { (maud::PreEscaped("&nbsp;")) } button.plain type="submit" { "Save" } }
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
                (field("ip", "ip", &forms.add.ip, &forms.add.errors, 16, Some("key-add-ip")))
                (field("port", "port", &forms.add.port, &forms.add.errors, 7, Some("key-add-port")))
                div.field { label { (maud::PreEscaped("&nbsp;")) } button #key-add type="submit" { "Add host" } }
            }
        }
        div.card {
            h2 style="margin-top:0" { "Replace the list" }
            form method="post" action=(format!("{base}/replace")) {
                (csrf_field(&s.csrf))
                div.field {
                    label for="hosts" { "one a.b.c.d:port per line; an empty list deletes the key" }
                    textarea.bad[replace_err.is_some()] #hosts name="hosts" rows="5" cols="40" { (replace_text) }
                    @if let Some(e) = &replace_err { span.err data-field="hosts" { (e) } }
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
    html(
        status,
        page(frame(s, "/routes"), &format!("Routes {key}"), body),
    )
}

fn page_key(m: &str, c: &str) -> Result<ModKey, Response> {
    let mut errors = FieldErrors::new();
    validate::key(m, c, &mut errors).ok_or_else(|| {
        let msg: Vec<String> = errors.into_values().collect();
        error_page(StatusCode::NOT_FOUND, &msg.join("; "))
    })
}

fn redirect_key(key: ModKey, what: &str, v: u64) -> Response {
    Redirect::to(&format!(
        "/routes/{}/{}?done={what}&v={v}",
        key.modid, key.cmdid
    ))
    .into_response()
}

/// `GET /routes/{modid}/{cmdid}`.
pub(crate) async fn key_page(
    State(st): State<AppState>,
    Extension(s): Extension<SessionInfo>,
    Path((m, c)): Path<(String, String)>,
    Query(q): Q,
) -> Response {
    match page_key(&m, &c) {
        Ok(key) => render_key(&st, &s, key, q, KeyForms::default(), StatusCode::OK).await,
        Err(r) => r,
    }
}

/// `POST /routes/{modid}/{cmdid}/add`.
pub(crate) async fn key_add(
    State(st): State<AppState>,
    Extension(s): Extension<SessionInfo>,
    Path((m, c)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let key = match page_key(&m, &c) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let f = form_fields(&body);
    let mut add = AddForm {
        ip: f.get("ip").cloned().unwrap_or_default(),
        port: f.get("port").cloned().unwrap_or_default(),
        ..AddForm::default()
    };
    let Some(host) = validate::host(&add.ip, &add.port, "", &mut add.errors) else {
        return render_key(
            &st,
            &s,
            key,
            HashMap::new(),
            KeyForms {
                add,
                ..KeyForms::default()
            },
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    };
    match st.store(move |store| store.add_host(key, host)).await {
        Ok(v) => redirect_key(key, "added", v),
        Err(AppError::Store(e)) if e.is_already_exists() => {
            add.errors
                .insert("ip".into(), format!("{host} is already a route of {key}"));
            render_key(
                &st,
                &s,
                key,
                HashMap::new(),
                KeyForms {
                    add,
                    ..KeyForms::default()
                },
                StatusCode::CONFLICT,
            )
            .await
        }
        Err(e) => app_error(e),
    }
}

/// `POST /routes/{modid}/{cmdid}/edit` (`old`, `ip`, `port`).
pub(crate) async fn key_edit(
    State(st): State<AppState>,
    Extension(s): Extension<SessionInfo>,
    Path((m, c)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let key = match page_key(&m, &c) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let f = form_fields(&body);
    let Ok(old) = validate::host_text(f.get("old").map(String::as_str).unwrap_or("")) else {
        return error_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The form names no valid host to change.",
        );
    };
    let ip = f.get("ip").cloned().unwrap_or_default();
    let port = f.get("port").cloned().unwrap_or_default();
    let mut errors = FieldErrors::new();
    let Some(new) = validate::host(&ip, &port, "", &mut errors) else {
        let forms = KeyForms {
            edit: Some((old, ip, port, errors)),
            ..KeyForms::default()
        };
        return render_key(
            &st,
            &s,
            key,
            HashMap::new(),
            forms,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    };
    match st.store(move |store| edit_host(store, key, old, new)).await {
        Ok(v) => redirect_key(key, "edited", v),
        Err(AppError::Store(e)) if e.is_already_exists() => {
            errors.insert("ip".into(), format!("{new} is already a route of {key}"));
            let forms = KeyForms {
                edit: Some((old, ip, port, errors)),
                ..KeyForms::default()
            };
            render_key(&st, &s, key, HashMap::new(), forms, StatusCode::CONFLICT).await
        }
        Err(AppError::Store(e)) if e.is_not_found() => {
            let forms = KeyForms {
                alert: Some(format!(
                    "{old} is no longer a route of {key}; nothing was changed."
                )),
                ..KeyForms::default()
            };
            render_key(&st, &s, key, HashMap::new(), forms, StatusCode::NOT_FOUND).await
        }
        Err(e) => app_error(e),
    }
}

/// `POST /routes/{modid}/{cmdid}/remove` (`host`).
pub(crate) async fn key_remove(
    State(st): State<AppState>,
    Extension(s): Extension<SessionInfo>,
    Path((m, c)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let key = match page_key(&m, &c) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let f = form_fields(&body);
    let Ok(host) = validate::host_text(f.get("host").map(String::as_str).unwrap_or("")) else {
        return error_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The form names no valid host to remove.",
        );
    };
    match st.store(move |store| store.remove_host(key, host)).await {
        Ok(v) => redirect_key(key, "removed", v),
        Err(AppError::Store(e)) if e.is_not_found() => {
            let forms = KeyForms {
                alert: Some(format!(
                    "{host} is no longer a route of {key}; nothing was changed."
                )),
                ..KeyForms::default()
            };
            render_key(&st, &s, key, HashMap::new(), forms, StatusCode::NOT_FOUND).await
        }
        Err(e) => app_error(e),
    }
}

/// `POST /routes/{modid}/{cmdid}/replace` (`hosts`, one per line).
pub(crate) async fn key_replace(
    State(st): State<AppState>,
    Extension(s): Extension<SessionInfo>,
    Path((m, c)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let key = match page_key(&m, &c) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let f = form_fields(&body);
    let text = f.get("hosts").cloned().unwrap_or_default();
    let hosts = match validate::host_lines(&text) {
        Ok(h) => h,
        Err(e) => {
            let forms = KeyForms {
                replace: Some((text, e)),
                ..KeyForms::default()
            };
            return render_key(
                &st,
                &s,
                key,
                HashMap::new(),
                forms,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
        }
    };
    match st.store(move |store| store.set_hosts(key, &hosts)).await {
        Ok(v) => redirect_key(key, "replaced", v),
        Err(e) => app_error(e),
    }
}

/// `POST /routes/{modid}/{cmdid}/delete`.
pub(crate) async fn key_delete(
    State(st): State<AppState>,
    Path((m, c)): Path<(String, String)>,
) -> Response {
    let key = match page_key(&m, &c) {
        Ok(k) => k,
        Err(r) => return r,
    };
    match st.store(move |store| store.delete_key(key)).await {
        Ok(v) => Redirect::to(&format!("/routes?done=key-deleted&v={v}")).into_response(),
        Err(e) => app_error(e),
    }
}

// ---- Versions ----

/// `GET /versions`: the route version and the pending `RouteChange` rows.
pub(crate) async fn versions(
    State(st): State<AppState>,
    Extension(s): Extension<SessionInfo>,
) -> Response {
    let (version, changes): (u64, Vec<RouteChange>) = match st
        .store(|store| Ok((store.version()?, store.pending_changes()?)))
        .await
    {
        Ok(x) => x,
        Err(e) => return app_error(e),
    };
    let body = html! {
        h1 { "Versions" }
        div.stats {
            div.stat { span.muted { "Current route version" } b #version { (version) } }
            div.stat { span.muted { "Pending changes" } b #pending { (changes.len()) } }
        }
        p.muted { "Each change writes a new RouteVersion and one RouteChange row per key. The dns notices the new version,
                   pushes the changed keys to subscribed agents, then deletes the rows it handled." }
        h2 { "Pending changes" }
        table #changes-table {
            tr { th { "Change id" } th { "Key" } th.num { "Version" } th { "Written" } }
            @for c in &changes {
                tr {
                    td { (c.id) }
                    td { a href=(format!("/routes/{}/{}", c.key.modid, c.key.cmdid)) { (c.key) } }
                    td.num { (c.version) }
                    td { @if c.version > 1_000_000_000 { (views::time(i64::try_from(c.version).unwrap_or(0))) } }
                }
            }
            @if changes.is_empty() { tr { td colspan="4" .muted { "None: every change has been pushed." } } }
        }
    };
    html(
        StatusCode::OK,
        page(frame(&s, "/versions"), "Versions", body),
    )
}

// ---- Call status ----

/// `GET /status`: every key with call status, overloaded hosts first.
pub(crate) async fn status(
    State(st): State<AppState>,
    Extension(s): Extension<SessionInfo>,
) -> Response {
    let since = now_secs() - 3600;
    let r = st
        .store(move |store| {
            let rows = store.call_status(None)?;
            let hist = store.history(None, since)?;
            Ok((rows, hist))
        })
        .await;
    let (rows, hist) = match r {
        Ok(x) => x,
        Err(e) => return app_error(e),
    };
    #[derive(Default)]
    struct Sum {
        hosts: std::collections::BTreeSet<HostAddr>,
        over: std::collections::BTreeSet<HostAddr>,
        last: i64,
        succ: u64,
        err: u64,
    }
    let mut keys: BTreeMap<ModKey, Sum> = BTreeMap::new();
    for r in &rows {
        let e = keys.entry(r.key).or_default();
        e.hosts.insert(r.host);
        if r.overload {
            e.over.insert(r.host);
        }
        e.last = e.last.max(r.ts);
    }
    for h in &hist {
        let e = keys.entry(h.key).or_default();
        e.succ += h.succ;
        e.err += h.err;
    }
    let body = html! {
        h1 { "Call status" }
        p.muted { "Latest counters reported by the agents (ServerCallStatus) and totals of the last hour." }
        table #status-table {
            tr { th { "Key" } th.num { "Hosts" } th { "Overloaded" } th.num { "Successes (1 h)" } th.num { "Errors (1 h)" } th { "Last report" } }
            @for (k, v) in &keys {
                tr.overload[!v.over.is_empty()] {
                    td { a href=(format!("/status/{}/{}", k.modid, k.cmdid)) { (k) } }
                    td.num { (v.hosts.len()) }
                    td { @if v.over.is_empty() { span.badge.ok { "none" } } @else { span.badge.bad { (v.over.len()) } } }
                    td.num { (v.succ) } td.num { (v.err) }
                    td { @if v.last > 0 { (views::time(v.last)) } }
                }
            }
            @if keys.is_empty() { tr { td colspan="6" .muted { "No call status reported yet." } } }
        }
    };
    html(
        StatusCode::OK,
        page(frame(&s, "/status"), "Call status", body),
    )
}

/// `GET /status/{modid}/{cmdid}`: each host's latest counters and a chart of
/// the last hour.
pub(crate) async fn status_key(
    State(st): State<AppState>,
    Extension(s): Extension<SessionInfo>,
    Path((m, c)): Path<(String, String)>,
) -> Response {
    let key = match page_key(&m, &c) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let now = now_secs();
    let since = now - now.rem_euclid(60) - 59 * 60;
    let r = st
        .store(move |store| {
            Ok((
                store.call_status(Some(key))?,
                store.history(Some(key), since)?,
            ))
        })
        .await;
    let (rows, hist) = match r {
        Ok(x) => x,
        Err(e) => return app_error(e),
    };
    let points = per_minute(&hist, now, 60);
    let over = rows.iter().filter(|r| r.overload).count();
    let body = html! {
        h1 { "Call status of " (key) }
        p.muted { a href=(format!("/routes/{}/{}", key.modid, key.cmdid)) { "routes of " (key) } " · " a href="/status" { "all keys" } }
        @if over > 0 { div.alert { (over) " host report(s) say overloaded." } }
        div.card { h2 style="margin-top:0" { "Last hour, per minute (UTC)" } (chart(&points)) }
        table #host-status {
            tr { th { "Host" } th { "Caller" } th.num { "Successes" } th.num { "Errors" } th { "State" } th { "Reported" } }
            @for r in &rows {
                tr.overload[r.overload] {
                    td { (r.host) }
                    td { (std::net::Ipv4Addr::from_bits(r.caller)) }
                    td.num { (r.succ_cnt) } td.num { (r.err_cnt) }
                    td { @if r.overload { span.badge.bad { "overloaded" } } @else { span.badge.ok { "ok" } } }
                    td { (views::time(r.ts)) }
                }
            }
            @if rows.is_empty() { tr { td colspan="6" .muted { "No reports for this key." } } }
        }
    };
    html(
        StatusCode::OK,
        page(frame(&s, "/status"), &format!("Status {key}"), body),
    )
}
