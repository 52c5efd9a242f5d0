//! The agent inside the application process: one [`AgentCore`] (the only
//! shard) behind a mutex, the same dns and reporter clients as the UDP agent,
//! the API of `lars_client`, no UDP hop.
//!
//! Application calls run on the caller's thread (lock, call the core, send
//! what it produced). A driver thread owns everything else: it receives the
//! clients' events on a channel (created before the clients, so nothing is
//! bound late), sleeps until the core's `poll_timeout`, and feeds the core.
// An I/O shell: clock, threads and locks are its business (see clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::config::AgentConfig;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use lars_client::{ApiError, Outcome, REG_INIT_ATTEMPTS, REG_INIT_WAIT};
use lars_core::{HostAddr, ModKey};
use lars_lb::{Choice, HostView, LoadBalanceConfig};

use crate::agent::{AgentError, unix_now};
use crate::core::{AgentCore, CoreConfig};
use crate::links::{LinkEvent, Links, Senders};
use crate::stats::AgentStats;
use lars_net::TcpClient;

/// What the driver thread receives.
enum Input {
    /// From the dns or reporter client.
    Link(LinkEvent),
    /// An application call moved the core's deadline earlier.
    Wake,
    /// Stop the driver.
    Stop,
}

/// The core and the deadline the driver sleeps until.
#[derive(Debug)]
struct Driven {
    core: AgentCore,
    /// What the driver last took from `poll_timeout` (`None`: no deadline).
    armed: Option<Instant>,
}

#[derive(Debug)]
struct Inner {
    driven: Mutex<Driven>,
    /// Signalled after every dns frame applied (for `reg_init`).
    routed: Condvar,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Driven> {
        // A panic while holding the lock leaves a consistent core (its
        // methods do not unwind half-way on our inputs): keep serving.
        self.driven.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The lars agent embedded in the application: the agent's core, the dns
/// client and the reporter client run in this process, and
/// `get_host`/`report`/`get_route`/`reg_init` are plain calls (one mutex,
/// no UDP). For applications that do not want a local agent.
///
/// Threads: the dns client, the reporter client and one driver thread (the
/// clients' events, host timers, statistics); all stopped by
/// [`stop`](Self::stop) or drop.
pub struct EmbeddedAgent {
    inner: Arc<Inner>,
    senders: Senders,
    inputs: Sender<Input>,
    links: Option<Links>,
    driver: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedAgent")
            .field("core", &self.inner.lock().core)
            .finish_non_exhaustive()
    }
}

impl EmbeddedAgent {
    /// Starts the embedded agent with the dns, reporters, `[loadbalance]`
    /// and `report_interval` of `config` (the UDP, snapshot and `[http]`
    /// settings do not apply).
    pub fn start(config: AgentConfig) -> Result<Self, AgentError> {
        let core = AgentCore::new(
            CoreConfig::new(config.lb.clone())
                .report_interval(config.report_interval)
                .key_limits(config.key_limits(1))
                .reporters(
                    config.reporters().len(),
                    config.reporter_failover_grace,
                    config.reporter_handoff_hold,
                ),
        );
        let inner = Arc::new(Inner {
            driven: Mutex::new(Driven { core, armed: None }),
            routed: Condvar::new(),
        });
        let (inputs, rx) = crossbeam_channel::unbounded();
        let to_driver = inputs.clone();
        // No UDP port: the identity is `[agent] id` or `hostname:pid<pid>`
        // (the embedded agents of several processes on one machine spread
        // over the dns like agents of several machines).
        let mut links = Links::start(
            crate::links::dns_failover(&config, &config.embedded_identity()),
            &config
                .reporters()
                .into_iter()
                .map(SocketAddr::V4)
                .collect::<Vec<_>>(),
            crate::links::LinkTls::load(&config)?,
            move |ev| {
                let _ = to_driver.send(Input::Link(ev));
            },
        )?;
        let senders = links.senders();
        let (i, s) = (Arc::clone(&inner), senders.clone());
        let driver = thread::Builder::new()
            .name("lars-embedded".into())
            .spawn(move || drive(&i, &rx, &s));
        let driver = match driver {
            Ok(t) => t,
            Err(e) => {
                links.join();
                return Err(AgentError::Io(e));
            }
        };
        Ok(Self {
            inner,
            senders,
            inputs,
            links: Some(links),
            driver: Some(driver),
        })
    }

