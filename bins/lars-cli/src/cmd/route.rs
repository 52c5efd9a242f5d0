//! `lars route add|del|set|list`: edit the route table in the store. The dns
//! notices the new `RouteVersion` on its next poll and pushes the changed keys
//! to the agents that subscribed.

use std::fmt::Write as _;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use lars_core::{HostAddr, ModKey};
use lars_store::{RouteAdmin, RouteFilter, RouteRead, RouteRow, StoreError};

use super::StoreArgs;

/// `lars route ...`.
#[derive(Debug, Args)]
pub struct RouteArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    action: RouteAction,
}

#[derive(Debug, Subcommand)]
enum RouteAction {
    /// List routes (all, one module, or one key) and the route version.
    List {
        /// Only this module id.
        #[arg(long)]
        modid: Option<u32>,
        /// Only this command id.
        #[arg(long)]
        cmdid: Option<u32>,
    },
    /// Add one host to a key.
    Add {
        /// Module id.
        modid: u32,
        /// Command id.
        cmdid: u32,
        /// The host, `a.b.c.d:port`.
        host: HostAddr,
    },
    /// Remove one host from a key, or the whole key when no host is given.
    Del {
        /// Module id.
        modid: u32,
        /// Command id.
        cmdid: u32,
        /// The host, `a.b.c.d:port`; without it every host of the key goes.
        host: Option<HostAddr>,
    },
    /// Replace the hosts of a key (no host deletes the key).
    Set {
        /// Module id.
        modid: u32,
        /// Command id.
        cmdid: u32,
        /// The hosts, `a.b.c.d:port ...`.
        hosts: Vec<HostAddr>,
    },
}

/// Runs one route subcommand, printing its result.
pub fn run(args: &RouteArgs) -> anyhow::Result<()> {
    let store = args.store.open()?;
    match &args.action {
        RouteAction::List { modid, cmdid } => {
            let rows = store
                .list_routes(RouteFilter {
                    modid: *modid,
                    cmdid: *cmdid,
                })
                .context("cannot list the routes")?;
            let version = store.version().context("cannot read the route version")?;
            print!("{}", render_list(&rows, version));
        }
        RouteAction::Add { modid, cmdid, host } => {
            let key = ModKey::new(*modid, *cmdid);
            let v = store
                .add_host(key, *host)
                .map_err(|e| explain(e, key, Some(*host)))?;
            println!("added {host} to {key}; route version {v}");
        }
        RouteAction::Del {
            modid,
            cmdid,
            host: Some(host),
        } => {
            let key = ModKey::new(*modid, *cmdid);
            let v = store
                .remove_host(key, *host)
                .map_err(|e| explain(e, key, Some(*host)))?;
            println!("removed {host} from {key}; route version {v}");
        }
        RouteAction::Del {
            modid,
            cmdid,
            host: None,
        } => {
            let key = ModKey::new(*modid, *cmdid);
            let v = store.delete_key(key).map_err(|e| explain(e, key, None))?;
            println!("deleted every host of {key}; route version {v}");
        }
        RouteAction::Set {
            modid,
            cmdid,
            hosts,
        } => {
            let key = ModKey::new(*modid, *cmdid);
            let v = store
                .set_hosts(key, hosts)
                .map_err(|e| explain(e, key, None))?;
            println!("{key} now has {} host(s); route version {v}", hosts.len());
        }
    }
    Ok(())
}

fn explain(e: StoreError, key: ModKey, host: Option<HostAddr>) -> anyhow::Error {
    let what = match host {
        Some(h) => format!("{key} {h}"),
        None => key.to_string(),
    };
    anyhow::Error::new(e).context(format!("route {what}"))
}

/// The table printed by `lars route list`.
pub fn render_list(rows: &[RouteRow], version: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:>10} {:>10}  host", "modid", "cmdid");
    for r in rows {
        let _ = writeln!(out, "{:>10} {:>10}  {}", r.key.modid, r.key.cmdid, r.host);
    }
    let keys = {
        let mut k: Vec<ModKey> = rows.iter().map(|r| r.key).collect();
        k.dedup();
        k.len()
    };
    let _ = writeln!(
        out,
        "{} host(s) in {keys} key(s); route version {version}",
        rows.len()
    );
    out
}
