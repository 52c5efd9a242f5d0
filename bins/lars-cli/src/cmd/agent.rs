//! Subcommands that talk to the lars agent as an application would:
//! `get-host`, `get-route`, `report`, `simulator`, `qps`.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Args;
use lars_bench::qps::{self, QpsSummary, Second};
use lars_bench::simulate::{
    ErrRate, LatencyModel, SimCall, SimEvent, SimOptions, SimReport, simulate,
};
use lars_client::{ApiError, ClientConfig, LarsClient, Outcome};

/// Where the agent listens, as given on the command line: before the
/// subcommand (`lars --base-port 9000 qps 2`) or after it
/// (`lars qps 2 --base-port 9000`). Only the agent subcommands (and `up`)
/// take them, so `db`, `web`, `route`, `bench` and `sim` neither show nor
/// accept them.
#[derive(Debug, Clone, Default, Args)]
pub struct AgentOpts {
    /// The agent's IPv4 address [default: 127.0.0.1].
    #[arg(long, value_name = "IP")]
    pub agent_ip: Option<Ipv4Addr>,
    /// The agent's first UDP port; key (M, C) uses BASE_PORT + (M + C) % PORTS
    /// [default: 8888].
    #[arg(long, value_name = "PORT")]
    pub base_port: Option<u16>,
    /// How many consecutive UDP ports the agent listens on [default: 3].
    #[arg(long, value_name = "N")]
    pub ports: Option<u16>,
    /// Receive timeout of every request, in milliseconds [default: 50].
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
}

impl AgentOpts {
    /// The options named on the command line, by their flag, for an error
    /// that says where they do not apply.
    pub fn given(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        if self.agent_ip.is_some() {
            given.push("--agent-ip");
        }
        if self.base_port.is_some() {
            given.push("--base-port");
        }
        if self.ports.is_some() {
            given.push("--ports");
        }
        if self.timeout_ms.is_some() {
            given.push("--timeout-ms");
        }
        given
    }

    /// These options (given after the subcommand) over `before` (given
    /// before it), over the defaults.
    pub fn resolve(&self, before: &AgentOpts) -> AgentArgs {
        AgentArgs {
            agent_ip: self
                .agent_ip
                .or(before.agent_ip)
                .unwrap_or(Ipv4Addr::LOCALHOST),
            base_port: self.base_port.or(before.base_port).unwrap_or(8888),
            ports: self.ports.or(before.ports).unwrap_or(3),
            timeout_ms: self.timeout_ms.or(before.timeout_ms).unwrap_or(50),
        }
    }
}

/// Where the agent listens, resolved from [`AgentOpts`].
#[derive(Debug, Clone)]
pub struct AgentArgs {
    /// The agent's IPv4 address.
    pub agent_ip: Ipv4Addr,
    /// The agent's first UDP port.
    pub base_port: u16,
    /// How many consecutive UDP ports the agent listens on.
    pub ports: u16,
    /// Receive timeout of every request, in milliseconds.
    pub timeout_ms: u64,
}

impl AgentArgs {
    /// The validated client configuration.
    pub fn config(&self) -> anyhow::Result<ClientConfig> {
        ClientConfig::builder()
            .agent_ip(self.agent_ip)
            .base_port(self.base_port)
            .port_count(self.ports)
            .timeout(Duration::from_millis(self.timeout_ms))
            .build()
            .context("invalid agent options")
    }

    fn connect(&self) -> anyhow::Result<(ClientConfig, LarsClient)> {
        let config = self.config()?;
        let client = LarsClient::connect(&config).context("cannot open the agent sockets")?;
        Ok((config, client))
    }
}

/// A service key.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// Module id.
    pub modid: u32,
    /// Command id.
    pub cmdid: u32,
}

