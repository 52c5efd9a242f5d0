//! The original INI configuration files, loaded unchanged into typed structs.
//!
//! [`Ini`] parses the file (comments start with `;` or `#`) and hands out typed
//! values; a malformed value is a [`ConfigError`] naming the file, section and
//! key. The sections every service shares live here ([`ReactorConfig`],
//! [`HttpConfig`], [`store_url`]); each service's own config is built from an
//! `Ini` once, at start-up, in the crate that uses it (`DnsConfig` in
//! lars-dns, `ReporterConfig` in lars-reporter, `AgentConfig` in lars-agent,
//! the `[loadbalance]` section in lars-lb), and every field carries the
//! original's shipped default.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}")]
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
    /// `--strict`: the file has keys or sections nothing reads.
    #[error("{}", unknown_list(.keys))]
    Unknown {
        /// The keys (and sections) nothing read.
        keys: Vec<UnreadKey>,
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

fn unknown_list(keys: &[UnreadKey]) -> String {
    let list: Vec<String> = keys
        .iter()
        .map(|u| match &u.key {
            Some(k) => format!("{}: [{}] {k}: unknown key", u.path.display(), u.section),
            None => format!("{}: [{}]: unknown section", u.path.display(), u.section),
        })
        .collect();
    list.join("; ")
}

/// Reads `path` and builds a service's config from it with `build` (e.g.
/// `DnsConfig::from_ini`). Each key nothing read goes to `warn` (the
/// binaries log it); with `strict` they are an error instead
/// ([`ConfigError::Unknown`]) naming each file, section and key.
pub fn load_with<T>(
    path: impl AsRef<Path>,
    strict: bool,
    build: impl FnOnce(&Ini) -> Result<T, ConfigError>,
    warn: impl FnMut(&UnreadKey),
) -> Result<T, ConfigError> {
    let ini = Ini::load(path)?;
    let config = build(&ini)?;
    let unread = ini.unread();
    if strict && !unread.is_empty() {
        return Err(ConfigError::Unknown { keys: unread });
    }
    unread.iter().for_each(warn);
    Ok(config)
}

/// The largest number of seconds [`Ini::seconds_or`] accepts: a century
/// means "never" and can still be added to a clock reading (the services
/// compute `now + interval`; a larger `Duration` overflows `Instant`).
pub const MAX_SECONDS: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

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
            .filter(|d| *d <= MAX_SECONDS)
            .ok_or_else(|| {
                let why =
                    "expected a non-negative number of seconds, at most 3153600000 (a century)";
                self.bad(section, key, v, why)
            })
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

    /// An IPv4 address, or `default` when absent.
    pub fn ipv4_or(
        &self,
        section: &str,
        key: &str,
        default: Ipv4Addr,
    ) -> Result<Ipv4Addr, ConfigError> {
        self.get_or(section, key, default)
    }

    /// `[section] ip, port` as an address, each part defaulting.
    pub fn endpoint(
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

/// `[reactor]`: where a TCP service listens, how many loops serve it, and
/// the limits that keep misbehaving peers from locking real clients out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactorConfig {
    /// `ip` and `port`.
    pub addr: SocketAddrV4,
    /// `threadNum`: worker event loops (at least 1).
    pub thread_num: usize,
    /// `maxConn`: connections served at once; the next one is closed.
    pub max_conn: usize,
    /// `maxConnPerPeer` (ours): connections one remote IP address may hold
    /// at once; the next one from that address is closed. 0: no cap.
    pub max_conn_per_peer: usize,
    /// `idleTimeout` (ours, seconds): a connection that has not completed
    /// its first frame this long after it was accepted is closed, once a
    /// connection has been refused since it was accepted (for `maxConn`, or
    /// from the same address for `maxConnPerPeer`). Zero: off.
    pub idle_timeout: Duration,
    /// `frameTimeout` (ours, seconds): how long the start of a frame may sit
    /// in a connection's buffer waiting for the rest before the connection
    /// is closed. Zero: off.
    pub frame_timeout: Duration,
    /// `refusedLogInterval` (ours, seconds): at most one log line per
    /// interval reports the connections refused in it.
    pub refused_log_interval: Duration,
    /// `allow` (ours): the peer networks that may connect, e.g.
    /// `10.0.0.0/8, 127.0.0.1/32, ::1/128`; a connection from anywhere else
    /// is closed at once on accept. Empty (the default): everyone. Applies
    /// to the plain listener, and to the TLS one unless `[tls] allow` is set.
    pub allow: Allowlist,
    /// `[tls]` (ours): a second listener speaking TLS, next to the plain one.
    pub tls: Option<TlsListenerConfig>,
}

impl ReactorConfig {
    /// The shipped defaults for a service on `port`.
    pub fn defaults(port: u16) -> Self {
        Self {
            addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
            thread_num: 5,
            max_conn: 1024,
            max_conn_per_peer: 256,
            idle_timeout: Duration::from_secs(60),
            frame_timeout: Duration::from_secs(30),
            refused_log_interval: Duration::from_secs(10),
            allow: Allowlist::everyone(),
            tls: None,
        }
    }

    /// Builds the `[reactor]` section; `port` is the service's default port.
    pub fn from_ini(ini: &Ini, port: u16) -> Result<Self, ConfigError> {
        let d = Self::defaults(port);
        let thread_num: usize = ini.get_or("reactor", "threadNum", d.thread_num)?;
        if thread_num == 0 {
            return Err(ini.bad("reactor", "threadNum", "0", "expected at least 1"));
        }
        let addr = ini.endpoint("reactor", *d.addr.ip(), d.addr.port())?;
        let allow = Allowlist::from_ini(ini, "reactor", "allow")?.unwrap_or_default();
        Ok(Self {
            tls: TlsListenerConfig::from_ini(ini, *addr.ip(), &allow)?,
            allow,
            addr,
            thread_num,
            max_conn: ini.get_or("reactor", "maxConn", d.max_conn)?,
            max_conn_per_peer: ini.get_or("reactor", "maxConnPerPeer", d.max_conn_per_peer)?,
            idle_timeout: ini.seconds_or("reactor", "idleTimeout", d.idle_timeout)?,
            frame_timeout: ini.seconds_or("reactor", "frameTimeout", d.frame_timeout)?,
            refused_log_interval: ini.seconds_or(
                "reactor",
                "refusedLogInterval",
                d.refused_log_interval,
            )?,
        })
    }
}

/// An IP network: `10.0.0.0/8`, `::1/128`, or a bare address for one host.
/// Parsed strictly: the prefix must fit the family and the address must
/// have no bits set past the prefix (`10.0.0.1/8` is refused: did you mean
/// `10.0.0.0/8`?). An IPv4 network also matches the same addresses mapped
/// into IPv6 (`::ffff:10.1.2.3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = ip
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or network (e.g. 10.0.0.0/8)"))?;
        let max: u8 = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => return Err(format!("{s:?}: the prefix length must be 0..={max}")),
            },
        };
        let cidr = Self { net, prefix };
        let bare = match net {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & mask))
            }
        };
        if bare != net {
            return Err(format!(
                "{s:?} has bits set past its prefix (did you mean {bare}/{prefix}?)"
            ));
        }
        Ok(cidr)
    }
}

