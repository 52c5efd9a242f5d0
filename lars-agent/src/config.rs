//! `lars_lb_agent.conf`: [`AgentConfig`], built once from the file (the
//! `[loadbalance]` section by lars-lb).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::num::NonZeroU16;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lars_core::config::{ClientTlsConfig, ConfigError, HttpConfig, Ini, load_with};
use lars_lb::{KeyLimits, LoadBalanceConfig};

use crate::core::FailoverConfig;

/// `lars_lb_agent.conf`.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// `[reporter] ip, port` (127.0.0.1:7779): the reporter when
    /// `reporter_addrs` is empty.
    pub reporter: SocketAddrV4,
    /// Ours: `[reporter] addrs = ip:port, ip:port, ...`: several reporters,
    /// each key's statistics to one of them by consistent hashing (empty:
    /// `reporter` alone). See [`reporters`](Self::reporters).
    pub reporter_addrs: Vec<SocketAddrV4>,
    /// Ours: `[reporter] failover_grace` (s, default 10): a lost reporter
    /// keeps its keys this long (they wait) before they move to the next
    /// reporter on the ring.
    pub reporter_failover_grace: Duration,
    /// Ours: `[reporter] handoff_hold` (s, default 5, more than the
    /// reporters' `flush_interval`): a key that moved to another reporter
    /// sends nothing for this long, then all its counters to the new owner.
    pub reporter_handoff_hold: Duration,
    /// `[dnsserver] ip, port` (127.0.0.1:7778): the dns when `dns_addrs` is
    /// empty.
    pub dns: SocketAddrV4,
    /// Ours: `[dnsserver] addrs = ip:port, ip:port, ...`: several dns, one
    /// in use at a time (empty: `dns` alone). See [`dns_list`](Self::dns_list).
    pub dns_addrs: Vec<SocketAddrV4>,
    /// Ours: `[dnsserver] silence_timeout` (s, default 3), `keepalive` (s,
    /// default 1) and `failover_jitter` (s, default 0.2): when the dns in
    /// use is declared dead and how reconnects are spread
    /// ([`FailoverConfig`]).
    pub dns_failover: FailoverConfig,
    /// Ours: `[agent] id`: this agent's identity for the dns choice (absent:
    /// the host name and the UDP base port).
    pub id: Option<String>,
    /// `[loadbalance]`.
    pub lb: LoadBalanceConfig,
    /// Ours: `[agent] ip` (127.0.0.1): the UDP listen address.
    pub udp_ip: Ipv4Addr,
    /// Ours: `[agent] base_port` (8888).
    pub base_port: u16,
    /// Ours: `[agent] port_count` (3): UDP ports / route shards.
    pub port_count: NonZeroU16,
    /// Ours: `[agent] report_interval` (s, default 1): statistics batch period.
    pub report_interval: Duration,
    /// Ours: `[agent] snapshot_path` (default `./lars_agent_routes.snapshot`;
    /// empty disables).
    pub snapshot_path: Option<PathBuf>,
    /// Ours: `[agent] rcvbuf` (bytes, default [`DEFAULT_RCVBUF`], 4 MiB):
    /// the receive buffer (`SO_RCVBUF`) asked for each UDP socket, so a burst
    /// waits in the kernel instead of being dropped; the kernel caps it at
    /// `net.core.rmem_max`. 0 keeps the system default.
    pub rcvbuf: usize,
    /// Ours: `[agent] max_unknown_keys` (default [`DEFAULT_MAX_UNKNOWN_KEYS`],
    /// at least 1): keys without hosts (unknown to the dns, or not answered
    /// yet) the agent holds at once, split evenly over the shards (rounded
    /// up). Beyond it a new unknown key answers `RET_NOEXIST` without being
    /// pulled or subscribed, counted in `unknown_keys_refused`.
    pub max_unknown_keys: usize,
    /// Ours: `[agent] unknown_key_expiry` (s, default 300; 0 = never): a key
    /// without hosts that no application used for this long is forgotten
    /// and unsubscribed at the dns, counted in `keys_expired`.
    pub unknown_key_expiry: Option<Duration>,
    /// `[http]`.
    pub http: HttpConfig,
    /// Ours: `[tls] ca, cert, key, server_name`: how to reach TLS ports
    /// (see `dns_tls`, `reporter_tls`; docs/security.md).
    pub tls: Option<ClientTlsConfig>,
    /// Ours: `[dnsserver] tls` (default false): the dns addresses are TLS
    /// ports (needs `[tls] ca`).
    pub dns_tls: bool,
    /// Ours: `[reporter] tls` (default false): the reporter address is a TLS
    /// port (needs `[tls] ca`).
    pub reporter_tls: bool,
}

