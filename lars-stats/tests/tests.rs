//! lars-stats in virtual time: both halves of the contract run together
//! (agent sender, wire, reporter receiver, flusher, store), no sockets, no
//! sleeps.
#![allow(clippy::unwrap_used)]

mod handoff;
mod reorder;
mod roundtrip;
mod world;
