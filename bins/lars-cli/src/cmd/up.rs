//! `lars up [--demo]`: the whole system in one process (dns, reporter, agent
//! and the console) over one store, SQLite by default, with every status
//! page on. Prints where everything listens and runs until Ctrl-C.

use std::fmt::Write as _;
use std::net::{SocketAddr, SocketAddrV4};

use anyhow::Context as _;
use clap::Args;
use lars_agent::AgentConfig;
use lars_core::config::HttpConfig;
use lars_dns::DnsConfig;
use lars_reporter::ReporterConfig;
use lars_store::{RouteAdmin, RouteFilter, Store, UserStore};

use super::agent::AgentArgs;
use super::web::ServeArgs;
use super::{StoreArgs, redact, stop_flag, wait_for};

/// `lars up`. The agent listens where the global `--agent-ip`,
/// `--base-port` and `--ports` say, so `lars get-host` with the same options
/// finds it.
#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Write the demo routes (1/1, 1/2, 1/3) when none of those keys has a
    /// route yet (routes you edited are kept) and, when the console has no
    /// user yet, create `admin` with a random password (printed once).
    #[arg(long)]
    demo: bool,
    /// With --demo: write the demo routes even when the keys have routes,
    /// restoring them as they were first written.
    #[arg(long, requires = "demo")]
    reset_demo: bool,
    /// The dns's TCP address.
    #[arg(long, default_value = "127.0.0.1:7778")]
    dns_addr: SocketAddrV4,
    /// The reporter's TCP address.
    #[arg(long, default_value = "127.0.0.1:7779")]
    reporter_addr: SocketAddrV4,
    /// The dns's HTTP status address.
    #[arg(long, default_value = "127.0.0.1:9778")]
    dns_status: SocketAddr,
    /// The reporter's HTTP status address.
    #[arg(long, default_value = "127.0.0.1:17779")]
    reporter_status: SocketAddr,
    /// The agent's HTTP status address.
    #[arg(long, default_value = "127.0.0.1:8898")]
    agent_status: SocketAddr,
    /// Do not start the web console.
    #[arg(long)]
    no_web: bool,
    #[command(flatten)]
    web: ServeArgs,
}

/// Everything `lars up` started; dropping it stops all (console first, dns
/// last, so nothing talks to a stopped peer for long).
#[derive(Debug)]
pub struct Running {
    web: Option<lars_web::WebHandle>,
    agent: lars_agent::AgentHandle,
    reporter: lars_reporter::ReporterHandle,
    dns: lars_dns::DnsHandle,
    /// What to print: one line per service.
    pub banner: String,
}

impl Running {
    /// Stops every service in order.
    pub fn stop(mut self) {
        if let Some(web) = self.web.take() {
            web.stop();
        }
        self.agent.stop();
        self.reporter.stop();
        self.dns.stop();
    }
}

/// Starts every service as `args` say.
pub fn start(args: &UpArgs, agent: &AgentArgs) -> anyhow::Result<Running> {
    let store = args.store.open()?;
    let mut banner = String::new();
    let _ = writeln!(banner, "lars is up; store {}", redact(&args.store.url));
    if args.demo {
        let _ = writeln!(banner, "  {}", demo_routes(&store, args.reset_demo)?);
    }
    let routes = store
        .list_routes(RouteFilter::default())
        .context("cannot read the routes")?;
    let _ = writeln!(banner, "  {} host(s) in the route table", routes.len());

    let dns_cfg = DnsConfig {
        reactor: lars_core::config::ReactorConfig {
            addr: args.dns_addr,
            ..DnsConfig::default().reactor
        },
        store_url: args.store.url.clone(),
        http: HttpConfig {
            addr: Some(args.dns_status),
        },
        ..DnsConfig::default()
    };
    let dns = lars_dns::Dns::start(dns_cfg, store.clone())
        .with_context(|| format!("cannot start the dns on {}", args.dns_addr))?;
    let dns_addr = v4(dns.local_addr())?;

    let mut rep_cfg = ReporterConfig::default();
    rep_cfg.reactor.addr = args.reporter_addr;
    rep_cfg.store_url = args.store.url.clone();
    rep_cfg.http.addr = Some(args.reporter_status);
    let reporter = lars_reporter::Reporter::start(rep_cfg, store.clone())
        .with_context(|| format!("cannot start the reporter on {}", args.reporter_addr))?;
    let reporter_addr = v4(reporter.local_addr())?;

    let client = agent.config()?;
    let agent_cfg = AgentConfig {
        reporter: reporter_addr,
        dns: dns_addr,
        udp_ip: client.agent_ip(),
        base_port: client.base_port(),
        // ClientConfig checks port_count >= 1 when it is built.
        port_count: std::num::NonZeroU16::new(client.port_count())
            .ok_or_else(|| anyhow::anyhow!("--port-count must be at least 1"))?,
        // Everything restarts together here, so a route snapshot would only
        // leave a stray file behind.
        snapshot_path: None,
        http: HttpConfig {
            addr: Some(args.agent_status),
        },
        ..AgentConfig::default()
    };
    let agent_handle = lars_agent::Agent::start(agent_cfg).context("cannot start the agent")?;

    let status = |a: Option<SocketAddr>| match a {
        Some(a) => format!("status http://{a}/status"),
        None => "no status page".to_owned(),
    };
    let _ = writeln!(
        banner,
        "  dns       tcp {dns_addr:<22} {}",
        status(dns.http_addr())
    );
    let _ = writeln!(
        banner,
        "  reporter  tcp {reporter_addr:<22} {}",
        status(reporter.http_addr())
    );
    let udp = agent_handle.udp_addrs();
    let agent_span = match (udp.first(), udp.last()) {
        (Some(first), Some(last)) => format!("{}:{}-{}", first.ip(), first.port(), last.port()),
        _ => "(no ports)".to_owned(),
    };
    let _ = writeln!(
        banner,
        "  agent     udp {agent_span:<22} {}",
        status(agent_handle.http_addr())
    );

    let web = if args.no_web {
        None
    } else {
        let login = if args.demo { demo_user(&store)? } else { None };
        let web = args.web.serve(store.clone())?;
        let _ = write!(
            banner,
            "  console   {}://{}/",
            args.web.scheme(),
            web.local_addr()
        );
        match login {
            Some((name, password)) => {
                let _ = writeln!(banner, "  (user {name}, password {password})");
            }
            None if args.demo => {
                let _ = writeln!(
                    banner,
                    "  (users exist; lost the password? lars web set-password NAME)"
                );
            }
            None => {
                let _ = writeln!(banner);
            }
        }
        if !args.demo && store.list_users().map(|u| u.is_empty()).unwrap_or(false) {
            let _ = writeln!(
                banner,
                "            no console user yet: lars web add-user NAME"
            );
        }
        Some(web)
    };
    Ok(Running {
        web,
        agent: agent_handle,
        reporter,
        dns,
        banner,
    })
}