impl Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// The peer networks allowed to connect to a listener (`allow =
/// 10.0.0.0/8, ::1/128`): a cheap first gate at accept time. Empty means
/// everyone.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Allowlist {
    nets: Vec<Cidr>,
}

impl Allowlist {
    /// Everyone may connect.
    pub fn everyone() -> Self {
        Self::default()
    }

    /// Only these networks may connect (none: everyone).
    pub fn new(nets: Vec<Cidr>) -> Self {
        Self { nets }
    }

    /// Whether this list lets everyone in.
    pub fn is_everyone(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether a peer at `ip` may connect.
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.nets.is_empty() || self.nets.iter().any(|n| n.contains(ip))
    }

    /// The networks, as listed.
    pub fn nets(&self) -> &[Cidr] {
        &self.nets
    }

    /// `[section] key` as a comma-separated list of networks; `None` when
    /// absent. An empty entry or a bad network is an error naming the file,
    /// section and key.
    pub fn from_ini(ini: &Ini, section: &str, key: &str) -> Result<Option<Self>, ConfigError> {
        let Some(v) = ini.raw(section, key) else {
            return Ok(None);
        };
        v.parse()
            .map(Some)
            .map_err(|why: String| ini.bad(section, key, v, why))
    }
}

impl FromStr for Allowlist {
    type Err = String;

