//! The reporter load tool: `cargo run --release -p lars-bench --example
//! bench_reporter -- [--in-process] [--addr A] [--store URL] [--conns N]
//! [--keys N] [--hosts N] [--rate R] [--duration S]`.
//!
//! With `--in-process` a reporter is started in this process on an ephemeral
//! port, writing to `--store` (its RSS is then the one sampled).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use clap::Parser;
use lars_bench::reporter::{self, BenchOptions};
use lars_reporter::ReporterConfig;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long)]
    in_process: bool,
    #[arg(long, default_value = "127.0.0.1:7779")]
    addr: std::net::SocketAddr,
    #[arg(long, default_value = "sqlite://./lars_bench.db")]
    store: String,
    #[arg(long, default_value_t = 4)]
    conns: usize,
    #[arg(long, default_value_t = 100)]
    keys: u32,
    #[arg(long, default_value_t = 3)]
    hosts: u32,
    #[arg(long, default_value_t = 0)]
    rate: u64,
    #[arg(long, default_value_t = 10)]
    duration: u64,
    #[arg(long, default_value = "3")]
    db_threads: std::num::NonZeroUsize,
    #[arg(long)]
    pid: Option<u32>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .init();
    let a = Args::parse();
    let mut in_process = None;
    let mut addr = a.addr;
    if a.in_process {
        let mut cfg = ReporterConfig::default();
        cfg.reactor.addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
        cfg.reactor.thread_num = 1;
        cfg.db_thread_cnt = a.db_threads;
        let store = lars_store::open(&a.store)?;
        let r = lars_reporter::Reporter::start(cfg, store)?;
        addr = r.local_addr();
        in_process = Some(r);
    }
    let rss_start = reporter::rss_kib(a.pid);
    let report = reporter::run(&BenchOptions {
        addr,
        store_url: a.store.clone(),
        conns: a.conns,
        keys: a.keys,
        hosts: a.hosts,
        rate: a.rate,
        duration: Duration::from_secs(a.duration),
        rss_pid: a.pid,
        ..BenchOptions::default()
    })?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    println!(
        "sent {} reports ({} results) in {:.1}s = {:.0} reports/s; persisted after {:.1}s = {:.0} reports/s ingested; every count arrived: {}",
        report.reports,
        report.results,
        report.send_secs,
        report.sent_per_sec,
        report.persisted_secs,
        report.ingested_per_sec,
        report.complete
    );
    println!(
        "RSS KiB: start {:?}, min {:?}, max {:?}, end {:?}",
        rss_start,
        report.rss_kib.iter().min(),
        report.rss_kib.iter().max(),
        report.rss_kib.last()
    );
    if let Some(mut r) = in_process {
        r.stop();
        let s = r.stats();
        println!(
            "reporter: requests {} flushes {} failures {} history rows {} status rows {} last flush {} us",
            s.requests,
            s.flushes,
            s.flush_failures,
            s.history_rows_written,
            s.status_rows_written,
            s.last_flush_duration_us
        );
    }
    Ok(())
}
