//! The `[loadbalance]` section: [`LoadBalanceConfig`], the policy it
//! selects ([`Policy`]) and the adaptive policy's knobs
//! ([`AdaptiveConfig`]), each validated once when built from the file.

use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

use lars_core::config::{ConfigError, Ini};

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
        let cfg = Self {
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
        };
        // A zero window would end at the instant it starts: every timer
        // due again at once.
        for (key, d) in [
            ("idle_timeout", cfg.idle_timeout),
            ("overload_timeout", cfg.overload_timeout),
            ("update_timeout", cfg.update_timeout),
        ] {
            if d.is_zero() {
                return Err(ini.bad(s, key, "0", "expected a time above 0 seconds"));
            }
        }
        Ok(cfg)
    }

    /// The original's defaults with the `classic` policy: the C++ Lars rules.
    pub fn classic() -> Self {
        Self {
            policy: Policy::Classic,
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_values_name_file_section_and_key() {
        let ini = Ini::parse("lars_lb_agent.conf", "[loadbalance]\nprobe_num = ten\n").unwrap();
        let e = LoadBalanceConfig::from_ini(&ini).unwrap_err().to_string();
        assert!(e.contains("lars_lb_agent.conf"), "{e}");
        assert!(e.contains("[loadbalance] probe_num"), "{e}");
        let ini = Ini::parse("a", "[loadbalance]\nerr_rate = 1.5\n").unwrap();
        let e = LoadBalanceConfig::from_ini(&ini).unwrap_err().to_string();
        assert!(e.contains("err_rate"), "{e}");
        for key in ["idle_timeout", "overload_timeout", "update_timeout"] {
            let ini = Ini::parse("a", &format!("[loadbalance]\n{key} = 0\n")).unwrap();
            let e = LoadBalanceConfig::from_ini(&ini).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("above 0"), "{e}");
        }
        let ini = Ini::parse("a", "[loadbalance]\nmax_ejection_percent = 101\n").unwrap();
        let e = LoadBalanceConfig::from_ini(&ini).unwrap_err().to_string();
        assert!(
            e.contains("max_ejection_percent") && e.contains("101"),
            "{e}"
        );
    }
}
