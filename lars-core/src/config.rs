//! The original INI configuration files, loaded unchanged into typed structs.
//!
//! [`Ini`] parses the file (comments start with `;` or `#`) and hands out typed
//! values; a malformed value is a [`ConfigError`] naming the file, section and
//! key. [`DnsConfig`], [`ReporterConfig`] and [`AgentConfig`] are built from an
//! `Ini` once, at start-up, and every field carries the original's shipped
//! default. Keys of our own are documented on their fields.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line is neither a section, a `key = value` pair, a comment nor blank.
    #[error("{path}:{line}: not a section or key = value: {text:?}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The offending line.
        text: String,
    },
    /// A value does not parse as its key requires.
    #[error("{path}: [{section}] {key} = {value:?}: {expected}")]
    Value {
        /// The file.
        path: PathBuf,
        /// The section.
        section: String,
        /// The key.
        key: String,
        /// The raw value.
        value: String,
        /// What was expected instead.
        expected: String,
    },
}

/// A parsed INI file: sections of `key = value` pairs. Keys before the first
/// section belong to the section named `""`. Later duplicates win.
#[derive(Debug, Clone, Default)]
pub struct Ini {
    path: PathBuf,
    sections: HashMap<String, HashMap<String, String>>,
    /// Every `(section, key)` looked up, and every section asked about, so
    /// that keys nothing reads can be reported ([`Ini::unread`]).
    looked_up: RefCell<HashSet<(String, String)>>,
}

/// A key or a whole section of a config file that nothing reads: a typo
/// (`prot = 1234`) or a setting of another program. Loading warns about
/// each one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadKey {
    /// The file.
    pub path: PathBuf,
    /// The section (`""` before the first section header).
    pub section: String,
    /// The key, or `None` when no key of the section is read at all.
    pub key: Option<String>,
}

impl Display for UnreadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.key {
            Some(k) => write!(
                f,
                "{}: [{}] {k}: unknown key, ignored",
                self.path.display(),
                self.section
            ),
            None => write!(
                f,
                "{}: [{}]: unknown section, ignored",
                self.path.display(),
                self.section
            ),
        }
    }
}

