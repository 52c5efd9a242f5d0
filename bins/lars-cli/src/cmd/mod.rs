//! One module per group of subcommands.

pub mod agent;
pub mod bench;
pub mod db;
pub mod route;
pub mod sim;
pub mod up;
pub mod web;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use signal_hook::consts::{SIGINT, SIGTERM};

/// Which store a subcommand opens.
#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    /// The store URL: `sqlite://path` (embedded, the default) or
    /// `mysql://user:pass@host:port/db` (an original Lars database works).
    #[arg(long = "store", global = true, env = "LARS_STORE_URL", default_value = lars_store::DEFAULT_URL)]
    pub url: String,
}

impl StoreArgs {
    /// Opens the store (creating the schema when missing).
    pub fn open(&self) -> anyhow::Result<lars_store::Store> {
        lars_store::open(&self.url)
            .with_context(|| format!("cannot open the store {}", redact(&self.url)))
    }
}

pub use lars_store::redact;

/// A flag raised by SIGINT or SIGTERM.
pub fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install the signal handlers")?;
    }
    Ok(stop)
}

/// Sleeps until `stop` is raised.
pub fn wait_for(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("mysql://root:secret@127.0.0.1:3306/lars"),
            "mysql://root:***@127.0.0.1:3306/lars"
        );
        assert_eq!(
            redact("mysql://root@127.0.0.1/lars"),
            "mysql://root@127.0.0.1/lars"
        );
        assert_eq!(redact("sqlite://./lars.db"), "sqlite://./lars.db");
    }
}
