//! Live windows per `(key, host)` and per caller: successes and errors over
//! the last 1, 5, 15 and 60 minutes, the overload flag and the last report
//! time. Per-minute buckets in a ring of 60; `now` is always passed in.

use std::collections::HashMap;

use lars_core::{HostAddr, ModKey};
use serde::Serialize;

use crate::delta::StreamKey;

/// Buckets in a ring: one per minute, one hour.
pub const SLOTS: usize = 60;

/// Seconds without a report after which an entry is expired from memory.
pub const EXPIRE_AFTER: i64 = 3600;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    minute: i64,
    succ: u64,
    err: u64,
}

/// Per-minute counts of the last hour.
#[derive(Debug, Clone)]
pub struct MinuteRing {
    slots: [Bucket; SLOTS],
}

impl Default for MinuteRing {
    fn default() -> Self {
        Self {
            slots: [Bucket {
                minute: i64::MIN,
                succ: 0,
                err: 0,
            }; SLOTS],
        }
    }
}

fn minute_of(ts: i64) -> i64 {
    ts.div_euclid(60)
}

impl MinuteRing {
    /// Adds counts at unix second `ts`. Counts older than the minute that now
    /// holds their slot (more than an hour behind it) are left out.
    pub fn add(&mut self, ts: i64, succ: u64, err: u64) {
        let m = minute_of(ts);
        let slot = &mut self.slots[m.rem_euclid(SLOTS as i64) as usize];
        if slot.minute < m {
            *slot = Bucket {
                minute: m,
                succ: 0,
                err: 0,
            };
        }
        if slot.minute == m {
            slot.succ += succ;
            slot.err += err;
        }
    }

    /// `(succ, err)` over the last `minutes` minutes at `now`: the current
    /// minute so far plus the `minutes - 1` before it.
    pub fn sum(&self, now: i64, minutes: i64) -> (u64, u64) {
        let cur = minute_of(now);
        self.slots
            .iter()
            .filter(|b| b.minute <= cur && b.minute > cur - minutes)
            .fold((0, 0), |(s, e), b| (s + b.succ, e + b.err))
    }

    /// The four windows at `now`.
    pub fn windows(&self, now: i64) -> WindowCounts {
        let w = |m| {
            let (succ, err) = self.sum(now, m);
            Window { succ, err }
        };
        WindowCounts {
            m1: w(1),
            m5: w(5),
            m15: w(15),
            h1: w(60),
        }
    }
}

/// Successes and errors over one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Window {
    /// Successful calls.
    pub succ: u64,
    /// Failed calls.
    pub err: u64,
}

/// The 1 min, 5 min, 15 min and 1 h windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WindowCounts {
    /// Last minute (the current one so far).
    pub m1: Window,
    /// Last 5 minutes.
    pub m5: Window,
    /// Last 15 minutes.
    pub m15: Window,
    /// Last hour.
    pub h1: Window,
}

#[derive(Debug, Clone, Default)]
struct Entry {
    ring: MinuteRing,
    overload: bool,
    last_report: i64,
}

impl Entry {
    fn record(&mut self, ts: i64, succ: u64, err: u64, overload: bool) {
        self.ring.add(ts, succ, err);
        if ts >= self.last_report {
            self.last_report = ts;
            self.overload = overload;
        }
    }
}

#[derive(Debug, Clone, Default)]
struct HostEntry {
    total: Entry,
    callers: HashMap<u32, Entry>,
}

/// The windows of one caller on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallerView {
    /// The caller id (the agent's ip as an integer in the original).
    pub caller: u32,
    /// Its windows.
    pub windows: WindowCounts,
    /// Overload flag of its last report.
    pub overload: bool,
    /// Time of its last report, unix seconds.
    pub last_report: i64,
}

/// The windows of one host of a key, all callers together and per caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostView {
    /// The host, `a.b.c.d:port`.
    pub host: String,
    /// The host's ip as the original's integer.
    pub ip: u32,
    /// The host's port.
    pub port: u16,
    /// All callers together.
    pub windows: WindowCounts,
    /// Overload flag of the last report about this host.
    pub overload: bool,
    /// Time of the last report about this host, unix seconds.
    pub last_report: i64,
    /// Per caller, by caller id.
    pub callers: Vec<CallerView>,
}

/// All live windows of the keys one worker owns.
#[derive(Debug, Default)]
pub struct Windows {
    keys: HashMap<ModKey, HashMap<HostAddr, HostEntry>>,
}

impl Windows {
    /// No windows.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a delta reported at `ts` (unix seconds) by `caller` about
    /// `host` of `key`.
    pub fn record(
        &mut self,
        (key, host, caller): StreamKey,
        ts: i64,
        succ: u64,
        err: u64,
        overload: bool,
    ) {
        let h = self.keys.entry(key).or_default().entry(host).or_default();
        h.total.record(ts, succ, err, overload);
        h.callers
            .entry(caller)
            .or_default()
            .record(ts, succ, err, overload);
    }

