//! The lars load-balance agent: what applications talk to.
//!
//! Applications ask the agent on `127.0.0.1:8888..8890` (UDP, one frame per
//! datagram) which host serves a service `(modid, cmdid)` and report how the
//! call went; the agent pulls routes from the dns, keeps one
//! [`lars_lb::LoadBalance`] per key, and sends call statistics to the
//! reporter. Existing C++ and Go clients work unchanged.
//!
//! - [`core::AgentCore`] is the agent's logic, sans-IO: datagrams, dns
//!   frames, connection events and timeouts in; pulls, statistics messages,
//!   replies and forwarded requests out as values; no sockets, threads,
//!   locks, atomics or clock.
//! - [`Agent`] starts the UDP agent and returns an [`AgentHandle`]
//!   (addresses, [`AgentStats`], `stop()`): `port_count` shards, each a
//!   lars-net UDP loop owning one port and one core (the keys with
//!   `(modid + cmdid) % port_count` equal to its index), a dns client (one
//!   of `[dnsserver] addrs` at a time, failing over: [`core::DnsFailover`]),
//!   one reporter client per `[reporter] addrs` (each key's statistics to
//!   one of them: [`core::ReporterRing`]), a route snapshot writer and an
//!   optional status server.
//! - [`EmbeddedAgent`] drives one core inside the application, with the
//!   `lars_client` API and no UDP hop.
//!
//! See `docs/agent.md` for the dns client's behaviour, the statistics
//! semantics and the snapshot format.
//!
//! ```
//! use std::time::Duration;
//! use lars_agent::Agent;
//! use lars_client::{ApiError, ClientConfig, LarsClient};
//! use lars_agent::AgentConfig;
//!
//! // An agent on free ports; no dns runs, so keys stay unknown.
//! let mut config = AgentConfig::default();
//! config.base_port = 0;
//! config.port_count = std::num::NonZeroU16::MIN;
//! config.dns = "127.0.0.1:9".parse().unwrap();
//! config.reporter = "127.0.0.1:9".parse().unwrap();
//! config.snapshot_path = None;
//! let mut agent = Agent::start(config).unwrap();
//!
//! let client = LarsClient::connect(
//!     &ClientConfig::builder()
//!         .base_port(agent.base_port())
//!         .port_count(1)
//!         .timeout(Duration::from_secs(2))
//!         .build()
//!         .unwrap(),
//! )
//! .unwrap();
//! assert!(matches!(client.get_host(1, 1), Err(ApiError::NoExist)));
//! assert_eq!(agent.stats().get_host_noexist, 1);
//! agent.stop();
//! ```
#![warn(missing_docs)]

mod agent;
pub mod config;
pub mod core;
mod embedded;
mod links;
pub mod snapshot;
mod stats;
mod status;

pub use agent::{Agent, AgentError, AgentHandle, SNAPSHOT_INTERVAL};
pub use config::AgentConfig;
pub use embedded::EmbeddedAgent;
pub use stats::AgentStats;

use lars_core::ModKey;

/// The shard (port index) owning `key` among `count`: `(modid + cmdid) %
/// count`, the mapping clients use to pick the port.
pub fn shard_of(key: ModKey, count: usize) -> usize {
    // u64 sum: no overflow for any pair of u32 ids; count >= 1 here.
    ((u64::from(key.modid) + u64::from(key.cmdid)) % (count.max(1) as u64)) as usize
}
