//! `/api/status`: the latest call counters, and one key's history.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use lars_store::CallStatusRow;
use serde_json::{Value, json};

use super::ApiResult;
use crate::error::ConsoleError;
use crate::extract::KeyPath;
use crate::input;
use crate::state::AppState;

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
) -> ApiResult {
    let (filter, errors) = input::filter(&q);
    ConsoleError::check(errors)?;
    let rows = state.console().call_status(filter).await?;
    let rows: Vec<Value> = rows.iter().map(status_json).collect();
    Ok(Json(json!({ "rows": rows })))
}

/// `GET /api/status/{modid}/{cmdid}?minutes=60`: the key's status rows, its
/// successes and errors per minute, and the reports the reporters' trust
/// limits rejected in those minutes (`clipped` when any).
pub(crate) async fn key_status(
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let minutes = input::minutes(&q)?;
    let s = state.console().key_status(key, minutes).await?;
    let history: Vec<Value> = s
        .history
        .iter()
        .map(|m| json!({ "minute": m.minute, "succ": m.succ, "err": m.err }))
        .collect();
    let rows: Vec<Value> = s.rows.iter().map(status_json).collect();
    // Reports the reporters' trust limits rejected (not in `history`).
    let rejected: Vec<Value> = s
        .rejected
        .iter()
        .map(|r| json!({ "minute": r.minute, "reports": r.reports, "calls": r.calls }))
        .collect();
    Ok(Json(json!({
        "modid": key.modid, "cmdid": key.cmdid, "rows": rows, "history": history,
        "clipped": !rejected.is_empty(), "rejected": rejected,
    })))
}