/// `[reporter] failover_grace` when absent.
pub const DEFAULT_FAILOVER_GRACE: Duration = Duration::from_secs(10);
/// `[reporter] handoff_hold` when absent.
pub const DEFAULT_HANDOFF_HOLD: Duration = Duration::from_secs(5);

/// `[section] key = ip:port, ip:port, ...` (empty when absent or blank);
/// a bad entry or a duplicate is an error naming the file, section and key.
fn addr_list(ini: &Ini, section: &str, key: &str) -> Result<Vec<SocketAddrV4>, ConfigError> {
    let Some(v) = ini.raw(section, key) else {
        return Ok(Vec::new());
    };
    let mut out: Vec<SocketAddrV4> = Vec::new();
    for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Ok(addr) = entry.parse::<SocketAddrV4>() else {
            return Err(ini.bad(
                section,
                key,
                v,
                format!(
                    "{entry:?} is not ip:port (expected ip:port, ip:port, ... with IPv4 addresses)"
                ),
            ));
        };
        if out.contains(&addr) {
            return Err(ini.bad(section, key, v, format!("{addr} is listed twice")));
        }
        out.push(addr);
    }
    Ok(out)
}

/// A duration in seconds that must not be 0.
fn positive_seconds(
    ini: &Ini,
    section: &str,
    key: &str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let d = ini.seconds_or(section, key, default)?;
    if d.is_zero() {
        return Err(ini.bad(section, key, "0", "expected more than 0 seconds"));
    }
    Ok(d)
}

/// This machine's host name (`localhost` when the kernel does not say).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// `[agent] max_unknown_keys` when absent.
pub const DEFAULT_MAX_UNKNOWN_KEYS: usize = 10_000;
/// `[agent] unknown_key_expiry` when absent.
pub const DEFAULT_UNKNOWN_KEY_EXPIRY: Duration = Duration::from_secs(300);

/// `[agent] rcvbuf` when absent: 4 MiB.
pub const DEFAULT_RCVBUF: usize = 4 << 20;
/// The smallest `[agent] rcvbuf` accepted (besides 0).
pub const MIN_RCVBUF: usize = 4096;
/// The largest `[agent] rcvbuf` accepted: 1 GiB (the kernel takes an int).
pub const MAX_RCVBUF: usize = 1 << 30;

