//! `lars-agent [-c lars_lb_agent.conf]`: the lars load-balance agent.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use lars_agent::Agent;
use lars_agent::AgentConfig;
use lars_core::config::load_with;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// The lars load-balance agent: answers applications on UDP, pulls routes
/// from the dns, sends call statistics to the reporter.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The agent configuration (the original lars_lb_agent.conf loads
    /// unchanged); defaults apply when absent.
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
            eprintln!("lars-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(p) => load_with(p, args.strict, AgentConfig::from_ini, |u| {
            tracing::warn!("{u}")
        })?,
        None => AgentConfig::default(),
    };
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGHUP]).context("installing signal handlers")?;
    let mut agent = Agent::start(config).context("starting the agent")?;
    // Blocks without waking up until a signal arrives (an idle agent sleeps).
    // SIGHUP reloads the [tls] CA and client certificate (the next
    // handshake uses them); SIGINT and SIGTERM stop.
    let mut signal = None;
    for sig in signals.forever() {
        if sig == SIGHUP {
            let r = lars_net::reload_tls();
            tracing::info!(
                reloaded = r.reloaded,
                failed = r.failed,
                "SIGHUP: TLS files reloaded"
            );
            continue;
        }
        signal = Some(sig);
        break;
    }
    tracing::info!(?signal, "signal received; stopping");
    agent.stop();
    Ok(ExitCode::SUCCESS)
}
