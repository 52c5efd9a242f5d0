//! The C ABI of the lars client: `liblars.so` / `liblars.a`, declared in
//! `clients/cpp/include/lars.h` (generated from this file by cbindgen; the
//! `header` test fails when the checked-in header differs) and wrapped by the
//! drop-in C++ header `clients/cpp/include/lars_api.h`.
//!
//! Every function is a thin shell over [`lars_client::LarsClient`]: the
//! protocol lives there only. Each one
//! - checks its arguments before any network traffic (null pointers,
//!   negative ids, ip text that is not a dotted IPv4 address, ports outside
//!   1..=65535) and answers [`LARS_ERR_INVALID`];
//! - never unwinds into C: a panic is caught and answered [`LARS_ERR_PANIC`];
//! - returns an `int32_t` code: the agent's `LarsRetCode` (0..=3) or one of
//!   the negative client errors below; [`lars_strerror`] names each.
//!
//! Thread safety: a `lars_client_t` may be used from several threads at once
//! (the Rust client is `Send + Sync`; requests to the same agent port wait
//! for each other). `lars_client_free` must not race with any other call on
//! the same handle.

mod ffi;

pub use ffi::*;
