//! Integration tests of lars-lb: exact-number rules, a virtual-time
//! simulation harness, proptest invariants, RouteLb, RouteTable and
//! Subscriptions. Nothing sleeps; time is `t0() + offsets`.
#![allow(clippy::unwrap_used)]

#[path = "it/adaptive.rs"]
mod adaptive;
#[path = "it/props.rs"]
mod props;
#[path = "it/route.rs"]
mod route;
#[path = "it/rules.rs"]
mod rules;
#[path = "it/sim.rs"]
mod sim;
#[path = "it/table.rs"]
mod table;

use std::time::Instant;

use lars_lb::{HostAddr, LbConfig};

/// The one real clock read of the test suite: a base for virtual time.
#[allow(clippy::disallowed_methods)] // tests need one real Instant as origin
pub fn t0() -> Instant {
    Instant::now()
}

/// Host number `n` (10.0.0.n:8000+n).
pub fn host(n: u32) -> HostAddr {
    HostAddr::new(0x0a00_0000 | n, 8000 + n as u16)
}

/// `n` hosts, numbered from 1.
pub fn hosts(n: u32) -> Vec<HostAddr> {
    (1..=n).map(host).collect()
}

/// Defaults with the consecutive-error rule out of the way.
pub fn no_contin() -> LbConfig {
    LbConfig {
        contin_err_limit: u32::MAX,
        contin_succ_limit: u32::MAX,
        ..LbConfig::classic()
    }
}