/// `lars report M C IP PORT 0|1 [LATENCY_MS]`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Module id.
    pub modid: u32,
    /// Command id.
    pub cmdid: u32,
    /// The called host's IPv4 address.
    pub ip: Ipv4Addr,
    /// The called host's port.
    #[arg(value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// 0: the call succeeded, 1: it failed.
    #[arg(value_parser = clap::value_parser!(u8).range(0..=1))]
    pub result: u8,
    /// How long the call took, in milliseconds (fractions allowed), for a
    /// success or a failure: sent as the report's timecost (at least 1 ms;
    /// without it the report carries no latency).
    #[arg(value_name = "LATENCY_MS", value_parser = millis)]
    pub latency_ms: Option<Duration>,
    /// The same as LATENCY_MS, as an option.
    #[arg(
        long = "latency",
        visible_alias = "timecost-ms",
        value_name = "MS",
        value_parser = millis,
        conflicts_with = "latency_ms"
    )]
    pub latency: Option<Duration>,
}

impl ReportArgs {
    /// The call's latency, from the positional or the option.
    pub fn latency(&self) -> Option<Duration> {
        self.latency_ms.or(self.latency)
    }
}

/// `lars simulator M C [ERR_RATE] [COUNT]`.
#[derive(Debug, Args)]
pub struct SimulatorArgs {
    /// Module id.
    pub modid: u32,
    /// Command id.
    pub cmdid: u32,
    /// Calls that fail: a fraction in steps of 0.1 (0.3), or tenths (3).
    #[arg(default_value = "2", value_parser = err_rate)]
    pub err_rate: u8,
    /// Number of get_host queries.
    #[arg(default_value_t = 100)]
    pub count: u64,
    /// Pause between queries, in milliseconds (the original's 6).
    #[arg(long, default_value_t = 6)]
    pub interval_ms: u64,
    /// Seed of the failure and latency draws (default: from the clock;
    /// printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Median latency of a simulated call, in milliseconds (fractions
    /// allowed); 0 reports no latency, as the original simulator.
    #[arg(long, default_value = "5", value_parser = millis)]
    pub latency_ms: Duration,
    /// Spread of the latencies: standard deviation of their logarithm
    /// (lognormal; 0 = every call takes the median, 0.5 = p99 about 3.2x).
    #[arg(long, default_value_t = 0.5)]
    pub latency_sigma: f64,
    /// Consecutive queries without a host before it is reported absent.
    #[arg(long, default_value_t = 20)]
    pub absence: u64,
    /// Print every call.
    #[arg(short, long)]
    pub verbose: bool,
}

/// `lars qps THREADS [--duration S]`.
#[derive(Debug, Args)]
pub struct QpsArgs {
    /// Client threads; thread i uses modid i+1, cmdid 1.
    #[arg(value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: u16,
    /// Seconds to run (the raw UDP reference then runs as long again).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub duration: u64,
    /// Also print each thread's rate every second (as the original did).
    #[arg(long)]
    pub per_thread: bool,
}

/// Registers the key like the original tools do, noting a failure on stderr.
fn reg_init(client: &LarsClient, modid: u32, cmdid: u32) {
    if let Err(e) = client.reg_init(modid, cmdid) {
        eprintln!("modid {modid}, cmdid {cmdid}: still no host after reg_init: {e}");
    }
}

/// `lars get-host M C`.
pub fn get_host(agent: &AgentArgs, a: &KeyArgs) -> anyhow::Result<ExitCode> {
    let (config, client) = agent.connect()?;
    reg_init(&client, a.modid, a.cmdid);
    let host = client
        .get_host(a.modid, a.cmdid)
        .with_context(|| failed("get_host", a.modid, a.cmdid, &config))?;
    println!("host is {host}");
    Ok(ExitCode::SUCCESS)
}

