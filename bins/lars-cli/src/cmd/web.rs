//! `lars web` (serve the console until Ctrl-C) and `lars web add-user NAME`.

use std::io::{BufRead as _, IsTerminal as _};
use std::net::SocketAddr;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::StoreArgs;

/// `lars web [--addr A] [add-user NAME]`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct WebArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(subcommand)]
    action: Option<WebAction>,
}

/// How the console listens.
#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Listen address (loopback by default).
    #[arg(long, visible_alias = "web-addr", default_value = lars_web::DEFAULT_ADDR)]
    pub addr: SocketAddr,
    /// Send the session cookie without the `Secure` flag: only for a console
    /// reached over plain http under a host name other than localhost.
    #[arg(long)]
    pub insecure_cookies: bool,
}

impl ServeArgs {
    /// The console's configuration.
    pub fn config(&self) -> lars_web::WebConfig {
        lars_web::WebConfig {
            addr: self.addr,
            secure_cookies: !self.insecure_cookies,
            ..lars_web::WebConfig::default()
        }
    }
}

#[derive(Debug, Subcommand)]
enum WebAction {
    /// Create a console user. The password is read from `LARS_WEB_PASSWORD`,
    /// else asked for on the terminal, else read as the first line of stdin.
    AddUser {
        /// The user name.
        name: String,
    },
}

/// Runs `lars web`.
pub fn run(args: &WebArgs) -> anyhow::Result<()> {
    let store = args.store.open()?;
    match &args.action {
        Some(WebAction::AddUser { name }) => {
            let password = read_password()?;
            lars_web::add_user(&store, name, &password).context("cannot create the user")?;
            println!("user {name} created");
            Ok(())
        }
        None => {
            let stop = super::stop_flag()?;
            let web =
                lars_web::serve(args.serve.config(), store).context("cannot start the console")?;
            println!("console on http://{}/ (Ctrl-C stops)", web.local_addr());
            super::wait_for(&stop);
            web.stop();
            Ok(())
        }
    }
}

fn read_password() -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("LARS_WEB_PASSWORD") {
        return Ok(p);
    }
    if std::io::stdin().is_terminal() {
        return rpassword::prompt_password("password: ").context("cannot read the password");
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let p = line.trim_end_matches(['\r', '\n']).to_owned();
    if p.is_empty() {
        anyhow::bail!("no password given (set LARS_WEB_PASSWORD or pipe it on stdin)");
    }
    Ok(p)
}
