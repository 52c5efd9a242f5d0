//! Integration tests of lars-client against fake agents made of real UDP
//! sockets on 127.0.0.1.
#![allow(clippy::unwrap_used)]

mod client_api;
mod fake;
