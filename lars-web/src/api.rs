//! The JSON REST API (`/api/...`), documented in `docs/web.md`.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lars_core::{HostAddr, ModKey};
use lars_store::{
    CallStatusRow, DescKind, Descriptions, HistoryRow, RouteAdmin, RouteFilter, RouteRead,
    StatsStore, Store, StoreError,
};
use serde_json::{Value, json};

use crate::app::{AppError, AppState};
use crate::validate::{self, FieldErrors};

/// A JSON error: `{"error": code, "message": message}`.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "error": code, "message": message }))).into_response()
}

/// 422 with the message of each bad field.
pub(crate) fn invalid(fields: &FieldErrors) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({
            "error": "validation",
            "message": "some fields are invalid; nothing was written",
            "fields": fields,
        })),
    )
        .into_response()
}

/// The status and JSON error of a failed store call.
pub(crate) fn app_error(e: AppError) -> Response {
    let (status, code, msg) = classify(&e);
    error(status, code, &msg)
}

/// Status, error code and message of a failed store call (shared with the
/// pages).
pub(crate) fn classify(e: &AppError) -> (StatusCode, &'static str, String) {
    match e {
        AppError::Store(StoreError::NotFound(m)) => (StatusCode::NOT_FOUND, "not_found", m.clone()),
        AppError::Store(StoreError::AlreadyExists(m)) => {
            (StatusCode::CONFLICT, "conflict", m.clone())
        }
        AppError::Store(StoreError::Invalid(m)) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "validation", m.clone())
        }
        AppError::Store(e) if e.is_unavailable() => {
            tracing::warn!("store unavailable: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the database is unavailable; nothing was written, try again".into(),
            )
        }
        AppError::Store(e) => {
            tracing::error!("store error: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_error",
                e.to_string(),
            )
        }
        AppError::Internal(m) => {
            tracing::error!("internal error: {m}");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal", m.clone())
        }
    }
}

/// The request body as JSON; 415 unless it is `application/json`, 400 when
/// malformed.
pub(crate) fn json_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, Response> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !is_json {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            "send the body as Content-Type: application/json",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "bad_json",
            &format!("malformed JSON: {e}"),
        )
    })
}

/// A field as text for the validators: strings as they are, numbers in
/// decimal, anything else (or missing) as empty.
fn text(v: &Value, name: &str) -> String {
    match v.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// The key of a `/{modid}/{cmdid}` path.
fn path_key(modid: &str, cmdid: &str) -> Result<ModKey, Response> {
    let mut errors = FieldErrors::new();
    validate::key(modid, cmdid, &mut errors).ok_or_else(|| invalid(&errors))
}

fn host_json(h: HostAddr) -> Value {
    json!({ "ip": h.ipv4().to_string(), "port": h.port })
}

/// `GET /api/version`.
pub(crate) async fn version(State(state): State<AppState>) -> Response {
    match state
        .store(|s| Ok((s.version()?, s.pending_changes()?.len())))
        .await
    {
        Ok((v, n)) => Json(json!({ "version": v, "pending_changes": n })).into_response(),
        Err(e) => app_error(e),
    }
}

/// `GET /api/changes`: pending `RouteChange` rows, oldest first.
pub(crate) async fn changes(State(state): State<AppState>) -> Response {
    match state
        .store(|s| Ok((s.version()?, s.pending_changes()?)))
        .await
    {
        Ok((v, rows)) => {
            let changes: Vec<Value> = rows
                .iter()
                .map(|c| json!({ "id": c.id, "modid": c.key.modid, "cmdid": c.key.cmdid, "version": c.version }))
                .collect();
            Json(json!({ "version": v, "changes": changes })).into_response()
        }
        Err(e) => app_error(e),
    }
}

fn kind_field(kind: DescKind) -> &'static str {
    match kind {
        DescKind::Mod => "modid",
        DescKind::Cmd => "cmdid",
    }
}

async fn list_desc(state: AppState, kind: DescKind, q: HashMap<String, String>) -> Response {
    let search = q
        .get("q")
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    match state
        .store(move |s| s.descriptions(kind, search.as_deref()))
        .await
    {
        Ok(rows) => {
            let field = kind_field(kind);
            let items: Vec<Value> = rows
                .iter()
                .map(|d| json!({ field: d.code, "content": d.content }))
                .collect();
            Json(Value::Array(items)).into_response()
        }
        Err(e) => app_error(e),
    }
}

