//! The reporter's counters, shared by the network threads, the workers and
//! the writers, and their JSON / Prometheus renderings.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use lars_net::http::PromText;
use serde::Serialize;

/// Live counters (relaxed atomics). Read them with [`Stats::snapshot`].
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) requests: AtomicU64,
    pub(crate) results: AtomicU64,
    pub(crate) bad_bodies: AtomicU64,
    pub(crate) bad_results: AtomicU64,
    pub(crate) late_ignored: AtomicU64,
    pub(crate) future_clamped: AtomicU64,
    pub(crate) zero_ts: AtomicU64,
    pub(crate) resets: AtomicU64,
    pub(crate) succ_in: AtomicU64,
    pub(crate) err_in: AtomicU64,
    pub(crate) status_rows_written: AtomicU64,
    pub(crate) history_rows_written: AtomicU64,
    pub(crate) succ_written: AtomicU64,
    pub(crate) err_written: AtomicU64,
    pub(crate) flushes: AtomicU64,
    pub(crate) flush_failures: AtomicU64,
    pub(crate) last_flush_unix_ms: AtomicU64,
    pub(crate) last_flush_duration_us: AtomicU64,
    pub(crate) db_healthy: AtomicBool,
    pub(crate) last_db_error: Mutex<Option<String>>,
    pub(crate) minutes_merged: AtomicU64,
    pub(crate) history_rows_dropped: AtomicU64,
    pub(crate) calls_dropped: AtomicU64,
    pub(crate) rows_rejected: AtomicU64,
    pub(crate) expired_hosts: AtomicU64,
    pub(crate) expired_streams: AtomicU64,
    pub(crate) resumed_streams: AtomicU64,
    pub(crate) resume_failures: AtomicU64,
    pub(crate) chunks_already_applied: AtomicU64,
    pub(crate) db_stalls: AtomicU64,
    pub(crate) db_probes: AtomicU64,
    pub(crate) db_probe_failures: AtomicU64,
    pub(crate) resume_rows_read: AtomicU64,
    pub(crate) resume_capped: AtomicU64,
    pub(crate) streams_reloaded: AtomicU64,
    pub(crate) reload_reads: AtomicU64,
    pub(crate) reload_failures: AtomicU64,
    pub(crate) rejected_stream_rate: AtomicU64,
    pub(crate) rejected_key_rate: AtomicU64,
    pub(crate) rejected_message_total: AtomicU64,
    pub(crate) rejected_calls: AtomicU64,
    pub(crate) rejections_unrecorded: AtomicU64,
}

/// Reports rejected by the trust limits, by reason (`[reporter]
/// max_calls_per_second`, `max_calls_per_message`; docs/stats.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RejectedReports {
    /// One host's calls beyond `max_calls_per_second` times the time since
    /// that stream's last report.
    pub stream_rate: u64,
    /// A caller's report of one key beyond `max_calls_per_second` times the
    /// time since its last accepted report of that key.
    pub key_rate: u64,
    /// One report beyond `max_calls_per_message`.
    pub message_total: u64,
}

