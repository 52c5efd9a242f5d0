//! Call status: the latest counters the agents reported
//! (`ServerCallStatus`) and the per-minute history (`lars_call_history`).

use std::collections::{BTreeMap, BTreeSet};

use lars_core::{HostAddr, ModKey};
use lars_store::{CallStatusRow, HistoryRow, RejectedRow, RouteFilter, StatsStore};

use super::Console;
use crate::error::ConsoleError;

/// One key's line on the call-status page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeySummary {
    /// Hosts with a status row.
    pub hosts: usize,
    /// Hosts whose latest row says overloaded.
    pub overloaded: usize,
    /// Latest report time, unix seconds (0 when none).
    pub last: i64,
    /// Successes and errors summed over the history window.
    pub succ: u64,
    pub err: u64,
}

/// Successes and errors of one minute, summed over a key's hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Minute {
    /// Start of the minute, unix seconds.
    pub minute: i64,
    pub succ: u64,
    pub err: u64,
}

/// One key's status rows and its history per minute.
#[derive(Debug, Clone)]
pub(crate) struct KeyStatus {
    pub rows: Vec<CallStatusRow>,
    /// One entry per minute, oldest first, zeros included.
    pub history: Vec<Minute>,
    /// Reports of the key the reporters' trust limits rejected in the same
    /// minutes (their calls are not in `history`: the numbers are clipped).
    pub rejected: Vec<RejectedRow>,
}

/// How far back the call-status page sums, in seconds.
const SUMMARY_WINDOW: i64 = 3600;

impl Console {
    /// The latest status rows matching `filter`.
    pub(crate) async fn call_status(
        &self,
        filter: RouteFilter,
    ) -> Result<Vec<CallStatusRow>, ConsoleError> {
        let rows = self.run(|st| Ok(st.call_status(None)?)).await?;
        Ok(rows
            .into_iter()
            .filter(|r| {
                filter.modid.is_none_or(|m| m == r.key.modid)
                    && filter.cmdid.is_none_or(|c| c == r.key.cmdid)
            })
            .collect())
    }

    /// Every key with status rows or recent history, summarised over the
    /// last hour.
    pub(crate) async fn status_by_key(&self) -> Result<BTreeMap<ModKey, KeySummary>, ConsoleError> {
        let since = now_secs() - SUMMARY_WINDOW;
        let (rows, hist) = self
            .run(move |st| Ok((st.call_status(None)?, st.history(None, since)?)))
            .await?;
        Ok(summarize(&rows, &hist))
    }

    /// `key`'s status rows and its last `minutes` minutes of history.
    pub(crate) async fn key_status(
        &self,
        key: ModKey,
        minutes: i64,
    ) -> Result<KeyStatus, ConsoleError> {
        let now = now_secs();
        let since = now - now.rem_euclid(60) - (minutes - 1) * 60;
        let (rows, hist, rejected) = self
            .run(move |st| {
                Ok((
                    st.call_status(Some(key))?,
                    st.history(Some(key), since)?,
                    st.rejected_reports(Some(key), since)?,
                ))
            })
            .await?;
        Ok(KeyStatus {
            rows,
            history: per_minute(&hist, now, minutes),
            rejected,
        })
    }
}

/// Per-key summary of status rows and history rows.
fn summarize(rows: &[CallStatusRow], hist: &[HistoryRow]) -> BTreeMap<ModKey, KeySummary> {
    let mut hosts: BTreeMap<ModKey, (BTreeSet<HostAddr>, BTreeSet<HostAddr>)> = BTreeMap::new();
    let mut keys: BTreeMap<ModKey, KeySummary> = BTreeMap::new();
    for r in rows {
        let (all, over) = hosts.entry(r.key).or_default();
        all.insert(r.host);
        if r.overload {
            over.insert(r.host);
        }
        let e = keys.entry(r.key).or_default();
        e.hosts = all.len();
        e.overloaded = over.len();
        e.last = e.last.max(r.ts);
    }
    for h in hist {
        let e = keys.entry(h.key).or_default();
        e.succ += h.succ;
        e.err += h.err;
    }
    keys
}

/// Per-minute totals over all hosts for each of the `minutes` minutes
/// ending with the current one, zeros included.
fn per_minute(rows: &[HistoryRow], now: i64, minutes: i64) -> Vec<Minute> {
    let last = now - now.rem_euclid(60);
    let first = last - (minutes - 1) * 60;
    let mut out: Vec<Minute> = (0..minutes)
        .map(|i| Minute {
            minute: first + i * 60,
            succ: 0,
            err: 0,
        })
        .collect();
    for r in rows {
        if r.minute < first || r.minute > last {
            continue;
        }
        if let Some(slot) = usize::try_from((r.minute - first) / 60)
            .ok()
            .and_then(|i| out.get_mut(i))
        {
            slot.succ += r.succ;
            slot.err += r.err;
        }
    }
    out
}

/// Current unix time in seconds.
fn now_secs() -> i64 {
    i64::try_from(lars_core::time::unix_now()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(host: HostAddr, minute: i64, succ: u64, err: u64) -> HistoryRow {
        HistoryRow {
            key: ModKey::new(1, 1),
            host,
            minute,
            succ,
            err,
        }
    }

    #[test]
    fn minutes_are_bucketed_with_zeros() {
        let host = HostAddr::new(1, 1);
        let now = 10_000 * 60 + 30;
        let rows = [
            hist(host, 10_000 * 60, 5, 1),
            hist(HostAddr::new(2, 2), 10_000 * 60, 2, 0),
            hist(host, 9_998 * 60, 1, 3),
            hist(host, 9_000 * 60, 100, 100),
        ];
        let m: Vec<(i64, u64, u64)> = per_minute(&rows, now, 3)
            .into_iter()
            .map(|m| (m.minute, m.succ, m.err))
            .collect();
        assert_eq!(
            m,
            vec![(9_998 * 60, 1, 3), (9_999 * 60, 0, 0), (10_000 * 60, 7, 1)]
        );
    }

    #[test]
    fn keys_are_summarised() {
        let key = ModKey::new(1, 1);
        let (a, b) = (HostAddr::new(1, 1), HostAddr::new(2, 2));
        let row = |host, caller, ts, overload| CallStatusRow {
            key,
            host,
            caller,
            succ_cnt: 1,
            err_cnt: 0,
            ts,
            overload,
        };
        let rows = [
            row(a, 1, 10, false),
            row(a, 2, 30, true),
            row(b, 1, 20, false),
        ];
        let hist = [hist(a, 60, 5, 1), hist(b, 120, 2, 2)];
        let s = summarize(&rows, &hist);
        assert_eq!(
            s[&key],
            KeySummary {
                hosts: 2,
                overloaded: 1,
                last: 30,
                succ: 7,
                err: 3
            }
        );
    }
}
