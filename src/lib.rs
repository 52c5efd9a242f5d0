//! Lars: load balance and remote service schedule, as one facade over the
//! member crates.
//!
//! - [`core`]: wire protocol, frames, domain types, config.
//! - [`net`]: the event-loop reactor, TCP/UDP servers and clients.
//! - [`lb`]: the load-balance algorithm, pure and clock-injected.
//! - [`store`]: routes and statistics in MySQL or SQLite.
#![warn(missing_docs)]

pub use lars_core as core;
pub use lars_lb as lb;
pub use lars_net as net;
pub use lars_store as store;
