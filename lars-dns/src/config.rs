//! `lars_dns.conf`: [`DnsConfig`], built once from the file.

use std::path::Path;
use std::time::Duration;

use lars_core::config::{ConfigError, HttpConfig, Ini, ReactorConfig, load_with, store_url};

/// `lars_dns.conf`.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsConfig {
    /// `[reactor]`, default port 7778.
    pub reactor: ReactorConfig,
    /// Store URL (see [`store_url`](lars_core::config::store_url)): the
    /// primary. Everything the dns writes (pruning `RouteChange` rows) goes
    /// here, and the reads when there is no replica or it is failing.
    pub store_url: String,
    /// Ours: `[store] read_url`: a read replica the routes are read from
    /// (version poll, loads, `RouteChange` keys); never written. `None`: the
    /// primary is read. See docs/dns.md.
    pub store_read_url: Option<String>,
    /// Ours: `[store] read_fallback_after` (s, default 10): the replica
    /// failing this long turns the reads to the primary until it answers
    /// again with at least the served version. 0: never (the dns stays on
    /// the replica and reports the store unhealthy).
    pub read_fallback_after: Duration,
    /// Ours: `[store] read_max_lag` (s, default 60): the replica's version
    /// staying below the primary's this long (checked every
    /// `reload_interval`) turns the reads to the primary too (replication
    /// stopped or broken). 0: never.
    pub read_max_lag: Duration,
    /// `[http]`.
    pub http: HttpConfig,
    /// Ours: `[dns] version_interval` (s, default 1): how often `RouteVersion`
    /// is checked.
    pub version_interval: Duration,
    /// Ours: `[dns] reload_interval` (s, default 10): full reload even without
    /// a version change.
    pub reload_interval: Duration,
    /// Ours: `[dns] store_stall_timeout` (s, default 15): a store round (version
    /// poll or reload) in flight longer than this makes `store.healthy` false
    /// on `/status` until a round succeeds (the round itself ends at the
    /// store's I/O timeout).
    pub store_stall_timeout: Duration,
    /// Ours: `[dns] max_unhosted_subscriptions` (default 10000): per
    /// connection, subscriptions to keys that had no hosts when asked;
    /// beyond it such a request is answered without subscribing (counted in
    /// `unhosted_refused`). 0 never subscribes to them (agents still see
    /// hosts added later by pulling again after `update_timeout`).
    pub max_unhosted_subscriptions: usize,
}

/// `[dns] max_unhosted_subscriptions` when absent (the agent's default
/// `max_unknown_keys`).
pub const DEFAULT_MAX_UNHOSTED_SUBSCRIPTIONS: usize = 10_000;

/// `[store] read_fallback_after` when absent.
pub const DEFAULT_READ_FALLBACK_AFTER: Duration = Duration::from_secs(10);

/// `[store] read_max_lag` when absent.
pub const DEFAULT_READ_MAX_LAG: Duration = Duration::from_secs(60);

impl DnsConfig {
    /// Builds the config from a parsed file.
    pub fn from_ini(ini: &Ini) -> Result<Self, ConfigError> {
        let store_stall_timeout = ini.seconds_or(
            "dns",
            "store_stall_timeout",
            crate::stats::DEFAULT_STORE_STALL_TIMEOUT,
        )?;
        if store_stall_timeout < Duration::from_millis(10) {
            return Err(ini.bad(
                "dns",
                "store_stall_timeout",
                &store_stall_timeout.as_secs_f64().to_string(),
                "expected at least 0.01 seconds",
            ));
        }
        Ok(Self {
            reactor: ReactorConfig::from_ini(ini, 7778)?,
            store_url: store_url(ini)?,
            store_read_url: ini
                .raw("store", "read_url")
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned),
            read_fallback_after: ini.seconds_or(
                "store",
                "read_fallback_after",
                DEFAULT_READ_FALLBACK_AFTER,
            )?,
            read_max_lag: ini.seconds_or("store", "read_max_lag", DEFAULT_READ_MAX_LAG)?,
            http: HttpConfig::from_ini(ini)?,
            version_interval: ini.seconds_or("dns", "version_interval", Duration::from_secs(1))?,
            reload_interval: ini.seconds_or("dns", "reload_interval", Duration::from_secs(10))?,
            store_stall_timeout,
            max_unhosted_subscriptions: ini.get_or(
                "dns",
                "max_unhosted_subscriptions",
                DEFAULT_MAX_UNHOSTED_SUBSCRIPTIONS,
            )?,
        })
    }

    /// Loads `path`; every key nothing reads is logged as a warning
    /// naming the file, section and key.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        load_with(path, false, Self::from_ini, |u| tracing::warn!("{u}"))
    }
}

