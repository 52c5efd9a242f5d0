//! The `adaptive` policy of [`LoadBalance`]: ejection on evidence weighed
//! against the other hosts of the key, probes limited in time with backoff,
//! a latency-aware weighted round-robin, slow start and an ejection cap.
//!
//! The hosts stay in the same two rings as with `classic` (idle = in
//! rotation, overload = ejected); what changes is who moves when, and how an
//! idle host is picked:
//!
//! - **Ejection.** A failure adds to the host's failure streak (a slow
//!   failure weighs `1 + timecost / timecost_unit_ms`). The host is ejected
//!   when the streak reaches `k = max(eject_consecutive, ln(significance) /
//!   ln(p))`, where `p` is the other hosts' failure rate (their recent
//!   decayed rate with a weak prior, or the share of them whose last call
//!   failed when that is at least half): while the others succeed two
//!   failures suffice, while most of them fail too nobody is ejected.
//!   Independently, the host is ejected as an outlier when its recent
//!   (decayed) failures are improbable given `p`: a Chernoff bound
//!   `n * KL(f/n || p) >= ln(1 / significance)`.
//! - **Probes.** An ejected host gets one probe at a time, when its probe
//!   timer fires: `probe_interval * 3^strikes` after its ejection (strikes:
//!   ejections and failed probes, one forgiven per `strike_forgive` spent in
//!   rotation), then three times longer after each failed probe, up to
//!   `probe_interval_max`, with 10% jitter. A host that was down (a failure
//!   streak, then probes failing in a row) learns how long its outages
//!   last: its next outage's first probe comes then, followed by a fine
//!   search; the estimate is corrected by bisection across outages. A
//!   successful probe brings the host back.
//! - **Picks.** Round-robin over the idle ring, weighted: a host's weight is
//!   its slow-start ramp (from 10% to 100% over `slow_start` after it joins or
//!   comes back, when other hosts are in rotation) times its latency factor
//!   (1 within `latency_tolerance` of the key's typical latency, falling with
//!   the fourth power of the ratio beyond), times 0.02 while it has more
//!   calls unanswered than twice the mean plus one (a host behind timeouts).
//!   Full-weight hosts are taken at once; lighter ones accumulate credit and
//!   are taken when it reaches 1, so equal hosts get exactly equal shares.
//! - **Cap.** At most `max_ejection_percent` of the hosts are out at once and
//!   at least one host always stays in rotation, so the answer is never
//!   "overload" while a host exists.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use crate::event::{HostState, Reason};

use super::{LoadBalance, NIL, Outcome, RR};

/// Per-host state of the adaptive policy.
#[derive(Debug, Clone, Copy)]
pub(super) struct Adapt {
    /// Failure streak, slow failures weighted.
    streak: f64,
    /// Decayed successes and failures while in rotation, as of `at`.
    succ: f64,
    fail: f64,
    at: Instant,
    /// Latency estimate in ms (0 = none yet).
    latency: f64,
    latency_at: Instant,
    /// Cached latency factor in `(0, 1]`.
    latency_weight: f64,
    /// End of the slow-start ramp, while ramping.
    ramp_until: Option<Instant>,
    /// Weighted round-robin credit.
    credit: f64,
    /// Picks handed out since, minus reports received (in rotation).
    outstanding: u32,
    /// Strikes not yet forgiven (ejections, and failed probes of past
    /// ejections), and when the last one was forgiven (or the host last
    /// failed / came back).
    strikes: u32,
    forgiven_at: Instant,
    /// Ejected: when, the next probe's due time, whether a probe is out,
    /// failed probes in this ejection, the last failed probe's time.
    ejected_at: Instant,
    pub(super) probe_at: Option<Instant>,
    probe_out: bool,
    failed_probes: u32,
    last_failed_probe: Option<Instant>,
    /// Learned length of this host's outages (ejections that ended after
    /// failed probes).
    outage: Option<Duration>,
    /// How far the true outage length may be from `outage`.
    outage_spread: Duration,
    /// This ejection came from a failure streak (a host that went down).
    streak_ejected: bool,
    /// The last call's outcome was a failure (for the "others failing now" share).
    failing: bool,
    /// Timer generation: heap entries of older generations are stale.
    timer_gen: u32,
}