impl Ini {
    /// Reads and parses a file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses `text`; `path` names it in errors.
    pub fn parse(path: impl AsRef<Path>, text: &str) -> Result<Self, ConfigError> {
        let path = path.as_ref().to_owned();
        let mut sections: HashMap<String, HashMap<String, String>> = HashMap::new();
        let mut current = String::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
                continue;
            }
            if let Some(rest) = line.strip_prefix('[') {
                let Some(name) = rest.strip_suffix(']') else {
                    return Err(ConfigError::Syntax {
                        path,
                        line: i + 1,
                        text: raw.to_owned(),
                    });
                };
                current = name.trim().to_owned();
                sections.entry(current.clone()).or_default();
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(ConfigError::Syntax {
                    path,
                    line: i + 1,
                    text: raw.to_owned(),
                });
            };
            let k = k.trim();
            if k.is_empty() {
                return Err(ConfigError::Syntax {
                    path,
                    line: i + 1,
                    text: raw.to_owned(),
                });
            }
            sections
                .entry(current.clone())
                .or_default()
                .insert(k.to_owned(), v.trim().to_owned());
        }
        Ok(Self {
            path,
            sections,
            looked_up: RefCell::default(),
        })
    }

    /// The keys (and whole sections) present in the file that nothing has
    /// looked up so far, sorted. Call it after building the configs that
    /// read this file.
    pub fn unread(&self) -> Vec<UnreadKey> {
        let seen = self.looked_up.borrow();
        let mut out = Vec::new();
        for (section, keys) in &self.sections {
            let section_read = seen.contains(&(section.clone(), String::new()));
            if !section_read {
                if !keys.is_empty() || !section.is_empty() {
                    out.push(UnreadKey {
                        path: self.path.clone(),
                        section: section.clone(),
                        key: None,
                    });
                }
                continue;
            }
            for key in keys.keys() {
                if !seen.contains(&(section.clone(), key.clone())) {
                    out.push(UnreadKey {
                        path: self.path.clone(),
                        section: section.clone(),
                        key: Some(key.clone()),
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.section, &a.key).cmp(&(&b.section, &b.key)));
        out
    }

    /// Logs a warning for every [`unread`](Self::unread) key.
    pub fn warn_unread(&self) {
        for w in self.unread() {
            tracing::warn!("{w}");
        }
    }

    fn note(&self, section: &str, key: &str) {
        let mut seen = self.looked_up.borrow_mut();
        seen.insert((section.to_owned(), String::new()));
        seen.insert((section.to_owned(), key.to_owned()));
    }

    /// The file this came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the section exists (even empty).
    pub fn has_section(&self, section: &str) -> bool {
        self.note(section, "");
        self.sections.contains_key(section)
    }

    /// The raw value of a key, if present.
    pub fn raw(&self, section: &str, key: &str) -> Option<&str> {
        self.note(section, key);
        self.sections.get(section)?.get(key).map(String::as_str)
    }

    /// The value of a key parsed as `T`, or `default` when absent.
    pub fn get_or<T>(&self, section: &str, key: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        Ok(self.get(section, key)?.unwrap_or(default))
    }

    /// The value of a key parsed as `T`; `None` when absent.
    pub fn get<T>(&self, section: &str, key: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.raw(section, key) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|e: T::Err| self.bad(section, key, v, e)),
        }
    }

    /// A value in seconds (integer or fraction, e.g. `15` or `0.5`), or the
    /// default when absent.
    pub fn seconds_or(
        &self,
        section: &str,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(v) = self.raw(section, key) else {
            return Ok(default);
        };
        v.parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or_else(|| self.bad(section, key, v, "expected a non-negative number of seconds"))
    }

    /// A float that must lie in `0.0..=1.0`, or the default when absent.
    pub fn rate_or(&self, section: &str, key: &str, default: f64) -> Result<f64, ConfigError> {
        let v: f64 = self.get_or(section, key, default)?;
        if (0.0..=1.0).contains(&v) {
            Ok(v)
        } else {
            Err(self.bad(
                section,
                key,
                &v.to_string(),
                "expected a rate between 0 and 1",
            ))
        }
    }

    /// A boolean (`true/false`, `yes/no`, `on/off`, `1/0`), or the default.
    pub fn bool_or(&self, section: &str, key: &str, default: bool) -> Result<bool, ConfigError> {
        let Some(v) = self.raw(section, key) else {
            return Ok(default);
        };
        match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(self.bad(section, key, v, "expected true or false")),
        }
    }

    /// An error for a value found in this file.
    pub fn bad(&self, section: &str, key: &str, value: &str, why: impl Display) -> ConfigError {
        ConfigError::Value {
            path: self.path.clone(),
            section: section.to_owned(),
            key: key.to_owned(),
            value: value.to_owned(),
            expected: why.to_string(),
        }
    }

    fn ipv4_or(
        &self,
        section: &str,
        key: &str,
        default: Ipv4Addr,
    ) -> Result<Ipv4Addr, ConfigError> {
        self.get_or(section, key, default)
    }

    fn endpoint(
        &self,
        section: &str,
        ip: Ipv4Addr,
        port: u16,
    ) -> Result<SocketAddrV4, ConfigError> {
        Ok(SocketAddrV4::new(
            self.ipv4_or(section, "ip", ip)?,
            self.get_or(section, "port", port)?,
        ))
    }
}

/// `[reactor]`: where a TCP service listens and how many loops serve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactorConfig {
    /// `ip` and `port`.
    pub addr: SocketAddrV4,
    /// `threadNum`: worker event loops (at least 1).
    pub thread_num: usize,
    /// `maxConn`: connections served at once; the next one is closed.
    pub max_conn: usize,
}

impl ReactorConfig {
    /// The shipped defaults for a service on `port`.
    pub fn defaults(port: u16) -> Self {
        Self {
            addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
            thread_num: 5,
            max_conn: 1024,
        }
    }