/// Runs `lars up` until SIGINT or SIGTERM.
pub fn run(args: &UpArgs, agent: &AgentArgs) -> anyhow::Result<()> {
    let stop = stop_flag()?;
    let running = start(args, agent)?;
    print!("{}", running.banner);
    let first = if args.demo { "1 1" } else { "MODID CMDID" };
    println!("try: lars get-host {first}    (Ctrl-C stops everything)");
    wait_for(&stop);
    println!("stopping");
    running.stop();
    Ok(())
}

fn v4(addr: SocketAddr) -> anyhow::Result<SocketAddrV4> {
    match addr {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(a) => anyhow::bail!("{a} is not an IPv4 address"),
    }
}

/// The demo keys.
const DEMO_KEYS: [(u32, u32); 3] = [(1, 1), (1, 2), (1, 3)];

/// Writes the demo routes when none of the demo keys has a route, or when
/// `reset`; otherwise leaves them as they are. The banner line saying which.
fn demo_routes(store: &Store, reset: bool) -> anyhow::Result<String> {
    let present = store
        .list_routes(RouteFilter {
            modid: Some(1),
            cmdid: None,
        })
        .context("cannot read the demo routes")?
        .iter()
        .any(|r| DEMO_KEYS.contains(&(r.key.modid, r.key.cmdid)));
    if present && !reset {
        return Ok(
            "demo routes 1/1, 1/2, 1/3 already present, left as they are (--reset-demo restores them)"
                .to_owned(),
        );
    }
    let v = store.seed_demo().context("cannot write the demo routes")?;
    let what = if present { "restored" } else { "written" };
    Ok(format!(
        "demo routes 1/1, 1/2, 1/3 {what} (route version {v})"
    ))
}

/// Creates `admin` with a random password when the store has no console user.
fn demo_user(store: &Store) -> anyhow::Result<Option<(String, String)>> {
    let users = store
        .list_users()
        .context("cannot read the console users")?;
    if !users.is_empty() {
        return Ok(None);
    }
    let password = random_password()?;
    lars_web::add_user(store, "admin", &password).context("cannot create the demo user")?;
    Ok(Some(("admin".to_owned(), password)))
}

/// 8 random bytes from the kernel as 16 hex digits: the demo user's password.
fn random_password() -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom")?;
    Ok(bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lars_core::{HostAddr, ModKey};

    #[test]
    fn demo_routes_are_written_once_and_restored_on_request() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let url = format!("sqlite://{}/lars.db", dir.path().display());
        let store = lars_store::open(&url).unwrap_or_else(|e| panic!("{e}"));
        let hosts = |store: &Store| {
            store
                .list_routes(RouteFilter {
                    modid: Some(1),
                    cmdid: Some(1),
                })
                .unwrap_or_else(|e| panic!("{e}"))
                .len()
        };
        let line = demo_routes(&store, false).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            line.starts_with("demo routes 1/1, 1/2, 1/3 written"),
            "{line}"
        );
        assert_eq!(hosts(&store), 3);

        // The operator edits a demo key; a second `lars up --demo` keeps it.
        let mine: HostAddr = "10.9.9.9:80".parse().unwrap_or_else(|e| panic!("{e:?}"));
        store
            .set_hosts(ModKey::new(1, 1), &[mine])
            .unwrap_or_else(|e| panic!("{e}"));
        let line = demo_routes(&store, false).unwrap_or_else(|e| panic!("{e}"));
        assert!(line.contains("already present, left as they are"), "{line}");
        assert!(line.contains("--reset-demo"), "{line}");
        assert_eq!(hosts(&store), 1);

        // --reset-demo puts them back.
        let line = demo_routes(&store, true).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            line.starts_with("demo routes 1/1, 1/2, 1/3 restored"),
            "{line}"
        );
        assert_eq!(hosts(&store), 3);
    }
}
