//! Logging in and out, for the pages (form + cookie) and the API (JSON +
//! bearer token or cookie).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use lars_store::UserStore;
use serde_json::json;

use crate::app::{AppError, AppState};
use crate::session::SessionInfo;
use crate::{api, pages, views};

/// Checks a name and password against `lars_users`; the user name when they
/// match. Unknown names cost the same argon2 work as wrong passwords. After
/// [`MAX_FAILURES`] failures for one name within [`FAILURE_WINDOW`] the name
/// is refused without checking (`Err(None)`) until the window passes.
async fn authenticate(
    state: &AppState,
    name: String,
    password: String,
) -> Result<Option<String>, Option<AppError>> {
    let name = name.trim().to_owned();
    if state.throttle().blocked(&name) {
        return Err(None);
    }
    let n2 = name.clone();
    let r = state
        .store(move |store| {
            let user = store.user_by_name(&n2)?;
            Ok(match user {
                Some(u) if crate::verify_password(&password, &u.password_hash) => Some(u.username),
                Some(_) => None,
                None => {
                    crate::verify_password(&password, dummy_hash());
                    None
                }
            })
        })
        .await
        .map_err(Some)?;
    match &r {
        Some(_) => state.throttle().clear(&name),
        None => state.throttle().failed(&name),
    }
    Ok(r)
}

/// Failed logins of one name that block it for the rest of the window.
pub(crate) const MAX_FAILURES: u32 = 10;
/// The window failed logins are counted in.
pub(crate) const FAILURE_WINDOW: Duration = Duration::from_secs(300);

/// Failed-login counts by user name.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    map: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Throttle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u32, Instant)>> {
        // Every mutation is one insert/remove: a poisoned map is still whole.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn blocked(&self, name: &str) -> bool {
        self.lock()
            .get(name)
            .is_some_and(|(n, since)| *n >= MAX_FAILURES && since.elapsed() < FAILURE_WINDOW)
    }

    fn failed(&self, name: &str) {
        let mut map = self.lock();
        if map.len() >= 10_000 {
            map.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
        let e = map.entry(name.to_owned()).or_insert((0, Instant::now()));
        if e.1.elapsed() >= FAILURE_WINDOW {
            *e = (0, Instant::now());
        }
        e.0 += 1;
    }

    fn clear(&self, name: &str) {
        self.lock().remove(name);
    }
}

const THROTTLED: &str = "Too many failed logins for this user; wait a few minutes.";

/// A hash nobody's password matches, verified for unknown names.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| crate::hash_password("no user has this password").unwrap_or_default())
}

/// Parses a form body into its fields (the last value of a repeated name
/// wins).
pub(crate) fn form_fields(body: &Bytes) -> HashMap<String, String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .map(|v| v.into_iter().collect())
        .unwrap_or_default()
}

/// `GET /login`: the form, with an anonymous session carrying its CSRF token.
pub(crate) async fn login_form(
    State(state): State<AppState>,
    session: Option<Extension<SessionInfo>>,
) -> Response {
    login_page(
        &state,
        session.map(|Extension(s)| s),
        StatusCode::OK,
        "",
        None,
    )
}

fn login_page(
    state: &AppState,
    session: Option<SessionInfo>,
    status: StatusCode,
    name: &str,
    error: Option<&str>,
) -> Response {
    if session.as_ref().is_some_and(|s| s.user.is_some()) {
        return Redirect::to("/").into_response();
    }
    let (session, fresh) = match session {
        Some(s) => (s, false),
        None => match state.sessions().create(None) {
            Some(s) => (s, true),
            None => {
                return pages::error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "No randomness for a session.",
                );
            }
        },
    };
    let mut resp = (
        status,
        axum::response::Html(views::login(&session.csrf, name, error).into_string()),
    )
        .into_response();
    if fresh {
        if let Ok(v) = state.session_cookie(&session.id).parse() {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    resp
}

/// `POST /login` (CSRF already checked): on success a new logged-in session
/// replaces the anonymous one.
pub(crate) async fn login(
    State(state): State<AppState>,
    session: Option<Extension<SessionInfo>>,
    body: Bytes,
) -> Response {
    let session = session.map(|Extension(s)| s);
    let f = form_fields(&body);
    let name = f.get("username").cloned().unwrap_or_default();
    let password = f.get("password").cloned().unwrap_or_default();
    match authenticate(&state, name.clone(), password).await {
        Ok(Some(user)) => {
            if let Some(old) = &session {
                state.sessions().remove(&old.id);
            }
            let Some(new) = state.sessions().create(Some(user.clone())) else {
                return pages::error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "No randomness for a session.",
                );
            };
            tracing::info!(user, "console login");
            let mut resp = Redirect::to("/").into_response();
            if let Ok(v) = state.session_cookie(&new.id).parse() {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        Ok(None) => {
            tracing::warn!(user = name, "console login failed");
            login_page(
                &state,
                session,
                StatusCode::UNAUTHORIZED,
                &name,
                Some("Unknown user or wrong password."),
            )
        }
        Err(None) => login_page(
            &state,
            session,
            StatusCode::TOO_MANY_REQUESTS,
            &name,
            Some(THROTTLED),
        ),
        Err(Some(e)) => pages::app_error(e),
    }
}

/// `POST /logout`.
pub(crate) async fn logout(
    State(state): State<AppState>,
    Extension(s): Extension<SessionInfo>,
) -> Response {
    state.sessions().remove(&s.id);
    let mut resp = Redirect::to("/login").into_response();
    if let Ok(v) = state.clear_cookie().parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// `POST /api/login` with `{"username", "password"}`: returns the bearer
/// `token` and the `csrf_token`, and sets the session cookie.
pub(crate) async fn api_login(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v = match api::json_body(&headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let name = v
        .get("username")
        .and_then(|x| x.as_str())
        .unwrap_or_default()
        .to_owned();
    let password = v
        .get("password")
        .and_then(|x| x.as_str())
        .unwrap_or_default()
        .to_owned();
    match authenticate(&state, name.clone(), password).await {
        Ok(Some(user)) => {
            let Some(s) = state.sessions().create(Some(user.clone())) else {
                return api::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "no randomness for a session",
                );
            };
            tracing::info!(user, "api login");
            let mut resp = axum::Json(json!({
                "user": user,
                "token": s.id,
                "csrf_token": s.csrf,
            }))
            .into_response();
            if let Ok(v) = state.session_cookie(&s.id).parse() {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        Ok(None) => {
            tracing::warn!(user = name, "api login failed");
            api::error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "unknown user or wrong password",
            )
        }
        Err(None) => api::error(StatusCode::TOO_MANY_REQUESTS, "throttled", THROTTLED),
        Err(Some(e)) => api::app_error(e),
    }
}

/// `POST /api/logout`: ends the session of the token or cookie.
pub(crate) async fn api_logout(
    State(state): State<AppState>,
    Extension(s): Extension<SessionInfo>,
) -> Response {
    state.sessions().remove(&s.id);
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = state.clear_cookie().parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// `GET /api/session`: who is logged in and the CSRF token for cookie
/// writes.
pub(crate) async fn api_session(Extension(s): Extension<SessionInfo>) -> Response {
    axum::Json(json!({ "user": s.user, "csrf_token": s.csrf })).into_response()
}