    fn from_ini(ini: &Ini, port: u16) -> Result<Self, ConfigError> {
        let d = Self::defaults(port);
        let thread_num: usize = ini.get_or("reactor", "threadNum", d.thread_num)?;
        if thread_num == 0 {
            return Err(ini.bad("reactor", "threadNum", "0", "expected at least 1"));
        }
        Ok(Self {
            addr: ini.endpoint("reactor", *d.addr.ip(), d.addr.port())?,
            thread_num,
            max_conn: ini.get_or("reactor", "maxConn", d.max_conn)?,
        })
    }
}

/// `[http] ip, port`: the optional status listener; off unless `port` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HttpConfig {
    /// Where to listen, if anywhere.
    pub addr: Option<SocketAddr>,
}

impl HttpConfig {
    fn from_ini(ini: &Ini) -> Result<Self, ConfigError> {
        let Some(port) = ini.get::<u16>("http", "port")? else {
            return Ok(Self::default());
        };
        let ip = ini.ipv4_or("http", "ip", Ipv4Addr::LOCALHOST)?;
        Ok(Self {
            addr: Some(SocketAddr::V4(SocketAddrV4::new(ip, port))),
        })
    }
}

/// The default embedded store, used when a conf names none.
pub const DEFAULT_STORE_URL: &str = "sqlite://./lars.db";

/// Resolves the store URL of a service: `[store] url`; else the original
/// `[mysql]` section as a `mysql://` URL; else [`DEFAULT_STORE_URL`].
pub fn store_url(ini: &Ini) -> Result<String, ConfigError> {
    if let Some(url) = ini.raw("store", "url") {
        return Ok(url.to_owned());
    }
    if ini.has_section("mysql") {
        let host = ini.raw("mysql", "db_host").unwrap_or("127.0.0.1");
        let port: u16 = ini.get_or("mysql", "db_port", 3306)?;
        let user = ini.raw("mysql", "db_user").unwrap_or("root");
        let pass = ini.raw("mysql", "db_passwd").unwrap_or("");
        let name = ini.raw("mysql", "db_name").unwrap_or("lars_dns");
        let auth = if pass.is_empty() {
            percent_encode(user)
        } else {
            format!("{}:{}", percent_encode(user), percent_encode(pass))
        };
        return Ok(format!("mysql://{auth}@{host}:{port}/{name}"));
    }
    Ok(DEFAULT_STORE_URL.to_owned())
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `lars_dns.conf`.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsConfig {
    /// `[reactor]`, default port 7778.
    pub reactor: ReactorConfig,
    /// Store URL (see [`store_url`]).
    pub store_url: String,
    /// `[http]`.
    pub http: HttpConfig,
    /// Ours: `[dns] version_interval` (s, default 1): how often `RouteVersion`
    /// is checked.
    pub version_interval: Duration,
    /// Ours: `[dns] reload_interval` (s, default 10): full reload even without
    /// a version change.
    pub reload_interval: Duration,
}

impl DnsConfig {
    /// Builds the config from a parsed file.
    pub fn from_ini(ini: &Ini) -> Result<Self, ConfigError> {
        Ok(Self {
            reactor: ReactorConfig::from_ini(ini, 7778)?,
            store_url: store_url(ini)?,
            http: HttpConfig::from_ini(ini)?,
            version_interval: ini.seconds_or("dns", "version_interval", Duration::from_secs(1))?,
            reload_interval: ini.seconds_or("dns", "reload_interval", Duration::from_secs(10))?,
        })
    }

    /// Loads `path`; every key nothing reads is logged as a warning
    /// naming the file, section and key.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let ini = Ini::load(path)?;
        let config = Self::from_ini(&ini)?;
        ini.warn_unread();
        Ok(config)
    }
}

impl Default for DnsConfig {
    fn default() -> Self {
        // An empty file cannot fail to parse.
        Self::from_ini(&Ini::default()).unwrap_or_else(|_| unreachable!())
    }
}

