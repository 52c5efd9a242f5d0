//! The shared vocabulary of lars: the wire protocol, its frame codec, the
//! domain types every component speaks, the original INI configuration files,
//! and the consistent-hash ring that spreads keys over workers.
//!
//! Everything here is pure: no sockets, no threads, no clock, except
//! [`time::unix_now`], the wall-clock read the services' shells share.
//!
//! - [`ModKey`] and [`HostAddr`] name a service and one of its hosts.
//! - [`frame::encode`] / [`frame::decode`] turn protobuf messages ([`proto`])
//!   into the `msgid | msglen | body` frames of the wire and back.
//! - [`config`] loads `lars_dns.conf`, `lars_reporter.conf` and
//!   `lars_lb_agent.conf` unchanged; [`ring::HashRing`] maps a key to a worker.
//!
//! ```
//! use bytes::BytesMut;
//! use lars_core::{frame, proto, HostAddr, MessageId, ModKey};
//!
//! let key = ModKey::new(1, 1);
//! let host: HostAddr = "192.168.1.177:7777".parse().unwrap();
//! let resp = proto::GetRouteResponse {
//!     modid: key.modid as i32,
//!     cmdid: key.cmdid as i32,
//!     host: vec![host.to_proto()],
//! };
//! let mut buf = BytesMut::new();
//! frame::encode(MessageId::GetRouteResponse.into(), &resp, &mut buf).unwrap();
//! let frame = frame::decode(&mut buf).unwrap().unwrap();
//! let back: proto::GetRouteResponse = frame.message().unwrap();
//! assert_eq!(HostAddr::from_proto(&back.host[0]), Some(host));
//! ```
#![warn(missing_docs)]

pub mod config;
mod error;
pub mod frame;
pub mod ring;
pub mod time;
mod types;

pub use error::Chain;
pub use frame::{Frame, FrameError};
pub use types::{AddrParseError, HostAddr, MessageId, ModKey, RetCode};

/// The protobuf messages of the wire protocol, generated from `proto/lars.proto`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/lars.rs"));
}
