//! `lars_reporter.conf`: [`ReporterConfig`], built once from the file.

use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Duration;

use lars_core::config::{ConfigError, HttpConfig, Ini, ReactorConfig, load_with, store_url};

/// `lars_reporter.conf`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReporterConfig {
    /// `[reactor]`, default port 7779.
    pub reactor: ReactorConfig,
    /// Store URL (see [`store_url`](lars_core::config::store_url)).
    pub store_url: String,
    /// `[http]`.
    pub http: HttpConfig,
    /// `[reporter] db_thread_cnt` (the original spells the section
    /// `[repoter]`; both are read), default 3.
    pub db_thread_cnt: NonZeroUsize,
    /// Ours: `[reporter] flush_interval` (s, default 1; at least 0.01).
    pub flush_interval: Duration,
    /// Ours: `[reporter] history_retention_days` (default 7).
    pub history_retention_days: u32,
    /// Ours: `[reporter] max_pending_rows` (default 1,000,000): the bound on
    /// unwritten rows kept while the database is down.
    pub max_pending_rows: usize,
    /// Ours: `[reporter] db_stall_timeout` (s, default 15; at least 0.01):
    /// a database write still in flight after this long makes `db_healthy`
    /// false (and counts a `db_stalls`) until a write succeeds again. The
    /// write itself ends at the store's I/O timeout.
    pub db_stall_timeout: Duration,
    /// Ours: `[reporter] db_probe_interval` (s, default 10; 0: off): when
    /// the database has not answered a write for this long and no rows are
    /// pending, one writer sends it a `SELECT 1` (`Store::ping`), so a hung
    /// or vanished database turns `db_healthy` false even with no traffic.
    pub db_probe_interval: Duration,
    /// Ours: `[reporter] resume_max_rows` (default 2,000,000): the most
    /// `ServerCallStatus` rows read at start to resume the counters (one
    /// streamed read of the rows under an hour old); beyond it the first
    /// report of a stream counts in full, with a warning and `resume_capped`.
    pub resume_max_rows: u64,
    /// Ours: `[reporter] stream_reload_after` (s, default 3; 0: off): a
    /// stream (caller, key, host) no live report updated for this long, or
    /// known only from the start-up resume, or not at all, has its persisted
    /// counters re-read from the store (one read per message) before a
    /// report of it is applied, unless this reporter still holds unflushed
    /// rows of it. With several reporters the agents move a key to another
    /// reporter when its owner is gone and back when it returns; the re-read
    /// makes the new owner continue from what the old one durably counted.
    /// Must stay below the agents' `handoff_hold` (5 s) and above their
    /// report interval (docs/stats.md, "Several reporters").
    pub stream_reload_after: Duration,
    /// Ours: the trust limits on reported statistics (docs/stats.md, "Trust
    /// limits"; docs/security.md): `[reporter] max_calls_per_second`
    /// (default 1,000,000 per stream and per caller and key; 0: no limits),
    /// `trust_floor` (s, default 1: the agents' report interval, the
    /// shortest time a report is measured over) and `max_calls_per_message`
    /// (default 1,000,000,000). `None`: off.
    pub trust_limits: Option<lars_stats::TrustLimits>,
}

impl ReporterConfig {
    /// Builds the config from a parsed file.
    pub fn from_ini(ini: &Ini) -> Result<Self, ConfigError> {
        let sec = if ini.has_section("reporter") {
            "reporter"
        } else {
            "repoter"
        };
        let db_thread_cnt: usize = ini.get_or(sec, "db_thread_cnt", 3)?;
        let Some(db_thread_cnt) = NonZeroUsize::new(db_thread_cnt) else {
            return Err(ini.bad(sec, "db_thread_cnt", "0", "expected at least 1"));
        };
        let flush_interval = ini.seconds_or(sec, "flush_interval", Duration::from_secs(1))?;
        if flush_interval < Duration::from_millis(10) {
            return Err(ini.bad(
                sec,
                "flush_interval",
                &flush_interval.as_secs_f64().to_string(),
                "expected at least 0.01 seconds",
            ));
        }
        let db_stall_timeout = ini.seconds_or(sec, "db_stall_timeout", Duration::from_secs(15))?;
        if db_stall_timeout < Duration::from_millis(10) {
            return Err(ini.bad(
                sec,
                "db_stall_timeout",
                &db_stall_timeout.as_secs_f64().to_string(),
                "expected at least 0.01 seconds",
            ));
        }
        Ok(Self {
            reactor: ReactorConfig::from_ini(ini, 7779)?,
            store_url: store_url(ini)?,
            http: HttpConfig::from_ini(ini)?,
            db_thread_cnt,
            flush_interval,
            history_retention_days: ini.get_or(sec, "history_retention_days", 7)?,
            max_pending_rows: ini.get_or(sec, "max_pending_rows", 1_000_000)?,
            db_stall_timeout,
            db_probe_interval: ini.seconds_or(sec, "db_probe_interval", Duration::from_secs(10))?,
            resume_max_rows: ini.get_or(sec, "resume_max_rows", 2_000_000)?,
            stream_reload_after: ini.seconds_or(
                sec,
                "stream_reload_after",
                Duration::from_secs(3),
            )?,
            trust_limits: trust_limits(ini, sec)?,
        })
    }

