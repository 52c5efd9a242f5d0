//! The agent inside the application process: the same routes, dns client and
//! reporter client as the UDP agent, behind the API of `lars_client`, with
//! no UDP hop.

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender};
use lars_client::{ApiError, Outcome, REG_INIT_ATTEMPTS, REG_INIT_WAIT};
use lars_core::config::AgentConfig;
use lars_core::{HostAddr, ModKey};
use lars_lb::{Choice, HostView, LoadBalanceConfig};

use crate::agent::{AgentError, AgentStats};
use crate::core::{Core, DEFAULT_MAX_PENDING_REPORT_KEYS, ShardCounters};
use crate::uplink::Clients;

/// How often the timer thread runs the hosts' timers.
const TICK: Duration = Duration::from_millis(20);

struct Inner {
    core: Mutex<Core>,
    /// Signalled after every route applied (for `reg_init`).
    routed: Condvar,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock leaves a consistent RouteLb (its
        // methods do not unwind half-way on our inputs): keep serving.
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The lars agent embedded in the application: [`RouteLb`](lars_lb::RouteLb),
/// the dns client and the reporter client run in this process, and
/// `get_host`/`report`/`get_route`/`reg_init` are plain calls (one mutex,
/// no UDP). For applications that do not want a local agent.
///
/// Threads: the dns client, the reporter client and one timer thread (host
/// timers and statistics batches); all stopped by [`stop`](Self::stop) or
/// drop.
pub struct EmbeddedAgent {
    inner: Arc<Inner>,
    clients: Option<Clients>,
    counters: Arc<ShardCounters>,
    stop_tx: Option<Sender<()>>,
    timer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedAgent")
            .field("core", &*self.inner.lock())
            .finish_non_exhaustive()
    }
}

impl EmbeddedAgent {
    /// Starts the embedded agent with the dns, reporter, `[loadbalance]`
    /// and `report_interval` of `config` (the UDP, snapshot and `[http]`
    /// settings do not apply).
    pub fn start(config: AgentConfig) -> Result<Self, AgentError> {
        let slot: Arc<OnceLock<Arc<Inner>>> = Arc::new(OnceLock::new());
        let (s1, s2) = (Arc::clone(&slot), Arc::clone(&slot));
        let mut clients = Clients::start(
            SocketAddr::V4(config.dns),
            SocketAddr::V4(config.reporter),
            move |key, hosts| {
                if let Some(inner) = s1.get() {
                    inner.lock().apply_route(key, &hosts, Instant::now());
                    inner.routed.notify_all();
                }
            },
            move || {
                if let Some(inner) = s2.get() {
                    inner.lock().dns_connected(Instant::now());
                }
            },
        )?;
        let counters: Arc<ShardCounters> = Arc::default();
        let inner = Arc::new(Inner {
            core: Mutex::new(Core::new(
                config.lb.clone(),
                clients.uplink.clone(),
                Arc::clone(&counters),
                DEFAULT_MAX_PENDING_REPORT_KEYS,
            )),
            routed: Condvar::new(),
        });
        let _ = slot.set(Arc::clone(&inner));
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let ti = Arc::clone(&inner);
        let report_interval = config.report_interval.max(Duration::from_millis(1));
        let timer = thread::Builder::new()
            .name("lars-embedded-timer".into())
            .spawn(move || {
                let mut next_report = Instant::now() + report_interval;
                loop {
                    match stop_rx.recv_timeout(TICK) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    let now = Instant::now();
                    let mut core = ti.lock();
                    core.tick(now);
                    if now >= next_report {
                        next_report = now + report_interval;
                        core.report_tick(crate::agent::unix_now());
                    }
                }
            });
        let timer = match timer {
            Ok(t) => t,
            Err(e) => {
                clients.join();
                return Err(AgentError::Io(e));
            }
        };
        Ok(Self {
            inner,
            clients: Some(clients),
            counters,
            stop_tx: Some(stop_tx),
            timer: Some(timer),
        })
    }

    /// A host for `(modid, cmdid)`; `NoExist` the first time (the route is
    /// then pulled), `Overload` when every host is overloaded.
    pub fn get_host(&self, modid: u32, cmdid: u32) -> Result<SocketAddrV4, ApiError> {
        match self
            .inner
            .lock()
            .get_host(ModKey::new(modid, cmdid), Instant::now())
        {
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
        self.inner.lock().report(
            ModKey::new(modid, cmdid),
            HostAddr::from(host),
            outcome,
            Instant::now(),
        );
        Ok(())
    }

    /// Every host of `(modid, cmdid)` (empty the first time; pulled then).
    pub fn get_route(&self, modid: u32, cmdid: u32) -> Result<Vec<SocketAddrV4>, ApiError> {
        let hosts = self
            .inner
            .lock()
            .get_route(ModKey::new(modid, cmdid), Instant::now());
        Ok(hosts.into_iter().map(SocketAddrV4::from).collect())
    }

    /// Registers interest in `(modid, cmdid)` and waits (up to
    /// `REG_INIT_ATTEMPTS * REG_INIT_WAIT`, as the UDP API) for its hosts;
    /// `NoExist` if none arrive.
    pub fn reg_init(&self, modid: u32, cmdid: u32) -> Result<Vec<SocketAddrV4>, ApiError> {
        let key = ModKey::new(modid, cmdid);
        let deadline = Instant::now() + REG_INIT_WAIT * REG_INIT_ATTEMPTS;
        let mut core = self.inner.lock();
        loop {
            let hosts = core.get_route(key, Instant::now());
            if !hosts.is_empty() {
                return Ok(hosts.into_iter().map(SocketAddrV4::from).collect());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ApiError::NoExist);
            }
            core = self
                .inner
                .routed
                .wait_timeout(core, left.min(REG_INIT_WAIT))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The `[loadbalance]` configuration the balancers use (policy and
    /// knobs).
    pub fn lb_config(&self) -> LoadBalanceConfig {
        self.inner.lock().routes().config().clone()
    }

    /// The state of every host of `(modid, cmdid)`, sorted by address:
    /// counters and policy state (next probe, latency estimate, weight,
    /// strikes). Empty when the key is unknown; nothing is pulled.
    pub fn hosts(&self, modid: u32, cmdid: u32) -> Vec<HostView> {
        let core = self.inner.lock();
        let Some(lb) = core.routes().lb(ModKey::new(modid, cmdid)) else {
            return Vec::new();
        };
        let mut v: Vec<HostView> = lb.hosts().filter_map(|h| lb.host(h)).collect();
        v.sort_unstable_by_key(|h| h.addr);
        v
    }

    /// The counters now (UDP fields stay 0).
    pub fn stats(&self) -> AgentStats {
        let mut s = crate::agent::stats_of(std::slice::from_ref(&self.counters));
        if let Some(c) = &self.clients {
            s.dns_connected = c.dns.is_connected();
            s.dns_connects = c
                .dns
                .stats()
                .accepted
                .load(std::sync::atomic::Ordering::Relaxed);
            s.reporter_connected = c.reporter.is_connected();
            s.reporter_connects = c
                .reporter
                .stats()
                .accepted
                .load(std::sync::atomic::Ordering::Relaxed);
        }
        s
    }

    /// Stops the clients and the timer thread and joins them. Idempotent.
    pub fn stop(&mut self) {
        self.stop_tx.take();
        if let Some(t) = self.timer.take() {
            let _ = t.join();
        }
        if let Some(mut c) = self.clients.take() {
            c.join();
        }
    }
}

impl Drop for EmbeddedAgent {
    fn drop(&mut self) {
        self.stop();
    }
}
