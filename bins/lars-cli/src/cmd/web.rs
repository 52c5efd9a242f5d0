//! `lars web` (serve the console until Ctrl-C), `lars web add-user NAME` and
//! `lars web set-password NAME`.

use std::io::{BufRead, IsTerminal as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::StoreArgs;

/// `lars web [--addr A] [add-user NAME | set-password NAME]`.
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
    /// A host name the console answers to besides IP addresses and
    /// localhost (`NAME` on any port, `NAME:PORT` on that port only);
    /// repeat for more. Requests naming any other host get 421 (DNS
    /// rebinding protection).
    #[arg(long = "allowed-host", value_name = "NAME")]
    pub allowed_hosts: Vec<String>,
    /// Password checks (argon2, ~19 MiB each) the console runs at once;
    /// logins beyond them wait up to a second, then get 503 busy.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub max_password_checks: u16,
    /// Serve HTTPS with this certificate chain (PEM; with --tls-key), e.g.
    /// the dns' `[tls] cert`: the `Secure` session cookie then works under
    /// any host name. SIGHUP reloads both files. Plain http (the default)
    /// is meant for localhost.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

impl ServeArgs {
    /// The console's configuration.
    pub fn config(&self) -> lars_web::WebConfig {
        lars_web::WebConfig {
            addr: self.addr,
            secure_cookies: !self.insecure_cookies,
            allowed_hosts: self.allowed_hosts.clone(),
            max_password_checks: usize::from(self.max_password_checks),
            ..lars_web::WebConfig::default()
        }
    }

    /// The certificate and key for HTTPS, when both are given.
    pub fn tls(&self) -> Option<lars_web::WebTls> {
        Some(lars_web::WebTls {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
        })
    }

    /// `https` with --tls-cert/--tls-key, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls().is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Starts the console (HTTPS with --tls-cert/--tls-key).
    pub fn serve(&self, store: lars_store::Store) -> anyhow::Result<lars_web::WebHandle> {
        let web = match self.tls() {
            None => lars_web::serve(self.config(), store),
            Some(tls) => lars_web::serve_https(self.config(), store, &tls),
        };
        // WebError::Bind names the address.
        web.context("cannot start the console")
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
    /// Set (or reset) a console user's password, creating the user when it
    /// does not exist: the way back into the console. The password is read
    /// as with add-user, or only from the first line of stdin with
    /// `--password-stdin`. Sessions the user has on a running console stay
    /// valid until they expire or the console restarts.
    SetPassword {
        /// The user name.
        name: String,
        /// Read the password from the first line of stdin (no prompt, no
        /// environment variable).
        #[arg(long)]
        password_stdin: bool,
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
        Some(WebAction::SetPassword {
            name,
            password_stdin,
        }) => {
            let password = if *password_stdin {
                first_line(&mut std::io::stdin().lock())?
            } else {
                read_password()?
            };
            println!("{}", set_password(&store, name, &password)?);
            Ok(())
        }
        None => {
            let stop = super::stop_flag()?;
            let hup = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))
                .context("cannot install the SIGHUP handler")?;
            let web = args.serve.serve(store)?;
            let scheme = args.serve.scheme();
            println!("console on {scheme}://{}/ (Ctrl-C stops)", web.local_addr());
            while !stop.load(Ordering::Relaxed) {
                if hup.swap(false, Ordering::Relaxed) {
                    // New handshakes use the new files; a bad file keeps
                    // the old ones (logged).
                    let r = lars_net::reload_tls();
                    println!(
                        "SIGHUP: {} TLS configuration(s) reloaded, {} failed",
                        r.reloaded, r.failed
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            web.stop();
            Ok(())
        }
    }
}

/// Sets `name`'s password; the line to print.
fn set_password(store: &lars_store::Store, name: &str, password: &str) -> anyhow::Result<String> {
    let done = lars_web::set_password(store, name, password)
        .with_context(|| format!("cannot set the password of {name}"))?;
    Ok(match done {
        lars_web::PasswordSet::Changed => format!("password of {name} changed"),
        lars_web::PasswordSet::Created => format!("user {name} created"),
    })
}

fn read_password() -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("LARS_WEB_PASSWORD") {
        return Ok(p);
    }
    if std::io::stdin().is_terminal() {
        return rpassword::prompt_password("password: ").context("cannot read the password");
    }
    first_line(&mut std::io::stdin().lock())
}

/// The first line of `input` without its line end; an error when empty.
fn first_line(input: &mut dyn BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let p = line.trim_end_matches(['\r', '\n']).to_owned();
    if p.is_empty() {
        anyhow::bail!("no password given (set LARS_WEB_PASSWORD or pipe it on stdin)");
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lars_store::UserStore as _;

    #[test]
    fn set_password_changes_an_existing_user_and_creates_a_missing_one() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let url = format!("sqlite://{}/lars.db", dir.path().display());
        let store = lars_store::open(&url).unwrap_or_else(|e| panic!("{e}"));
        lars_web::add_user(&store, "admin", "the first password").unwrap_or_else(|e| panic!("{e}"));
        let before = store
            .user_by_name("admin")
            .ok()
            .flatten()
            .map(|u| u.password_hash);

        let line = first_line(&mut "a second password\r\nignored\n".as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(line, "a second password");
        let said = set_password(&store, "admin", &line).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(said, "password of admin changed");
        let after = store
            .user_by_name("admin")
            .ok()
            .flatten()
            .map(|u| u.password_hash);
        assert!(after.is_some() && after != before);

        let said =
            set_password(&store, "ops", "ops password here").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(said, "user ops created");
        let err = set_password(&store, "admin", "short")
            .map(|_| ())
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("at least 8 characters"),
            "{err:#}"
        );
        assert!(first_line(&mut "\n".as_bytes()).is_err());
    }
}