    /// A comma-separated list of networks; an empty string is everyone, an
    /// empty entry between commas is an error.
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Ok(Self::everyone());
        }
        let nets = s
            .split(',')
            .map(|part| {
                if part.trim().is_empty() {
                    Err("an empty entry in the list (two commas, or a trailing one)".to_owned())
                } else {
                    part.parse()
                }
            })
            .collect::<Result<Vec<Cidr>, String>>()?;
        Ok(Self { nets })
    }
}

impl Display for Allowlist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.nets.is_empty() {
            return f.write_str("everyone");
        }
        let list: Vec<String> = self.nets.iter().map(ToString::to_string).collect();
        f.write_str(&list.join(", "))
    }
}

/// `[tls] client_auth`: whether a TLS listener asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// `none` (default): any client may complete the handshake.
    #[default]
    None,
    /// `required`: mutual TLS; a client without a certificate signed by one
    /// of `[tls] ca` is refused during the handshake.
    Required,
}

/// `[tls]` of a dns or reporter conf (ours): a TLS listener next to the
/// plain one, served by the same worker loops. Off unless `port` is set.
/// Paths are as written (relative ones from the working directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListenerConfig {
    /// `ip` (default: `[reactor] ip`) and `port`.
    pub addr: SocketAddrV4,
    /// `cert`: the server certificate chain (PEM).
    pub cert: PathBuf,
    /// `key`: the server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// `ca`: the CAs client certificates must chain to (PEM); required
    /// with `client_auth = required`.
    pub ca: Option<PathBuf>,
    /// `client_auth`: `none` (default) or `required`.
    pub client_auth: ClientAuth,
    /// `allow`: who may connect to the TLS port; default `[reactor] allow`.
    pub allow: Allowlist,
}

impl TlsListenerConfig {
    /// Builds `[tls]`; `None` when it has no `port`. `ip` and `allow` are
    /// the `[reactor]` values it defaults to.
    pub fn from_ini(
        ini: &Ini,
        ip: Ipv4Addr,
        allow: &Allowlist,
    ) -> Result<Option<Self>, ConfigError> {
        let Some(port) = ini.get::<u16>("tls", "port")? else {
            for key in ["cert", "key", "ca", "client_auth", "allow", "ip"] {
                if let Some(v) = ini.raw("tls", key) {
                    return Err(ini.bad(
                        "tls",
                        key,
                        v,
                        "[tls] needs a port (the TLS listener's; the plain one stays [reactor] port)",
                    ));
                }
            }
            return Ok(None);
        };
        let path = |key: &str| -> Result<PathBuf, ConfigError> {
            match ini.raw("tls", key) {
                Some(v) if !v.is_empty() => Ok(PathBuf::from(v)),
                _ => Err(ini.bad("tls", key, "", "required with [tls] port: a PEM file")),
            }
        };
        let client_auth = match ini.raw("tls", "client_auth") {
            None => ClientAuth::None,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "none" => ClientAuth::None,
                "required" => ClientAuth::Required,
                _ => return Err(ini.bad("tls", "client_auth", v, "expected none or required")),
            },
        };
        let ca = ini
            .raw("tls", "ca")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        if client_auth == ClientAuth::Required && ca.is_none() {
            return Err(ini.bad(
                "tls",
                "client_auth",
                "required",
                "client_auth = required needs [tls] ca (the CAs of the client certificates)",
            ));
        }
        Ok(Some(Self {
            addr: SocketAddrV4::new(ini.ipv4_or("tls", "ip", ip)?, port),
            cert: path("cert")?,
            key: path("key")?,
            ca,
            client_auth,
            allow: Allowlist::from_ini(ini, "tls", "allow")?.unwrap_or_else(|| allow.clone()),
        }))
    }
}

