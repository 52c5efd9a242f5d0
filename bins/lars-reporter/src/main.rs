//! `lars-reporter [-c lars_reporter.conf]`: the reporter service.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use lars_core::config::load_with;
use lars_reporter::Reporter;
use lars_reporter::ReporterConfig;

/// Receives the agents' call reports and writes them to the store in batches.
#[derive(Debug, Parser)]
#[command(name = "lars-reporter", version)]
struct Args {
    /// The configuration file (the original lars_reporter.conf loads
    /// unchanged). Without it every key takes its default.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Fail on keys or sections of the config file that nothing reads
    /// (a typo such as `prot = 1234`) instead of warning about them.
    #[arg(long)]
    strict: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lars-reporter: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => load_with(path, args.strict, ReporterConfig::from_ini, |u| {
            tracing::warn!("{u}")
        })?,
        None => {
            tracing::info!("no config file given (-c): using the defaults");
            ReporterConfig::default()
        }
    };
    let store = lars_store::open(&config.store_url).with_context(|| {
        format!(
            "opening the store {}",
            lars_store::redact(&config.store_url)
        )
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing signal handler")?;
    }
    // SIGHUP: reload the [tls] certificate, key and CA (new handshakes use
    // them; open connections keep theirs; a bad file keeps the old ones).
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))
        .context("installing signal handler")?;
    let mut reporter = Reporter::start(config, store).context("starting the reporter")?;
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
    tracing::info!("stopping: flushing everything to the store");
    reporter.stop();
    let s = reporter.stats();
    tracing::info!(
        requests = s.requests,
        history_rows = s.history_rows_written,
        status_rows = s.status_rows_written,
        pending = s.pending_rows,
        "stopped"
    );
    Ok(if s.pending_rows == 0 && s.rows_rejected == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