impl Adapt {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            streak: 0.0,
            succ: 0.0,
            fail: 0.0,
            at: now,
            latency: 0.0,
            latency_at: now,
            latency_weight: 1.0,
            ramp_until: None,
            credit: 0.0,
            outstanding: 0,
            strikes: 0,
            forgiven_at: now,
            ejected_at: now,
            probe_at: None,
            probe_out: false,
            failed_probes: 0,
            last_failed_probe: None,
            outage: None,
            outage_spread: Duration::ZERO,
            streak_ejected: false,
            failing: false,
            timer_gen: 0,
        }
    }

    /// Strikes against the host, counting the failed probes of a current
    /// ejection.
    pub(super) fn strikes(&self) -> u32 {
        self.strikes.saturating_add(self.failed_probes)
    }

    /// The latency estimate, once there is one.
    pub(super) fn latency_ms(&self) -> Option<f64> {
        (self.latency > 0.0).then_some(self.latency)
    }
}

/// Key-wide state of the adaptive policy.
#[derive(Debug)]
pub(super) struct AdaptKey {
    /// Decayed successes and failures of the hosts in rotation, as of `at`.
    succ: f64,
    fail: f64,
    at: Option<Instant>,
    /// The key's typical latency (ms; 0 = none yet).
    latency: f64,
    /// Idle hosts whose last call failed.
    failing: u32,
    /// Sum of the idle hosts' outstanding calls.
    outstanding: u64,
    /// Probe timers: (due, slot, generation), earliest first.
    timers: std::collections::BinaryHeap<Reverse<(Instant, u32, u32)>>,
    /// Ejected hosts whose probe is due, in the order they became due.
    ready: std::collections::VecDeque<u32>,
    /// Ejections refused by the cap.
    pub(super) capped: u64,
    /// Probes handed out.
    pub(super) probes: u64,
    /// The PRNG (splitmix64) for probe jitter.
    rng: u64,
}

impl AdaptKey {
    pub(super) fn new(seed: u64) -> Self {
        Self {
            succ: 0.0,
            fail: 0.0,
            at: None,
            latency: 0.0,
            failing: 0,
            outstanding: 0,
            timers: std::collections::BinaryHeap::new(),
            ready: std::collections::VecDeque::new(),
            capped: 0,
            probes: 0,
            rng: seed,
        }
    }

    pub(super) fn seed(&mut self, seed: u64) {
        self.rng = seed;
    }