/// `[tls]` of a client's conf (an agent, a tool): how to reach a dns or
/// reporter TLS port. `ca` is required (the server's certificate must chain
/// to it); `cert` and `key` (both or neither) are the client certificate
/// for servers with `client_auth = required`; `server_name` is the name
/// checked against the server's certificate (default: the server's IP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsConfig {
    /// `ca`: the CAs the server certificate must chain to (PEM).
    pub ca: PathBuf,
    /// `cert`: the client certificate chain (PEM), if any.
    pub cert: Option<PathBuf>,
    /// `key`: the client's private key (PEM), with `cert`.
    pub key: Option<PathBuf>,
    /// `server_name`: a DNS name or IP the server certificate must name.
    pub server_name: Option<String>,
}

impl ClientTlsConfig {
    /// Builds `[section]` (usually `tls`); `None` when it has no `ca`.
    pub fn from_ini(ini: &Ini, section: &str) -> Result<Option<Self>, ConfigError> {
        let opt = |key: &str| {
            ini.raw(section, key)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let (cert, key) = (opt("cert"), opt("key"));
        let server_name = ini
            .raw(section, "server_name")
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        let Some(ca) = opt("ca") else {
            if cert.is_some() || key.is_some() || server_name.is_some() {
                return Err(ini.bad(
                    section,
                    "ca",
                    "",
                    "required in [tls]: the CAs the server certificate must chain to (PEM)",
                ));
            }
            return Ok(None);
        };
        if cert.is_some() != key.is_some() {
            let (k, v) = if cert.is_some() {
                ("key", "")
            } else {
                ("cert", "")
            };
            return Err(ini.bad(section, k, v, "cert and key go together (both or neither)"));
        }
        Ok(Some(Self {
            ca,
            cert,
            key,
            server_name,
        }))
    }
}

/// `[http] ip, port`: the optional status listener; off unless `port` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HttpConfig {
    /// Where to listen, if anywhere.
    pub addr: Option<SocketAddr>,
}