/// `lars_reporter.conf`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReporterConfig {
    /// `[reactor]`, default port 7779.
    pub reactor: ReactorConfig,
    /// Store URL (see [`store_url`]).
    pub store_url: String,
    /// `[http]`.
    pub http: HttpConfig,
    /// `[reporter] db_thread_cnt` (the original spells the section
    /// `[repoter]`; both are read), default 3.
    pub db_thread_cnt: usize,
    /// Ours: `[reporter] flush_interval` (s, default 1).
    pub flush_interval: Duration,
    /// Ours: `[reporter] history_retention_days` (default 7).
    pub history_retention_days: u32,
    /// Ours: `[reporter] max_pending_rows` (default 1,000,000): the bound on
    /// unwritten rows kept while the database is down.
    pub max_pending_rows: usize,
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
        if db_thread_cnt == 0 {
            return Err(ini.bad(sec, "db_thread_cnt", "0", "expected at least 1"));
        }
        Ok(Self {
            reactor: ReactorConfig::from_ini(ini, 7779)?,
            store_url: store_url(ini)?,
            http: HttpConfig::from_ini(ini)?,
            db_thread_cnt,
            flush_interval: ini.seconds_or(sec, "flush_interval", Duration::from_secs(1))?,
            history_retention_days: ini.get_or(sec, "history_retention_days", 7)?,
            max_pending_rows: ini.get_or(sec, "max_pending_rows", 1_000_000)?,
        })
    }

    /// Loads `path`; every key nothing reads is logged as a warning
    /// naming the file, section and key.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let ini = Ini::load(path)?;
        let config = Self::from_ini(&ini)?;
        ini.warn_unread();
        Ok(config)
    }
}

impl Default for ReporterConfig {
    fn default() -> Self {
        // An empty file cannot fail to parse.
        Self::from_ini(&Ini::default()).unwrap_or_else(|_| unreachable!())
    }
}

/// `[loadbalance]`: the parameters of the load-balance algorithm.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadBalanceConfig {
    /// `probe_num` (10): after this many idle picks, one probe of an
    /// overloaded host.
    pub probe_num: u32,
    /// `init_succ_cnt` (180): virtual successes of a host entering idle.
    pub init_succ_cnt: u32,
    /// `init_err_cnt` (5): virtual errors of a host entering overload.
    pub init_err_cnt: u32,
    /// `err_rate` (0.1): idle -> overload above this virtual error rate.
    pub err_rate: f64,
    /// `succ_rate` (0.5): overload -> idle above this virtual success rate.
    pub succ_rate: f64,
    /// `contin_err_limit` (15): idle -> overload at this many consecutive errors.
    pub contin_err_limit: u32,
    /// `contin_succ_limit` (15): overload -> idle at this many consecutive successes.
    pub contin_succ_limit: u32,
    /// `window_err_rate` (0.7): an idle host whose real error rate over its
    /// window reaches this goes to overload.
    pub window_err_rate: f64,
    /// `idle_timeout` (15 s): an idle host's window.
    pub idle_timeout: Duration,
    /// `overload_timeout` (15 s): longest stay in the overload list.
    pub overload_timeout: Duration,
    /// `update_timeout` (15 s): routes older than this are pulled again.
    pub update_timeout: Duration,
    /// Ours: `timecost_unit_ms` (100): a failed call that took `t` ms counts as
    /// `max(1, t / unit)` errors; 0 disables.
    pub timecost_unit_ms: u32,
    /// Ours: `empty_route_protection` (true): an empty route from the dns keeps
    /// the last hosts instead of removing the key.
    pub empty_route_protection: bool,
    /// Ours: `policy` (adaptive): which rules the balancer follows. The
    /// original's files have no such key and get the default.
    pub policy: Policy,
    /// The `adaptive` policy's knobs (ignored by `classic`).
    pub adaptive: AdaptiveConfig,
}

/// The load-balance policy of `[loadbalance] policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Policy {
    /// The original Lars rules, bit for bit: round-robin over idle hosts,
    /// one probe of an overloaded host every `probe_num + 1` picks, virtual
    /// error and success rates, fixed windows.
    Classic,
    /// Ejection on evidence compared with the other hosts of the key, probes
    /// limited in time with backoff, latency-aware weighted round-robin and
    /// slow start (see docs/lb.md).
    #[default]
    Adaptive,
}

impl FromStr for Policy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "adaptive" => Ok(Self::Adaptive),
            "classic" => Ok(Self::Classic),
            other => Err(format!(
                "unknown policy {other:?}: expected adaptive or classic"
            )),
        }
    }
}

