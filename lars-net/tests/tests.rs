//! lars-net integration tests: real sockets on 127.0.0.1, ephemeral ports,
//! every thread stopped and joined.
#![allow(clippy::unwrap_used)]

mod it;
