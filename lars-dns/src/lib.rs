//! The lars dns: the service every agent asks for routes.
//!
//! Agents send `GetRouteRequest (1)` over TCP; the dns answers
//! `GetRouteResponse (2)` from the current route table and subscribes the
//! connection to that key. A background reloader watches the store's
//! `RouteVersion`, loads the routes into the back buffer, swaps it in and
//! pushes every changed key to its subscribers through each connection's own
//! worker loop. Readers never wait for a reload, and a database outage never
//! stops lookups: the dns keeps serving its last good table and recovers by
//! itself.
//!
//! Two lars-only additions, ignored by the original programs: a lars agent
//! sends `UnsubscribeRoute (101)` for a key it forgot (its subscription is
//! dropped), and an empty answer from a table that has keys carries
//! `confirmed_empty` (field 4), which tells a lars agent the hosts were
//! deleted rather than lost. A connection holds at most `[dns]
//! max_unhosted_subscriptions` (10,000) subscriptions to keys without hosts. See docs/dns.md.
//!
//! Principal types:
//! - [`Dns`]: starts the service ([`Dns::start`]) from a
//!   [`DnsConfig`] and a store (anything
//!   implementing [`RouteRead`](lars_store::RouteRead), normally a
//!   [`lars_store::Store`]).
//! - [`DnsHandle`]: the running service: its addresses, [`DnsStats`], stop.
//!
//! ```
//! use std::io::{Read, Write};
//! use lars_dns::DnsConfig;
//! use lars_core::{ModKey, frame, proto::{GetRouteRequest, GetRouteResponse}};
//! use lars_store::RouteAdmin;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = lars_store::open(&format!("sqlite://{}/lars.db", dir.path().display()))?;
//! store.add_host(ModKey::new(1, 1), "10.0.0.1:80".parse()?)?;
//!
//! let mut config = DnsConfig::default();
//! config.reactor.addr.set_port(0); // any free port
//! let mut dns = lars_dns::Dns::start(config, store)?;
//!
//! let mut sock = std::net::TcpStream::connect(dns.local_addr())?;
//! sock.write_all(&frame::to_bytes(1, &GetRouteRequest { modid: 1, cmdid: 1 })?)?;
//! let mut head = [0u8; 8];
//! sock.read_exact(&mut head)?;
//! let mut body = vec![0u8; u32::from_le_bytes(head[4..8].try_into()?) as usize];
//! sock.read_exact(&mut body)?;
//! let resp: GetRouteResponse = prost::Message::decode(&body[..])?;
//! assert_eq!(resp.host.len(), 1);
//! assert_eq!(dns.stats().requests, 1);
//! dns.stop();
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod config;
mod reloader;
mod replica;
mod service;
mod shared;
mod stats;

pub use config::DnsConfig;
pub use service::{Dns, DnsError, DnsHandle};
pub use stats::{DnsStats, ReadStats, StoreHealth};