    /// Uniform in `[0, 1)` (splitmix64).
    fn unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Most idle hosts one weighted pick looks at before settling for the one
/// with the most credit (keeps a pick O(1) when many hosts are light).
const MAX_SCAN: u32 = 16;
/// Growth of the probe interval per strike: a dead host is probed 1, 3, 9,
/// 27, 81 and 243 s apart (with the default `probe_interval`), then every
/// `probe_interval_max`. After a host's learned outage length the search is
/// finer (doubling from half the `probe_interval`).
const BACKOFF: f64 = 3.0;
/// The longest probe delay: a century means "never" and, unlike any
/// `Duration` a `LoadBalanceConfig` may hold, can be added to a clock
/// reading (and made from an `f64`) without overflow.
const MAX_PROBE_DELAY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// Failed probes in one ejection that make it an outage worth learning.
const LEARN_AFTER: u32 = 2;
/// Weight of a host at the start of its slow-start ramp.
const RAMP_FLOOR: f64 = 0.1;
/// Smallest latency factor: a slow host still gets a trickle, so its
/// recovery is seen.
const LATENCY_FLOOR: f64 = 0.002;
/// Weight factor of a host with calls unanswered far beyond the others'
/// (more than twice the mean plus one): a host behind timeouts stops
/// collecting calls before the first timeout is even reported.
const UNANSWERED: f64 = 0.02;
/// Weight of one latency sample in a host's estimate, at least.
const LATENCY_ALPHA: f64 = 0.2;
/// Weight of one latency sample in the key's typical latency.
const KEY_LATENCY_ALPHA: f64 = 0.02;

fn decay(value: f64, from: Instant, now: Instant, half_life: Duration) -> f64 {
    let dt = now.saturating_duration_since(from).as_secs_f64();
    if dt <= 0.0 {
        value
    } else {
        value * (-dt * std::f64::consts::LN_2 / half_life.as_secs_f64()).exp()
    }
}

/// The slow-start factor of a host whose ramp of length `slow_start` ends
/// at `end` (> `now`): linear from `RAMP_FLOOR` to 1.
fn ramp(end: Instant, now: Instant, slow_start: Duration) -> f64 {
    let left = end.saturating_duration_since(now).as_secs_f64();
    let total = slow_start.as_secs_f64().max(f64::MIN_POSITIVE);
    (1.0 - left / total).max(RAMP_FLOOR)
}

/// Kullback-Leibler divergence of Bernoulli(q) from Bernoulli(p), 0 < p < 1.
fn kl(q: f64, p: f64) -> f64 {
    let term = |a: f64, b: f64| if a <= 0.0 { 0.0 } else { a * (a / b).ln() };
    term(q, p) + term(1.0 - q, 1.0 - p)
}

impl LoadBalance {
    /// Whether this balancer follows the adaptive policy.
    #[inline]
    pub(super) fn is_adaptive(&self) -> bool {
        self.adaptive
    }

    /// The adaptive pick: a due probe first, else a weighted round-robin
    /// over the idle ring.
    pub(super) fn choice_adaptive(&mut self, now: Instant) -> crate::Choice {
        if let Some(d) = self.due
            && now >= d
        {
            self.handle_timeout(now);
        }
        if !self.ak.ready.is_empty() {
            let now = self.tick(now);
            while let Some(i) = self.ak.ready.pop_front() {
                let s = &self.slots[i as usize];
                if !s.occupied || s.state != HostState::Overload || s.a.probe_out {
                    continue;
                }
                self.hand_out_probe(i, now);
                return crate::Choice::Probe(self.slots[i as usize].addr);
            }
        }
        if self.idle.head == NIL {
            // Only ejected hosts left (a route update took the others):
            // serve them in turn rather than nobody.
            if self.overload.head == NIL {
                return crate::Choice::NoExist;
            }
            let i = self.overload.head as usize;
            self.overload.head = self.slots[i].link[RR].next;
            return crate::Choice::Probe(self.slots[i].addr);
        }
        let mut best = NIL;
        let mut best_credit = f64::MIN;
        for _ in 0..self.idle.len.min(MAX_SCAN) {
            let i = self.idle.head;
            let s = &mut self.slots[i as usize];
            self.idle.head = s.link[RR].next;
            let mut w = s.a.latency_weight;
            if let Some(end) = s.a.ramp_until {
                if now >= end {
                    s.a.ramp_until = None;
                } else {
                    w *= ramp(end, now, self.cfg.adaptive.slow_start);
                }
            }
            let n = u64::from(self.idle.len);
            if s.a.outstanding > 1 && u64::from(s.a.outstanding) * n > 2 * self.ak.outstanding + n {
                w *= UNANSWERED;
            }
            let take = if w >= 1.0 {
                true
            } else {
                s.a.credit += w;
                s.a.credit >= 1.0
            };
            if take {
                if w < 1.0 {
                    s.a.credit -= 1.0;
                }
                s.a.outstanding = s.a.outstanding.saturating_add(1);
                self.ak.outstanding += 1;
                return crate::Choice::Idle(s.addr);
            }
            if s.a.credit > best_credit {
                best_credit = s.a.credit;
                best = i;
            }
        }
        // Every host looked at is light: take the one closest to its turn.
        let s = &mut self.slots[best as usize];
        s.a.credit = (s.a.credit - 1.0).max(-1.0);
        s.a.outstanding = s.a.outstanding.saturating_add(1);
        self.ak.outstanding += 1;
        crate::Choice::Idle(s.addr)
    }