impl Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Classic => "classic",
            Self::Adaptive => "adaptive",
        })
    }
}

/// The knobs of [`Policy::Adaptive`], all in `[loadbalance]` (ours).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveConfig {
    /// `eject_consecutive` (2): consecutive failures that take a host out of
    /// rotation while the other hosts of the key succeed. The bar rises with
    /// the other hosts' own failure rate, so a key-wide outage ejects nobody.
    pub eject_consecutive: u32,
    /// `outlier_significance` (0.001): a host whose recent failures are this
    /// improbable given the other hosts' failure rate is taken out.
    pub outlier_significance: f64,
    /// `stats_half_life` (30 s): half-life of the recent success and failure
    /// counts that the outlier test compares.
    pub stats_half_life: Duration,
    /// `probe_interval` (1 s): the first probe of an ejected host with a
    /// clean record comes this long after its ejection.
    pub probe_interval: Duration,
    /// `probe_interval_max` (600 s): the probe interval triples with every
    /// strike (ejection or failed probe) up to this.
    pub probe_interval_max: Duration,
    /// `strike_forgive` (60 s): one strike is forgiven for each such stretch
    /// a host spends in rotation without a failure.
    pub strike_forgive: Duration,
    /// `slow_start` (1 s): a host that joins or comes back while others carry
    /// the load ramps from 10% of its share up to its full share over this
    /// long; 0 turns slow start off.
    pub slow_start: Duration,
    /// `max_ejection_percent` (90): at most this share of a key's hosts is out
    /// of rotation at once; at least one host always stays in.
    pub max_ejection_percent: u32,
    /// `latency_tolerance` (2.0): hosts whose latency estimate is within this
    /// factor of the key's typical latency get their full share; slower ones
    /// get a share falling with the fourth power of the ratio.
    pub latency_tolerance: f64,
    /// `latency_half_life` (5 s): half-life of the per-host latency estimate.
    pub latency_half_life: Duration,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            eject_consecutive: 2,
            outlier_significance: 0.001,
            stats_half_life: Duration::from_secs(30),
            probe_interval: Duration::from_secs(1),
            probe_interval_max: Duration::from_secs(600),
            strike_forgive: Duration::from_secs(60),
            slow_start: Duration::from_secs(1),
            max_ejection_percent: 90,
            latency_tolerance: 2.0,
            latency_half_life: Duration::from_secs(5),
        }
    }
}

impl AdaptiveConfig {
    /// Builds the adaptive knobs from `[loadbalance]`.
    pub fn from_ini(ini: &Ini) -> Result<Self, ConfigError> {
        let d = Self::default();
        let s = "loadbalance";
        let cfg = Self {
            eject_consecutive: ini.get_or(s, "eject_consecutive", d.eject_consecutive)?,
            outlier_significance: ini.rate_or(s, "outlier_significance", d.outlier_significance)?,
            stats_half_life: ini.seconds_or(s, "stats_half_life", d.stats_half_life)?,
            probe_interval: ini.seconds_or(s, "probe_interval", d.probe_interval)?,
            probe_interval_max: ini.seconds_or(s, "probe_interval_max", d.probe_interval_max)?,
            strike_forgive: ini.seconds_or(s, "strike_forgive", d.strike_forgive)?,
            slow_start: ini.seconds_or(s, "slow_start", d.slow_start)?,
            max_ejection_percent: ini.get_or(s, "max_ejection_percent", d.max_ejection_percent)?,
            latency_tolerance: ini.get_or(s, "latency_tolerance", d.latency_tolerance)?,
            latency_half_life: ini.seconds_or(s, "latency_half_life", d.latency_half_life)?,
        };
        let bad = |key: &str, v: String, why: &str| Err(ini.bad(s, key, &v, why));
        if cfg.eject_consecutive == 0 {
            return bad("eject_consecutive", "0".into(), "expected at least 1");
        }
        if cfg.max_ejection_percent > 100 {
            return bad(
                "max_ejection_percent",
                cfg.max_ejection_percent.to_string(),
                "expected a percentage from 0 to 100",
            );
        }
        if !(cfg.latency_tolerance >= 1.0 && cfg.latency_tolerance.is_finite()) {
            return bad(
                "latency_tolerance",
                cfg.latency_tolerance.to_string(),
                "expected a factor of at least 1",
            );
        }
        if cfg.probe_interval.is_zero() || cfg.probe_interval_max < cfg.probe_interval {
            return bad(
                "probe_interval_max",
                format!("{:?}", cfg.probe_interval_max),
                "expected probe_interval > 0 and probe_interval_max >= probe_interval",
            );
        }
        for (key, d) in [
            ("stats_half_life", cfg.stats_half_life),
            ("latency_half_life", cfg.latency_half_life),
        ] {
            if d.is_zero() {
                return bad(key, "0".into(), "expected a positive number of seconds");
            }
        }
        Ok(cfg)
    }
}

