//! Operator tools built on [`LarsClient`](crate::LarsClient), shared by the
//! `lars` command line: [`qps`] (load test of the agent, with a same-run raw
//! UDP reference) and [`simulate`] (the original `simulator`: calls with an
//! error rate and a modelled latency, per-host tallies, overload transitions
//! seen from the client).
//!
//! They print nothing: results come back as values, and progress through
//! callbacks.

pub mod qps;
pub mod simulate;