impl Default for DnsConfig {
    fn default() -> Self {
        // An empty file cannot fail to parse.
        Self::from_ini(&Ini::default()).unwrap_or_else(|_| unreachable!())
    }
}

#[cfg(test)]
mod tests {
    use lars_core::config::DEFAULT_STORE_URL;

    use super::*;

    const DNS: &str = "[reactor]\nmaxConn = 1024\nthreadNum = 5\nip = 127.0.0.1\nport = 7778\n";

    #[test]
    fn original_dns_conf() {
        let c = DnsConfig::from_ini(&Ini::parse("lars_dns.conf", DNS).unwrap()).unwrap();
        assert_eq!(c.reactor.addr, "127.0.0.1:7778".parse().unwrap());
        assert_eq!((c.reactor.thread_num, c.reactor.max_conn), (5, 1024));
        assert_eq!(c.store_url, DEFAULT_STORE_URL);
        assert_eq!(c.http.addr, None);
        assert_eq!(c.version_interval, Duration::from_secs(1));
        assert_eq!(c.store_stall_timeout, Duration::from_secs(15));
        assert_eq!(c.store_read_url, None);
        assert_eq!(c.read_fallback_after, Duration::from_secs(10));
        assert_eq!(c.read_max_lag, Duration::from_secs(60));
        let replica = Ini::parse(
            "d.conf",
            "[store]\nurl = mysql://u:p@primary/lars\nread_url = mysql://u:p@replica/lars\n\
             read_fallback_after = 2.5\nread_max_lag = 0\n",
        )
        .unwrap();
        let c = DnsConfig::from_ini(&replica).unwrap();
        assert_eq!(c.store_url, "mysql://u:p@primary/lars");
        assert_eq!(
            c.store_read_url.as_deref(),
            Some("mysql://u:p@replica/lars")
        );
        assert_eq!(c.read_fallback_after, Duration::from_millis(2500));
        assert_eq!(c.read_max_lag, Duration::ZERO);
        assert_eq!(replica.unread(), vec![]);
        let zero = Ini::parse("d.conf", "[dns]\nstore_stall_timeout = 0\n").unwrap();
        let e = DnsConfig::from_ini(&zero).unwrap_err().to_string();
        assert!(e.contains("store_stall_timeout"), "{e}");
    }

    #[test]
    fn the_shipped_and_original_confs_load_with_no_unread_keys() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../conf");
        for file in ["lars_dns.conf", "original/lars_dns.conf"] {
            let ini = Ini::load(format!("{root}/{file}")).unwrap();
            DnsConfig::from_ini(&ini).unwrap();
            assert_eq!(ini.unread(), vec![], "{file}");
        }
        let c = DnsConfig::load(format!("{root}/original/lars_dns.conf")).unwrap();
        assert_eq!(c.reactor.addr, "127.0.0.1:7778".parse().unwrap());
        assert_eq!((c.reactor.thread_num, c.reactor.max_conn), (5, 1024));
        assert_eq!(c.store_url, "mysql://root:aceld@127.0.0.1:3306/lars_dns");
    }
}
