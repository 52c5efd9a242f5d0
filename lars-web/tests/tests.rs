//! Integration tests of the lars web console: the REST API and pages over
//! real sockets, and the end-to-end browser test.
#![allow(clippy::unwrap_used)]

mod api;
mod browser;
mod common;
mod edits;
mod https;