pub(crate) fn add(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

/// A plain copy of every counter, plus gauges taken at the same moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Seconds since start.
    pub uptime_secs: u64,
    /// `ReportStatusRequest`s received.
    pub requests: u64,
    /// Host results in them.
    pub results: u64,
    /// Frames dropped: bodies that are not a `ReportStatusRequest`, frames
    /// with a bad length (connection closed) and unknown message ids.
    pub bad_frames: u64,
    /// Host results skipped for an invalid port.
    pub bad_results: u64,
    /// Reports ignored because their `ts` is more than one hour behind the
    /// reporter's clock.
    pub late_ignored: u64,
    /// Reports whose `ts` was ahead of the reporter's clock (taken as now).
    pub future_clamped: u64,
    /// Reports with `ts = 0` (taken as now).
    pub zero_ts: u64,
    /// Counter resets detected (a counter went down).
    pub resets: u64,
    /// Successful calls accepted (sum of deltas).
    pub succ_in: u64,
    /// Failed calls accepted (sum of deltas).
    pub err_in: u64,
    /// `ServerCallStatus` rows written.
    pub status_rows_written: u64,
    /// History rows written.
    pub history_rows_written: u64,
    /// Successful calls written to the history table.
    pub succ_written: u64,
    /// Failed calls written to the history table.
    pub err_written: u64,
    /// Successful database writes.
    pub flushes: u64,
    /// Failed database writes (rows kept and retried).
    pub flush_failures: u64,
    /// Time of the last successful write, unix milliseconds (0: never).
    pub last_flush_unix_ms: u64,
    /// Duration of the last successful write, microseconds.
    pub last_flush_duration_us: u64,
    /// Seconds since the last successful write (since start when none yet).
    /// Grows while there is nothing to write too: read it with
    /// `pending_rows`, or alert on `db_healthy`.
    pub last_flush_age_secs: u64,
    /// How long the oldest database write in progress has been running,
    /// seconds (0: none in progress).
    pub db_write_in_flight_secs: u64,
    /// False after a failed write or health probe, and while a write or
    /// probe has been in flight longer than `db_stall_timeout`; true again
    /// after a successful write or probe.
    pub db_healthy: bool,
    /// Writes that stayed in flight longer than `db_stall_timeout` (the
    /// database stopped answering; each counted once).
    pub db_stalls: u64,
    /// Health probes sent (`SELECT 1`, `[reporter] db_probe_interval`: when
    /// no rows are pending and the database has not answered for that long).
    pub db_probes: u64,
    /// Health probes that failed or stayed in flight longer than
    /// `db_stall_timeout` (each counted once).
    pub db_probe_failures: u64,
    /// Seconds since the database last answered (a successful write or
    /// health probe; since start when none yet). With the probe on, it stays
    /// under about `db_probe_interval` while the database is up, traffic or
    /// not, and keeps growing while it is hung or gone.
    pub db_answer_age_secs: u64,
    /// The last database error, if any.
    pub last_db_error: Option<String>,
    /// Oldest history minutes merged into the next because of the bound.
    pub minutes_merged: u64,
    /// History rows dropped because of the bound.
    pub history_rows_dropped: u64,
    /// Calls (succ + err) lost with them.
    pub calls_dropped: u64,
    /// Rows dropped because the database rejected them repeatedly (not an
    /// outage: a bad statement).
    pub rows_rejected: u64,
    /// Hosts expired from memory after an hour without reports.
    pub expired_hosts: u64,
    /// Counter streams expired from memory.
    pub expired_streams: u64,
    /// Counter streams resumed at start from the persisted `ServerCallStatus`.
    pub resumed_streams: u64,
    /// Start-up reads of the persisted counters that failed.
    pub resume_failures: u64,
    /// Persisted counter rows read at start (one streamed read of the rows
    /// under an hour old, for all workers).
    pub resume_rows_read: u64,
    /// 1 when that read stopped at `resume_max_rows`.
    pub resume_capped: u64,
    /// Streams whose counters were re-read from the store before a report
    /// was applied (not updated live for `stream_reload_after`, known only
    /// from the resume, or unknown: another reporter may have counted them).
    pub streams_reloaded: u64,
    /// Reads of the persisted counters for that (one per message needing it).
    pub reload_reads: u64,
    /// Such reads that failed (the report was applied from memory).
    pub reload_failures: u64,
    /// Reports rejected whole by the trust limits (nothing of them counted
    /// or written but a `lars_rejected_reports` row of the key), by reason.
    pub rejected_reports: RejectedReports,
    /// Calls (succ + err) the rejected reports claimed.
    pub rejected_calls: u64,
    /// Rejections not recorded in `lars_rejected_reports` (too many keys
    /// rejected within one flush).
    pub rejections_unrecorded: u64,
    /// History chunks retried after a failed write that the store had in
    /// fact committed (skipped, not added twice).
    pub chunks_already_applied: u64,
    /// Reports queued per worker.
    pub queue_depths: Vec<usize>,
    /// Rows waiting for the database (all workers).
    pub pending_rows: u64,
    /// TCP connections open.
    pub connections: u64,
    /// What the TCP server's connection limits did (`[reactor] maxConn`,
    /// `maxConnPerPeer`, `idleTimeout`, `frameTimeout`).
    pub tcp_limits: lars_net::ConnLimitStats,
    /// What the status HTTP server (`[http]`) answered and refused: malformed
    /// (400), too large (413), too slow (408) requests, busy (503).
    pub http: lars_net::http::HttpStatsSnapshot,
}