impl Default for LoadBalanceConfig {
    fn default() -> Self {
        Self {
            probe_num: 10,
            init_succ_cnt: 180,
            init_err_cnt: 5,
            err_rate: 0.1,
            succ_rate: 0.5,
            contin_err_limit: 15,
            contin_succ_limit: 15,
            window_err_rate: 0.7,
            idle_timeout: Duration::from_secs(15),
            overload_timeout: Duration::from_secs(15),
            update_timeout: Duration::from_secs(15),
            timecost_unit_ms: 100,
            empty_route_protection: true,
            policy: Policy::default(),
            adaptive: AdaptiveConfig::default(),
        }
    }
}

impl LoadBalanceConfig {
    /// Builds the section from a parsed file.
    pub fn from_ini(ini: &Ini) -> Result<Self, ConfigError> {
        let d = Self::default();
        let s = "loadbalance";
        Ok(Self {
            probe_num: ini.get_or(s, "probe_num", d.probe_num)?,
            init_succ_cnt: ini.get_or(s, "init_succ_cnt", d.init_succ_cnt)?,
            init_err_cnt: ini.get_or(s, "init_err_cnt", d.init_err_cnt)?,
            err_rate: ini.rate_or(s, "err_rate", d.err_rate)?,
            succ_rate: ini.rate_or(s, "succ_rate", d.succ_rate)?,
            contin_err_limit: ini.get_or(s, "contin_err_limit", d.contin_err_limit)?,
            contin_succ_limit: ini.get_or(s, "contin_succ_limit", d.contin_succ_limit)?,
            window_err_rate: ini.rate_or(s, "window_err_rate", d.window_err_rate)?,
            idle_timeout: ini.seconds_or(s, "idle_timeout", d.idle_timeout)?,
            overload_timeout: ini.seconds_or(s, "overload_timeout", d.overload_timeout)?,
            update_timeout: ini.seconds_or(s, "update_timeout", d.update_timeout)?,
            timecost_unit_ms: ini.get_or(s, "timecost_unit_ms", d.timecost_unit_ms)?,
            empty_route_protection: ini.bool_or(
                s,
                "empty_route_protection",
                d.empty_route_protection,
            )?,
            policy: ini.get_or(s, "policy", d.policy)?,
            adaptive: AdaptiveConfig::from_ini(ini)?,
        })
    }

    /// The original's defaults with the `classic` policy: the C++ Lars rules.
    pub fn classic() -> Self {
        Self {
            policy: Policy::Classic,
            ..Self::default()
        }
    }
}

/// `lars_lb_agent.conf`.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// `[reporter] ip, port` (127.0.0.1:7779).
    pub reporter: SocketAddrV4,
    /// `[dnsserver] ip, port` (127.0.0.1:7778).
    pub dns: SocketAddrV4,
    /// `[loadbalance]`.
    pub lb: LoadBalanceConfig,
    /// Ours: `[agent] ip` (127.0.0.1): the UDP listen address.
    pub udp_ip: Ipv4Addr,
    /// Ours: `[agent] base_port` (8888).
    pub base_port: u16,
    /// Ours: `[agent] port_count` (3): UDP ports / route shards.
    pub port_count: u16,
    /// Ours: `[agent] report_interval` (s, default 1): statistics batch period.
    pub report_interval: Duration,
    /// Ours: `[agent] snapshot_path` (default `./lars_agent_routes.snapshot`;
    /// empty disables).
    pub snapshot_path: Option<PathBuf>,
    /// `[http]`.
    pub http: HttpConfig,
}