    fn hand_out_probe(&mut self, i: u32, now: Instant) {
        self.ak.probes += 1;
        let s = &mut self.slots[i as usize];
        s.a.probe_out = true;
        // If no result comes back, probe again after the current interval.
        let delay = self.probe_delay(i, false, false);
        self.schedule_probe(i, now + delay);
    }

    /// The delay before the next probe of ejected host `i`: for the first
    /// probe of a failure-streak ejection its learned outage length (when
    /// known), then a fine search (`probe_interval / 2`, doubling); else
    /// `probe_interval * 3^(strikes + failed probes)`; capped at
    /// `probe_interval_max`, with 10% jitter.
    fn probe_delay(&mut self, i: u32, first: bool, streak: bool) -> Duration {
        let cfg = self.cfg.adaptive;
        let a = self.slots[i as usize].a;
        if first
            && streak
            && let Some(outage) = a.outage
        {
            return outage
                .max(cfg.probe_interval)
                .min(cfg.probe_interval_max)
                .min(MAX_PROBE_DELAY);
        }
        // `strikes` already counts this ejection (and `first` comes before
        // that count): the level this ejection started from, plus its failed
        // probes.
        let start = if first {
            a.strikes
        } else {
            a.strikes.saturating_sub(1)
        };
        // Past a learned outage the search is fine: half the interval,
        // doubling; otherwise the interval grows by BACKOFF per strike.
        let (base, factor, exp) = if a.outage.is_some() && a.streak_ejected {
            (0.5, 2.0, a.failed_probes.saturating_sub(1))
        } else {
            (1.0, BACKOFF, start.saturating_add(a.failed_probes))
        };
        let base = base * cfg.probe_interval.as_secs_f64();
        let max = cfg.probe_interval_max.as_secs_f64();
        let d = (base * f64::powi(factor, exp.min(31) as i32)).min(max);
        let jitter = 0.9 + 0.2 * self.ak.unit();
        Duration::from_secs_f64((d * jitter).min(max).min(MAX_PROBE_DELAY.as_secs_f64()))
    }

    fn schedule_probe(&mut self, i: u32, at: Instant) {
        let s = &mut self.slots[i as usize];
        s.a.timer_gen = s.a.timer_gen.wrapping_add(1);
        s.a.probe_at = Some(at);
        self.ak.timers.push(Reverse((at, i, s.a.timer_gen)));
        self.due = Some(self.due.map_or(at, |d| d.min(at)));
    }

    /// Brings the key's decayed totals to `now`.
    fn key_decay(&mut self, now: Instant) {
        let hl = self.cfg.adaptive.stats_half_life;
        if let Some(at) = self.ak.at {
            self.ak.succ = decay(self.ak.succ, at, now, hl);
            self.ak.fail = decay(self.ak.fail, at, now, hl);
        }
        self.ak.at = Some(now);
    }

    fn host_decay(&mut self, i: u32, now: Instant) {
        let hl = self.cfg.adaptive.stats_half_life;
        let a = &mut self.slots[i as usize].a;
        a.succ = decay(a.succ, a.at, now, hl);
        a.fail = decay(a.fail, a.at, now, hl);
        a.at = now;
    }

    /// The adaptive report rules (counters and batches are already updated).
    pub(super) fn report_adaptive(&mut self, i: u32, outcome: Outcome, now: Instant) -> HostState {
        let state = self.slots[i as usize].state;
        if let Outcome::SuccessIn { latency_ms } = outcome {
            self.learn_latency(i, f64::from(latency_ms), now);
        }
        match state {
            HostState::Overload => self.report_ejected(i, outcome, now),
            HostState::Idle => self.report_in_rotation(i, outcome, now),
        }
    }

