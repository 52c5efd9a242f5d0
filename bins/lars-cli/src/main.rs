//! `lars`: the operator's command line. Glue only: parse arguments, build typed
//! configuration, call the library crates, print.
//!
//! Each group of subcommands lives in its own module under `cmd/` and adds its
//! variants to [`Command`]; [`run`] dispatches.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

use cmd::agent::AgentOpts;

/// lars: load balance and remote service schedule. Talk to the local agent as
/// an application would, load-test the services, edit routes, run everything.
#[derive(Debug, Parser)]
#[command(name = "lars", version, propagate_version = true)]
struct Cli {
    /// Agent options given before the subcommand; they apply to get-host,
    /// get-route, report, simulator, qps and up.
    #[command(flatten)]
    agent: AgentOpts,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ask the agent for one host of a service.
    GetHost {
        #[command(flatten)]
        agent: AgentOpts,
        #[command(flatten)]
        args: cmd::agent::KeyArgs,
    },
    /// Ask the agent for every host of a service.
    GetRoute {
        #[command(flatten)]
        agent: AgentOpts,
        #[command(flatten)]
        args: cmd::agent::KeyArgs,
    },
    /// Report the outcome of one call to the agent.
    Report {
        #[command(flatten)]
        agent: AgentOpts,
        #[command(flatten)]
        args: cmd::agent::ReportArgs,
    },
    /// Call a service COUNT times with an error rate; tally hosts and overload.
    Simulator {
        #[command(flatten)]
        agent: AgentOpts,
        #[command(flatten)]
        args: cmd::agent::SimulatorArgs,
    },
    /// Load-test the agent (get_host + report per loop) against a raw UDP reference.
    Qps {
        #[command(flatten)]
        agent: AgentOpts,
        #[command(flatten)]
        args: cmd::agent::QpsArgs,
    },
    /// Edit or list the route table in the store.
    Route(cmd::route::RouteArgs),
    /// Prepare a store: create the schema, write the demo routes.
    Db(cmd::db::DbArgs),
    /// Load-test the dns or the reporter.
    Bench(cmd::bench::BenchArgs),
    /// Serve the web console, or manage console users.
    Web(cmd::web::WebArgs),
    /// Run dns, reporter, agent and console in one process until Ctrl-C.
    Up {
        #[command(flatten)]
        agent: AgentOpts,
        #[command(flatten)]
        args: cmd::up::UpArgs,
    },
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
    let before = &cli.agent;
    let no_agent_options = |command: &str| -> anyhow::Result<()> {
        let given = before.given();
        if given.is_empty() {
            Ok(())
        } else {
            anyhow::bail!(
                "{} {} not apply to `lars {command}` (only to get-host, get-route, report, simulator, qps and up)",
                given.join(", "),
                if given.len() == 1 { "does" } else { "do" }
            )
        }
    };
    match cli.command {
        Command::GetHost { agent, args } => cmd::agent::get_host(&agent.resolve(before), &args),
        Command::GetRoute { agent, args } => cmd::agent::get_route(&agent.resolve(before), &args),
        Command::Report { agent, args } => cmd::agent::report(&agent.resolve(before), &args),
        Command::Simulator { agent, args } => cmd::agent::simulator(&agent.resolve(before), &args),
        Command::Qps { agent, args } => cmd::agent::qps(&agent.resolve(before), &args),
        Command::Up { agent, args } => {
            cmd::up::run(&args, &agent.resolve(before)).map(|()| ExitCode::SUCCESS)
        }
        Command::Route(a) => {
            no_agent_options("route")?;
            cmd::route::run(&a).map(|()| ExitCode::SUCCESS)
        }
        Command::Db(a) => {
            no_agent_options("db")?;
            cmd::db::run(&a).map(|()| ExitCode::SUCCESS)
        }
        Command::Bench(a) => {
            no_agent_options("bench")?;
            cmd::bench::run(&a).map(|()| ExitCode::SUCCESS)
        }
        Command::Web(a) => {
            no_agent_options("web")?;
            cmd::web::run(&a).map(|()| ExitCode::SUCCESS)
        }
        Command::Sim(a) => {
            no_agent_options("sim")?;
            cmd::sim::run(&a)
        }
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
        let Command::GetHost { agent, .. } = &cli.command else {
            panic!("get-host");
        };
        let c = agent.resolve(&cli.agent).config().unwrap();
        assert_eq!(c.agent_addr(1, 2).to_string(), "10.0.0.1:9000");
        assert_eq!(c.timeout().as_millis(), 20);

        // Before the subcommand too; after it wins.
        let cli = Cli::try_parse_from([
            "lars",
            "--base-port",
            "7000",
            "--timeout-ms",
            "30",
            "qps",
            "2",
            "--base-port",
            "9000",
        ])
        .unwrap();
        let Command::Qps { agent, .. } = &cli.command else {
            panic!("qps");
        };
        let c = agent.resolve(&cli.agent).config().unwrap();
        assert_eq!(c.agent_addr(1, 2).to_string(), "127.0.0.1:9000");
        assert_eq!(c.timeout().as_millis(), 30);
    }

    #[test]
    fn agent_options_belong_to_the_agent_commands_only() {
        for sub in ["db", "web", "bench", "route", "sim"] {
            let help = Cli::command()
                .find_subcommand_mut(sub)
                .unwrap_or_else(|| panic!("{sub}"))
                .render_long_help()
                .to_string();
            assert!(!help.contains("--base-port"), "{sub}: {help}");
            assert!(!help.contains("--agent-ip"), "{sub}: {help}");
        }
        for sub in ["get-host", "get-route", "report", "simulator", "qps", "up"] {
            let help = Cli::command()
                .find_subcommand_mut(sub)
                .unwrap_or_else(|| panic!("{sub}"))
                .render_long_help()
                .to_string();
            assert!(help.contains("--base-port"), "{sub}: {help}");
        }
        assert!(Cli::try_parse_from(["lars", "db", "init", "--base-port", "1"]).is_err());
        let cli = Cli::try_parse_from(["lars", "--base-port", "1", "db", "init"]).unwrap();
        let err = run(cli).unwrap_err().to_string();
        assert!(
            err.contains("--base-port does not apply to `lars db`"),
            "{err}"
        );
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
                Ok(cli) => cli.agent.resolve(&AgentOpts::default()).config().is_err(),
            };
            assert!(bad, "{args:?} should be rejected");
        }
    }
}