    /// Runs `f` on the core (locked), see [`call`](Self::call).
    fn with_core<T>(&self, f: impl FnOnce(&mut AgentCore, Instant) -> T) -> T {
        self.call(&mut self.inner.lock(), f)
    }

    /// Runs `f` on the core, sends what it produced, and wakes the driver
    /// if the core now needs it earlier than it sleeps.
    fn call<T>(&self, d: &mut Driven, f: impl FnOnce(&mut AgentCore, Instant) -> T) -> T {
        let out = f(&mut d.core, Instant::now());
        flush(&mut d.core, &self.senders);
        if let Some(at) = d.core.poll_timeout() {
            if d.armed.is_none_or(|armed| at < armed) {
                d.armed = Some(at);
                let _ = self.inputs.send(Input::Wake);
            }
        }
        out
    }

    /// A host for `(modid, cmdid)`; `NoExist` the first time (the route is
    /// then pulled), `Overload` when every host is overloaded.
    pub fn get_host(&self, modid: u32, cmdid: u32) -> Result<SocketAddrV4, ApiError> {
        let key = ModKey::new(modid, cmdid);
        match self.with_core(|c, now| c.get_host(key, now)) {
            Choice::Idle(h) | Choice::Probe(h) => Ok(h.into()),
            Choice::Overload => Err(ApiError::Overload),
            Choice::NoExist => Err(ApiError::NoExist),
        }
    }

    /// Records how a call to `host` went, as `LarsClient::report` sends it:
    /// `timecost` is the call's latency, for successes as well as failures
    /// (a known latency under 1 ms counts as 1 ms; `None` is unknown, and
    /// neutral for the latency estimate).
    pub fn report(
        &self,
        modid: u32,
        cmdid: u32,
        host: SocketAddrV4,
        outcome: Outcome,
        timecost: Option<Duration>,
    ) -> Result<(), ApiError> {
        let outcome =
            lars_lb::Outcome::from_retcode(outcome.retcode(), lars_client::timecost_ms(timecost));
        let key = ModKey::new(modid, cmdid);
        self.with_core(|c, now| c.report(key, HostAddr::from(host), outcome, now));
        Ok(())
    }

    /// Every host of `(modid, cmdid)` (empty the first time; pulled then).
    pub fn get_route(&self, modid: u32, cmdid: u32) -> Result<Vec<SocketAddrV4>, ApiError> {
        let key = ModKey::new(modid, cmdid);
        let hosts = self.with_core(|c, now| c.get_route(key, now));
        Ok(hosts.into_iter().map(SocketAddrV4::from).collect())
    }