    fn report_ejected(&mut self, i: u32, outcome: Outcome, now: Instant) -> HostState {
        if !self.slots[i as usize].a.probe_out {
            // A call handed out before the ejection: counted, not a probe.
            return HostState::Overload;
        }
        if outcome.is_success() {
            self.learn_outage(i, now);
            self.readmit(i, Reason::ProbeSucceeded, now);
            return HostState::Idle;
        }
        let a = &mut self.slots[i as usize].a;
        a.probe_out = false;
        a.failed_probes = a.failed_probes.saturating_add(1);
        a.last_failed_probe = Some(now);
        let delay = self.probe_delay(i, false, false);
        self.schedule_probe(i, now + delay);
        self.refresh_due();
        HostState::Overload
    }

    /// A probe of ejected host `i` succeeded at `now`: what this ejection
    /// says about the length of the host's outages.
    ///
    /// The outage ended between the last failed probe and now: the middle
    /// of that bracket becomes the estimate, half its width the spread.
    /// A first probe at the estimate that succeeds at once only says the
    /// outage was shorter: the estimate moves down by half its spread and
    /// the spread halves (a bisection across outages), so an estimate made
    /// from a coarse bracket converges instead of costing capacity forever.
    /// Flaky hosts (probes failing now and then) teach nothing: learning
    /// needs `LEARN_AFTER` failed probes in a row, or one after a probe at
    /// the estimate.
    fn learn_outage(&mut self, i: u32, now: Instant) {
        let a = &mut self.slots[i as usize].a;
        let by_estimate = a.streak_ejected && a.outage.is_some();
        match a.last_failed_probe {
            Some(last) if a.failed_probes >= LEARN_AFTER || by_estimate && a.failed_probes >= 1 => {
                let half = now.saturating_duration_since(last) / 2;
                a.outage = Some((last + half).saturating_duration_since(a.ejected_at));
                a.outage_spread = half;
            }
            None if by_estimate => {
                if let Some(o) = a.outage {
                    a.outage = Some(o.saturating_sub(a.outage_spread / 2));
                    a.outage_spread /= 2;
                }
            }
            _ => {}
        }
    }

    fn report_in_rotation(&mut self, i: u32, outcome: Outcome, now: Instant) -> HostState {
        let cfg = self.cfg.adaptive;
        self.key_decay(now);
        self.host_decay(i, now);
        let failed = !outcome.is_success();
        let a = &mut self.slots[i as usize].a;
        if a.outstanding > 0 {
            a.outstanding -= 1;
            self.ak.outstanding = self.ak.outstanding.saturating_sub(1);
        }
        let was_failing = a.failing;
        match (was_failing, failed) {
            (false, true) => self.ak.failing += 1,
            (true, false) => self.ak.failing = self.ak.failing.saturating_sub(1),
            _ => {}
        }
        let a = &mut self.slots[i as usize].a;
        a.failing = failed;
        if !failed {
            a.succ += 1.0;
            self.ak.succ += 1.0;
            a.streak = 0.0;
            let forgive = cfg.strike_forgive;
            if a.strikes > 0 && !forgive.is_zero() {
                let clean = now.saturating_duration_since(a.forgiven_at);
                let n = (clean.as_secs_f64() / forgive.as_secs_f64()) as u32;
                if n > 0 {
                    a.strikes = a.strikes.saturating_sub(n);
                    a.forgiven_at = now;
                }
            }
            return HostState::Idle;
        }
        a.fail += 1.0;
        self.ak.fail += 1.0;
        a.forgiven_at = now;
        let timecost = match outcome {
            Outcome::Failure { timecost_ms } => timecost_ms,
            _ => 0,
        };
        let weight = 1.0
            + timecost
                .checked_div(self.cfg.timecost_unit_ms)
                .map_or(0.0, f64::from);
        a.streak += weight;
        let (streak, hs, hf) = (a.streak, a.succ, a.fail);

        // The other hosts in rotation: their decayed failure rate (with a
        // weak prior) and the share of them whose last call failed.
        let peers = self.idle.len.saturating_sub(1);
        if peers == 0 {
            return HostState::Idle;
        }
        let ps = (self.ak.succ - hs).max(0.0);
        let pf = (self.ak.fail - hf).max(0.0);
        let p_slow = (pf + 1.0) / (ps + pf + 2.0);
        // Most of the others failing right now is trouble of the whole key
        // (or of the caller), not of this host.
        let failing_peers = self.ak.failing.saturating_sub(1);
        let p_now = if 2 * failing_peers >= peers {
            f64::from(failing_peers) / f64::from(peers)
        } else {
            0.0
        };
        let p = p_slow.max(p_now).clamp(1e-9, 1.0 - 1e-9);
        let bar = cfg.outlier_significance.clamp(1e-12, 0.5).ln();
        let need = (bar / p.ln()).max(f64::from(cfg.eject_consecutive));
        let reason = if streak >= need {
            Some(Reason::FailureStreak)
        } else {
            let n = hs + hf;
            let q = hf / n;
            (q > p && n * kl(q, p) >= -bar).then_some(Reason::Outlier)
        };
        match reason {
            Some(r) if self.may_eject() => {
                self.eject(i, r, now);
                HostState::Overload
            }
            Some(_) => {
                self.ak.capped += 1;
                HostState::Idle
            }
            None => HostState::Idle,
        }
    }

