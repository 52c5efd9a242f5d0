//! The router, shared state, and the guard every request passes: session
//! lookup, login requirement, CSRF check, security headers.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post, put};
use lars_store::{Store, StoreError};

use crate::WebConfig;
use crate::auth::Throttle;
use crate::session::{SessionInfo, Sessions, same_token};
use crate::{api, auth, pages};

/// The session cookie's name.
pub(crate) const COOKIE: &str = "lars_session";
/// The header cookie-authenticated API writes carry the CSRF token in.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
/// The form field carrying the CSRF token.
pub(crate) const CSRF_FIELD: &str = "csrf";
/// Largest accepted form body.
const MAX_FORM: usize = 1 << 20;

/// State shared by every handler.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    store: Store,
    sessions: Sessions,
    throttle: Throttle,
    config: WebConfig,
}

impl AppState {
    pub(crate) fn new(config: WebConfig, store: Store) -> Self {
        Self {
            inner: Arc::new(Shared {
                store,
                sessions: Sessions::new(config.session_idle, config.max_sessions),
                throttle: Throttle::default(),
                config,
            }),
        }
    }

    pub(crate) fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    pub(crate) fn throttle(&self) -> &Throttle {
        &self.inner.throttle
    }

    /// Runs a blocking store call on tokio's blocking pool.
    pub(crate) async fn store<T, F>(&self, f: F) -> Result<T, AppError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.inner.store.clone();
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(r) => r.map_err(AppError::Store),
            Err(e) => Err(AppError::Internal(format!("store task failed: {e}"))),
        }
    }

    /// The `Set-Cookie` value carrying session `id`.
    pub(crate) fn session_cookie(&self, id: &str) -> String {
        let secure = if self.inner.config.secure_cookies {
            "; Secure"
        } else {
            ""
        };
        format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{secure}")
    }

    /// The `Set-Cookie` value removing the session cookie.
    pub(crate) fn clear_cookie(&self) -> String {
        let secure = if self.inner.config.secure_cookies {
            "; Secure"
        } else {
            ""
        };
        format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
    }
}

/// A failed store call.
#[derive(Debug)]
pub(crate) enum AppError {
    /// The store said no.
    Store(StoreError),
    /// Something on our side broke.
    Internal(String),
}

/// The whole application.
pub(crate) fn router(state: AppState) -> Router {
    let pages = Router::new()
        .route("/", get(pages::overview))
        .route("/login", get(auth::login_form).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/mods", get(pages::mods).post(pages::mods_save))
        .route("/mods/{code}/delete", post(pages::mods_delete))
        .route("/cmds", get(pages::cmds).post(pages::cmds_save))
        .route("/cmds/{code}/delete", post(pages::cmds_delete))
        .route("/routes", get(pages::routes).post(pages::routes_add))
        .route("/routes/{modid}/{cmdid}", get(pages::key_page))
        .route("/routes/{modid}/{cmdid}/add", post(pages::key_add))
        .route("/routes/{modid}/{cmdid}/edit", post(pages::key_edit))
        .route("/routes/{modid}/{cmdid}/remove", post(pages::key_remove))
        .route("/routes/{modid}/{cmdid}/replace", post(pages::key_replace))
        .route("/routes/{modid}/{cmdid}/delete", post(pages::key_delete))
        .route("/versions", get(pages::versions))
        .route("/status", get(pages::status))
        .route("/status/{modid}/{cmdid}", get(pages::status_key));
    let api = Router::new()
        .route("/api/login", post(auth::api_login))
        .route("/api/logout", post(auth::api_logout))
        .route("/api/session", get(auth::api_session))
        .route("/api/version", get(api::version))
        .route("/api/changes", get(api::changes))
        .route("/api/mods", get(api::mods).post(api::mods_save))
        .route("/api/mods/{code}", axum::routing::delete(api::mods_delete))
        .route("/api/cmds", get(api::cmds).post(api::cmds_save))
        .route("/api/cmds/{code}", axum::routing::delete(api::cmds_delete))
        .route("/api/routes", get(api::routes).post(api::routes_add))
        .route(
            "/api/routes/{modid}/{cmdid}",
            get(api::key_hosts)
                .put(api::key_replace)
                .delete(api::key_delete),
        )
        .route(
            "/api/routes/{modid}/{cmdid}/hosts/{host}",
            put(api::host_edit).delete(api::host_remove),
        )
        .route("/api/status", get(api::status))
        .route("/api/status/{modid}/{cmdid}", get(api::status_key));
    Router::new()
        .merge(pages)
        .merge(api)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// 404 as JSON under `/api`, as a page elsewhere.
async fn not_found(req: Request) -> Response {
    if req.uri().path().starts_with("/api/") {
        api::error(StatusCode::NOT_FOUND, "not_found", "no such API endpoint")
    } else {
        pages::error_page(StatusCode::NOT_FOUND, "No such page.")
    }
}

/// How the request proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Cookie,
    Bearer,
}

/// The session of a request: a bearer token first, then the cookie.
fn resolve(state: &AppState, headers: &HeaderMap) -> Option<(SessionInfo, Via)> {
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        // A bad bearer token is not silently replaced by the cookie.
        return state.sessions().get(token.trim()).map(|s| (s, Via::Bearer));
    }
    cookie_value(headers, COOKIE)
        .and_then(|id| state.sessions().get(&id))
        .map(|s| (s, Via::Cookie))
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// Runs before every handler: finds the session, turns away requests without
/// a login (401 for the API, a redirect to `/login` for pages), checks the
/// CSRF token of every write, and adds security headers to the answer.
async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut resp = check(&state, req, next).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn check(state: &AppState, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let is_api = path == "/api" || path.starts_with("/api/");
    let public = path == "/login" || path == "/api/login";
    let writes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let session = resolve(state, req.headers());
    let logged_in = session.as_ref().is_some_and(|(s, _)| s.user.is_some());

    if !public && !logged_in {
        return if is_api {
            api::error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "log in first: POST /api/login, then send the token as \
                 `Authorization: Bearer <token>` (or the session cookie)",
            )
        } else {
            Redirect::to("/login").into_response()
        };
    }
    if !writes {
        return with_session(req, session, next).await;
    }
    if is_api {
        if path != "/api/login" {
            if let Some((s, Via::Cookie)) = &session {
                let ok = req
                    .headers()
                    .get(CSRF_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|t| same_token(t.trim(), &s.csrf));
                if !ok {
                    return api::error(
                        StatusCode::FORBIDDEN,
                        "csrf",
                        "cookie-authenticated writes need the session's X-CSRF-Token header \
                         (GET /api/session shows it)",
                    );
                }
            }
        }
        return with_session(req, session, next).await;
    }
    // A form: the body must carry the session's token.
    let (parts, body) = req.into_parts();
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_FORM).await {
        Ok(b) => b,
        Err(_) => {
            return pages::error_page(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large.");
        }
    };
    let token = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
        .ok()
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == CSRF_FIELD))
        .map(|(_, v)| v);
    let ok = match (&session, token) {
        (Some((s, _)), Some(t)) => same_token(&t, &s.csrf),
        _ => false,
    };
    if !ok {
        return pages::error_page(
            StatusCode::FORBIDDEN,
            "This form is stale or did not come from the console (CSRF check failed). \
             Reload the page and try again.",
        );
    }
    let req = Request::from_parts(parts, Body::from(bytes));
    with_session(req, session, next).await
}

async fn with_session(
    mut req: Request,
    session: Option<(SessionInfo, Via)>,
    next: Next,
) -> Response {
    if let Some((s, _)) = session {
        req.extensions_mut().insert(s);
    }
    next.run(req).await
}
