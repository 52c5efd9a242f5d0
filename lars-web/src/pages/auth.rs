//! `GET /login`, `POST /login`, `POST /logout`.

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::{PageResult, html};
use crate::error::{ConsoleError, with_retry_after};
use crate::extract::FormBody;
use crate::input::Fields;
use crate::session::SessionInfo;
use crate::state::AppState;
use crate::views;

/// `GET /login`: the form, with an anonymous session carrying its CSRF
/// token.
pub(crate) async fn login_form(
    State(state): State<AppState>,
    session: Option<Extension<SessionInfo>>,
) -> PageResult {
    login_page(
        &state,
        session.map(|Extension(s)| s),
        StatusCode::OK,
        "",
        None,
    )
}

/// The login form (a logged-in session goes to the overview instead).
fn login_page(
    state: &AppState,
    session: Option<SessionInfo>,
    status: StatusCode,
    name: &str,
    error: Option<&str>,
) -> PageResult {
    if session.as_ref().is_some_and(|s| s.user.is_some()) {
        return Ok(Redirect::to("/").into_response());
    }
    let (session, fresh) = match session {
        Some(s) => (s, false),
        None => (state.new_session(None)?, true),
    };
    let mut resp = html(status, views::login(&session.csrf, name, error));
    if fresh {
        state.set_cookie(&mut resp, Some(&session.id));
    }
    Ok(resp)
}

/// `POST /login` (CSRF already checked): on success a new logged-in session
/// replaces the anonymous one.
pub(crate) async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    session: Option<Extension<SessionInfo>>,
    FormBody(f): FormBody,
) -> PageResult {
    let session = session.map(|Extension(s)| s);
    let name = f.text("username");
    match state
        .console()
        .log_in(&name, f.text("password"), peer.ip())
        .await
    {
        Ok(user) => {
            if let Some(old) = &session {
                state.sessions().remove(&old.id);
            }
            let new = state.new_session(Some(user.clone()))?;
            tracing::info!(user, "console login");
            let mut resp = Redirect::to("/").into_response();
            state.set_cookie(&mut resp, Some(&new.id));
            Ok(resp)
        }
        Err(ConsoleError::Unauthorized(_)) => {
            tracing::warn!(user = name, client = %peer.ip(), "console login failed");
            let msg = "Unknown user or wrong password.";
            login_page(&state, session, StatusCode::UNAUTHORIZED, &name, Some(msg))
        }
        Err(e @ (ConsoleError::Throttled { .. } | ConsoleError::Busy)) => {
            let msg = e.to_string();
            let mut resp = login_page(&state, session, e.status(), &name, Some(&msg))?;
            with_retry_after(&mut resp, e.retry_after());
            Ok(resp)
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /logout`.
pub(crate) async fn logout(
    State(state): State<AppState>,
    Extension(s): Extension<SessionInfo>,
) -> Response {
    state.sessions().remove(&s.id);
    let mut resp = Redirect::to("/login").into_response();
    state.set_cookie(&mut resp, None);
    resp
}