    /// Whether one more host may leave rotation: the cap allows it and at
    /// least one host stays in.
    fn may_eject(&self) -> bool {
        let n = u64::from(self.idle.len + self.overload.len);
        let out = u64::from(self.overload.len) + 1;
        self.idle.len > 1 && out * 100 <= n * u64::from(self.cfg.adaptive.max_ejection_percent)
    }

    fn eject(&mut self, i: u32, reason: Reason, now: Instant) {
        // Its recent calls leave the key's totals with it.
        let a = self.slots[i as usize].a;
        self.ak.succ = (self.ak.succ - a.succ).max(0.0);
        self.ak.fail = (self.ak.fail - a.fail).max(0.0);
        if a.failing {
            self.ak.failing = self.ak.failing.saturating_sub(1);
        }
        self.ak.outstanding = self.ak.outstanding.saturating_sub(u64::from(a.outstanding));
        self.mark_overload(i, reason, now);
        let a = &mut self.slots[i as usize].a;
        a.succ = 0.0;
        a.fail = 0.0;
        a.streak = 0.0;
        a.failing = false;
        a.credit = 0.0;
        a.outstanding = 0;
        a.ramp_until = None;
        a.ejected_at = now;
        a.probe_out = false;
        a.failed_probes = 0;
        a.last_failed_probe = None;
        a.streak_ejected = reason == Reason::FailureStreak;
        let delay = self.probe_delay(i, true, reason == Reason::FailureStreak);
        let a = &mut self.slots[i as usize].a;
        a.strikes = a.strikes.saturating_add(1);
        self.schedule_probe(i, now + delay);
        self.refresh_due();
    }

    fn readmit(&mut self, i: u32, reason: Reason, now: Instant) {
        let ramp = self.ramp_end(now, self.idle.len);
        self.mark_idle(i, reason, now);
        let a = &mut self.slots[i as usize].a;
        a.probe_out = false;
        a.probe_at = None;
        a.timer_gen = a.timer_gen.wrapping_add(1);
        // Failed probes are strikes too, from the next ejection on.
        a.strikes = a.strikes.saturating_add(a.failed_probes);
        a.failed_probes = 0;
        a.last_failed_probe = None;
        a.forgiven_at = now;
        a.at = now;
        a.ramp_until = ramp;
        a.credit = 0.0;
        a.outstanding = 0;
        self.refresh_due();
    }

    /// When a host joining now ends its slow start: `None` (full share at
    /// once) when slow start is off or no other host is in rotation to
    /// carry the load meanwhile.
    pub(super) fn ramp_end(&self, now: Instant, carriers: u32) -> Option<Instant> {
        let s = self.cfg.adaptive.slow_start;
        (self.is_adaptive() && !s.is_zero() && carriers > 0)
            .then(|| now.checked_add(s))
            .flatten()
    }

