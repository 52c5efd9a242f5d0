//! `POST /api/login`, `POST /api/logout`, `GET /api/session`.

use std::net::SocketAddr;

use axum::Extension;
use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ApiResult;
use crate::error::{ApiError, ConsoleError};
use crate::extract::JsonBody;
use crate::input::Fields;
use crate::session::SessionInfo;
use crate::state::AppState;

/// `POST /api/login` with `{"username", "password"}`: returns the bearer
/// `token` and the `csrf_token`, and sets the session cookie.
pub(crate) async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let name = body.text("username");
    let user = match state
        .console()
        .log_in(&name, body.text("password"), peer.ip())
        .await
    {
        Ok(user) => user,
        Err(e) => {
            if matches!(e, ConsoleError::Unauthorized(_)) {
                tracing::warn!(user = name, client = %peer.ip(), "api login failed");
            }
            return Err(e.into());
        }
    };
    let s = state.new_session(Some(user.clone()))?;
    tracing::info!(user, "api login");
    let mut resp =
        Json(json!({ "user": user, "token": s.id, "csrf_token": s.csrf })).into_response();
    state.set_cookie(&mut resp, Some(&s.id));
    Ok(resp)
}

/// `POST /api/logout`: ends the session of the token or cookie (204).
pub(crate) async fn logout(
    State(state): State<AppState>,
    Extension(s): Extension<SessionInfo>,
) -> Response {
    state.sessions().remove(&s.id);
    let mut resp = StatusCode::NO_CONTENT.into_response();
    state.set_cookie(&mut resp, None);
    resp
}

/// `GET /api/stats`: the console's counters ([`crate::WebStats`]).
pub(crate) async fn stats(State(state): State<AppState>) -> ApiResult {
    Ok(Json(json!(state.stats())))
}

/// `GET /api/session`: who is logged in and the CSRF token for cookie
/// writes.
pub(crate) async fn session(Extension(s): Extension<SessionInfo>) -> ApiResult {
    Ok(Json(json!({ "user": s.user, "csrf_token": s.csrf })))
}
