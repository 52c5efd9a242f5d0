//! The JSON REST API (`/api/...`, documented in `docs/web.md`): one small
//! module per area, each handler reading its input through
//! [`crate::extract`], calling one use-case of [`crate::console`] and
//! shaping its result as JSON. Errors are [`ApiError`]s.

pub(crate) mod auth;
pub(crate) mod descriptions;
pub(crate) mod routes;
pub(crate) mod status;
pub(crate) mod versions;

use axum::Json;
use lars_core::HostAddr;
use serde_json::{Value, json};

use crate::error::ApiError;

/// What API handlers return.
type ApiResult = Result<Json<Value>, ApiError>;

/// `{"ip", "port"}`.
fn host_json(h: HostAddr) -> Value {
    json!({ "ip": h.ipv4().to_string(), "port": h.port })
}

/// `{"version"}`: the answer of every route change.
fn version_json(v: u64) -> Json<Value> {
    Json(json!({ "version": v }))
}