impl AgentConfig {
    /// Builds the config from a parsed file.
    pub fn from_ini(ini: &Ini) -> Result<Self, ConfigError> {
        let port_count: u16 = ini.get_or("agent", "port_count", 3)?;
        let Some(port_count) = NonZeroU16::new(port_count) else {
            return Err(ini.bad("agent", "port_count", "0", "expected at least 1"));
        };
        let rcvbuf: usize = ini.get_or("agent", "rcvbuf", DEFAULT_RCVBUF)?;
        if rcvbuf != 0 && !(MIN_RCVBUF..=MAX_RCVBUF).contains(&rcvbuf) {
            return Err(ini.bad(
                "agent",
                "rcvbuf",
                &rcvbuf.to_string(),
                format!("expected 0 (system default) or {MIN_RCVBUF}..={MAX_RCVBUF} bytes"),
            ));
        }
        let max_unknown_keys: usize =
            ini.get_or("agent", "max_unknown_keys", DEFAULT_MAX_UNKNOWN_KEYS)?;
        if max_unknown_keys == 0 {
            return Err(ini.bad(
                "agent",
                "max_unknown_keys",
                "0",
                "expected at least 1 (a new key is unknown until the dns answers)",
            ));
        }
        let expiry = ini.seconds_or("agent", "unknown_key_expiry", DEFAULT_UNKNOWN_KEY_EXPIRY)?;
        let snapshot = ini
            .raw("agent", "snapshot_path")
            .unwrap_or("./lars_agent_routes.snapshot");
        let failover = FailoverConfig::default();
        let dns_failover = FailoverConfig {
            silence_timeout: positive_seconds(
                ini,
                "dnsserver",
                "silence_timeout",
                failover.silence_timeout,
            )?,
            keepalive: positive_seconds(ini, "dnsserver", "keepalive", failover.keepalive)?,
            failover_jitter: ini.seconds_or(
                "dnsserver",
                "failover_jitter",
                failover.failover_jitter,
            )?,
            ..failover
        };
        let tls = ClientTlsConfig::from_ini(ini, "tls")?;
        let dns_tls = ini.bool_or("dnsserver", "tls", false)?;
        let reporter_tls = ini.bool_or("reporter", "tls", false)?;
        for (on, section) in [(dns_tls, "dnsserver"), (reporter_tls, "reporter")] {
            if on && tls.is_none() {
                return Err(ini.bad(
                    section,
                    "tls",
                    "true",
                    "needs [tls] ca (the CAs the server certificate must chain to)",
                ));
            }
        }
        let id = ini
            .raw("agent", "id")
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        Ok(Self {
            reporter: ini.endpoint("reporter", Ipv4Addr::LOCALHOST, 7779)?,
            reporter_addrs: addr_list(ini, "reporter", "addrs")?,
            reporter_failover_grace: ini.seconds_or(
                "reporter",
                "failover_grace",
                DEFAULT_FAILOVER_GRACE,
            )?,
            reporter_handoff_hold: positive_seconds(
                ini,
                "reporter",
                "handoff_hold",
                DEFAULT_HANDOFF_HOLD,
            )?,
            dns: ini.endpoint("dnsserver", Ipv4Addr::LOCALHOST, 7778)?,
            dns_addrs: addr_list(ini, "dnsserver", "addrs")?,
            dns_failover,
            id,
            lb: LoadBalanceConfig::from_ini(ini)?,
            udp_ip: ini.ipv4_or("agent", "ip", Ipv4Addr::LOCALHOST)?,
            base_port: ini.get_or("agent", "base_port", 8888)?,
            port_count,
            report_interval: ini.seconds_or("agent", "report_interval", Duration::from_secs(1))?,
            snapshot_path: (!snapshot.is_empty()).then(|| PathBuf::from(snapshot)),
            rcvbuf,
            max_unknown_keys,
            unknown_key_expiry: (!expiry.is_zero()).then_some(expiry),
            http: HttpConfig::from_ini(ini)?,
            tls,
            dns_tls,
            reporter_tls,
        })
    }

    /// The dns addresses: `[dnsserver] addrs`, or `ip:port` alone.
    pub fn dns_list(&self) -> Vec<SocketAddrV4> {
        if self.dns_addrs.is_empty() {
            vec![self.dns]
        } else {
            self.dns_addrs.clone()
        }
    }

    /// The reporter addresses: `[reporter] addrs`, or `ip:port` alone.
    pub fn reporters(&self) -> Vec<SocketAddrV4> {
        if self.reporter_addrs.is_empty() {
            vec![self.reporter]
        } else {
            self.reporter_addrs.clone()
        }
    }

    /// This agent's identity for the dns choice when its UDP base port is
    /// `base_port`: `[agent] id`, or `hostname:base_port`.
    pub fn identity(&self, base_port: u16) -> String {
        match &self.id {
            Some(id) => id.clone(),
            None => format!("{}:{base_port}", hostname()),
        }
    }

    /// The identity of an embedded agent (no UDP port) for the dns choice:
    /// `[agent] id`, or `hostname:pid<process id>`.
    pub fn embedded_identity(&self) -> String {
        match &self.id {
            Some(id) => id.clone(),
            None => format!("{}:pid{}", hostname(), std::process::id()),
        }
    }

    /// The key limits of one of `shards` cores: `max_unknown_keys` split
    /// evenly, rounded up.
    pub fn key_limits(&self, shards: usize) -> KeyLimits {
        KeyLimits {
            max_empty_keys: self.max_unknown_keys.div_ceil(shards.max(1)),
            empty_key_expiry: self.unknown_key_expiry,
        }
    }

    /// Loads `path`; every key nothing reads is logged as a warning
    /// naming the file, section and key.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        load_with(path, false, Self::from_ini, |u| tracing::warn!("{u}"))
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        // An empty file cannot fail to parse.
        Self::from_ini(&Ini::default()).unwrap_or_else(|_| unreachable!())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: &str = "[reporter]\nip = 127.0.0.1\nport = 7779\n\n[dnsserver]\nip = 127.0.0.1\n\
        port = 7778\n\n[loadbalance]\n\n;comment\nprobe_num=10\n\n;c\ninit_succ_cnt=180\n\
        err_rate=0.1\n\nsucc_rate=0.5\n\ncontin_err_limit=15\n\ncontin_succ_limit=15\n\
        window_err_rate=0.7\nidle_timeout=15\noverload_timeout=15\nupdate_timeout=15\n";