impl HttpConfig {
    /// Builds the `[http]` section.
    pub fn from_ini(ini: &Ini) -> Result<Self, ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(store_url(&Ini::default()).unwrap(), DEFAULT_STORE_URL);
    }

    #[test]
    fn malformed_value_names_file_section_and_key() {
        let ini = Ini::parse("lars_dns.conf", "[reactor]\nport = 70000\n").unwrap();
        let e = ReactorConfig::from_ini(&ini, 7778).unwrap_err().to_string();
        assert!(e.contains("lars_dns.conf"), "{e}");
        assert!(e.contains("[reactor] port"), "{e}");
    }

    /// Found by the fuzz target `config_ini`: `seconds_or` accepted any
    /// value a `Duration` holds, and the services add these intervals to a
    /// clock reading (`Instant + 1e19 s` panics: the dns on its first refused
    /// connection with `refusedLogInterval = 1e19`).
    #[test]
    fn seconds_beyond_a_century_are_refused() {
        let ini = Ini::parse("f.conf", "[r]\nbig = 1e19\nok = 3153600000\ninf = inf\n").unwrap();
        let e = ini.seconds_or("r", "big", Duration::ZERO).unwrap_err();
        assert!(e.to_string().contains("[r] big"), "{e}");
        assert!(ini.seconds_or("r", "inf", Duration::ZERO).is_err());
        let ok = ini.seconds_or("r", "ok", Duration::ZERO).unwrap();
        assert_eq!(ok, Duration::from_secs(3_153_600_000));
        assert!(std::time::Instant::now().checked_add(ok).is_some());
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = Ini::parse("f.conf", "[reactor]\nthis is not ini\n").unwrap_err();
        assert!(e.to_string().starts_with("f.conf:2:"), "{e}");
        assert!(Ini::parse("f", "[open\n").is_err());
        assert!(Ini::load("/nonexistent/lars.conf").is_err());
    }

    #[test]
    fn reactor_limits_have_defaults_and_read_their_keys() {
        let d = ReactorConfig::from_ini(&Ini::default(), 7778).unwrap();
        assert_eq!(d, ReactorConfig::defaults(7778));
        assert_eq!(d.max_conn_per_peer, 256);
        assert_eq!(d.idle_timeout, Duration::from_secs(60));
        let ini = Ini::parse(
            "x",
            "[reactor]\nmaxConnPerPeer = 0\nidleTimeout = 0.5\nframeTimeout = 0\nrefusedLogInterval = 2\n",
        )
        .unwrap();
        let c = ReactorConfig::from_ini(&ini, 7778).unwrap();
        assert_eq!(c.max_conn_per_peer, 0);
        assert_eq!(c.idle_timeout, Duration::from_millis(500));
        assert_eq!(c.frame_timeout, Duration::ZERO);
        assert_eq!(c.refused_log_interval, Duration::from_secs(2));
        assert!(ini.unread().is_empty(), "{:?}", ini.unread());
        let bad = Ini::parse("x", "[reactor]\nidleTimeout = -1\n").unwrap();
        let e = ReactorConfig::from_ini(&bad, 7778).unwrap_err().to_string();
        assert!(e.contains("[reactor] idleTimeout"), "{e}");
    }

    #[test]
    fn sample_confs_spell_the_reactor_limits_right() {
        for (file, port) in [("lars_dns.conf", 7778), ("lars_reporter.conf", 7779)] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../conf")
                .join(file);
            let ini = Ini::load(&path).unwrap();
            let c = ReactorConfig::from_ini(&ini, port).unwrap();
            let d = ReactorConfig::defaults(port);
            assert_eq!(c.max_conn_per_peer, d.max_conn_per_peer, "{file}");
            assert_eq!(c.idle_timeout, d.idle_timeout, "{file}");
            assert_eq!(c.frame_timeout, d.frame_timeout, "{file}");
            assert_eq!(c.refused_log_interval, d.refused_log_interval, "{file}");
            let typos: Vec<_> = ini
                .unread()
                .into_iter()
                .filter(|u| u.section == "reactor")
                .collect();
            assert!(typos.is_empty(), "{typos:?}");
        }
    }

    #[test]
    fn io_error_does_not_repeat_its_cause() {
        let e = Ini::load("/nonexistent/lars.conf").unwrap_err();
        let cause = std::error::Error::source(&e).unwrap().to_string();
        assert!(!e.to_string().contains(&cause), "{e}");
        assert!(e.to_string().contains("/nonexistent/lars.conf"), "{e}");
    }

    #[test]
    fn cidrs_parse_strictly_and_match() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains("10.255.1.2".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
        let host: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(host.to_string(), "127.0.0.1/32");
        assert!(!host.contains("127.0.0.2".parse().unwrap()));
        let v6: Cidr = "::1/128".parse().unwrap();
        assert!(v6.contains("::1".parse().unwrap()));
        assert!(!v6.contains("127.0.0.1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0/8",
            "example.com",
            "::1/129",
            "",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} parsed");
        }
        assert!(
            "10.0.0.1/8"
                .parse::<Cidr>()
                .unwrap_err()
                .contains("did you mean 10.0.0.0/8")
        );
    }

    #[test]
    fn allowlist_and_tls_sections_name_file_section_and_key() {
        let ini = Ini::parse(
            "dns.conf",
            "[reactor]\nallow = 10.0.0.0/8, 127.0.0.1/32, ::1/128\n[tls]\nport = 7788\ncert = s.pem\nkey = s.key\nca = ca.pem\nclient_auth = required\n",
        )
        .unwrap();
        let c = ReactorConfig::from_ini(&ini, 7778).unwrap();
        assert_eq!(c.allow.nets().len(), 3);
        assert!(c.allow.permits("127.0.0.1".parse().unwrap()));
        assert!(!c.allow.permits("192.168.1.1".parse().unwrap()));
        let tls = c.tls.unwrap();
        assert_eq!(tls.addr, "127.0.0.1:7788".parse().unwrap());
        assert_eq!(tls.client_auth, ClientAuth::Required);
        assert_eq!(
            tls.allow, c.allow,
            "the TLS port defaults to [reactor] allow"
        );
        assert!(ini.unread().is_empty(), "{:?}", ini.unread());
        assert!(ReactorConfig::defaults(1).allow.is_everyone());

        for (text, key) in [
            ("[reactor]\nallow = 10.0.0.1/8\n", "[reactor] allow"),
            ("[reactor]\nallow = 10.0.0.0/8,,\n", "[reactor] allow"),
            ("[tls]\ncert = a.pem\n", "[tls] cert"),
            ("[tls]\nport = 1\nkey = k\n", "[tls] cert"),
            (
                "[tls]\nport = 1\ncert = c\nkey = k\nclient_auth = required\n",
                "[tls] client_auth",
            ),
            (
                "[tls]\nport = 1\ncert = c\nkey = k\nclient_auth = maybe\n",
                "[tls] client_auth",
            ),
            (
                "[tls]\nport = 1\ncert = c\nkey = k\nallow = x\n",
                "[tls] allow",
            ),
        ] {
            let ini = Ini::parse("dns.conf", text).unwrap();
            let e = ReactorConfig::from_ini(&ini, 7778).unwrap_err().to_string();
            assert!(e.contains("dns.conf") && e.contains(key), "{text:?}: {e}");
        }

        let ini = Ini::parse("a.conf", "[tls]\nca = ca.pem\ncert = c.pem\n").unwrap();
        let e = ClientTlsConfig::from_ini(&ini, "tls")
            .unwrap_err()
            .to_string();
        assert!(e.contains("[tls] key"), "{e}");
        assert_eq!(
            ClientTlsConfig::from_ini(&Ini::default(), "tls").unwrap(),
            None
        );
        let ini = Ini::parse("a.conf", "[tls]\nca = ca.pem\nserver_name = dns.lars\n").unwrap();
        let c = ClientTlsConfig::from_ini(&ini, "tls").unwrap().unwrap();
        assert_eq!(c.server_name.as_deref(), Some("dns.lars"));
        assert_eq!(c.cert, None);
    }

    #[test]
    fn http_is_off_unless_configured() {
        assert_eq!(HttpConfig::from_ini(&Ini::default()).unwrap().addr, None);
        let ini = Ini::parse("x", "[http]\nport = 9000\n").unwrap();
        let c = HttpConfig::from_ini(&ini).unwrap();
        assert_eq!(c.addr, Some("127.0.0.1:9000".parse().unwrap()));
    }

    #[test]
    fn load_with_warns_or_with_strict_refuses_unread_keys() {
        let dir = std::env::temp_dir().join(format!("lars-core-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.conf");
        std::fs::write(&path, "[http]\nport = 9000\nprot = 1\n").unwrap();
        let mut warned = Vec::new();
        let c = load_with(&path, false, HttpConfig::from_ini, |u| {
            warned.push(u.to_string())
        })
        .unwrap();
        assert_eq!(c.addr, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(warned.len(), 1);
        assert!(warned[0].contains("[http] prot"), "{warned:?}");
        let e = load_with(&path, true, HttpConfig::from_ini, |_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.conf: [http] prot: unknown key"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keys_nothing_reads_are_listed_with_file_section_and_key() {
        let ini = Ini::parse(
            "lars_dns.conf",
            "[reactor]\nprot = 1234\nport = 7778\n[dnserver]\nip = 1.2.3.4\n[http]\n",
        )
        .unwrap();
        ReactorConfig::from_ini(&ini, 7778).unwrap();
        HttpConfig::from_ini(&ini).unwrap();
        let unread: Vec<String> = ini.unread().iter().map(ToString::to_string).collect();
        assert_eq!(
            unread,
            vec![
                "lars_dns.conf: [dnserver]: unknown section, ignored".to_owned(),
                "lars_dns.conf: [reactor] prot: unknown key, ignored".to_owned(),
            ]
        );
    }
}
