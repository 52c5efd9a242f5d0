//! The server-rendered pages, one small module per area. Each handler reads
//! its input through [`crate::extract`], calls use-cases of
//! [`crate::console`] and renders with [`crate::views`]. Writes are plain
//! HTML forms (POST, CSRF field checked by the guard) answered with a
//! redirect on success, or the same page with the messages next to the
//! fields (422, or 409 for a duplicate host) on error; any other error is a
//! [`PageError`] page.

pub(crate) mod auth;
pub(crate) mod descriptions;
pub(crate) mod key;
pub(crate) mod overview;
pub(crate) mod routes;
pub(crate) mod status;
pub(crate) mod versions;

use std::collections::HashMap;

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use lars_core::ModKey;
use maud::Markup;

use crate::error::PageError;
use crate::session::SessionInfo;
use crate::views::{self, Frame};

/// What page handlers return.
type PageResult = Result<Response, PageError>;

/// The query string's fields.
type Q = Query<HashMap<String, String>>;

/// A logged-in page with the nav entry `nav` highlighted.
fn page(s: &SessionInfo, nav: &str, status: StatusCode, title: &str, body: Markup) -> Response {
    let frame = Frame {
        user: s.user.as_deref().unwrap_or(""),
        csrf: &s.csrf,
        nav,
    };
    html(status, views::page(frame, title, body))
}

fn html(status: StatusCode, m: Markup) -> Response {
    (status, Html(m.into_string())).into_response()
}

/// The redirect after a successful change: `?done=<what>` and the new
/// route version when there is one.
fn redirect_done(path: &str, what: &str, version: Option<u64>) -> Response {
    let to = match version {
        Some(v) => format!("{path}?done={what}&v={v}"),
        None => format!("{path}?done={what}"),
    };
    Redirect::to(&to).into_response()
}

/// `/routes/{modid}/{cmdid}`.
fn key_path(key: ModKey) -> String {
    format!("/routes/{}/{}", key.modid, key.cmdid)
}

/// The note of `?done=` after a redirect; fixed texts only, so a link
/// cannot put words in the console's mouth.
fn done(q: &HashMap<String, String>) -> Option<String> {
    let what = match q.get("done")?.as_str() {
        "saved" => "Saved.",
        "deleted" => "Deleted.",
        "added" => "Host added.",
        "edited" => "Host changed.",
        "removed" => "Host removed.",
        "replaced" => "Host list replaced.",
        "key-deleted" => "All routes of the key deleted.",
        _ => return None,
    };
    let v = q.get("v").and_then(|v| v.parse::<u64>().ok());
    Some(match v {
        Some(v) => {
            format!("{what} Route version is now {v}; the dns pushes it to agents within seconds.")
        }
        None => what.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_notes_are_fixed_texts() {
        let q = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(done(&q(&[("done", "saved")])).as_deref(), Some("Saved."));
        assert!(
            done(&q(&[("done", "added"), ("v", "7")]))
                .is_some_and(|t| t.contains("Route version is now 7"))
        );
        assert_eq!(done(&q(&[("done", "<script>")])), None);
        assert_eq!(done(&q(&[])), None);
    }
}
