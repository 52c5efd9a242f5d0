//! `GET /api/version`, `GET /api/changes`.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::ApiResult;
use crate::state::AppState;

/// `GET /api/version`: `{"version", "pending_changes"}`.
pub(crate) async fn version(State(state): State<AppState>) -> ApiResult {
    let v = state.console().versions().await?;
    Ok(Json(
        json!({ "version": v.version, "pending_changes": v.changes.len() }),
    ))
}

/// `GET /api/changes`: pending `RouteChange` rows, oldest first.
pub(crate) async fn changes(State(state): State<AppState>) -> ApiResult {
    let v = state.console().versions().await?;
    let changes: Vec<Value> = v
        .changes
        .iter()
        .map(|c| json!({ "id": c.id, "modid": c.key.modid, "cmdid": c.key.cmdid, "version": c.version }))
        .collect();
    Ok(Json(json!({ "version": v.version, "changes": changes })))
}