    /// Loads `path`; every key nothing reads is logged as a warning
    /// naming the file, section and key.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        load_with(path, false, Self::from_ini, |u| tracing::warn!("{u}"))
    }
}

fn trust_limits(ini: &Ini, sec: &str) -> Result<Option<lars_stats::TrustLimits>, ConfigError> {
    let d = lars_stats::TrustLimits::default();
    let max_calls_per_second: u64 =
        ini.get_or(sec, "max_calls_per_second", d.max_calls_per_second)?;
    let floor = ini.seconds_or(sec, "trust_floor", Duration::from_secs(1))?;
    let max_calls_per_message: u64 =
        ini.get_or(sec, "max_calls_per_message", d.max_calls_per_message)?;
    if max_calls_per_second == 0 {
        return Ok(None);
    }
    // Whole seconds, rounded up, at least one (reports are stamped in
    // seconds).
    let floor_secs = i64::try_from(floor.as_secs())
        .unwrap_or(i64::MAX)
        .saturating_add(i64::from(floor.subsec_nanos() > 0))
        .max(1);
    Ok(Some(lars_stats::TrustLimits {
        max_calls_per_second,
        floor_secs,
        max_calls_per_message,
    }))
}

impl Default for ReporterConfig {
    fn default() -> Self {
        // An empty file cannot fail to parse.
        Self::from_ini(&Ini::default()).unwrap_or_else(|_| unreachable!())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORTER: &str = "[reactor]\nmaxConn = 1024\nthreadNum = 5\nip = 127.0.0.1\nport = 7779\n\n\
        [mysql]\ndb_host = 127.0.0.1\ndb_port = 3306\ndb_user = root\ndb_passwd = aceld\n\
        db_name = lars_dns\n\n[repoter]\ndb_thread_cnt = 3\n";

    #[test]
    fn original_reporter_conf_with_repoter_spelling() {
        let c = ReporterConfig::from_ini(&Ini::parse("r.conf", REPORTER).unwrap()).unwrap();
        assert_eq!(c.reactor.addr.port(), 7779);
        assert_eq!(c.db_thread_cnt.get(), 3);
        assert_eq!(c.store_url, "mysql://root:aceld@127.0.0.1:3306/lars_dns");
    }

    #[test]
    fn bad_values_are_refused_when_read() {
        for (text, key) in [
            ("[reporter]\ndb_thread_cnt = 0\n", "db_thread_cnt"),
            ("[reporter]\nflush_interval = 0.001\n", "flush_interval"),
            ("[reporter]\ndb_stall_timeout = 0\n", "db_stall_timeout"),
            ("[reporter]\ndb_probe_interval = x\n", "db_probe_interval"),
            ("[reporter]\nresume_max_rows = -1\n", "resume_max_rows"),
            (
                "[reporter]\nstream_reload_after = x\n",
                "stream_reload_after",
            ),
            (
                "[reporter]\nmax_calls_per_second = -1\n",
                "max_calls_per_second",
            ),
            (
                "[reporter]\nmax_calls_per_message = x\n",
                "max_calls_per_message",
            ),
            ("[reporter]\ntrust_floor = -1\n", "trust_floor"),
        ] {
            let e = ReporterConfig::from_ini(&Ini::parse("r.conf", text).unwrap())
                .unwrap_err()
                .to_string();
            assert!(e.contains("r.conf") && e.contains(key), "{e}");
        }
    }

    #[test]
    fn the_shipped_and_original_confs_load_with_no_unread_keys() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../conf");
        for file in ["lars_reporter.conf", "original/lars_reporter.conf"] {
            let ini = Ini::load(format!("{root}/{file}")).unwrap();
            ReporterConfig::from_ini(&ini).unwrap();
            assert_eq!(ini.unread(), vec![], "{file}");
        }
        let c = ReporterConfig::load(format!("{root}/original/lars_reporter.conf")).unwrap();
        assert_eq!(c.reactor.addr, "127.0.0.1:7779".parse().unwrap());
        assert_eq!(c.store_url, "mysql://root:aceld@127.0.0.1:3306/lars_dns");
        assert_eq!(
            c.db_thread_cnt.get(),
            3,
            "read from the original's [repoter] spelling"
        );
    }
}