impl AgentConfig {
    /// Builds the config from a parsed file.
    pub fn from_ini(ini: &Ini) -> Result<Self, ConfigError> {
        let port_count: u16 = ini.get_or("agent", "port_count", 3)?;
        if port_count == 0 {
            return Err(ini.bad("agent", "port_count", "0", "expected at least 1"));
        }
        let snapshot = ini
            .raw("agent", "snapshot_path")
            .unwrap_or("./lars_agent_routes.snapshot");
        Ok(Self {
            reporter: ini.endpoint("reporter", Ipv4Addr::LOCALHOST, 7779)?,
            dns: ini.endpoint("dnsserver", Ipv4Addr::LOCALHOST, 7778)?,
            lb: LoadBalanceConfig::from_ini(ini)?,
            udp_ip: ini.ipv4_or("agent", "ip", Ipv4Addr::LOCALHOST)?,
            base_port: ini.get_or("agent", "base_port", 8888)?,
            port_count,
            report_interval: ini.seconds_or("agent", "report_interval", Duration::from_secs(1))?,
            snapshot_path: (!snapshot.is_empty()).then(|| PathBuf::from(snapshot)),
            http: HttpConfig::from_ini(ini)?,
        })
    }

    /// Loads `path`; every key nothing reads is logged as a warning
    /// naming the file, section and key.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let ini = Ini::load(path)?;
        let config = Self::from_ini(&ini)?;
        ini.warn_unread();
        Ok(config)
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

    const DNS: &str = "[reactor]\nmaxConn = 1024\nthreadNum = 5\nip = 127.0.0.1\nport = 7778\n";

    const REPORTER: &str = "[reactor]\nmaxConn = 1024\nthreadNum = 5\nip = 127.0.0.1\nport = 7779\n\n\
        [mysql]\ndb_host = 127.0.0.1\ndb_port = 3306\ndb_user = root\ndb_passwd = aceld\n\
        db_name = lars_dns\n\n[repoter]\ndb_thread_cnt = 3\n";

    const AGENT: &str = "[reporter]\nip = 127.0.0.1\nport = 7779\n\n[dnsserver]\nip = 127.0.0.1\n\
        port = 7778\n\n[loadbalance]\n\n;comment\nprobe_num=10\n\n;c\ninit_succ_cnt=180\n\
        err_rate=0.1\n\nsucc_rate=0.95\n\ncontin_err_limit=15\n\ncontin_succ_limit=15\n\
        window_err_rate=0.7\nidle_timeout=15\noverload_timeout=15\nupdate_timeout=15\n";

    #[test]
    fn original_dns_conf() {
        let c = DnsConfig::from_ini(&Ini::parse("lars_dns.conf", DNS).unwrap()).unwrap();
        assert_eq!(c.reactor.addr, "127.0.0.1:7778".parse().unwrap());
        assert_eq!((c.reactor.thread_num, c.reactor.max_conn), (5, 1024));
        assert_eq!(c.store_url, DEFAULT_STORE_URL);
        assert_eq!(c.http.addr, None);
        assert_eq!(c.version_interval, Duration::from_secs(1));
    }

    #[test]
    fn original_reporter_conf_with_repoter_spelling() {
        let c = ReporterConfig::from_ini(&Ini::parse("r.conf", REPORTER).unwrap()).unwrap();
        assert_eq!(c.reactor.addr.port(), 7779);
        assert_eq!(c.db_thread_cnt, 3);
        assert_eq!(c.store_url, "mysql://root:aceld@127.0.0.1:3306/lars_dns");
    }

    #[test]
    fn original_agent_conf() {
        let c = AgentConfig::from_ini(&Ini::parse("a.conf", AGENT).unwrap()).unwrap();
        assert_eq!(c.reporter, "127.0.0.1:7779".parse().unwrap());
        assert_eq!(c.dns, "127.0.0.1:7778".parse().unwrap());
        assert_eq!(c.lb.probe_num, 10);
        assert_eq!(c.lb.init_succ_cnt, 180);
        assert_eq!(c.lb.init_err_cnt, 5, "absent key takes the shipped default");
        assert!((c.lb.succ_rate - 0.95).abs() < 1e-9);
        assert_eq!(c.lb.idle_timeout, Duration::from_secs(15));
        assert_eq!(c.base_port, 8888);
        assert_eq!(c.port_count, 3);
    }

