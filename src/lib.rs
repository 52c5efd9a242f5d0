//! Lars: load balance and remote service schedule, as one facade over the
//! member crates.
//!
//! - [`core`]: wire protocol, frames, domain types, config.
//! - [`net`]: the event-loop reactor, TCP/UDP servers and clients.
//! - [`lb`]: the load-balance algorithm, pure and clock-injected.
//! - [`store`]: routes and statistics in MySQL or SQLite.
//! - [`client`]: the application API to the local agent ([`LarsClient`]).
//! - [`agent`]: the agent as a library; [`EmbeddedAgent`] runs it inside the
//!   application with the same API and no UDP hop.
#![warn(missing_docs)]

pub use lars_agent as agent;
pub use lars_agent::EmbeddedAgent;
pub use lars_client as client;
pub use lars_client::{ApiError, ClientConfig, LarsClient, Outcome};
pub use lars_core as core;
pub use lars_lb as lb;
pub use lars_net as net;
pub use lars_store as store;
