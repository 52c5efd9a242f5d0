//! The application API of lars: ask the local lars agent which host serves a
//! service `(modid, cmdid)`, and tell it how the call went.
//!
//! It speaks the agent's UDP protocol (one frame per datagram, see
//! `shared/spec/PROTOCOL.md`) with blocking std sockets, one connected socket per
//! agent port, and bounds every request by a receive timeout (the C++ API
//! blocked forever when the agent stalled).
//!
//! - [`LarsClient`], the connection: [`get_host`](LarsClient::get_host),
//!   [`report`](LarsClient::report), [`get_route`](LarsClient::get_route),
//!   [`reg_init`](LarsClient::reg_init). `Send + Sync`; see its docs for the
//!   threading model.
//! - [`ClientConfig`], agent address, port layout and timeout, validated once by
//!   its builder.
//! - [`ApiError`], why a request produced no host (Overload, NoExist, System,
//!   Timeout, Io).
//!
//! The operator tools built on top (`lars qps`, `lars simulator`) live in
//! the `lars-bench` crate.
//!
//! The whole lifecycle against a tiny fake agent that answers one request:
//!
//! ```
//! use std::net::{SocketAddrV4, UdpSocket};
//! use std::time::Duration;
//! use lars_client::{ClientConfig, LarsClient, Outcome};
//! use lars_core::{frame, proto, MessageId};
//!
//! // A fake agent on an ephemeral port: answers one GetHostRequest.
//! let agent = UdpSocket::bind("127.0.0.1:0").unwrap();
//! let port = agent.local_addr().unwrap().port();
//! let fake = std::thread::spawn(move || {
//!     let mut buf = [0u8; 1500];
//!     let (n, from) = agent.recv_from(&mut buf).unwrap();
//!     let req: proto::GetHostRequest = frame::decode_datagram(&buf[..n]).unwrap().message().unwrap();
//!     let host: SocketAddrV4 = "10.0.0.7:9000".parse().unwrap();
//!     let rsp = proto::GetHostResponse {
//!         seq: req.seq, modid: req.modid, cmdid: req.cmdid, retcode: 0,
//!         host: Some(lars_core::HostAddr::from(host).to_proto()),
//!     };
//!     agent.send_to(&frame::to_bytes(MessageId::GetHostResponse.into(), &rsp).unwrap(), from).unwrap();
//!     agent // keep the socket open until the report has been sent
//! });
//!
//! let config = ClientConfig::builder()
//!     .base_port(port)
//!     .port_count(1)
//!     .timeout(Duration::from_millis(500))
//!     .build()?;
//! let client = LarsClient::connect(&config)?;
//! let host = client.get_host(1, 1)?;
//! assert_eq!(host.to_string(), "10.0.0.7:9000");
//! // ... call the host, then tell the agent how it went:
//! client.report(1, 1, host, Outcome::Success, Some(Duration::from_millis(3)))?;
//! fake.join().unwrap();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod client;
mod config;
mod error;

pub use client::{LarsClient, Outcome, REG_INIT_ATTEMPTS, REG_INIT_WAIT, timecost_ms};
pub use config::{ClientConfig, ClientConfigBuilder, ConfigError};
pub use error::ApiError;
