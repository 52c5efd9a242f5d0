//! The console's one error type, [`ConsoleError`], and its two renderings:
//! `{"error", "message"}` JSON under `/api/` ([`ApiError`]) and an HTML page
//! elsewhere ([`PageError`]). Status codes and error codes are decided here
//! and nowhere else. Also [`WebError`], the public error of starting the
//! console or creating a user.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use lars_store::StoreError;
use maud::html;
use serde_json::json;

use crate::validate::FieldErrors;
use crate::views;

/// Why the console could not start, or a user could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The server's runtime or threads could not be created.
    #[error("cannot start the web server")]
    Runtime(#[source] std::io::Error),
    /// A store operation failed (for example the user name is taken).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A user name or password is not acceptable.
    #[error("invalid user: {0}")]
    InvalidUser(String),
    /// The password could not be hashed.
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// Why a use-case or a request failed. Every variant writes nothing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConsoleError {
    /// Some fields are invalid (messages by field name).
    #[error("some fields are invalid; nothing was written")]
    Invalid(FieldErrors),
    /// The host, key, description or page does not exist.
    #[error("{0}")]
    NotFound(String),
    /// What the write would create already exists; `field` is the form field
    /// the message belongs next to.
    #[error("{message}")]
    Conflict {
        /// The form field (`ip` for hosts).
        field: &'static str,
        /// What exists already.
        message: String,
    },
    /// No session, an unknown token, or a wrong name or password.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Too many failed logins for this name from this address; refused
    /// without checking until `retry_after` has passed.
    #[error(
        "Too many failed logins for this user from your address; try again in {} s.",
        retry_secs(*retry_after)
    )]
    Throttled {
        /// How long the block still lasts.
        retry_after: Duration,
    },
    /// Every password check is taken; the login was not checked.
    #[error("The console is busy checking other logins; try again in a second.")]
    Busy,
    /// The `Host` header names a host the console does not answer to (DNS
    /// rebinding).
    #[error("{0}")]
    Host(String),
    /// A write without the session's CSRF token.
    #[error("the CSRF token is missing or wrong")]
    Csrf,
    /// The API body is not well-formed JSON.
    #[error("malformed JSON: {0}")]
    BadJson(String),
    /// The API body is not `application/json`.
    #[error("send the body as Content-Type: application/json")]
    ContentType,
    /// The form body is larger than the console accepts.
    #[error("The form is too large.")]
    TooLarge,
    /// The store failed (unavailable: 503, anything else: 500).
    #[error(transparent)]
    Store(StoreError),
    /// Something on the console's side broke.
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for ConsoleError {
    /// The store's domain errors become the console's; the use-cases replace
    /// their messages with better ones where they know more.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ConsoleError::NotFound(m),
            StoreError::AlreadyExists(m) => ConsoleError::Conflict {
                field: "ip",
                message: m,
            },
            StoreError::Invalid(m) => ConsoleError::invalid("input", m),
            e => ConsoleError::Store(e),
        }
    }
}

/// Where an answer goes: the JSON API or a browser page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Surface {
    /// `/api/...`: JSON.
    Api,
    /// Everything else: HTML.
    Page,
}

impl Surface {
    /// `/api` and everything under it is the API.
    pub(crate) fn of(path: &str) -> Surface {
        if path == "/api" || path.starts_with("/api/") {
            Surface::Api
        } else {
            Surface::Page
        }
    }
}

