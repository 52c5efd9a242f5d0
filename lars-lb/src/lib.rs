//! The load-balancing core of lars: a deterministic state machine that
//! performs no I/O, starts no threads, takes no locks and never reads the clock.
//!
//! Every time-dependent call takes `now: Instant`; effects come out as values
//! the caller drains (pull requests, statistics batches, events), and
//! [`next_deadline`](LoadBalance::next_deadline) tells the driver when to call
//! [`handle_timeout`](LoadBalance::handle_timeout). The agent and the dns only
//! wire these types to sockets; an application can embed them directly.
//!
//! - [`LoadBalance`]: the hosts of one service, an idle (in rotation) and an
//!   overload (out of rotation) list, probes, and the rules of the policy in
//!   [`LbConfig::policy`]: [`Policy::Adaptive`] (the default: ejection on
//!   evidence weighed against the other hosts, probes limited in time,
//!   latency-weighted round-robin, slow start, an ejection cap) or
//!   [`Policy::Classic`] (the original Lars rules, bit for bit).
//! - [`RouteLb`]: one `LoadBalance` per [`ModKey`], with the original's
//!   NEW / PULLING route status, pull requests and statistics batches.
//! - [`RouteTable`] and [`Subscriptions`]: the dns's double-buffered route
//!   table and who subscribed to which key.
//!
//! The adaptive policy (see docs/lb.md for every knob):
//!
//! ```
//! use std::time::{Duration, Instant};
//! use lars_lb::{Choice, HostState, LbConfig, LoadBalance, ModKey, Outcome};
//!
//! let t0 = Instant::now(); // the driver reads the clock, never the core
//! let hosts: Vec<_> = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]
//!     .iter()
//!     .map(|s| s.parse().unwrap())
//!     .collect();
//! let mut lb = LoadBalance::new(ModKey::new(1, 1), LbConfig::default());
//! lb.update(&hosts, t0);
//! // Calls succeed, with their latency ...
//! for _ in 0..100 {
//!     let h = lb.choice_one_host(t0).host().unwrap();
//!     lb.report(h, Outcome::SuccessIn { latency_ms: 5 }, t0);
//! }
//! // ... until host 3 fails twice in a row while the others succeed: out.
//! lb.report(hosts[2], Outcome::Failure { timecost_ms: 0 }, t0);
//! assert_eq!(
//!     lb.report(hosts[2], Outcome::Failure { timecost_ms: 0 }, t0),
//!     Some(HostState::Overload)
//! );
//! // Nobody is sent there until its probe is due, about a second later.
//! let probe = lb.next_deadline().unwrap();
//! assert!(probe - t0 >= Duration::from_millis(900));
//! assert!((0..100).all(|_| lb.choice_one_host(t0) != Choice::Probe(hosts[2])));
//! // Then exactly one probe; its success brings the host back, slow-starting.
//! assert_eq!(lb.choice_one_host(probe), Choice::Probe(hosts[2]));
//! lb.report(hosts[2], Outcome::SuccessIn { latency_ms: 5 }, probe);
//! assert_eq!(lb.host(hosts[2]).unwrap().state, HostState::Idle);
//! assert!(lb.host(hosts[2]).unwrap().weight < 0.2);
//! ```
//!
//! The classic policy:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use lars_lb::{Choice, LbConfig, LoadBalance, ModKey, Outcome};
//!
//! let t0 = Instant::now(); // the driver reads the clock, never the core
//! let hosts: Vec<_> = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]
//!     .iter()
//!     .map(|s| s.parse().unwrap())
//!     .collect();
//! let mut lb = LoadBalance::new(ModKey::new(1, 1), LbConfig::classic());
//! lb.update(&hosts, t0);
//! // Round-robin over idle hosts.
//! assert_eq!(lb.choice_one_host(t0), Choice::Idle(hosts[0]));
//! assert_eq!(lb.choice_one_host(t0), Choice::Idle(hosts[1]));
//! // 15 consecutive failures overload a host ...
//! for _ in 0..15 {
//!     lb.report(hosts[2], Outcome::Failure { timecost_ms: 0 }, t0);
//! }
//! assert_eq!(lb.overload_hosts().collect::<Vec<_>>(), vec![hosts[2]]);
//! assert!(lb.poll_event().is_some()); // the transition, for the log
//! // ... which is still probed once every probe_num + 1 picks ...
//! let probes = (0..11)
//!     .filter(|_| matches!(lb.choice_one_host(t0), Choice::Probe(_)))
//!     .count();
//! assert_eq!(probes, 1);
//! // ... and comes back after overload_timeout even if nobody calls it.
//! let t1 = t0 + Duration::from_secs(15);
//! assert_eq!(lb.next_deadline(), Some(t1));
//! lb.handle_timeout(t1);
//! assert_eq!(lb.idle_len(), 3);
//! ```
#![warn(missing_docs)]

mod config;
mod event;
mod lb;
mod route;
mod table;

pub use config::{AdaptiveConfig, LoadBalanceConfig, Policy};
pub use event::{Counters, DEFAULT_EVENT_CAPACITY, HostState, LbEvent, Reason, Transition};
pub use lars_core::{HostAddr, ModKey};
pub use lb::{Choice, HostReport, HostView, LoadBalance, Outcome, UpdateSummary};
pub use route::{KeyLimits, KeyReport, RouteApplied, RouteLb, RouteStatus};
pub use table::{ConnId, RouteTable, Routes, Subscriptions};

/// The `[loadbalance]` configuration ([`LoadBalanceConfig`]).
pub type LbConfig = LoadBalanceConfig;