    /// The windows of every host of `key` at `now`, sorted by host.
    pub fn view(&self, key: ModKey, now: i64) -> Vec<HostView> {
        let Some(hosts) = self.keys.get(&key) else {
            return Vec::new();
        };
        let mut out: Vec<HostView> = hosts
            .iter()
            .map(|(host, e)| {
                let mut callers: Vec<CallerView> = e
                    .callers
                    .iter()
                    .map(|(c, ce)| CallerView {
                        caller: *c,
                        windows: ce.ring.windows(now),
                        overload: ce.overload,
                        last_report: ce.last_report,
                    })
                    .collect();
                callers.sort_by_key(|c| c.caller);
                HostView {
                    host: host.to_string(),
                    ip: host.ip,
                    port: host.port,
                    windows: e.total.ring.windows(now),
                    overload: e.total.overload,
                    last_report: e.total.last_report,
                    callers,
                }
            })
            .collect();
        out.sort_by_key(|v| (v.ip, v.port));
        out
    }

    /// Removes callers, hosts and keys without a report for
    /// [`EXPIRE_AFTER`] seconds at `now`; returns the hosts removed.
    pub fn expire(&mut self, now: i64) -> usize {
        let limit = now - EXPIRE_AFTER;
        let mut removed = 0;
        self.keys.retain(|_, hosts| {
            hosts.retain(|_, h| {
                h.callers.retain(|_, c| c.last_report >= limit);
                let keep = h.total.last_report >= limit;
                removed += usize::from(!keep);
                keep
            });
            !hosts.is_empty()
        });
        removed
    }

    /// `(keys, hosts)` held.
    pub fn len(&self) -> (usize, usize) {
        (self.keys.len(), self.keys.values().map(HashMap::len).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: ModKey = ModKey::new(1, 1);
    const H: HostAddr = HostAddr::new(0x7f00_0001, 9001);
    const T0: i64 = 1_700_000_000 - 1_700_000_000 % 3600; // a whole hour

    #[test]
    fn windows_cover_1_5_15_60_minutes() {
        let mut w = Windows::new();
        // One success per minute for 90 minutes, an error in the last minute.
        for m in 0..90 {
            w.record((K, H, 7), T0 + m * 60 + 5, 1, 0, false);
        }
        w.record((K, H, 7), T0 + 89 * 60 + 30, 0, 1, true);
        let now = T0 + 89 * 60 + 40;
        let v = w.view(K, now);
        assert_eq!(v.len(), 1);
        let c = v[0].windows;
        assert_eq!((c.m1.succ, c.m1.err), (1, 1));
        assert_eq!(c.m5.succ, 5);
        assert_eq!(c.m15.succ, 15);
        assert_eq!((c.h1.succ, c.h1.err), (60, 1));
        assert!(v[0].overload);
        assert_eq!(v[0].last_report, T0 + 89 * 60 + 30);
        assert_eq!(v[0].callers[0].windows, c);
    }

    #[test]
    fn windows_slide_with_now() {
        let mut w = Windows::new();
        w.record((K, H, 1), T0, 10, 2, false);
        assert_eq!(
            w.view(K, T0 + 59).first().map(|v| v.windows.m1.succ),
            Some(10)
        );
        let later = w.view(K, T0 + 60)[0].windows;
        assert_eq!((later.m1.succ, later.m5.succ), (0, 10));
        let gone = w.view(K, T0 + 3600)[0].windows;
        assert_eq!(gone.h1, Window::default());
    }

    #[test]
    fn per_caller_and_per_host_totals() {
        let mut w = Windows::new();
        let h2 = HostAddr::new(0x7f00_0001, 9002);
        w.record((K, H, 1), T0, 3, 0, false);
        w.record((K, H, 2), T0, 4, 1, true);
        w.record((K, h2, 1), T0, 1, 0, false);
        let v = w.view(K, T0 + 1);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].host, "127.0.0.1:9001");
        assert_eq!((v[0].windows.m1.succ, v[0].windows.m1.err), (7, 1));
        assert_eq!(v[0].callers.len(), 2);
        assert_eq!(v[0].callers[1].caller, 2);
        assert!(v[0].callers[1].overload && !v[0].callers[0].overload);
        assert!(w.view(ModKey::new(9, 9), T0).is_empty());
    }

    #[test]
    fn an_older_report_does_not_override_the_flag_or_time() {
        let mut w = Windows::new();
        w.record((K, H, 1), T0 + 100, 1, 0, true);
        w.record((K, H, 1), T0 + 50, 1, 0, false);
        let v = &w.view(K, T0 + 100)[0];
        assert!(v.overload);
        assert_eq!(v.last_report, T0 + 100);
        assert_eq!(v.windows.m5.succ, 2);
    }

    #[test]
    fn stale_bucket_data_is_left_out_of_the_ring() {
        let mut r = MinuteRing::default();
        r.add(T0 + 3600, 5, 0);
        // Same slot, one hour earlier: not in any window any more.
        r.add(T0, 7, 0);
        assert_eq!(r.sum(T0 + 3600, 60), (5, 0));
    }

    #[test]
    fn entries_expire_after_an_hour_without_reports() {
        let mut w = Windows::new();
        w.record((K, H, 1), T0, 1, 0, false);
        w.record((K, H, 2), T0 + 1800, 1, 0, false);
        w.record((ModKey::new(2, 2), H, 1), T0 + 3000, 1, 0, false);
        assert_eq!(w.expire(T0 + 3601), 0, "host still fresh via caller 2");
        assert_eq!(w.view(K, T0 + 3601)[0].callers.len(), 1);
        assert_eq!(w.expire(T0 + 1800 + 3601), 1);
        assert_eq!(w.len(), (1, 1));
    }
}