    #[test]
    fn store_section_wins_and_passwords_are_escaped() {
        let ini = Ini::parse(
            "x",
            "[store]\nurl = sqlite:///tmp/x.db\n[mysql]\ndb_host=h\n",
        )
        .unwrap();
        assert_eq!(store_url(&ini).unwrap(), "sqlite:///tmp/x.db");
        let ini = Ini::parse("x", "[mysql]\ndb_passwd = p@ss:w/d\n").unwrap();
        assert_eq!(
            store_url(&ini).unwrap(),
            "mysql://root:p%40ss%3Aw%2Fd@127.0.0.1:3306/lars_dns"
        );
    }

    #[test]
    fn malformed_value_names_file_section_and_key() {
        let ini = Ini::parse("lars_lb_agent.conf", "[loadbalance]\nprobe_num = ten\n").unwrap();
        let e = AgentConfig::from_ini(&ini).unwrap_err().to_string();
        assert!(e.contains("lars_lb_agent.conf"), "{e}");
        assert!(e.contains("[loadbalance] probe_num"), "{e}");
        let ini = Ini::parse("a", "[loadbalance]\nerr_rate = 1.5\n").unwrap();
        assert!(
            AgentConfig::from_ini(&ini)
                .unwrap_err()
                .to_string()
                .contains("err_rate")
        );
        let ini = Ini::parse("d", "[reactor]\nport = 70000\n").unwrap();
        assert!(
            DnsConfig::from_ini(&ini)
                .unwrap_err()
                .to_string()
                .contains("port")
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = Ini::parse("f.conf", "[reactor]\nthis is not ini\n").unwrap_err();
        assert!(e.to_string().starts_with("f.conf:2:"), "{e}");
        assert!(Ini::parse("f", "[open\n").is_err());
        assert!(Ini::load("/nonexistent/lars.conf").is_err());
    }

    #[test]
    fn http_is_off_unless_configured() {
        let ini = Ini::parse("x", "[http]\nport = 9000\n").unwrap();
        let c = DnsConfig::from_ini(&ini).unwrap();
        assert_eq!(c.http.addr, Some("127.0.0.1:9000".parse().unwrap()));
    }
}

#[cfg(test)]
mod unread_tests {
    use super::*;

    #[test]
    fn keys_nothing_reads_are_listed_with_file_section_and_key() {
        let ini = Ini::parse(
            "lars_dns.conf",
            "[reactor]\nprot = 1234\nport = 7778\n[dnserver]\nip = 1.2.3.4\n[dns]\n",
        )
        .unwrap();
        DnsConfig::from_ini(&ini).unwrap();
        let unread: Vec<String> = ini.unread().iter().map(ToString::to_string).collect();
        assert_eq!(
            unread,
            vec![
                "lars_dns.conf: [dnserver]: unknown section, ignored".to_owned(),
                "lars_dns.conf: [reactor] prot: unknown key, ignored".to_owned(),
            ]
        );
    }

    #[test]
    fn the_shipped_and_original_confs_have_no_unread_keys() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../conf");
        for (file, build) in [
            ("lars_dns.conf", 0),
            ("lars_reporter.conf", 1),
            ("lars_lb_agent.conf", 2),
            ("original/lars_dns.conf", 0),
            ("original/lars_reporter.conf", 1),
            ("original/lars_lb_agent.conf", 2),
        ] {
            let ini = Ini::load(format!("{root}/{file}")).unwrap();
            match build {
                0 => drop(DnsConfig::from_ini(&ini).unwrap()),
                1 => drop(ReporterConfig::from_ini(&ini).unwrap()),
                _ => drop(AgentConfig::from_ini(&ini).unwrap()),
            }
            assert_eq!(ini.unread(), vec![], "{file}");
        }
    }
}