    /// Sets up a host added by `update` / `add_host`; `carriers` is how many
    /// hosts were in rotation before the change.
    pub(super) fn admit_new(&mut self, i: u32, now: Instant, carriers: u32) {
        let ramp = self.ramp_end(now, carriers);
        self.slots[i as usize].a = Adapt {
            ramp_until: ramp,
            ..Adapt::new(now)
        };
    }

    /// Forgets a removed host's share of the key's totals.
    pub(super) fn forget(&mut self, i: u32) {
        let s = &self.slots[i as usize];
        if s.state == HostState::Idle {
            let now = self.ak.at.unwrap_or(s.a.at);
            let hl = self.cfg.adaptive.stats_half_life;
            let succ = decay(s.a.succ, s.a.at, now, hl);
            let fail = decay(s.a.fail, s.a.at, now, hl);
            self.ak.succ = (self.ak.succ - succ).max(0.0);
            self.ak.fail = (self.ak.fail - fail).max(0.0);
            if s.a.failing {
                self.ak.failing = self.ak.failing.saturating_sub(1);
            }
            self.ak.outstanding = self
                .ak
                .outstanding
                .saturating_sub(u64::from(s.a.outstanding));
        }
        let a = &mut self.slots[i as usize].a;
        a.outstanding = 0;
        a.timer_gen = a.timer_gen.wrapping_add(1);
        a.probe_at = None;
    }

    fn learn_latency(&mut self, i: u32, ms: f64, now: Instant) {
        let hl = self.cfg.adaptive.latency_half_life.as_secs_f64();
        let tol = self.cfg.adaptive.latency_tolerance;
        let ms = ms.max(0.001);
        self.ak.latency = if self.ak.latency > 0.0 {
            self.ak.latency + KEY_LATENCY_ALPHA * (ms - self.ak.latency)
        } else {
            ms
        };
        let key = self.ak.latency;
        let a = &mut self.slots[i as usize].a;
        a.latency = if a.latency > 0.0 {
            let dt = now.saturating_duration_since(a.latency_at).as_secs_f64();
            let alpha = (1.0 - (-dt * std::f64::consts::LN_2 / hl).exp()).max(LATENCY_ALPHA);
            a.latency + alpha * (ms - a.latency)
        } else {
            ms
        };
        a.latency_at = now;
        let ratio = a.latency / key;
        a.latency_weight = if ratio <= tol {
            1.0
        } else {
            (tol / ratio).powi(4).max(LATENCY_FLOOR)
        };
    }

    /// The adaptive timers due at `now`: probe timers move their hosts to
    /// the ready queue (the next picks hand them out).
    pub(super) fn timeout_adaptive(&mut self, now: Instant) {
        while let Some(&Reverse((at, i, g))) = self.ak.timers.peek() {
            if at > now {
                break;
            }
            self.ak.timers.pop();
            let s = &mut self.slots[i as usize];
            if !s.occupied || s.state != HostState::Overload || s.a.timer_gen != g {
                continue;
            }
            s.a.probe_out = false;
            s.a.probe_at = None;
            self.ak.ready.push_back(i);
        }
    }

    /// The next probe timer, skipping stale entries.
    pub(super) fn adaptive_due(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, i, g))) = self.ak.timers.peek() {
            let s = &self.slots[i as usize];
            if s.occupied && s.state == HostState::Overload && s.a.timer_gen == g {
                return Some(at);
            }
            self.ak.timers.pop();
        }
        None
    }

    /// Weight of idle host `i` at `now` (slow start times latency).
    pub(super) fn weight_at(&self, i: u32, now: Instant) -> f64 {
        let s = &self.slots[i as usize];
        if !self.is_adaptive() {
            return 1.0;
        }
        if s.state == HostState::Overload {
            return 0.0;
        }
        match s.a.ramp_until {
            Some(end) if now < end => {
                s.a.latency_weight * ramp(end, now, self.cfg.adaptive.slow_start)
            }
            _ => s.a.latency_weight,
        }
    }
}
