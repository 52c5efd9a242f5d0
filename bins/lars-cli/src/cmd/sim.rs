//! `lars sim`: the what-if simulator. Runs lars-sim's scenarios against the
//! chosen balancers (two at a time on two threads), prints one row per
//! scenario and policy, optionally draws the share-of-calls plot; with
//! `--replay`, rebuilds the backends of one key from the reporter's history
//! in the store (the only I/O, read-only, done here, not in lars-sim).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use lars_core::ModKey;
use lars_core::config::Ini;
use lars_lb::LoadBalanceConfig;
use lars_sim::{
    BalancerKind, HistoryMinute, Metrics, NAMED, Recorded, Replay, RunOptions, RunResult, Scenario,
    ShareSeries, SimError, Workload,
};
use lars_store::StatsStore;

use super::{StoreArgs, redact};

/// `lars sim ...`.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Scenarios (default: all named ones): healthy, deadK, halfK[:P],
    /// grayK[:P], slowK[:X], flapK[:DOWN/UP], timeoutsK[:MS],
    /// allrecover[:DOWN], rolling[:EVERY/LAG] (see docs/sim.md).
    scenarios: Vec<String>,
    /// Balancers to compare, comma-separated: rr, classic, adaptive, envoy, p2c.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "rr,classic,adaptive,envoy,p2c"
    )]
    policy: Vec<String>,
    /// Hosts in the route (named scenarios).
    #[arg(long, default_value_t = 10)]
    hosts: usize,
    /// Calls per second [default: 100; replay: the recorded rate].
    #[arg(long)]
    rate: Option<f64>,
    /// Calls per run [default: 100000; replay: as many as fit in the period].
    #[arg(long)]
    calls: Option<u64>,
    /// Seed of the first run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Runs per scenario and policy (seeds SEED, SEED+1, ...); the table shows means.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    seeds: u32,
    /// A config file whose [loadbalance] section classic and adaptive use
    /// (their `policy` key is overridden).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Seconds of the sliding window in which a host that came back must get
    /// 90% of a fair share to be at full share.
    #[arg(long, default_value_t = 1.0)]
    window: f64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Draw each host's share of calls over time into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Seconds of each run the plot covers [default: 120, at least 60 buckets].
    #[arg(long)]
    plot_secs: Option<f64>,
    /// Model the backends of --key from the reporter's history in the store.
    #[arg(long, requires_all = ["key", "from", "to"])]
    replay: bool,
    /// Replay: the key, `MODID/CMDID`.
    #[arg(long)]
    key: Option<String>,
    /// Replay: start, unix seconds or `YYYY-MM-DD HH:MM[:SS]` (UTC).
    #[arg(long)]
    from: Option<String>,
    /// Replay: end (exclusive), same forms.
    #[arg(long)]
    to: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

/// A host-minute of a replay with at least this failure rate counts as bad.
const REPLAY_BAD_RATE: f64 = 0.1;

