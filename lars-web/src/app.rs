//! The router (every page and API path, by area) and the guard every
//! request passes: session lookup, login requirement, CSRF check, security
//! headers.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{delete, get, post, put};

use crate::error::{ConsoleError, Surface};
use crate::extract::form_fields;
use crate::session::{SessionInfo, same_token};
use crate::state::{AppState, COOKIE};
use crate::{api, pages};

/// The header cookie-authenticated API writes carry the CSRF token in.
const CSRF_HEADER: &str = "x-csrf-token";
/// The form field carrying the CSRF token.
const CSRF_FIELD: &str = "csrf";
/// Largest accepted form body.
const MAX_FORM: usize = 1 << 20;

/// The whole application. The pages and the API are listed by area; each
/// area's handlers live in `pages::<area>` and `api::<area>`.
pub(crate) fn router(state: AppState) -> Router {
    let pages = Router::new()
        .route("/", get(pages::overview::overview))
        .route(
            "/login",
            get(pages::auth::login_form).post(pages::auth::login),
        )
        .route("/logout", post(pages::auth::logout))
        .route(
            "/mods",
            get(pages::descriptions::mods).post(pages::descriptions::mods_save),
        )
        .route("/mods/{modid}/delete", post(pages::descriptions::delete))
        .route(
            "/cmds",
            get(pages::descriptions::cmds).post(pages::descriptions::cmds_save),
        )
        .route("/cmds/{cmdid}/delete", post(pages::descriptions::delete))
        .route(
            "/routes",
            get(pages::routes::routes).post(pages::routes::add),
        )
        .route("/routes/{modid}/{cmdid}", get(pages::key::key))
        .route("/routes/{modid}/{cmdid}/add", post(pages::key::add))
        .route("/routes/{modid}/{cmdid}/edit", post(pages::key::edit))
        .route("/routes/{modid}/{cmdid}/remove", post(pages::key::remove))
        .route("/routes/{modid}/{cmdid}/replace", post(pages::key::replace))
        .route("/routes/{modid}/{cmdid}/delete", post(pages::key::delete))
        .route("/versions", get(pages::versions::versions))
        .route("/status", get(pages::status::status))
        .route("/status/{modid}/{cmdid}", get(pages::status::key_status));
    let api = Router::new()
        .route("/api/login", post(api::auth::login))
        .route("/api/logout", post(api::auth::logout))
        .route("/api/session", get(api::auth::session))
        .route("/api/stats", get(api::auth::stats))
        .route("/api/version", get(api::versions::version))
        .route("/api/changes", get(api::versions::changes))
        .route(
            "/api/mods",
            get(api::descriptions::mods).post(api::descriptions::mods_save),
        )
        .route("/api/mods/{modid}", delete(api::descriptions::delete))
        .route(
            "/api/cmds",
            get(api::descriptions::cmds).post(api::descriptions::cmds_save),
        )
        .route("/api/cmds/{cmdid}", delete(api::descriptions::delete))
        .route("/api/routes", get(api::routes::list).post(api::routes::add))
        .route(
            "/api/routes/{modid}/{cmdid}",
            get(api::routes::key)
                .put(api::routes::replace)
                .delete(api::routes::delete_key),
        )
        .route(
            "/api/routes/{modid}/{cmdid}/hosts/{host}",
            put(api::routes::edit_host).delete(api::routes::remove_host),
        )
        .route("/api/status", get(api::status::status))
        .route("/api/status/{modid}/{cmdid}", get(api::status::key_status));
    Router::new()
        .merge(pages)
        .merge(api)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// 404 as JSON under `/api`, as a page elsewhere.
async fn not_found(req: Request) -> Response {
    let surface = Surface::of(req.uri().path());
    let msg = match surface {
        Surface::Api => "no such API endpoint",
        Surface::Page => "No such page.",
    };
    ConsoleError::NotFound(msg.into()).render(surface)
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
fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// Runs before every handler: turns away a `Host` the console does not
/// answer to (421), finds the session, turns away requests without a login
/// (401 for the API, a redirect to `/login` for pages), checks the CSRF
/// token of every write, and adds security headers to the answer.
async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()));
    let checked = match state.check_host(host.as_deref()) {
        Ok(()) => check(&state, req).await,
        Err(e) => Err(e.render(Surface::of(req.uri().path()))),
    };
    let mut resp = match checked {
        Ok((mut req, session)) => {
            if let Some(s) = session {
                req.extensions_mut().insert(s);
            }
            next.run(req).await
        }
        Err(resp) => resp,
    };
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

/// The request (its form body re-attached) and its session when it may go
/// on; the answer when it may not.
async fn check(state: &AppState, req: Request) -> Result<(Request, Option<SessionInfo>), Response> {
    let path = req.uri().path().to_owned();
    let surface = Surface::of(&path);
    let public = path == "/login" || path == "/api/login";
    let writes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let session = resolve(state, req.headers());
    let logged_in = session.as_ref().is_some_and(|(s, _)| s.user.is_some());

    if !public && !logged_in {
        return Err(match surface {
            Surface::Api => ConsoleError::Unauthorized(
                "log in first: POST /api/login, then send the token as \
                 `Authorization: Bearer <token>` (or the session cookie)",
            )
            .render(surface),
            Surface::Page => Redirect::to("/login").into_response(),
        });
    }
    let session_info = session.as_ref().map(|(s, _)| s.clone());
    if !writes {
        return Ok((req, session_info));
    }
    if surface == Surface::Api {
        if let Some((s, Via::Cookie)) = &session {
            let ok = path == "/api/login"
                || req
                    .headers()
                    .get(CSRF_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|t| same_token(t.trim(), &s.csrf));
            if !ok {
                return Err(ConsoleError::Csrf.render(surface));
            }
        }
        return Ok((req, session_info));
    }
    // A form: the body must carry the session's token.
    let (parts, body) = req.into_parts();
    let bytes: Bytes = axum::body::to_bytes(body, MAX_FORM)
        .await
        .map_err(|_| ConsoleError::TooLarge.render(surface))?;
    let token = form_fields(&bytes).remove(CSRF_FIELD);
    let ok = match (&session_info, token) {
        (Some(s), Some(t)) => same_token(&t, &s.csrf),
        _ => false,
    };
    if !ok {
        return Err(ConsoleError::Csrf.render(surface));
    }
    Ok((Request::from_parts(parts, Body::from(bytes)), session_info))
}
