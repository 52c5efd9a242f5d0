//! `/api/mods` and `/api/cmds`: list, save, delete descriptions.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use lars_store::DescKind;
use serde_json::{Value, json};

use super::ApiResult;
use crate::console::descriptions::code_field;
use crate::error::ApiError;
use crate::extract::{DescPath, JsonBody};
use crate::input::{self, DescInput};
use crate::state::AppState;

type Q = Query<HashMap<String, String>>;

async fn list(state: AppState, kind: DescKind, q: HashMap<String, String>) -> ApiResult {
    let rows = state
        .console()
        .descriptions(kind, input::search(&q))
        .await?;
    let field = code_field(kind);
    let items: Vec<Value> = rows
        .iter()
        .map(|d| json!({ field: d.code, "content": d.content }))
        .collect();
    Ok(Json(Value::Array(items)))
}

async fn save(state: AppState, kind: DescKind, body: Value) -> ApiResult {
    let field = code_field(kind);
    let (code, content) = state
        .console()
        .save_description(kind, &DescInput::read(&body, field))
        .await?;
    Ok(Json(json!({ field: code, "content": content })))
}

/// `GET /api/mods?q=`.
pub(crate) async fn mods(State(state): State<AppState>, Query(q): Q) -> ApiResult {
    list(state, DescKind::Mod, q).await
}

/// `POST /api/mods` `{"modid", "content"}` (insert or update).
pub(crate) async fn mods_save(State(state): State<AppState>, JsonBody(b): JsonBody) -> ApiResult {
    save(state, DescKind::Mod, b).await
}

/// `GET /api/cmds?q=`.
pub(crate) async fn cmds(State(state): State<AppState>, Query(q): Q) -> ApiResult {
    list(state, DescKind::Cmd, q).await
}

/// `POST /api/cmds` `{"cmdid", "content"}` (insert or update).
pub(crate) async fn cmds_save(State(state): State<AppState>, JsonBody(b): JsonBody) -> ApiResult {
    save(state, DescKind::Cmd, b).await
}

/// `DELETE /api/mods/{modid}`, `DELETE /api/cmds/{cmdid}`: 204.
pub(crate) async fn delete(
    State(state): State<AppState>,
    p: DescPath,
) -> Result<StatusCode, ApiError> {
    state.console().delete_description(p.kind, p.code).await?;
    Ok(StatusCode::NO_CONTENT)
}
