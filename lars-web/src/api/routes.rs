//! `/api/routes`: list, add, show a key, replace or delete its list, edit or
//! remove one host. Every write answers `{"version"}`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{ApiResult, host_json, version_json};
use crate::error::{ApiError, ConsoleError};
use crate::extract::{HostPath, JsonBody, KeyPath};
use crate::input::{self, HostInput, HostList, RouteInput};
use crate::state::AppState;

/// `GET /api/routes?modid=&cmdid=`.
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let (filter, errors) = input::filter(&q);
    ConsoleError::check(errors)?;
    let list = state.console().routes(filter).await?;
    let routes: Vec<Value> = list
        .rows
        .iter()
        .map(|r| {
            json!({
                "id": r.id, "modid": r.key.modid, "cmdid": r.key.cmdid,
                "ip": r.host.ipv4().to_string(), "port": r.host.port,
            })
        })
        .collect();
    Ok(Json(json!({ "version": list.version, "routes": routes })))
}

/// `POST /api/routes` `{"modid", "cmdid", "ip", "port"}`: adds one host
/// (201).
pub(crate) async fn add(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (_, v) = state.console().add_route(&RouteInput::read(&body)).await?;
    Ok((StatusCode::CREATED, version_json(v)))
}

/// `GET /api/routes/{modid}/{cmdid}`.
pub(crate) async fn key(State(state): State<AppState>, KeyPath(key): KeyPath) -> ApiResult {
    let view = state.console().key(key).await?;
    let hosts: Vec<Value> = view.hosts.into_iter().map(host_json).collect();
    Ok(Json(
        json!({ "modid": key.modid, "cmdid": key.cmdid, "hosts": hosts }),
    ))
}

/// `PUT /api/routes/{modid}/{cmdid}` `{"hosts": [{"ip", "port"}, ...]}`:
/// replaces the list (an empty list deletes the key).
pub(crate) async fn replace(
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let list = HostList::Items(body.get("hosts").cloned().unwrap_or(Value::Null));
    Ok(version_json(
        state.console().replace_hosts(key, &list).await?,
    ))
}

/// `DELETE /api/routes/{modid}/{cmdid}`: deletes every route of the key.
pub(crate) async fn delete_key(State(state): State<AppState>, KeyPath(key): KeyPath) -> ApiResult {
    Ok(version_json(state.console().delete_key(key).await?))
}

/// `PUT /api/routes/{modid}/{cmdid}/hosts/{ip:port}` `{"ip", "port"}`:
/// changes one host in place.
pub(crate) async fn edit_host(
    State(state): State<AppState>,
    path: HostPath,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let new = HostInput::read(&body);
    Ok(version_json(
        state.console().edit_host(path.key, path.host, &new).await?,
    ))
}

/// `DELETE /api/routes/{modid}/{cmdid}/hosts/{ip:port}`.
pub(crate) async fn remove_host(State(state): State<AppState>, path: HostPath) -> ApiResult {
    Ok(version_json(
        state.console().remove_host(path.key, path.host).await?,
    ))
}