async fn save_desc(state: AppState, kind: DescKind, headers: HeaderMap, body: Bytes) -> Response {
    let v = match json_body(&headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let field = kind_field(kind);
    let mut errors = FieldErrors::new();
    let code = validate::id(field, &text(&v, field)).map_err(|e| errors.insert(field.into(), e));
    let content =
        validate::content(&text(&v, "content")).map_err(|e| errors.insert("content".into(), e));
    let (Ok(code), Ok(content)) = (code, content) else {
        return invalid(&errors);
    };
    let c2 = content.clone();
    match state
        .store(move |s| s.set_description(kind, code, &c2))
        .await
    {
        Ok(()) => Json(json!({ field: code, "content": content })).into_response(),
        Err(e) => app_error(e),
    }
}

async fn delete_desc(state: AppState, kind: DescKind, code: String) -> Response {
    let field = kind_field(kind);
    let code = match validate::id(field, &code) {
        Ok(c) => c,
        Err(e) => return invalid(&FieldErrors::from([(field.to_owned(), e)])),
    };
    match state.store(move |s| s.delete_description(kind, code)).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => app_error(e),
    }
}

/// `GET /api/mods?q=`.
pub(crate) async fn mods(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    list_desc(state, DescKind::Mod, q).await
}

/// `POST /api/mods` `{"modid", "content"}` (insert or update).
pub(crate) async fn mods_save(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    save_desc(state, DescKind::Mod, headers, body).await
}

/// `DELETE /api/mods/{modid}`.
pub(crate) async fn mods_delete(
    State(state): State<AppState>,
    Path(code): Path<String>,
) -> Response {
    delete_desc(state, DescKind::Mod, code).await
}

/// `GET /api/cmds?q=`.
pub(crate) async fn cmds(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    list_desc(state, DescKind::Cmd, q).await
}

/// `POST /api/cmds` `{"cmdid", "content"}` (insert or update).
pub(crate) async fn cmds_save(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    save_desc(state, DescKind::Cmd, headers, body).await
}

/// `DELETE /api/cmds/{cmdid}`.
pub(crate) async fn cmds_delete(
    State(state): State<AppState>,
    Path(code): Path<String>,
) -> Response {
    delete_desc(state, DescKind::Cmd, code).await
}

/// The optional `modid` / `cmdid` query filters.
pub(crate) fn filter(q: &HashMap<String, String>, errors: &mut FieldErrors) -> RouteFilter {
    let mut one = |name: &str| {
        let t = q.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())?;
        validate::id(name, t)
            .map_err(|e| errors.insert(name.to_owned(), e))
            .ok()
    };
    RouteFilter {
        modid: one("modid"),
        cmdid: one("cmdid"),
    }
}

/// `GET /api/routes?modid=&cmdid=`.
pub(crate) async fn routes(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut errors = FieldErrors::new();
    let f = filter(&q, &mut errors);
    if !errors.is_empty() {
        return invalid(&errors);
    }
    match state
        .store(move |s| Ok((s.version()?, s.list_routes(f)?)))
        .await
    {
        Ok((v, rows)) => {
            let routes: Vec<Value> = rows
                .iter()
                .map(|r| {
                    json!({
                        "id": r.id, "modid": r.key.modid, "cmdid": r.key.cmdid,
                        "ip": r.host.ipv4().to_string(), "port": r.host.port,
                    })
                })
                .collect();
            Json(json!({ "version": v, "routes": routes })).into_response()
        }
        Err(e) => app_error(e),
    }
}

fn version_json(v: u64) -> Response {
    Json(json!({ "version": v })).into_response()
}

