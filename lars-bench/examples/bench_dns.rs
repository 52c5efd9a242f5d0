//! The dns load tool: replies per second of the dns and, in the same run, of
//! a raw-socket reference answering the same bytes, and their ratio.
//!
//! ```text
//! cargo run --release -p lars-bench --example bench_dns -- --conns 1 --window 64 --duration 5
//! ```
//!
//! `lars bench dns` runs the same measurement and prints the same report.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use lars_bench::dns::{self, BenchOptions};
use lars_core::ModKey;

/// Load-test the lars dns against a raw-socket reference.
#[derive(Debug, Parser)]
struct Args {
    /// Client connections.
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// Requests in flight per connection (1 = ping-pong).
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Measure a running dns instead of an in-process one over SQLite.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Worker loops of the in-process dns.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// The key asked for, `modid/cmdid` (the demo routes have 1/1..1/3).
    #[arg(long, default_value = "1/1")]
    key: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (m, c) = args
        .key
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("--key must be modid/cmdid"))?;
    let report = dns::run(BenchOptions {
        conns: args.conns,
        window: args.window,
        duration: Duration::try_from_secs_f64(args.duration)?,
        key: ModKey::new(m.parse()?, c.parse()?),
        dns: args.addr,
        dns_tls: None,
        threads: args.threads,
        tls: false,
    })?;
    println!("{report}");
    Ok(())
}
