//! `lars bench dns|reporter|fleet`: the service load tools. Each measures the real
//! service over TCP (in-process, or an external one given by address) and
//! prints what it saw.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use lars_core::ModKey;
use lars_core::config::ClientTlsConfig;
use lars_reporter::ReporterConfig;

/// `lars bench ...`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    target: BenchTarget,
}

#[derive(Debug, Subcommand)]
enum BenchTarget {
    /// Route lookups per second against the dns, next to a raw-socket
    /// reference that sends the same reply bytes.
    Dns(DnsBenchArgs),
    /// Reports per second into the reporter, then waits until the store holds
    /// every count it sent.
    Reporter(ReporterBenchArgs),
    /// A fleet on loopback: subscribers over several dns processes (push
    /// latency of a route change), one dns killed under agents, reporters
    /// killed and restarted under report load (totals checked).
    Fleet(FleetBenchArgs),
}

#[derive(Debug, Args)]
struct FleetBenchArgs {
    /// Dns processes (the real lars-dns, found next to this executable or
    /// through LARS_DNS_BIN).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    dns: u32,
    /// (a) Subscriber connections spread over the dns processes (0 skips).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    subscribers: u32,
    /// The dns processes' version poll interval, milliseconds (part of every
    /// push latency).
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    dns_poll_ms: u64,
    /// Worker loops per dns process.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    dns_threads: u32,
    /// (b) Agents (real agent cores in-process, one dns connection each, the
    /// agent's failover policy); the dns serving most is killed (0 skips).
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    agents: u32,
    /// (b) Keys each agent caches; (c) keys each reporting agent reports.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    keys: u32,
    /// (c) Reporter processes (the real lars-reporter, found next to this
    /// executable or through LARS_REPORTER_BIN); one is killed and
    /// restarted (0 skips).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=16))]
    reporters: u32,
    /// (c) Simulated reporting agents, each connected to every reporter.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    report_agents: u32,
    /// (c) Seconds of report load (one report per key per second).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(10..=3600))]
    seconds: u64,
    /// The store every process shares. Default: a fresh SQLite file in a
    /// temporary directory.
    #[arg(long)]
    store: Option<String>,
    /// Print the full report as JSON too.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct DnsBenchArgs {
    /// An external dns; without it one is started in-process over a temporary
    /// SQLite store holding the demo routes.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Client connections, one thread each.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    conns: u32,
    /// Requests in flight per connection (1 = ping-pong).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    window: u32,
    /// Seconds per measurement (dns, then raw).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: u64,
    /// Worker loops of the in-process dns.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    threads: u32,
    /// Module id asked for.
    #[arg(long, default_value_t = 1)]
    modid: u32,
    /// Command id asked for.
    #[arg(long, default_value_t = 1)]
    cmdid: u32,
    /// Also measure the in-process dns over its TLS port (mutual TLS,
    /// throwaway certificates), printed next to plain from the same run.
    #[arg(long, conflicts_with = "addr")]
    tls: bool,
    #[command(flatten)]
    external_tls: ExternalTlsArgs,
}

/// TLS to an external service (`--addr` is its TLS port): the files of a
/// client's `[tls]`.
#[derive(Debug, Args)]
struct ExternalTlsArgs {
    /// --addr is the service's TLS port: verify its certificate against this
    /// CA file (PEM) and send the load over TLS.
    #[arg(long, value_name = "FILE", requires = "addr")]
    tls_ca: Option<PathBuf>,
    /// The client certificate (PEM) to present, for a service with
    /// `client_auth = required` (mutual TLS); with --tls-key.
    #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM); with --tls-cert.
    #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_cert"])]
    tls_key: Option<PathBuf>,
    /// The name the service's certificate must carry (a DNS name or an IP);
    /// default: the IP of --addr.
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    tls_server_name: Option<String>,
}

impl ExternalTlsArgs {
    /// The client `[tls]` these flags make, if --tls-ca is given.
    fn files(&self) -> Option<ClientTlsConfig> {
        Some(ClientTlsConfig {
            ca: self.tls_ca.clone()?,
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            server_name: self.tls_server_name.clone(),
        })
    }
}

#[derive(Debug, Args)]
struct ReporterBenchArgs {
    /// An external reporter; without it one is started in-process on an
    /// ephemeral port, writing to `--store`.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// The store the reporter writes to (read back to check every count
    /// arrived). Default: a fresh SQLite file in the temporary directory.
    #[arg(long, env = "LARS_STORE_URL")]
    store: Option<String>,
    /// Connections (agents), one thread each.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    conns: u32,
    /// Keys per connection.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    keys: u32,
    /// Host results per report.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    hosts: u32,
    /// Reports per second in total; 0 sends as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: u64,
    /// Writer threads of the in-process reporter.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=64))]
    db_threads: u32,
    /// Then send the same load over the in-process reporter's TLS port
    /// (mutual TLS, throwaway certificates), printed next to plain.
    #[arg(long, conflicts_with = "addr")]
    tls: bool,
    #[command(flatten)]
    external_tls: ExternalTlsArgs,
    /// Print the full report as JSON too.
    #[arg(long)]
    json: bool,
}

/// Runs one benchmark and prints its result.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    match &args.target {
        BenchTarget::Dns(a) => dns(a),
        BenchTarget::Reporter(a) => reporter(a),
        BenchTarget::Fleet(a) => fleet(a),
    }
}