impl Stats {
    /// Copies the counters; gauges are filled by the caller.
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            requests: r(&self.requests),
            results: r(&self.results),
            bad_frames: r(&self.bad_bodies),
            bad_results: r(&self.bad_results),
            late_ignored: r(&self.late_ignored),
            future_clamped: r(&self.future_clamped),
            zero_ts: r(&self.zero_ts),
            resets: r(&self.resets),
            resumed_streams: r(&self.resumed_streams),
            resume_failures: r(&self.resume_failures),
            resume_rows_read: r(&self.resume_rows_read),
            resume_capped: r(&self.resume_capped),
            streams_reloaded: r(&self.streams_reloaded),
            reload_reads: r(&self.reload_reads),
            reload_failures: r(&self.reload_failures),
            rejected_reports: RejectedReports {
                stream_rate: r(&self.rejected_stream_rate),
                key_rate: r(&self.rejected_key_rate),
                message_total: r(&self.rejected_message_total),
            },
            rejected_calls: r(&self.rejected_calls),
            rejections_unrecorded: r(&self.rejections_unrecorded),
            db_stalls: r(&self.db_stalls),
            db_probes: r(&self.db_probes),
            db_probe_failures: r(&self.db_probe_failures),
            chunks_already_applied: r(&self.chunks_already_applied),
            succ_in: r(&self.succ_in),
            err_in: r(&self.err_in),
            status_rows_written: r(&self.status_rows_written),
            history_rows_written: r(&self.history_rows_written),
            succ_written: r(&self.succ_written),
            err_written: r(&self.err_written),
            flushes: r(&self.flushes),
            flush_failures: r(&self.flush_failures),
            last_flush_unix_ms: r(&self.last_flush_unix_ms),
            last_flush_duration_us: r(&self.last_flush_duration_us),
            db_healthy: self.db_healthy.load(Ordering::Relaxed),
            last_db_error: self.last_db_error.lock().ok().and_then(|e| e.clone()),
            minutes_merged: r(&self.minutes_merged),
            history_rows_dropped: r(&self.history_rows_dropped),
            calls_dropped: r(&self.calls_dropped),
            rows_rejected: r(&self.rows_rejected),
            expired_hosts: r(&self.expired_hosts),
            expired_streams: r(&self.expired_streams),
            ..StatsSnapshot::default()
        }
    }
}