/// `lars get-route M C`.
pub fn get_route(agent: &AgentArgs, a: &KeyArgs) -> anyhow::Result<ExitCode> {
    let (config, client) = agent.connect()?;
    reg_init(&client, a.modid, a.cmdid);
    let hosts = client
        .get_route(a.modid, a.cmdid)
        .with_context(|| failed("get_route", a.modid, a.cmdid, &config))?;
    if hosts.is_empty() {
        eprintln!("modid {}, cmdid {}: no hosts", a.modid, a.cmdid);
        return Ok(ExitCode::FAILURE);
    }
    for h in hosts {
        println!("{h}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `lars report M C IP PORT 0|1`.
pub fn report(agent: &AgentArgs, a: &ReportArgs) -> anyhow::Result<ExitCode> {
    let (config, client) = agent.connect()?;
    // The report itself is never answered; whether an agent listens shows
    // here: no answer (or a refused port) fails rather than printing success.
    match client.reg_init(a.modid, a.cmdid) {
        Err(e @ (ApiError::Timeout | ApiError::Io(_))) => {
            return Err(anyhow::Error::new(e))
                .with_context(|| failed("report", a.modid, a.cmdid, &config))
                .context("no agent answered; nothing was reported");
        }
        Err(e) => eprintln!(
            "modid {}, cmdid {}: still no host after reg_init: {e}",
            a.modid, a.cmdid
        ),
        Ok(_) => {}
    }
    let host = SocketAddrV4::new(a.ip, a.port);
    let outcome = if a.result == 0 {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    client
        .report(a.modid, a.cmdid, host, outcome, a.latency())
        .with_context(|| failed("report", a.modid, a.cmdid, &config))?;
    let word = match outcome {
        Outcome::Success => "success",
        Outcome::Failure => "failure",
    };
    // A report is one UDP datagram with no answer: it was sent, not
    // acknowledged (reg_init above said whether an agent answers).
    println!(
        "report sent: modid = {}, cmdid = {} | {host} {word} (UDP, not acknowledged)",
        a.modid, a.cmdid
    );
    Ok(ExitCode::SUCCESS)
}

/// `lars simulator M C [ERR_RATE] [COUNT]`.
pub fn simulator(agent: &AgentArgs, a: &SimulatorArgs) -> anyhow::Result<ExitCode> {
    let (_, client) = agent.connect()?;
    let mut opts = SimOptions::new(a.modid, a.cmdid);
    opts.err_rate = ErrRate::new(a.err_rate).context("err_rate must be 0-10")?;
    opts.count = a.count;
    opts.interval = Duration::from_millis(a.interval_ms);
    opts.seed = a.seed.unwrap_or_else(clock_seed);
    opts.absence_threshold = a.absence;
    opts.latency = if a.latency_ms.is_zero() {
        None
    } else {
        Some(
            LatencyModel::new(a.latency_ms, a.latency_sigma)
                .context("--latency-sigma must be a non-negative number")?,
        )
    };
    println!(
        "err_rate = {}/10, count = {}, seed = {}",
        a.err_rate, a.count, opts.seed
    );
    println!("{}", latency_line(opts.latency));
    reg_init(&client, a.modid, a.cmdid);
    let report = simulate(&client, &opts, |i, r| {
        if a.verbose {
            println!("{}", call_line(i, a.modid, a.cmdid, r));
        }
    });
    print!("{}", sim_summary(&report));
    Ok(ExitCode::SUCCESS)
}

/// `lars qps THREADS [--duration S]`.
pub fn qps(agent: &AgentArgs, a: &QpsArgs) -> anyhow::Result<ExitCode> {
    let config = agent.config()?;
    let threads = usize::from(a.threads);
    let duration = Duration::from_secs(a.duration);
    println!(
        "lars qps: {threads} threads for {}s against the agent at {}:{}..",
        a.duration,
        config.agent_ip(),
        config.base_port()
    );
    let lars = qps::run(&config, threads, duration, |s| {
        print!("{}", second_lines("lars", s, a.per_thread))
    })
    .context("cannot start the qps clients")?;
    println!("reference: raw UDP request/response, in-process server, same threads and duration");
    let raw = qps::run_udp_reference(&config, threads, duration, |s| {
        print!("{}", second_lines("raw", s, a.per_thread))
    })
    .context("cannot start the raw UDP reference")?;
    println!("{}", summary_line("lars", &lars));
    println!("{}", summary_line("raw", &raw));
    if lars.no_host > 0 {
        println!(
            "{} answers had no host: thread i asks for key (i+1, 1); does each route exist?",
            lars.no_host
        );
    }
    if lars.answered == 0 {
        println!("lars answered nothing: is the agent running at these ports?");
    }
    if raw.average() > 0.0 {
        println!("ratio lars/raw = {:.3}", lars.average() / raw.average());
    }
    Ok(ExitCode::SUCCESS)
}

fn failed(what: &str, modid: u32, cmdid: u32, config: &ClientConfig) -> String {
    format!(
        "{what} modid {modid}, cmdid {cmdid} (agent {})",
        config.agent_addr(modid, cmdid)
    )
}

/// Parses milliseconds (fractions allowed) into a duration.
/// An error rate in tenths: `0.3` (a fraction) or `3` (tenths, the
/// original's form).
fn err_rate(s: &str) -> Result<u8, String> {
    let bad = || format!("{s:?}: a fraction 0-1 in steps of 0.1 (0.3) or tenths 0-10 (3)");
    let tenths = if s.contains('.') {
        let f: f64 = s.parse().map_err(|_| bad())?;
        let t = f * 10.0;
        if !(0.0..=10.0).contains(&t) || (t - t.round()).abs() > 1e-9 {
            return Err(bad());
        }
        t.round()
    } else {
        f64::from(s.parse::<u8>().map_err(|_| bad())?)
    };
    if tenths > 10.0 {
        return Err(bad());
    }
    // In 0..=10 (checked above), so the cast is exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(tenths as u8)
}

fn millis(s: &str) -> Result<Duration, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .and_then(|ms| Duration::try_from_secs_f64(ms / 1e3).ok())
        .ok_or_else(|| format!("{s:?} is not a non-negative number of milliseconds"))
}

/// Milliseconds for display: whole when whole, else to the microsecond.
fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1e3;
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

fn latency_line(model: Option<LatencyModel>) -> String {
    match model {
        Some(m) => format!(
            "latency: lognormal, median {} ms, sigma {} (drawn per call, not measured; \
             sent as the report's timecost)",
            ms(m.median()),
            m.sigma()
        ),
        None => "latency: off (reports carry no timecost)".to_owned(),
    }
}

fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn call_line(i: u64, modid: u32, cmdid: u32, r: &Result<SimCall, ApiError>) -> String {
    match r {
        Ok(c) => {
            let word = match c.outcome {
                Outcome::Success => "SUCCESS",
                Outcome::Failure => "ERROR",
            };
            match c.latency {
                Some(d) => format!("{i}: host {} called {word} in {} ms", c.host, ms(d)),
                None => format!("{i}: host {} called {word}", c.host),
            }
        }
        Err(ApiError::Overload) => format!("{i}: {modid},{cmdid} all hosts were overloaded"),
        Err(ApiError::NoExist) => format!("{i}: {modid},{cmdid} not exist"),
        Err(e) => format!("{i}: {e}"),
    }
}

fn sim_summary(r: &SimReport) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "hosts:");
    for (host, t) in &r.hosts {
        let _ = writeln!(out, "  {host}: success: {}; error: {}", t.succ, t.err);
    }
    let _ = writeln!(
        out,
        "answers without host: overload {}, noexist {}, system {}, timeout {}, socket errors {}",
        r.overload, r.noexist, r.system, r.timeout, r.io
    );
    match (r.latency_quantile(0.5), r.latency_quantile(0.99)) {
        (Some(p50), Some(p99)) => {
            let _ = writeln!(
                out,
                "latency reported: p50 {p50} ms, p99 {p99} ms ({} reports)",
                r.latency_ms.len()
            );
        }
        _ => {
            let _ = writeln!(out, "latency reported: none");
        }
    }
    let _ = writeln!(
        out,
        "overload transitions seen by this client (the agent logs its own):"
    );
    if r.events.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for e in &r.events {
        let line = match e {
            SimEvent::OverloadBegan { at } => {
                format!("  query {at}: get_host answers OVERLOAD (every host overloaded)")
            }
            SimEvent::OverloadEnded { at } => {
                format!("  query {at}: get_host returns a host again")
            }
            SimEvent::HostAbsent {
                host,
                from,
                to,
                returned,
            } => {
                let end = if *returned {
                    "then returned again"
                } else {
                    "until the end"
                };
                format!(
                    "  queries {from}..={to}: {host} not returned ({} queries), {end}",
                    to - from + 1
                )
            }
        };
        let _ = writeln!(out, "{line}");
    }
    out
}

fn second_lines(label: &str, s: &Second, per_thread: bool) -> String {
    let mut out = format!("{label} [{:>3}s] qps = {}\n", s.index, s.total);
    if per_thread {
        for (i, n) in s.per_thread.iter().enumerate() {
            out.push_str(&format!("  thread:[{i}] --> qps = [{n}]\n"));
        }
    }
    out
}

fn summary_line(label: &str, s: &QpsSummary) -> String {
    format!(
        "{label}: {} threads, {:.2}s: average {:.0} req/s (answered {}, no host {}, errors {})",
        s.threads,
        s.elapsed.as_secs_f64(),
        s.average(),
        s.answered,
        s.no_host,
        s.errors
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_hosts_and_transitions() {
        let mut r = SimReport::default();
        let h: SocketAddrV4 = "10.0.0.1:80".parse().unwrap();
        r.hosts
            .insert(h, lars_bench::simulate::HostTally { succ: 3, err: 1 });
        r.overload = 2;
        r.latency_ms = (1..=200).collect();
        r.events.push(SimEvent::OverloadBegan { at: 4 });
        r.events.push(SimEvent::HostAbsent {
            host: h,
            from: 5,
            to: 30,
            returned: false,
        });
        let s = sim_summary(&r);
        assert!(s.contains("10.0.0.1:80: success: 3; error: 1"), "{s}");
        assert!(s.contains("overload 2"), "{s}");
        assert!(
            s.contains("latency reported: p50 100 ms, p99 198 ms (200 reports)"),
            "{s}"
        );
        assert!(sim_summary(&SimReport::default()).contains("latency reported: none"));
        assert!(s.contains("query 4: get_host answers OVERLOAD"), "{s}");
        assert!(
            s.contains("queries 5..=30: 10.0.0.1:80 not returned (26 queries), until the end"),
            "{s}"
        );
    }

    #[test]
    fn err_rates_as_fractions_or_tenths() {
        assert_eq!(err_rate("0.3"), Ok(3));
        assert_eq!(err_rate("3"), Ok(3));
        assert_eq!(err_rate("1.0"), Ok(10));
        assert_eq!(err_rate("0"), Ok(0));
        assert_eq!(err_rate("10"), Ok(10));
        for bad in ["11", "1.1", "0.35", "-0.1", "x", "0.3.1"] {
            assert!(err_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn millis_and_their_display() {
        assert_eq!(millis("12"), Ok(Duration::from_millis(12)));
        assert_eq!(millis("0.4"), Ok(Duration::from_micros(400)));
        assert!(millis("-1").is_err() && millis("x").is_err() && millis("inf").is_err());
        assert_eq!(ms(Duration::from_millis(5)), "5");
        assert_eq!(ms(Duration::from_micros(400)), "0.400");
        assert!(latency_line(None).contains("off"));
        let m = LatencyModel::new(Duration::from_millis(5), 0.5);
        assert!(latency_line(m).contains("median 5 ms, sigma 0.5"));
    }

    #[test]
    fn verbose_lines_show_the_latency() {
        let host: SocketAddrV4 = "10.0.0.1:80".parse().unwrap();
        let call = |latency| {
            Ok(SimCall {
                host,
                outcome: Outcome::Failure,
                latency,
            })
        };
        assert_eq!(
            call_line(3, 1, 1, &call(Some(Duration::from_millis(7)))),
            "3: host 10.0.0.1:80 called ERROR in 7 ms"
        );
        assert_eq!(
            call_line(3, 1, 1, &call(None)),
            "3: host 10.0.0.1:80 called ERROR"
        );
    }
}
