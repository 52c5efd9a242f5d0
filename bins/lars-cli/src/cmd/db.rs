//! `lars db init|seed-demo`: prepare a store.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use lars_store::RouteRead;

use super::{StoreArgs, redact};

/// `lars db ...`.
#[derive(Debug, Args)]
pub struct DbArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    action: DbAction,
}

#[derive(Debug, Subcommand)]
enum DbAction {
    /// Create the missing tables (the original Lars schema plus ours); an
    /// existing database keeps its data.
    Init,
    /// Insert the demo routes: modid 1, cmdid 1..=3, three hosts each on
    /// 127.0.0.1 (9001-9003, 9011-9013, 9021-9023).
    SeedDemo,
}

/// Runs one db subcommand.
pub fn run(args: &DbArgs) -> anyhow::Result<()> {
    // Opening runs the idempotent schema creation.
    let store = args.store.open()?;
    let url = redact(&args.store.url);
    match args.action {
        DbAction::Init => {
            let v = store.version().context("cannot read the route version")?;
            println!(
                "store {url} ({:?}) is ready; route version {v}",
                store.backend()
            );
        }
        DbAction::SeedDemo => {
            let v = store.seed_demo().context("cannot insert the demo routes")?;
            println!("demo routes 1/1, 1/2, 1/3 written to {url}; route version {v}");
        }
    }
    Ok(())
}
