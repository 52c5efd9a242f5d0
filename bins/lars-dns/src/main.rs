//! `lars-dns [-c lars_dns.conf]`: the lars dns service. Glue only: parse the
//! arguments, load the config, open the store, start [`lars_dns::Dns`], wait
//! for SIGINT/SIGTERM, stop.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use lars_core::config::load_with;
use lars_dns::DnsConfig;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// The lars dns: answers agents' route lookups and pushes route changes.
#[derive(Debug, Parser)]
#[command(name = "lars-dns", version)]
struct Args {
    /// The config file (the original `lars_dns.conf` loads unchanged). Without
    /// it every key takes its default.
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,

    /// Fail on keys or sections of the config file that nothing reads
    /// (a typo such as `prot = 1234`) instead of warning about them.
    #[arg(long)]
    strict: bool,
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lars-dns: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => load_with(path, args.strict, DnsConfig::from_ini, |u| {
            tracing::warn!("{u}")
        })?,
        None => {
            tracing::info!("no config file given (-c): using the defaults");
            DnsConfig::default()
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install the signal handlers")?;
    }
    // SIGHUP: reload the [tls] certificate, key and CA (new handshakes use
    // them; open connections keep theirs; a bad file keeps the old ones).
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(SIGHUP, Arc::clone(&hup))
        .context("cannot install the signal handlers")?;
    let store = lars_store::open(&config.store_url).context("cannot open the route store")?;
    tracing::info!("store: {store:?}");
    let mut dns = lars_dns::Dns::start(config, store)?;
    if let Some(addr) = dns.http_addr() {
        tracing::info!("status on http://{addr}/status and http://{addr}/metrics");
    }
    while !stop.load(Ordering::Relaxed) {
        if hup.swap(false, Ordering::Relaxed) {
            let r = lars_net::reload_tls();
            tracing::info!(
                reloaded = r.reloaded,
                failed = r.failed,
                "SIGHUP: TLS files reloaded"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::info!("signal received, stopping");
    dns.stop();
    Ok(ExitCode::SUCCESS)
}
