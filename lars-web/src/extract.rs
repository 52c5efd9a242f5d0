//! axum extractors that parse and validate request parts once: the key and
//! host path segments, description codes, and JSON or form bodies. A bad
//! value is answered as the surface expects: 422 with field messages under
//! `/api/`, a 404 page for a key path that names no key.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::Response;
use lars_core::{HostAddr, ModKey};
use lars_store::DescKind;
use serde_json::Value;

use crate::error::{ApiError, ConsoleError, PageError, Surface};
use crate::validate::{self, FieldErrors};

/// The named path parameters of the matched route.
async fn params<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<HashMap<String, String>, Response> {
    let surface = Surface::of(parts.uri.path());
    Path::<HashMap<String, String>>::from_request_parts(parts, state)
        .await
        .map(|Path(p)| p)
        .map_err(|e| ConsoleError::Internal(format!("path parameters: {e}")).render(surface))
}

fn param<'a>(p: &'a HashMap<String, String>, name: &str) -> &'a str {
    p.get(name).map(String::as_str).unwrap_or("")
}

/// A bad path segment: the API's validation error, or (pages) a page that
/// does not exist.
fn bad_path(surface: Surface, errors: FieldErrors) -> Response {
    match surface {
        Surface::Api => ConsoleError::Invalid(errors).render(surface),
        Surface::Page => {
            let msg: Vec<String> = errors.into_values().collect();
            ConsoleError::NotFound(msg.join("; ")).render(surface)
        }
    }
}

/// The key of a route with `{modid}` and `{cmdid}` segments.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyPath(pub(crate) ModKey);

impl<S: Send + Sync> FromRequestParts<S> for KeyPath {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let p = params(parts, state).await?;
        let mut errors = FieldErrors::new();
        match validate::key(param(&p, "modid"), param(&p, "cmdid"), &mut errors) {
            Some(key) if errors.is_empty() => Ok(KeyPath(key)),
            _ => Err(bad_path(Surface::of(parts.uri.path()), errors)),
        }
    }
}

/// The key and host of a route with `{modid}`, `{cmdid}` and `{host}`
/// (`a.b.c.d:port`) segments.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HostPath {
    pub(crate) key: ModKey,
    pub(crate) host: HostAddr,
}

impl<S: Send + Sync> FromRequestParts<S> for HostPath {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let p = params(parts, state).await?;
        let mut errors = FieldErrors::new();
        let key = validate::key(param(&p, "modid"), param(&p, "cmdid"), &mut errors);
        let host = validate::host_text(param(&p, "host"))
            .map_err(|e| errors.insert("host".into(), e))
            .ok();
        match (key, host) {
            (Some(key), Some(host)) if errors.is_empty() => Ok(HostPath { key, host }),
            _ => Err(bad_path(Surface::of(parts.uri.path()), errors)),
        }
    }
}

/// A description's kind and code from a route with a `{modid}` or a
/// `{cmdid}` segment (the segment's name says which table).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DescPath {
    pub(crate) kind: DescKind,
    pub(crate) code: u32,
}

impl<S: Send + Sync> FromRequestParts<S> for DescPath {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let surface = Surface::of(parts.uri.path());
        let p = params(parts, state).await?;
        let (kind, field) = if p.contains_key("modid") {
            (DescKind::Mod, "modid")
        } else {
            (DescKind::Cmd, "cmdid")
        };
        validate::id(field, param(&p, field))
            .map(|code| DescPath { kind, code })
            .map_err(|e| ConsoleError::invalid(field, e).render(surface))
    }
}

/// A JSON body: 415 unless `Content-Type: application/json`, 400 when
/// malformed.
#[derive(Debug, Clone)]
pub(crate) struct JsonBody(pub(crate) Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/json")
            });
        if !is_json {
            return Err(ConsoleError::ContentType.into());
        }
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ConsoleError::BadJson(e.to_string()).into())
    }
}

/// A form body's fields (the last value of a repeated name wins). The guard
/// has already read and size-checked it for the CSRF token.
#[derive(Debug, Clone, Default)]
pub(crate) struct FormBody(pub(crate) HashMap<String, String>);

impl<S: Send + Sync> FromRequest<S> for FormBody {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &S) -> Result<Self, PageError> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        Ok(FormBody(form_fields(&bytes)))
    }
}

fn body_error(e: axum::extract::rejection::BytesRejection) -> ConsoleError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ConsoleError::TooLarge
    } else {
        ConsoleError::Internal(format!("cannot read the body: {}", e.body_text()))
    }
}

/// Parses a urlencoded body into its fields (the last value of a repeated
/// name wins); an undecodable body has no fields.
pub(crate) fn form_fields(body: &[u8]) -> HashMap<String, String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .map(|v| v.into_iter().collect())
        .unwrap_or_default()
}