fn fleet(a: &FleetBenchArgs) -> anyhow::Result<()> {
    let opts = lars_bench::fleet::FleetOptions {
        dns: a.dns as usize,
        subscribers: a.subscribers as usize,
        dns_poll: Duration::from_millis(a.dns_poll_ms),
        dns_threads: a.dns_threads as usize,
        agents: a.agents as usize,
        agent_keys: a.keys,
        reporters: a.reporters as usize,
        report_agents: a.report_agents as usize,
        report_keys: a.keys,
        report_duration: Duration::from_secs(a.seconds),
        store: a.store.clone(),
        ..lars_bench::fleet::FleetOptions::default()
    };
    let report = lars_bench::fleet::run(&opts, &mut |line| eprintln!("{line}"))
        .context("fleet benchmark")?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    println!("{report}");
    Ok(())
}

fn dns(a: &DnsBenchArgs) -> anyhow::Result<()> {
    let report = lars_bench::dns::run(lars_bench::dns::BenchOptions {
        conns: a.conns as usize,
        window: a.window as usize,
        duration: Duration::from_secs(a.duration),
        key: ModKey::new(a.modid, a.cmdid),
        dns: a.addr,
        dns_tls: a.external_tls.files(),
        threads: a.threads as usize,
        tls: a.tls,
    })
    .context("dns benchmark")?;
    println!("{report}");
    Ok(())
}

fn reporter(a: &ReporterBenchArgs) -> anyhow::Result<()> {
    let store_url = match &a.store {
        Some(url) => url.clone(),
        None => {
            let path =
                std::env::temp_dir().join(format!("lars-bench-reporter-{}.db", std::process::id()));
            format!("sqlite://{}", path.display())
        }
    };
    let mut in_process = None;
    let bench_tls = match a.tls {
        true => Some(lars_bench::dns::BenchTls::new()?),
        false => None,
    };
    let mut tls = None;
    let addr = match a.addr {
        Some(addr) => addr,
        None => {
            let mut cfg = ReporterConfig::default();
            cfg.reactor.addr = std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0);
            cfg.reactor.thread_num = 1;
            // Every load connection (up to 1024) comes from 127.0.0.1.
            cfg.reactor.max_conn_per_peer = 0;
            // clap's range keeps it in 1..=64.
            cfg.db_thread_cnt = std::num::NonZeroUsize::new(a.db_threads as usize)
                .unwrap_or(std::num::NonZeroUsize::MIN);
            cfg.store_url = store_url.clone();
            if let Some(t) = &bench_tls {
                let port = lars_bench::dns::free_port()?;
                cfg.reactor.tls = Some(t.listener(port));
                tls = Some(lars_bench::reporter::TlsTarget {
                    addr: SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)),
                    files: t.client_files(),
                });
            }
            let store = lars_store::open(&store_url)
                .with_context(|| format!("cannot open the store {}", super::redact(&store_url)))?;
            let r =
                lars_reporter::Reporter::start(cfg, store).context("cannot start the reporter")?;
            let addr = r.local_addr();
            in_process = Some(r);
            addr
        }
    };
    let addr_tls = a.external_tls.files();
    let over = match addr_tls {
        Some(_) => " over TLS",
        None => "",
    };
    println!(
        "sending to the reporter at {addr}{over} for {} s ({} conns x {} keys x {} hosts), store {}",
        a.duration,
        a.conns,
        a.keys,
        a.hosts,
        super::redact(&store_url)
    );
    let result = lars_bench::reporter::run(&lars_bench::reporter::BenchOptions {
        addr,
        addr_tls,
        store_url: store_url.clone(),
        conns: a.conns as usize,
        keys: a.keys,
        hosts: a.hosts,
        rate: a.rate,
        duration: Duration::from_secs(a.duration),
        tls,
        ..lars_bench::reporter::BenchOptions::default()
    });
    if let Some(mut r) = in_process {
        r.stop();
    }
    let report = result.context("reporter benchmark")?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    print_reporter(if report.over_tls { "tls" } else { "plain" }, &report);
    if let Some(t) = &report.tls {
        print_reporter("tls", t);
        let ratio = t.sent_per_sec / report.sent_per_sec.max(1e-9);
        println!("ratio tls/plain (reports/s sent): {ratio:.3}");
    }
    let complete = report.complete && report.tls.as_ref().is_none_or(|t| t.complete);
    if !complete {
        anyhow::bail!("not every count reached the store");
    }
    println!("every count arrived");
    if a.store.is_none() {
        if let Some(path) = store_url.strip_prefix("sqlite://") {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{path}{suffix}"));
            }
        }
    }
    Ok(())
}

/// One reporter measurement's lines, headed `what` (plain or tls).
fn print_reporter(what: &str, report: &lars_bench::reporter::BenchReport) {
    println!("{what}:");
    println!(
        "sent {} reports ({} host results) in {:.1} s = {:.0} reports/s",
        report.reports, report.results, report.send_secs, report.sent_per_sec
    );
    println!(
        "persisted after {:.1} s = {:.0} reports/s ingested; calls in history {}/{} ok, {}/{} failed; status rows {}/{}",
        report.persisted_secs,
        report.ingested_per_sec,
        report.succ_persisted,
        report.succ_sent,
        report.err_persisted,
        report.err_sent,
        report.status_rows_ok,
        report.status_rows_expected
    );
    if let (Some(min), Some(max)) = (report.rss_kib.iter().min(), report.rss_kib.iter().max()) {
        println!("RSS while sending: {min}..{max} KiB");
    }
}