    /// Registers interest in `(modid, cmdid)` and waits (up to
    /// `REG_INIT_ATTEMPTS * REG_INIT_WAIT`, as the UDP API) for its hosts;
    /// `NoExist` if none arrive.
    pub fn reg_init(&self, modid: u32, cmdid: u32) -> Result<Vec<SocketAddrV4>, ApiError> {
        let key = ModKey::new(modid, cmdid);
        let deadline = Instant::now() + REG_INIT_WAIT * REG_INIT_ATTEMPTS;
        let mut d = self.inner.lock();
        loop {
            let hosts = self.call(&mut d, |c, now| c.get_route(key, now));
            if !hosts.is_empty() {
                return Ok(hosts.into_iter().map(SocketAddrV4::from).collect());
            }
            if d.core.routes().status(key).is_none() {
                // Refused ([agent] max_unknown_keys): nothing was pulled.
                return Err(ApiError::NoExist);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ApiError::NoExist);
            }
            // Woken by the next dns frame applied (or after a while anyway).
            d = self
                .inner
                .routed
                .wait_timeout(d, left.min(REG_INIT_WAIT))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The `[loadbalance]` configuration the balancers use (policy and
    /// knobs).
    pub fn lb_config(&self) -> LoadBalanceConfig {
        self.inner.lock().core.routes().config().clone()
    }

    /// The state of every host of `(modid, cmdid)`, sorted by address:
    /// counters and policy state (next probe, latency estimate, weight,
    /// strikes). Empty when the key is unknown; nothing is pulled.
    pub fn hosts(&self, modid: u32, cmdid: u32) -> Vec<HostView> {
        let d = self.inner.lock();
        let Some(lb) = d.core.routes().lb(ModKey::new(modid, cmdid)) else {
            return Vec::new();
        };
        let mut v: Vec<HostView> = lb.hosts().filter_map(|h| lb.host(h)).collect();
        v.sort_unstable_by_key(|h| h.addr);
        v
    }

    /// The counters now (UDP fields stay 0).
    pub fn stats(&self) -> AgentStats {
        let mut s = AgentStats::sum(&[self.inner.lock().core.counters()]);
        if let Some(l) = &self.links {
            s.dns_connected = l.dns.is_connected();
            s.dns_connects = l.dns.stats().snapshot().accepted;
            s.dns_failovers = l.dns_link.status().failovers;
            s.reporter_connected = l.reporters.iter().any(TcpClient::is_connected);
            s.reporter_connects = l
                .reporters
                .iter()
                .map(|r| r.stats().snapshot().accepted)
                .sum();
        }
        s
    }

    /// Stops the clients and the driver thread and joins them. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut l) = self.links.take() {
            l.join();
        }
        let _ = self.inputs.send(Input::Stop);
        if let Some(t) = self.driver.take() {
            if t.join().is_err() {
                tracing::error!("the embedded agent's driver thread panicked");
            }
        }
    }
}

impl Drop for EmbeddedAgent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The driver thread: the clients' events and the core's deadlines.
fn drive(inner: &Inner, inputs: &Receiver<Input>, senders: &Senders) {
    loop {
        let deadline = {
            let mut d = inner.lock();
            d.armed = d.core.poll_timeout();
            d.armed
        };
        let input = match deadline {
            Some(at) => inputs.recv_deadline(at),
            None => inputs.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let now = Instant::now();
        let mut d = inner.lock();
        let mut routed = false;
        match input {
            Ok(Input::Link(ev)) => match ev {
                LinkEvent::DnsConnected => d.core.on_dns_connected(now),
                LinkEvent::DnsDisconnected => d.core.on_dns_disconnected(),
                LinkEvent::DnsFrame(frame) => {
                    d.core.handle_dns_frame(&frame, now);
                    routed = true;
                }
                LinkEvent::ReporterConnected {
                    link,
                    epoch,
                    caller,
                } => {
                    d.core.on_reporter_connected(link, epoch, caller, now);
                }
                LinkEvent::ReporterDisconnected { link } => {
                    d.core.on_reporter_disconnected(link, now);
                }
            },
            Ok(Input::Wake) | Err(RecvTimeoutError::Timeout) => {}
            Ok(Input::Stop) | Err(RecvTimeoutError::Disconnected) => return,
        }
        if d.core.poll_timeout().is_some_and(|at| at <= now) {
            d.core.handle_timeout(now, unix_now());
        }
        flush(&mut d.core, senders);
        drop(d);
        if routed {
            inner.routed.notify_all();
        }
    }
}

/// Sends the core's pulls and statistics (an embedded core has no replies).
fn flush(core: &mut AgentCore, senders: &Senders) {
    while let Some(t) = core.poll_transmit() {
        senders.send(&t);
    }
}