/// Runs `lars sim`.
pub fn run(a: &SimArgs) -> anyhow::Result<ExitCode> {
    let lb = match &a.config {
        Some(path) => {
            let ini = Ini::load(path)?;
            LoadBalanceConfig::from_ini(&ini)?
        }
        None => LoadBalanceConfig::default(),
    };
    let kinds = a
        .policy
        .iter()
        .map(|p| p.parse::<BalancerKind>())
        .collect::<Result<Vec<_>, SimError>>()?;
    if kinds.is_empty() {
        bail!("--policy names no balancer");
    }
    let (scenarios, recorded) = if a.replay {
        if !a.scenarios.is_empty() {
            bail!("--replay takes no scenario names");
        }
        let sc = replay_scenario(a)?;
        let rec = sc.recorded;
        (vec![sc], rec)
    } else {
        (named_scenarios(a)?, None)
    };
    let workload = scenarios[0].workload;
    if !(a.window.is_finite() && a.window > 0.0 && a.window <= 86_400.0) {
        bail!(
            "--window {}: expected seconds above 0, at most 86400",
            a.window
        );
    }
    let mut opts = RunOptions {
        lb,
        share_window: Duration::from_secs_f64(a.window),
        ..RunOptions::default()
    };
    if a.plot.is_some() {
        let (bucket, until) = ShareSeries::auto_range(&workload);
        let until = match a.plot_secs {
            Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Duration::from_secs_f64(s),
            Some(s) => bail!("--plot-secs {s}: expected a positive number of seconds"),
            None => until,
        };
        opts.plot = Some((bucket, until.min(workload.duration())));
    }

    let jobs: Vec<(usize, BalancerKind)> = (0..scenarios.len())
        .flat_map(|s| kinds.iter().map(move |&k| (s, k)))
        .collect();
    // Read the clock once: virtual time 0 of every LoadBalance.
    let epoch = Instant::now();
    let results = run_jobs(&jobs, &scenarios, &opts, a.seed, a.seeds, epoch);

    if a.json {
        let rows: Vec<&Metrics> = results.iter().map(|r| &r.metrics).collect();
        let mut out = serde_json::json!({
            "hosts": workload.hosts,
            "rate": workload.rate,
            "calls": workload.calls,
            "seed": a.seed,
            "seeds": a.seeds,
            "window_s": a.window,
            "rows": rows,
        });
        if let Some(r) = recorded {
            out["recorded"] = serde_json::to_value(r)?;
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!(
            "{}",
            table(&results.iter().map(|r| &r.metrics).collect::<Vec<_>>())
        );
        println!(
            "fail%: failed calls (rejected included); bad%: calls sent to a bad host while one is; \
             detect s: going bad -> out of rotation, mean/max; missed: bad spells never out; \
             first s / full s: coming back -> first call / 90% of a fair share in the window, mean/max \
             (docs/sim.md)"
        );
        println!(
            "{} host(s), {} calls/s, {} calls per run, seed {}{}",
            workload.hosts,
            workload.rate,
            workload.calls,
            a.seed,
            if a.seeds > 1 {
                format!(", mean of {} seeds", a.seeds)
            } else {
                String::new()
            }
        );
        if let Some(r) = recorded {
            println!("{}", recorded_line(r));
        }
    }
    if let Some(path) = &a.plot {
        let series: Vec<ShareSeries> = results.into_iter().filter_map(|r| r.series).collect();
        let title = format!(
            "lars sim: {} host(s), {} calls/s, seed {}",
            workload.hosts, workload.rate, a.seed
        );
        std::fs::write(path, lars_sim::svg(&series, &title))
            .with_context(|| format!("cannot write the plot {}", path.display()))?;
        if !a.json {
            println!("plot written to {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The named scenarios asked for (all by default, skipping those that need
/// more hosts than there are).
fn named_scenarios(a: &SimArgs) -> anyhow::Result<Vec<Scenario>> {
    let w = Workload::new(a.hosts, a.rate.unwrap_or(100.0), a.calls.unwrap_or(100_000))?;
    if a.scenarios.is_empty() {
        let mut out = Vec::new();
        for name in NAMED {
            match Scenario::named(name, &w) {
                Ok(s) => out.push(s),
                Err(SimError::BadScenario { .. }) => {
                    eprintln!(
                        "lars: skipping {name}: it needs more than {} host(s)",
                        w.hosts
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(out);
    }
    a.scenarios
        .iter()
        .map(|s| Scenario::named(s, &w).map_err(anyhow::Error::from))
        .collect()
}

/// Reads the key's history from the store (read-only) and builds the replay.
fn replay_scenario(a: &SimArgs) -> anyhow::Result<Scenario> {
    let (Some(key), Some(from), Some(to)) = (&a.key, &a.from, &a.to) else {
        bail!("--replay needs --key, --from and --to");
    };
    let key = parse_key(key)?;
    let from = parse_time(from).context("--from")?;
    let to = parse_time(to).context("--to")?;
    if to <= from {
        bail!("--to must be after --from");
    }
    if let Some(path) = a.store.url.strip_prefix("sqlite://")
        && !std::path::Path::new(path).exists()
    {
        bail!("no store at {path}: --replay reads an existing store");
    }
    let store = a.store.open()?;
    let rows = store
        .history(Some(key), from.div_euclid(60) * 60)
        .with_context(|| {
            format!(
                "cannot read the history of {key} from {}",
                redact(&a.store.url)
            )
        })?;
    let rows: Vec<HistoryMinute> = rows
        .into_iter()
        .filter(|r| r.minute < to)
        .map(|r| HistoryMinute {
            host: r.host,
            minute: r.minute,
            succ: r.succ,
            err: r.err,
        })
        .collect();
    let replay = Replay {
        name: format!("replay {key}"),
        from,
        to,
        rows,
        bad_rate: REPLAY_BAD_RATE,
    };
    Scenario::replay(&replay, a.rate, a.calls)
        .with_context(|| format!("replaying {key} from {from} to {to}"))
}

/// Runs every job on two threads; results in job order.
fn run_jobs(
    jobs: &[(usize, BalancerKind)],
    scenarios: &[Scenario],
    opts: &RunOptions,
    seed: u64,
    seeds: u32,
    epoch: Instant,
) -> Vec<RunResult> {
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<(usize, RunResult)>> = Mutex::new(Vec::with_capacity(jobs.len()));
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(sc, kind)) = jobs.get(i) else {
                        break;
                    };
                    let r = lars_sim::run(&scenarios[sc], kind, opts, seed, seeds, epoch);
                    done.lock().unwrap_or_else(|p| p.into_inner()).push((i, r));
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(|p| p.into_inner());
    done.sort_by_key(|d| d.0);
    done.into_iter().map(|d| d.1).collect()
}

fn recorded_line(r: Recorded) -> String {
    let pct = if r.calls == 0 {
        0.0
    } else {
        100.0 * r.failed as f64 / r.calls as f64
    };
    format!(
        "recorded: {} calls, {} failed ({pct:.2}%): what really happened",
        r.calls, r.failed
    )
}

/// The aligned text table, one row per scenario and policy.
fn table(rows: &[&Metrics]) -> String {
    let opt = |v: Option<f64>, p: usize| v.map_or("-".to_owned(), |v| format!("{v:.p$}"));
    let pair = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (None, None) => "-".to_owned(),
        _ => format!("{}/{}", opt(a, 2), opt(b, 2)),
    };
    let head = [
        "scenario", "policy", "fail%", "bad%", "rejected", "p50ms", "p99ms", "detect s", "missed",
        "first s", "full s", "probes", "",
    ];
    let mut cells: Vec<Vec<String>> = vec![head.iter().map(|s| (*s).to_owned()).collect()];
    for m in rows {
        cells.push(vec![
            m.scenario.clone(),
            m.policy.clone(),
            format!("{:.3}", m.failed_pct),
            opt(m.bad_share_pct, 3),
            format!("{:.0}", m.rejected),
            opt(m.p50_ms, 1),
            opt(m.p99_ms, 1),
            pair(m.detect_mean_s, m.detect_max_s),
            format!("{:.0}", m.undetected),
            opt(m.first_traffic_mean_s, 2),
            pair(m.full_share_mean_s, m.full_share_max_s),
            format!("{:.0}", m.probes),
            m.extra(),
        ]);
    }
    let widths: Vec<usize> = (0..head.len())
        .map(|c| {
            cells
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in &cells {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            // Names left-aligned, numbers right-aligned.
            if c < 2 || c == head.len() - 1 {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            } else {
                let _ = write!(line, "{cell:>w$}  ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `MODID/CMDID`.
fn parse_key(s: &str) -> anyhow::Result<ModKey> {
    let parse = || -> Option<ModKey> {
        let (m, c) = s.split_once('/')?;
        Some(ModKey::new(m.trim().parse().ok()?, c.trim().parse().ok()?))
    };
    parse().with_context(|| format!("bad key {s:?}: expected MODID/CMDID, e.g. 1/1"))
}

/// Unix seconds, or `YYYY-MM-DD HH:MM[:SS]` (also with `T`) in UTC.
fn parse_time(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    if let Ok(v) = s.parse::<i64>() {
        return Ok(v);
    }
    let bad =
        || anyhow::anyhow!("bad time {s:?}: expected unix seconds or YYYY-MM-DD HH:MM[:SS] (UTC)");
    let (date, time) = s.split_once([' ', 'T']).ok_or_else(bad)?;
    let d: Vec<&str> = date.split('-').collect();
    let t: Vec<&str> = time.trim().split(':').collect();
    if d.len() != 3 || !(2..=3).contains(&t.len()) {
        return Err(bad());
    }
    let num = |x: &str| x.parse::<i64>().map_err(|_| bad());
    let (y, m, day) = (num(d[0])?, num(d[1])?, num(d[2])?);
    let (hh, mm) = (num(t[0])?, num(t[1])?);
    let ss = if t.len() == 3 { num(t[2])? } else { 0 };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m)
        || !(1..=month_days[(m - 1) as usize]).contains(&day)
        || !(0..24).contains(&hh)
        || !(0..60).contains(&mm)
        || !(0..60).contains(&ss)
    {
        return Err(bad());
    }
    Ok(days_from_civil(y, m, day) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_times_parse_as_utc() {
        assert_eq!(parse_time("1700000000").unwrap(), 1_700_000_000);
        assert_eq!(parse_time("1970-01-01 00:00").unwrap(), 0);
        assert_eq!(parse_time("2023-11-14 22:13:20").unwrap(), 1_700_000_000);
        assert_eq!(parse_time("2024-02-29T12:00").unwrap(), 1_709_208_000);
        assert_eq!(parse_time("2000-03-01 00:00:00").unwrap(), 951_868_800);
        for bad in [
            "",
            "yesterday",
            "2023-13-01 00:00",
            "2023-02-29 00:00",
            "2023-01-01",
            "2023-01-01 24:00",
            "2023-01-01 10:60",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sim_keys_parse() {
        assert_eq!(parse_key("1/2").unwrap(), ModKey::new(1, 2));
        for bad in ["1", "1/x", "/2", "1/2/3", "-1/2"] {
            assert!(parse_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sim_table_aligns_columns() {
        let w = Workload::new(4, 100.0, 1500).unwrap();
        let sc = Scenario::named("dead1", &w).unwrap();
        // The clock is read once, as the command does.
        let epoch = Instant::now();
        let m = lars_sim::run(&sc, BalancerKind::Rr, &RunOptions::default(), 1, 1, epoch).metrics;
        let t = table(&[&m, &m]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("scenario"));
        assert!(lines[1].starts_with("dead1"));
        assert_eq!(lines[1], lines[2]);
    }
}