/// `POST /api/routes` `{"modid", "cmdid", "ip", "port"}`: adds one host.
pub(crate) async fn routes_add(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v = match json_body(&headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut errors = FieldErrors::new();
    let key = validate::key(&text(&v, "modid"), &text(&v, "cmdid"), &mut errors);
    let host = validate::host(&text(&v, "ip"), &text(&v, "port"), "", &mut errors);
    let (Some(key), Some(host)) = (key, host) else {
        return invalid(&errors);
    };
    match state.store(move |s| s.add_host(key, host)).await {
        Ok(v) => (StatusCode::CREATED, Json(json!({ "version": v }))).into_response(),
        Err(e) => app_error(e),
    }
}

/// `GET /api/routes/{modid}/{cmdid}`.
pub(crate) async fn key_hosts(
    State(state): State<AppState>,
    Path((m, c)): Path<(String, String)>,
) -> Response {
    let key = match path_key(&m, &c) {
        Ok(k) => k,
        Err(r) => return r,
    };
    match state.store(move |s| hosts_of(s, key)).await {
        Ok(hosts) => {
            let hosts: Vec<Value> = hosts.into_iter().map(host_json).collect();
            Json(json!({ "modid": key.modid, "cmdid": key.cmdid, "hosts": hosts })).into_response()
        }
        Err(e) => app_error(e),
    }
}

/// The hosts of `key`, in row order.
pub(crate) fn hosts_of(store: &Store, key: ModKey) -> Result<Vec<HostAddr>, StoreError> {
    Ok(store
        .list_routes(RouteFilter {
            modid: Some(key.modid),
            cmdid: Some(key.cmdid),
        })?
        .into_iter()
        .map(|r| r.host)
        .collect())
}

/// Replaces host `old` of `key` by `new`, keeping its place in the list, in
/// one store transaction.
pub(crate) fn edit_host(
    store: &Store,
    key: ModKey,
    old: HostAddr,
    new: HostAddr,
) -> Result<u64, StoreError> {
    let mut hosts = hosts_of(store, key)?;
    let Some(at) = hosts.iter().position(|h| *h == old) else {
        return Err(StoreError::NotFound(format!(
            "host {old} is not a route of {key}"
        )));
    };
    if old != new && hosts.contains(&new) {
        return Err(StoreError::AlreadyExists(format!(
            "host {new} is already a route of {key}"
        )));
    }
    hosts[at] = new;
    store.set_hosts(key, &hosts)
}

/// `PUT /api/routes/{modid}/{cmdid}` `{"hosts": [{"ip", "port"}, ...]}`:
/// replaces the list (an empty list deletes the key).
pub(crate) async fn key_replace(
    State(state): State<AppState>,
    Path((m, c)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = match path_key(&m, &c) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let v = match json_body(&headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut errors = FieldErrors::new();
    let Some(items) = v.get("hosts").and_then(|h| h.as_array()) else {
        errors.insert(
            "hosts".into(),
            "hosts must be a list of {\"ip\", \"port\"} objects".into(),
        );
        return invalid(&errors);
    };
    let mut hosts = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if let Some(h) = validate::host(
            &text(item, "ip"),
            &text(item, "port"),
            &format!("hosts[{i}]."),
            &mut errors,
        ) {
            hosts.push(h);
        }
    }
    if !errors.is_empty() {
        return invalid(&errors);
    }
    match state.store(move |s| s.set_hosts(key, &hosts)).await {
        Ok(v) => version_json(v),
        Err(e) => app_error(e),
    }
}

/// `DELETE /api/routes/{modid}/{cmdid}`: deletes every route of the key.
pub(crate) async fn key_delete(
    State(state): State<AppState>,
    Path((m, c)): Path<(String, String)>,
) -> Response {
    let key = match path_key(&m, &c) {
        Ok(k) => k,
        Err(r) => return r,
    };
    match state.store(move |s| s.delete_key(key)).await {
        Ok(v) => version_json(v),
        Err(e) => app_error(e),
    }
}

fn path_host(host: &str) -> Result<HostAddr, Response> {
    validate::host_text(host).map_err(|e| invalid(&FieldErrors::from([("host".to_owned(), e)])))
}

/// `PUT /api/routes/{modid}/{cmdid}/hosts/{ip:port}` `{"ip", "port"}`:
/// changes one host.
pub(crate) async fn host_edit(
    State(state): State<AppState>,
    Path((m, c, h)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = match path_key(&m, &c) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let old = match path_host(&h) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let v = match json_body(&headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut errors = FieldErrors::new();
    let Some(new) = validate::host(&text(&v, "ip"), &text(&v, "port"), "", &mut errors) else {
        return invalid(&errors);
    };
    match state.store(move |s| edit_host(s, key, old, new)).await {
        Ok(v) => version_json(v),
        Err(e) => app_error(e),
    }
}

/// `DELETE /api/routes/{modid}/{cmdid}/hosts/{ip:port}`.
pub(crate) async fn host_remove(
    State(state): State<AppState>,
    Path((m, c, h)): Path<(String, String, String)>,
) -> Response {
    let key = match path_key(&m, &c) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let host = match path_host(&h) {
        Ok(h) => h,
        Err(r) => return r,
    };
    match state.store(move |s| s.remove_host(key, host)).await {
        Ok(v) => version_json(v),
        Err(e) => app_error(e),
    }
}

fn status_json(r: &CallStatusRow) -> Value {
    json!({
        "modid": r.key.modid, "cmdid": r.key.cmdid,
        "ip": r.host.ipv4().to_string(), "port": r.host.port,
        "caller": std::net::Ipv4Addr::from_bits(r.caller).to_string(),
        "succ_cnt": r.succ_cnt, "err_cnt": r.err_cnt, "ts": r.ts, "overload": r.overload,
    })
}

/// `GET /api/status?modid=&cmdid=`: latest `ServerCallStatus` rows.
pub(crate) async fn status(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut errors = FieldErrors::new();
    let f = filter(&q, &mut errors);
    if !errors.is_empty() {
        return invalid(&errors);
    }
    match state.store(|s| s.call_status(None)).await {
        Ok(rows) => {
            let rows: Vec<Value> = rows
                .iter()
                .filter(|r| {
                    f.modid.is_none_or(|m| m == r.key.modid)
                        && f.cmdid.is_none_or(|c| c == r.key.cmdid)
                })
                .map(status_json)
                .collect();
            Json(json!({ "rows": rows })).into_response()
        }
        Err(e) => app_error(e),
    }
}

/// Per-minute totals over all hosts: `(minute, succ, err)` for each of the
/// `minutes` minutes ending with the current one, zeros included.
pub(crate) fn per_minute(rows: &[HistoryRow], now: i64, minutes: i64) -> Vec<(i64, u64, u64)> {
    let last = now - now.rem_euclid(60);
    let first = last - (minutes - 1) * 60;
    let mut out: Vec<(i64, u64, u64)> = (0..minutes).map(|i| (first + i * 60, 0, 0)).collect();
    for r in rows {
        if r.minute < first || r.minute > last {
            continue;
        }
        if let Some(slot) = usize::try_from((r.minute - first) / 60)
            .ok()
            .and_then(|i| out.get_mut(i))
        {
            slot.1 += r.succ;
            slot.2 += r.err;
        }
    }
    out
}

/// Current unix time in seconds.
pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `GET /api/status/{modid}/{cmdid}?minutes=60`: the key's status rows and
/// its successes and errors per minute.
pub(crate) async fn status_key(
    State(state): State<AppState>,
    Path((m, c)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let key = match path_key(&m, &c) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let minutes = match q.get("minutes").map(|s| s.trim().parse::<i64>()) {
        None => 60,
        Some(Ok(n)) if (1..=1440).contains(&n) => n,
        Some(_) => {
            return invalid(&FieldErrors::from([(
                "minutes".to_owned(),
                "minutes must be a whole number from 1 to 1440".to_owned(),
            )]));
        }
    };
    let now = now_secs();
    let since = now - now.rem_euclid(60) - (minutes - 1) * 60;
    match state
        .store(move |s| Ok((s.call_status(Some(key))?, s.history(Some(key), since)?)))
        .await
    {
        Ok((rows, hist)) => {
            let history: Vec<Value> = per_minute(&hist, now, minutes)
                .into_iter()
                .map(|(minute, succ, err)| json!({ "minute": minute, "succ": succ, "err": err }))
                .collect();
            let rows: Vec<Value> = rows.iter().map(status_json).collect();
            Json(
                json!({ "modid": key.modid, "cmdid": key.cmdid, "rows": rows, "history": history }),
            )
            .into_response()
        }
        Err(e) => app_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_are_bucketed_with_zeros() {
        let key = ModKey::new(1, 1);
        let host = HostAddr::new(1, 1);
        let now = 10_000 * 60 + 30;
        let rows = [
            HistoryRow {
                key,
                host,
                minute: 10_000 * 60,
                succ: 5,
                err: 1,
            },
            HistoryRow {
                key,
                host: HostAddr::new(2, 2),
                minute: 10_000 * 60,
                succ: 2,
                err: 0,
            },
            HistoryRow {
                key,
                host,
                minute: 9_998 * 60,
                succ: 1,
                err: 3,
            },
            HistoryRow {
                key,
                host,
                minute: 9_000 * 60,
                succ: 100,
                err: 100,
            },
        ];
        let m = per_minute(&rows, now, 3);
        assert_eq!(
            m,
            vec![(9_998 * 60, 1, 3), (9_999 * 60, 0, 0), (10_000 * 60, 7, 1)]
        );
    }
}
