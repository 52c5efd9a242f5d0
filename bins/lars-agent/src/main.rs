//! `lars-agent [-c lars_lb_agent.conf]`: the lars load-balance agent.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use lars_agent::Agent;
use lars_core::config::AgentConfig;

/// The lars load-balance agent: answers applications on UDP, pulls routes
/// from the dns, sends call statistics to the reporter.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The agent configuration (the original lars_lb_agent.conf loads
    /// unchanged); defaults apply when absent.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
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
        Some(p) => AgentConfig::load(p)?,
        None => AgentConfig::default(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let mut agent = Agent::start(config).context("starting the agent")?;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::info!("signal received; stopping");
    agent.stop();
    Ok(ExitCode::SUCCESS)
}
