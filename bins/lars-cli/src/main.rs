//! `lars`: the operator's command line. Glue only: parse arguments, build typed
//! configuration, call the library crates, print.
//!
//! Each group of subcommands lives in its own module under `cmd/` and adds its
//! variants to [`Command`]; [`run`] dispatches.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// lars: load balance and remote service schedule. Talk to the local agent as
/// an application would, load-test the services, edit routes, run everything.
#[derive(Debug, Parser)]
#[command(name = "lars", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    agent: cmd::agent::AgentArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ask the agent for one host of a service.
    GetHost(cmd::agent::KeyArgs),
    /// Ask the agent for every host of a service.
    GetRoute(cmd::agent::KeyArgs),
    /// Report the outcome of one call to the agent.
    Report(cmd::agent::ReportArgs),
    /// Call a service COUNT times with an error rate; tally hosts and overload.
    Simulator(cmd::agent::SimulatorArgs),
    /// Load-test the agent (get_host + report per loop) against a raw UDP reference.
    Qps(cmd::agent::QpsArgs),
    /// Edit or list the route table in the store.
    Route(cmd::route::RouteArgs),
    /// Prepare a store: create the schema, write the demo routes.
    Db(cmd::db::DbArgs),
    /// Load-test the dns or the reporter.
    Bench(cmd::bench::BenchArgs),
    /// Serve the web console, or add a console user.
    Web(cmd::web::WebArgs),
    /// Run dns, reporter, agent and console in one process until Ctrl-C.
    Up(cmd::up::UpArgs),
    /// What-if simulator: the balancers against modelled backends, in virtual time.
    Sim(cmd::sim::SimArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lars: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let agent = &cli.agent;
    match cli.command {
        Command::GetHost(a) => cmd::agent::get_host(agent, &a),
        Command::GetRoute(a) => cmd::agent::get_route(agent, &a),
        Command::Report(a) => cmd::agent::report(agent, &a),
        Command::Simulator(a) => cmd::agent::simulator(agent, &a),
        Command::Qps(a) => cmd::agent::qps(agent, &a),
        Command::Route(a) => cmd::route::run(&a).map(|()| ExitCode::SUCCESS),
        Command::Db(a) => cmd::db::run(&a).map(|()| ExitCode::SUCCESS),
        Command::Bench(a) => cmd::bench::run(&a).map(|()| ExitCode::SUCCESS),
        Command::Web(a) => cmd::web::run(&a).map(|()| ExitCode::SUCCESS),
        Command::Up(a) => cmd::up::run(&a, agent).map(|()| ExitCode::SUCCESS),
        Command::Sim(a) => cmd::sim::run(&a),
    }
}

/// Logs to stderr, filtered by `LARS_LOG` (e.g. `LARS_LOG=debug`), `warn` by
/// default.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LARS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_agent_options_go_anywhere() {
        let cli = Cli::try_parse_from([
            "lars",
            "get-host",
            "1",
            "2",
            "--base-port",
            "9000",
            "--ports",
            "1",
            "--timeout-ms",
            "20",
            "--agent-ip",
            "10.0.0.1",
        ])
        .unwrap();
        let c = cli.agent.config().unwrap();
        assert_eq!(c.agent_addr(1, 2).to_string(), "10.0.0.1:9000");
        assert_eq!(c.timeout().as_millis(), 20);
    }

    #[test]
    fn bad_arguments_are_rejected() {
        for args in [
            &["lars", "report", "1", "1", "1.2.3.4", "80", "2"][..],
            &["lars", "simulator", "1", "1", "11"],
            &["lars", "qps", "0"],
            &["lars", "get-host", "1"],
            &["lars", "--ports", "0", "get-host", "1", "1"],
        ] {
            let parsed = Cli::try_parse_from(args);
            let bad = match parsed {
                Err(_) => true,
                Ok(cli) => cli.agent.config().is_err(),
            };
            assert!(bad, "{args:?} should be rejected");
        }
    }
}
