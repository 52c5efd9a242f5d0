//! The lars reactor: one mio event loop per thread (I/O readiness, timers,
//! a state's own deadline, closures posted from other threads), under a
//! framed TCP server and client, a UDP server and a tiny HTTP status server.
//! Every lars service runs on it. State lives on its loop, so nothing on a
//! loop needs a lock.
//!
//! - [`TcpServer`] — an acceptor and `threads` worker loops; connections are
//!   [`Conn`]s identified by a [`ConnId`], frames go to a [`Router`];
//!   [`ServerHandle`] reaches any connection or every worker from any thread.
//!   Connection limits (`maxConn`, `maxConnPerPeer`, `idleTimeout`,
//!   `frameTimeout`) keep idle or stuck peers from locking clients out;
//!   what they did is in [`NetStats`] ([`ConnLimitStats`]). A server may
//!   add a TLS listener next to its plain one (`[tls]`, [`ServerTls`]) and
//!   let only some networks in (`allow`); see [`tls`].
//!   [`TcpClient`] stays connected for its whole life (reconnect with backoff).
//! - [`UdpServer`] — one loop owning one socket and a [`UdpService`]:
//!   datagrams, its deadline (`poll_timeout`) and posted tasks get `&mut S`;
//!   an optional bounded spin before sleeping.
//! - [`StatusServer`] — `/status`-style HTTP on one thread.
//!
//! Frames are `lars_core::frame` frames. Everything started can be stopped and
//! joined (`stop()`, `join()`, or drop).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use lars_core::proto::{GetRouteRequest, GetRouteResponse};
//! use lars_net::{Router, TcpClient, TcpServer};
//!
//! // A server answering msgid 1 with msgid 2.
//! let router = Router::new().route(1, |conn, frame| {
//!     let req: GetRouteRequest = frame.message().unwrap();
//!     let resp = GetRouteResponse { modid: req.modid, cmdid: req.cmdid, host: vec![] };
//!     conn.send(2, &resp).unwrap();
//! });
//! let mut server = TcpServer::builder("127.0.0.1:0".parse().unwrap())
//!     .threads(2)
//!     .router(router)
//!     .start()
//!     .unwrap();
//!
//! // A client that collects replies on a channel.
//! let (tx, rx) = std::sync::mpsc::channel();
//! let tx = std::sync::Mutex::new(tx);
//! let mut client = TcpClient::builder(server.local_addr())
//!     .router(Router::new().route(2, move |_, frame| {
//!         let resp: GetRouteResponse = frame.message().unwrap();
//!         tx.lock().unwrap().send(resp.modid).unwrap();
//!     }))
//!     .start()
//!     .unwrap();
//! client.send(1, &GetRouteRequest { modid: 7, cmdid: 1 }).unwrap();
//! assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 7);
//!
//! client.join();
//! server.join();
//! ```
#![warn(missing_docs)]

mod conn;
mod error;
mod event_loop;
pub mod http;
mod pool;
mod stats;
mod tcp_client;
mod tcp_server;
pub mod tls;
mod udp;

pub use conn::{Conn, ConnId, Router};
pub use error::{NetError, Result};
pub use http::{HttpHandler, HttpRequest, HttpResponse, StatusServer};
pub use lars_core::frame::Frame;
pub use stats::{ConnLimitStats, NetStats, NetStatsSnapshot};
pub use tcp_client::{ClientBuilder, ClientSender, Dialer, DisconnectedPolicy, TcpClient};
pub use tcp_server::{ServerBuilder, ServerHandle, TcpServer};
pub use tls::{ClientTls, ReloadReport, ServerTls, reload_all as reload_tls};
pub use udp::{UdpHandle, UdpIo, UdpServer, UdpServerBuilder, UdpService};