impl StatsSnapshot {
    /// The Prometheus text exposition of the snapshot.
    pub fn prometheus(&self) -> String {
        let mut out = PromText::default();
        let mut m = |name: &str, kind: &str, help: &str, v: u64| {
            out.metric(&format!("lars_reporter_{name}"), kind, help, v);
        };
        m(
            "uptime_seconds",
            "gauge",
            "Seconds since start.",
            self.uptime_secs,
        );
        m(
            "requests_total",
            "counter",
            "ReportStatusRequests received.",
            self.requests,
        );
        m(
            "results_total",
            "counter",
            "Host results received.",
            self.results,
        );
        m(
            "bad_frames_total",
            "counter",
            "Frames dropped as malformed.",
            self.bad_frames,
        );
        m(
            "bad_results_total",
            "counter",
            "Host results with an invalid port.",
            self.bad_results,
        );
        m(
            "late_ignored_total",
            "counter",
            "Reports older than 1 h ignored.",
            self.late_ignored,
        );
        m(
            "future_clamped_total",
            "counter",
            "Reports from the future taken as now.",
            self.future_clamped,
        );
        m(
            "zero_ts_total",
            "counter",
            "Reports with ts 0 taken as now.",
            self.zero_ts,
        );
        m(
            "resumed_streams_total",
            "counter",
            "Counter streams resumed at start from ServerCallStatus.",
            self.resumed_streams,
        );
        m(
            "resume_failures_total",
            "counter",
            "Start-up reads of the persisted counters that failed.",
            self.resume_failures,
        );
        m(
            "streams_reloaded_total",
            "counter",
            "Streams whose counters were re-read from the store before a report.",
            self.streams_reloaded,
        );
        m(
            "reload_reads_total",
            "counter",
            "Reads of persisted counters for stale or unknown streams.",
            self.reload_reads,
        );
        m(
            "reload_failures_total",
            "counter",
            "Re-reads of persisted counters that failed (memory used).",
            self.reload_failures,
        );
        m(
            "resume_rows_read_total",
            "counter",
            "Persisted counter rows read at start.",
            self.resume_rows_read,
        );
        m(
            "resume_capped_total",
            "counter",
            "Start-up reads of the persisted counters stopped at resume_max_rows.",
            self.resume_capped,
        );
        m(
            "chunks_already_applied_total",
            "counter",
            "History chunks found committed when retried (not added twice).",
            self.chunks_already_applied,
        );
        m(
            "counter_resets_total",
            "counter",
            "Counter resets detected.",
            self.resets,
        );
        m(
            "succ_in_total",
            "counter",
            "Successful calls accepted.",
            self.succ_in,
        );
        m(
            "err_in_total",
            "counter",
            "Failed calls accepted.",
            self.err_in,
        );
        m(
            "status_rows_written_total",
            "counter",
            "ServerCallStatus rows written.",
            self.status_rows_written,
        );
        m(
            "history_rows_written_total",
            "counter",
            "History rows written.",
            self.history_rows_written,
        );
        m(
            "succ_written_total",
            "counter",
            "Successful calls written to history.",
            self.succ_written,
        );
        m(
            "err_written_total",
            "counter",
            "Failed calls written to history.",
            self.err_written,
        );
        m(
            "flushes_total",
            "counter",
            "Successful database writes.",
            self.flushes,
        );
        m(
            "flush_failures_total",
            "counter",
            "Failed database writes.",
            self.flush_failures,
        );
        m(
            "last_flush_unix_ms",
            "gauge",
            "Time of the last successful write.",
            self.last_flush_unix_ms,
        );
        m(
            "last_flush_duration_us",
            "gauge",
            "Duration of the last successful write.",
            self.last_flush_duration_us,
        );
        m(
            "last_flush_age_seconds",
            "gauge",
            "Seconds since the last successful write (since start when none).",
            self.last_flush_age_secs,
        );
        m(
            "db_write_in_flight_seconds",
            "gauge",
            "Age of the oldest database write in progress (0: none).",
            self.db_write_in_flight_secs,
        );
        m(
            "db_healthy",
            "gauge",
            "1 when the last database write or probe succeeded and none is stalled.",
            u64::from(self.db_healthy),
        );
        m(
            "db_stalls_total",
            "counter",
            "Database writes in flight longer than db_stall_timeout.",
            self.db_stalls,
        );
        m(
            "db_probes_total",
            "counter",
            "Database health probes (SELECT 1) sent while idle.",
            self.db_probes,
        );
        m(
            "db_probe_failures_total",
            "counter",
            "Database health probes that failed or stalled.",
            self.db_probe_failures,
        );
        m(
            "db_answer_age_seconds",
            "gauge",
            "Seconds since the database last answered a write or probe.",
            self.db_answer_age_secs,
        );
        m(
            "history_minutes_merged_total",
            "counter",
            "History minutes merged by the memory bound.",
            self.minutes_merged,
        );
        m(
            "history_rows_dropped_total",
            "counter",
            "History rows dropped by the memory bound.",
            self.history_rows_dropped,
        );
        m(
            "calls_dropped_total",
            "counter",
            "Calls lost with dropped history rows.",
            self.calls_dropped,
        );
        m(
            "rows_rejected_total",
            "counter",
            "Rows dropped after repeated statement errors.",
            self.rows_rejected,
        );
        m(
            "expired_hosts_total",
            "counter",
            "Hosts expired from memory.",
            self.expired_hosts,
        );
        m(
            "rejected_calls_total",
            "counter",
            "Calls claimed by reports rejected by the trust limits.",
            self.rejected_calls,
        );
        m(
            "rejections_unrecorded_total",
            "counter",
            "Rejected reports not recorded in lars_rejected_reports.",
            self.rejections_unrecorded,
        );
        m(
            "pending_rows",
            "gauge",
            "Rows waiting for the database.",
            self.pending_rows,
        );
        m(
            "connections",
            "gauge",
            "TCP connections open.",
            self.connections,
        );
        out.labelled(
            "lars_reporter_queue_depth",
            "gauge",
            "Reports queued per worker.",
            self.queue_depths
                .iter()
                .enumerate()
                .map(|(i, d)| (format!("worker=\"{i}\""), *d as u64)),
        );
        let r = self.rejected_reports;
        out.labelled(
            "lars_reporter_rejected_reports_total",
            "counter",
            "Reports rejected by the trust limits, by reason.",
            [
                ("stream_rate", r.stream_rate),
                ("key_rate", r.key_rate),
                ("message_total", r.message_total),
            ]
            .map(|(why, n)| (format!("reason=\"{why}\""), n)),
        );
        self.tcp_limits.prometheus("lars_reporter", &mut out);
        self.http.prometheus("lars_reporter", &mut out);
        out.into_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_every_counter() {
        let s = Stats::default();
        add(&s.requests, 3);
        add(&s.late_ignored, 1);
        let mut snap = s.snapshot();
        snap.queue_depths = vec![0, 2];
        let text = snap.prometheus();
        assert!(text.contains("lars_reporter_requests_total 3\n"), "{text}");
        assert!(text.contains("lars_reporter_late_ignored_total 1\n"));
        assert!(text.contains("lars_reporter_queue_depth{worker=\"1\"} 2\n"));
        assert!(text.contains("# TYPE lars_reporter_pending_rows gauge"));
        assert!(text.contains("lars_reporter_rejected_reports_total{reason=\"key_rate\"} 0\n"));
        assert!(text.contains("lars_reporter_streams_reloaded_total 0\n"));
        assert!(text.contains("lars_reporter_db_probe_failures_total 0\n"));
        assert!(text.contains("# TYPE lars_reporter_db_answer_age_seconds gauge"));
    }
}
