//! The INI config loader (`lars_core::config::Ini::parse`) and each
//! service's config built from it: `AgentConfig`, `DnsConfig`,
//! `ReporterConfig`, `LoadBalanceConfig` (with `ReactorConfig`,
//! `HttpConfig` and the store URL inside them), then the unread-key report.
//!
//! Invariants: no panic; an error names the file; an accepted config holds
//! what its validation promises (rates in 0..=1, counts at least 1), and
//! every accepted duration can be added to a clock reading (the services do
//! `now + interval`).
#![no_main]

use std::time::{Duration, Instant};

use lars_agent::AgentConfig;
use lars_core::config::{ConfigError, Ini};
use lars_dns::DnsConfig;
use lars_lb::LoadBalanceConfig;
use lars_reporter::ReporterConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The loader reads a file to a String: only UTF-8 gets this far.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ini = match Ini::parse("fuzz.conf", text) {
        Ok(ini) => ini,
        Err(e) => return named(&e),
    };
    let now = Instant::now();
    let usable = |d: Duration| {
        assert!(
            now.checked_add(d).is_some(),
            "{d:?} overflows a clock reading"
        )
    };

    match AgentConfig::from_ini(&ini) {
        Ok(c) => {
            lb(&c.lb);
            usable(c.report_interval);
            assert!(c.port_count.get() >= 1);
        }
        Err(e) => named(&e),
    }
    match DnsConfig::from_ini(&ini) {
        Ok(c) => {
            assert!(c.reactor.thread_num >= 1);
            for d in [
                c.version_interval,
                c.reload_interval,
                c.reactor.idle_timeout,
                c.reactor.frame_timeout,
                c.reactor.refused_log_interval,
            ] {
                usable(d);
            }
        }
        Err(e) => named(&e),
    }
    match ReporterConfig::from_ini(&ini) {
        Ok(c) => {
            assert!(c.db_thread_cnt.get() >= 1);
            usable(c.flush_interval);
        }
        Err(e) => named(&e),
    }
    match LoadBalanceConfig::from_ini(&ini) {
        Ok(c) => lb(&c),
        Err(e) => named(&e),
    }
    for u in ini.unread() {
        let _ = u.to_string();
    }
});

fn named(e: &ConfigError) {
    assert!(
        e.to_string().contains("fuzz.conf"),
        "error without its file: {e}"
    );
}

fn lb(c: &LoadBalanceConfig) {
    for r in [
        c.err_rate,
        c.succ_rate,
        c.window_err_rate,
        c.adaptive.outlier_significance,
    ] {
        assert!((0.0..=1.0).contains(&r));
    }
    assert!(c.adaptive.eject_consecutive >= 1);
    assert!(c.adaptive.max_ejection_percent <= 100);
    assert!(c.adaptive.latency_tolerance >= 1.0);
    assert!(!c.adaptive.probe_interval.is_zero());
    assert!(c.adaptive.probe_interval_max >= c.adaptive.probe_interval);
}
