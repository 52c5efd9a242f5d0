//! `lars_dns.conf`: [`DnsConfig`], built once from the file.

use std::path::Path;
use std::time::Duration;

use lars_core::config::{ConfigError, HttpConfig, Ini, ReactorConfig, load_with, store_url};

/// `lars_dns.conf`.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsConfig {
    /// `[reactor]`, default port 7778.
    pub reactor: ReactorConfig,
    /// Store URL (see [`store_url`](lars_core::config::store_url)).
    pub store_url: String,
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