impl ConsoleError {
    /// One invalid field.
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        ConsoleError::Invalid(FieldErrors::from([(field.to_owned(), message.into())]))
    }

    /// Collected field errors, if any.
    pub(crate) fn check(errors: FieldErrors) -> Result<(), Self> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConsoleError::Invalid(errors))
        }
    }

    /// The errors a form shows next to its fields (invalid fields, a
    /// conflict) with the status of the page showing them again; any other
    /// error as it is.
    pub(crate) fn form_errors(self) -> Result<(FieldErrors, StatusCode), ConsoleError> {
        let status = self.status();
        match self {
            ConsoleError::Invalid(fields) => Ok((fields, status)),
            ConsoleError::Conflict { field, message } => {
                Ok((FieldErrors::from([(field.to_owned(), message)]), status))
            }
            e => Err(e),
        }
    }

    /// The HTTP status.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ConsoleError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::Conflict { .. } => StatusCode::CONFLICT,
            ConsoleError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ConsoleError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            ConsoleError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleError::Host(_) => StatusCode::MISDIRECTED_REQUEST,
            ConsoleError::Csrf => StatusCode::FORBIDDEN,
            ConsoleError::BadJson(_) => StatusCode::BAD_REQUEST,
            ConsoleError::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ConsoleError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ConsoleError::Store(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleError::Store(_) | ConsoleError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The API's `error` code (docs/web.md lists them).
    pub(crate) fn code(&self) -> &'static str {
        match self {
            ConsoleError::Invalid(_) => "validation",
            ConsoleError::NotFound(_) => "not_found",
            ConsoleError::Conflict { .. } => "conflict",
            ConsoleError::Unauthorized(_) => "unauthorized",
            ConsoleError::Throttled { .. } => "throttled",
            ConsoleError::Busy => "busy",
            ConsoleError::Host(_) => "host",
            ConsoleError::Csrf => "csrf",
            ConsoleError::BadJson(_) => "bad_json",
            ConsoleError::ContentType => "content_type",
            ConsoleError::TooLarge => "too_large",
            ConsoleError::Store(e) if e.is_unavailable() => "store_unavailable",
            ConsoleError::Store(_) => "store_error",
            ConsoleError::Internal(_) => "internal",
        }
    }

    /// The message shown to `surface`.
    fn message(&self, surface: Surface) -> String {
        match (self, surface) {
            (ConsoleError::Csrf, Surface::Api) => {
                "cookie-authenticated writes need the session's X-CSRF-Token header \
                 (GET /api/session shows it)"
                    .into()
            }
            (ConsoleError::Csrf, Surface::Page) => {
                "This form is stale or did not come from the console (CSRF check failed). \
                 Reload the page and try again."
                    .into()
            }
            (ConsoleError::Invalid(fields), Surface::Page) => {
                fields.values().cloned().collect::<Vec<_>>().join("; ")
            }
            (ConsoleError::Store(e), _) if e.is_unavailable() => {
                "the database is unavailable; nothing was written, try again".into()
            }
            (e, _) => e.to_string(),
        }
    }

    /// Logs what the operator must see (store and internal failures).
    fn log(&self) {
        match self {
            ConsoleError::Store(e) if e.is_unavailable() => {
                tracing::warn!("store unavailable: {}", lars_store::Chain(e));
            }
            ConsoleError::Store(e) => tracing::error!("store error: {}", lars_store::Chain(e)),
            ConsoleError::Internal(m) => tracing::error!("internal error: {m}"),
            _ => {}
        }
    }

    /// The `Retry-After` seconds of a refusal that passes by itself.
    pub(crate) fn retry_after(&self) -> Option<u64> {
        match self {
            ConsoleError::Throttled { retry_after } => Some(retry_secs(*retry_after)),
            ConsoleError::Busy => Some(1),
            _ => None,
        }
    }

    /// The answer for `surface`.
    pub(crate) fn render(self, surface: Surface) -> Response {
        self.log();
        let status = self.status();
        let message = self.message(surface);
        let retry = self.retry_after();
        let mut resp = match surface {
            Surface::Api => {
                let mut body = json!({ "error": self.code(), "message": message });
                if let ConsoleError::Invalid(fields) = &self {
                    body["fields"] = json!(fields);
                }
                (status, Json(body)).into_response()
            }
            Surface::Page => error_page(status, &message),
        };
        with_retry_after(&mut resp, retry);
        resp
    }
}

/// Whole seconds to wait, at least 1.
fn retry_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// Adds `Retry-After: secs` when there is one.
pub(crate) fn with_retry_after(resp: &mut Response, secs: Option<u64>) {
    if let Some(secs) = secs {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
}

/// A page saying what went wrong (no login needed to see it).
pub(crate) fn error_page(status: StatusCode, msg: &str) -> Response {
    let page = views::bare(
        "Error",
        html! {
            h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
            div.alert #alert { (msg) }
            p { a href="/" { "Back to the console" } }
        },
    );
    (status, Html(page.into_string())).into_response()
}

/// A [`ConsoleError`] answered as JSON (API handlers return
/// `Result<_, ApiError>` and use `?` on use-cases).
#[derive(Debug)]
pub(crate) struct ApiError(pub(crate) ConsoleError);

impl<E: Into<ConsoleError>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.render(Surface::Api)
    }
}

/// A [`ConsoleError`] answered as an HTML error page (page handlers return
/// `Result<_, PageError>`; errors a form shows next to its fields are
/// handled before they get here).
#[derive(Debug)]
pub(crate) struct PageError(pub(crate) ConsoleError);

impl<E: Into<ConsoleError>> From<E> for PageError {
    fn from(e: E) -> Self {
        PageError(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        self.0.render(Surface::Page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surfaces() {
        assert_eq!(Surface::of("/api/routes"), Surface::Api);
        assert_eq!(Surface::of("/api"), Surface::Api);
        assert_eq!(Surface::of("/apis"), Surface::Page);
        assert_eq!(Surface::of("/routes"), Surface::Page);
    }

    #[test]
    fn store_errors_map_to_domain_errors() {
        let e = ConsoleError::from(StoreError::NotFound("x".into()));
        assert_eq!((e.status(), e.code()), (StatusCode::NOT_FOUND, "not_found"));
        let e = ConsoleError::from(StoreError::AlreadyExists("x".into()));
        assert_eq!((e.status(), e.code()), (StatusCode::CONFLICT, "conflict"));
        let e = ConsoleError::from(StoreError::Invalid("x".into()));
        assert_eq!(e.code(), "validation");
        let e = ConsoleError::from(StoreError::Unavailable {
            purpose: "test",
            source: "down".into(),
        });
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
        );
        assert!(e.message(Surface::Api).contains("nothing was written"));
    }
}