    #[test]
    fn tls_links_need_a_ca_and_read_their_keys() {
        let c = AgentConfig::default();
        assert_eq!(
            (c.tls.clone(), c.dns_tls, c.reporter_tls),
            (None, false, false)
        );
        let ini = Ini::parse(
            "a.conf",
            "[dnsserver]\ntls = true\n[reporter]\ntls = yes\n[tls]\nca = ca.pem\n\
             cert = agent.pem\nkey = agent.key\nserver_name = dns.lars\n",
        )
        .unwrap();
        let c = AgentConfig::from_ini(&ini).unwrap();
        assert!(c.dns_tls && c.reporter_tls);
        let tls = c.tls.unwrap();
        assert_eq!(tls.cert, Some(PathBuf::from("agent.pem")));
        assert_eq!(tls.server_name.as_deref(), Some("dns.lars"));
        assert!(ini.unread().is_empty(), "{:?}", ini.unread());
        let e = AgentConfig::from_ini(&Ini::parse("a.conf", "[reporter]\ntls = true\n").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.conf") && e.contains("[reporter] tls"), "{e}");
    }

    #[test]
    fn original_agent_conf() {
        let c = AgentConfig::from_ini(&Ini::parse("a.conf", AGENT).unwrap()).unwrap();
        assert_eq!(c.reporter, "127.0.0.1:7779".parse().unwrap());
        assert_eq!(c.dns, "127.0.0.1:7778".parse().unwrap());
        assert_eq!(c.lb.probe_num, 10);
        assert_eq!(c.lb.init_succ_cnt, 180);
        assert_eq!(c.lb.init_err_cnt, 5, "absent key takes the shipped default");
        assert!((c.lb.succ_rate - 0.5).abs() < 1e-9);
        assert_eq!(c.lb.idle_timeout, Duration::from_secs(15));
        assert_eq!(c.base_port, 8888);
        assert_eq!(c.port_count.get(), 3);
    }

    #[test]
    fn unknown_key_limits_parse_split_over_shards_and_reject_zero() {
        let c = AgentConfig::default();
        assert_eq!(c.max_unknown_keys, DEFAULT_MAX_UNKNOWN_KEYS);
        assert_eq!(c.unknown_key_expiry, Some(DEFAULT_UNKNOWN_KEY_EXPIRY));
        let text = "[agent]\nmax_unknown_keys = 10\nunknown_key_expiry = 0\n";
        let c = AgentConfig::from_ini(&Ini::parse("a.conf", text).unwrap()).unwrap();
        assert_eq!(c.unknown_key_expiry, None);
        let l = c.key_limits(3);
        assert_eq!((l.max_empty_keys, l.empty_key_expiry), (4, None));
        assert_eq!(c.key_limits(1).max_empty_keys, 10);
        let ini = Ini::parse("a.conf", "[agent]\nmax_unknown_keys = 0\n").unwrap();
        let e = AgentConfig::from_ini(&ini).unwrap_err().to_string();
        assert!(e.contains("[agent] max_unknown_keys"), "{e}");
    }

    #[test]
    fn malformed_values_name_file_section_and_key() {
        let ini = Ini::parse("lars_lb_agent.conf", "[agent]\nport_count = 0\n").unwrap();
        let e = AgentConfig::from_ini(&ini).unwrap_err().to_string();
        assert!(
            e.contains("lars_lb_agent.conf") && e.contains("[agent] port_count"),
            "{e}"
        );
        let ini = Ini::parse("a", "[loadbalance]\nerr_rate = 1.5\n").unwrap();
        assert!(
            AgentConfig::from_ini(&ini)
                .unwrap_err()
                .to_string()
                .contains("err_rate")
        );
    }

    #[test]
    fn address_lists_parse_default_to_ip_port_and_bad_entries_name_the_key() {
        let c = AgentConfig::default();
        assert_eq!(c.dns_list(), vec![c.dns]);
        assert_eq!(c.reporters(), vec![c.reporter]);
        assert_eq!(c.dns_failover, FailoverConfig::default());
        assert_eq!(c.reporter_failover_grace, DEFAULT_FAILOVER_GRACE);
        let text = "[dnsserver]\naddrs = 10.0.0.1:7778, 10.0.0.2:7778 ,\nsilence_timeout = 1.5\n\
            keepalive = 0.5\nfailover_jitter = 0\n[reporter]\naddrs = 10.0.0.3:7779\n\
            failover_grace = 4\nhandoff_hold = 2\n[agent]\nid = rack1-a\n";
        let c = AgentConfig::from_ini(&Ini::parse("a.conf", text).unwrap()).unwrap();
        let a = |s: &str| s.parse::<SocketAddrV4>().unwrap();
        assert_eq!(c.dns_list(), vec![a("10.0.0.1:7778"), a("10.0.0.2:7778")]);
        assert_eq!(c.reporters(), vec![a("10.0.0.3:7779")]);
        assert_eq!(c.dns_failover.silence_timeout, Duration::from_millis(1500));
        assert_eq!(c.dns_failover.keepalive, Duration::from_millis(500));
        assert_eq!(c.dns_failover.failover_jitter, Duration::ZERO);
        assert_eq!(c.reporter_failover_grace, Duration::from_secs(4));
        assert_eq!(c.reporter_handoff_hold, Duration::from_secs(2));
        assert_eq!(c.identity(8888), "rack1-a");
        assert!(AgentConfig::default().identity(8890).ends_with(":8890"));
        let embedded = AgentConfig::default().embedded_identity();
        assert!(embedded.ends_with(&format!(":pid{}", std::process::id())));
        assert_ne!(embedded, AgentConfig::default().identity(0));
        for (section, bad) in [
            ("dnsserver", "addrs = 10.0.0.1"),
            ("dnsserver", "addrs = 10.0.0.1:7778, x:1"),
            ("dnsserver", "addrs = 10.0.0.1:7778, 10.0.0.1:7778"),
            ("dnsserver", "silence_timeout = 0"),
            ("dnsserver", "keepalive = -1"),
            ("reporter", "addrs = ::1:7779"),
            ("reporter", "handoff_hold = 0"),
        ] {
            let text = format!("[{section}]\n{bad}\n");
            let e = AgentConfig::from_ini(&Ini::parse("a.conf", &text).unwrap())
                .unwrap_err()
                .to_string();
            let key = bad.split(' ').next().unwrap();
            assert!(
                e.contains("a.conf") && e.contains(&format!("[{section}] {key}")),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn rcvbuf_defaults_to_4_mib_parses_and_is_bounded() {
        assert_eq!(AgentConfig::default().rcvbuf, 4 << 20);
        let parse = |v: &str| {
            AgentConfig::from_ini(
                &Ini::parse("a.conf", &format!("[agent]\nrcvbuf = {v}\n")).unwrap(),
            )
        };
        assert_eq!(parse("1048576").unwrap().rcvbuf, 1 << 20);
        assert_eq!(parse("0").unwrap().rcvbuf, 0);
        for bad in ["100", "2147483648", "-1", "4M"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("a.conf") && e.contains("[agent] rcvbuf"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn the_shipped_and_original_confs_have_no_unread_keys() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../conf");
        for file in ["lars_lb_agent.conf", "original/lars_lb_agent.conf"] {
            let ini = Ini::load(format!("{root}/{file}")).unwrap();
            AgentConfig::from_ini(&ini).unwrap();
            assert_eq!(ini.unread(), vec![], "{file}");
        }
    }

    #[test]
    fn original_lars_lb_agent_conf() {
        let c = AgentConfig::load(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../conf/original/lars_lb_agent.conf"
        ))
        .unwrap();
        assert_eq!(
            c.reporter,
            "127.0.0.1:7779".parse::<SocketAddrV4>().unwrap()
        );
        assert_eq!(c.dns, "127.0.0.1:7778".parse::<SocketAddrV4>().unwrap());
        let lb = &c.lb;
        assert_eq!(lb.probe_num, 10);
        assert_eq!(lb.init_succ_cnt, 180);
        assert_eq!(lb.init_err_cnt, 5);
        assert!((lb.err_rate - 0.1).abs() < 1e-12);
        assert!((lb.succ_rate - 0.5).abs() < 1e-12);
        assert_eq!(lb.contin_err_limit, 15);
        assert_eq!(lb.contin_succ_limit, 15);
        assert!((lb.window_err_rate - 0.7).abs() < 1e-12);
        assert_eq!(lb.idle_timeout, Duration::from_secs(15));
        assert_eq!(lb.overload_timeout, Duration::from_secs(15));
        assert_eq!(lb.update_timeout, Duration::from_secs(15));
    }
}
