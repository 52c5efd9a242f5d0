//! The Rust client's conformance driver (issue 14): the checks every lars
//! client runs against a real agent, with the command line all drivers share
//! (see `clients/conformance/run.py`, which starts the agent and reads the
//! results):
//!
//! ```text
//! conformance check --base-port P --ports 3 --timeout-ms 50 --modid M --cmdid C \
//!     --hosts IP:PORT,IP:PORT,IP:PORT --report-host IP:PORT --stall-port S
//! conformance bench --base-port P --ports 3 --timeout-ms 50 --modid M --cmdid C --seconds N
//! ```
//!
//! `check` prints one `CHECK <name> PASS|FAIL <detail>` line per check and
//! exits 0 only if all passed; `bench` prints `BENCH ops_per_sec <n>`.
//! Exit code 2: bad command line.

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use lars_client::{ApiError, ClientConfig, LarsClient, Outcome};

/// The command line, parsed.
#[derive(Debug)]
struct Args {
    mode: Mode,
    base_port: u16,
    ports: u16,
    timeout: Duration,
    modid: u32,
    cmdid: u32,
    hosts: Vec<SocketAddrV4>,
    report_host: Option<SocketAddrV4>,
    stall_port: Option<u16>,
    seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Check,
    Bench,
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("conformance: {e}");
            eprintln!(
                "usage: conformance check --base-port P --ports N --timeout-ms T --modid M --cmdid C \
                 --hosts IP:PORT,... --report-host IP:PORT --stall-port S\n       \
                 conformance bench --base-port P --ports N --timeout-ms T --modid M --cmdid C --seconds N"
            );
            return ExitCode::from(2);
        }
    };
    match args.mode {
        Mode::Check => check(&args),
        Mode::Bench => bench(&args),
    }
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mode = match argv.first().map(String::as_str) {
        Some("check") => Mode::Check,
        Some("bench") => Mode::Bench,
        Some(other) => return Err(format!("unknown mode {other:?} (check or bench)")),
        None => return Err("missing mode (check or bench)".into()),
    };
    let mut opts: HashMap<&str, &str> = HashMap::new();
    let mut rest = argv[1..].iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
        opts.insert(flag.as_str(), value.as_str());
    }
    let need = |name: &str| -> Result<&str, String> {
        opts.get(name)
            .copied()
            .ok_or_else(|| format!("missing {name}"))
    };
    fn num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String> {
        v.parse()
            .map_err(|_| format!("{name}: {v:?} is not a valid number"))
    }
    fn addr(name: &str, v: &str) -> Result<SocketAddrV4, String> {
        v.parse()
            .map_err(|_| format!("{name}: {v:?} is not an IPv4 ip:port"))
    }
    let hosts = match opts.get("--hosts") {
        Some(v) => v
            .split(',')
            .map(|h| addr("--hosts", h.trim()))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let args = Args {
        mode,
        base_port: num("--base-port", need("--base-port")?)?,
        ports: num("--ports", opts.get("--ports").copied().unwrap_or("3"))?,
        timeout: Duration::from_millis(num(
            "--timeout-ms",
            opts.get("--timeout-ms").copied().unwrap_or("50"),
        )?),
        modid: num("--modid", need("--modid")?)?,
        cmdid: num("--cmdid", need("--cmdid")?)?,
        hosts,
        report_host: opts
            .get("--report-host")
            .map(|v| addr("--report-host", v))
            .transpose()?,
        stall_port: opts
            .get("--stall-port")
            .map(|v| num("--stall-port", v))
            .transpose()?,
        seconds: num("--seconds", opts.get("--seconds").copied().unwrap_or("5"))?,
    };
    if mode == Mode::Check {
        if args.hosts.is_empty() {
            return Err("check needs --hosts".into());
        }
        if args.report_host.is_none() || args.stall_port.is_none() {
            return Err("check needs --report-host and --stall-port".into());
        }
    }
    Ok(args)
}

fn client(base_port: u16, ports: u16, timeout: Duration) -> Result<LarsClient, String> {
    let config = ClientConfig::builder()
        .agent_ip(Ipv4Addr::LOCALHOST)
        .base_port(base_port)
        .port_count(ports)
        .timeout(timeout)
        .build()
        .map_err(|e| format!("bad client config: {e}"))?;
    LarsClient::connect(&config).map_err(|e| format!("cannot open the client sockets: {e}"))
}

/// One check's verdict: `Ok(detail)` passes, `Err(detail)` fails.
type Verdict = Result<String, String>;

/// A check that runs on the client of the agent under test.
type Check<'a> = &'a dyn Fn(&LarsClient) -> Verdict;

fn check(args: &Args) -> ExitCode {
    let main = client(args.base_port, args.ports, args.timeout);
    let checks: [(&str, Check<'_>); 4] = [
        ("noexist_then_host", &|c| noexist_then_host(c, args)),
        ("round_robin", &|c| round_robin(c, args)),
        ("report", &|c| report(c, args)),
        ("get_route", &|c| get_route(c, args)),
    ];
    let mut all_passed = true;
    let mut print = |name: &str, verdict: Verdict| match verdict {
        Ok(detail) => println!("CHECK {name} PASS {detail}"),
        Err(detail) => {
            all_passed = false;
            println!("CHECK {name} FAIL {detail}");
        }
    };
    for (name, run) in checks {
        let verdict = match &main {
            Ok(c) => run(c),
            Err(e) => Err(e.clone()),
        };
        print(name, verdict);
    }
    print("timeout", timeout(args));
    print("bad_input", bad_input(args));
    if all_passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn noexist_then_host(c: &LarsClient, args: &Args) -> Verdict {
    let (m, k) = (args.modid, args.cmdid);
    match c.get_host(m, k) {
        Err(ApiError::NoExist) => {}
        Ok(h) => return Err(format!("first get_host answered {h}, expected NOEXIST")),
        Err(e) => return Err(format!("first get_host: {e}, expected NOEXIST")),
    }
    let hosts = c
        .reg_init(m, k)
        .map_err(|e| format!("reg_init after NOEXIST: {e}"))?;
    let host = c
        .get_host(m, k)
        .map_err(|e| format!("get_host after reg_init: {e}"))?;
    if !args.hosts.contains(&host) {
        return Err(format!(
            "get_host answered {host}, not one of the key's hosts"
        ));
    }
    Ok(format!(
        "NOEXIST, then reg_init saw {} hosts, then {host}",
        hosts.len()
    ))
}

fn round_robin(c: &LarsClient, args: &Args) -> Verdict {
    let mut counts: HashMap<SocketAddrV4, u32> = HashMap::new();
    for i in 0..30 {
        let host = c
            .get_host(args.modid, args.cmdid)
            .map_err(|e| format!("get_host #{i}: {e}"))?;
        c.report(
            args.modid,
            args.cmdid,
            host,
            Outcome::Success,
            Some(Duration::from_millis(1)),
        )
        .map_err(|e| format!("report #{i}: {e}"))?;
        *counts.entry(host).or_default() += 1;
    }
    let mut detail: Vec<String> = args
        .hosts
        .iter()
        .map(|h| format!("{h}={}", counts.get(h).copied().unwrap_or(0)))
        .collect();
    detail.sort();
    let detail = detail.join(" ");
    if let Some(stranger) = counts.keys().find(|h| !args.hosts.contains(h)) {
        return Err(format!("{stranger} is not a host of the key ({detail})"));
    }
    if args
        .hosts
        .iter()
        .any(|h| counts.get(h).copied().unwrap_or(0) < 6)
    {
        return Err(format!("a host got fewer than 6 of 30 picks: {detail}"));
    }
    Ok(detail)
}

fn report(c: &LarsClient, args: &Args) -> Verdict {
    let Some(host) = args.report_host else {
        return Err("no --report-host".into());
    };
    let latency = Some(Duration::from_millis(3));
    for outcome in [Outcome::Success; 5]
        .into_iter()
        .chain([Outcome::Failure; 2])
    {
        c.report(args.modid, args.cmdid, host, outcome, latency)
            .map_err(|e| format!("report {outcome:?}: {e}"))?;
    }
    Ok(format!("sent 5 successes and 2 failures for {host}, 3 ms"))
}

fn get_route(c: &LarsClient, args: &Args) -> Verdict {
    let got: BTreeSet<SocketAddrV4> = c
        .get_route(args.modid, args.cmdid)
        .map_err(|e| format!("get_route: {e}"))?
        .into_iter()
        .collect();
    let want: BTreeSet<SocketAddrV4> = args.hosts.iter().copied().collect();
    let show = |s: &BTreeSet<SocketAddrV4>| {
        s.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    if got == want {
        Ok(show(&got))
    } else {
        Err(format!("got {} want {}", show(&got), show(&want)))
    }
}

fn timeout(args: &Args) -> Verdict {
    let Some(stall) = args.stall_port else {
        return Err("no --stall-port".into());
    };
    let c = client(stall, args.ports, args.timeout)?;
    let start = Instant::now();
    let result = c.get_host(args.modid, args.cmdid);
    let took = start.elapsed();
    match result {
        Err(ApiError::Timeout) if took <= args.timeout * 2 => Ok(format!(
            "Timeout after {} ms (timeout {} ms)",
            took.as_millis(),
            args.timeout.as_millis()
        )),
        Err(ApiError::Timeout) => Err(format!(
            "Timeout only after {} ms, over 2x {} ms",
            took.as_millis(),
            args.timeout.as_millis()
        )),
        Ok(h) => Err(format!("a stalled agent answered {h}")),
        Err(e) => Err(format!("expected Timeout, got: {e}")),
    }
}

fn bad_input(args: &Args) -> Verdict {
    // The Rust API takes ids as u32 and hosts as SocketAddrV4: a negative id
    // or a malformed ip cannot reach it; the conversions a caller must do
    // reject them at once, and so does the config builder for bad options.
    let start = Instant::now();
    if let Ok(v) = u32::try_from(-1_i64) {
        return Err(format!("-1 converted to the id {v}"));
    }
    let mut errors = Vec::new();
    for bad_ip in ["300.1.2.3", "10.0.0", ""] {
        match bad_ip.parse::<Ipv4Addr>() {
            Ok(ip) => return Err(format!("{bad_ip:?} parsed as {ip}")),
            Err(e) => errors.push(format!("{bad_ip:?}: {e}")),
        }
    }
    let configs = [
        ClientConfig::builder().base_port(0).build(),
        ClientConfig::builder()
            .base_port(65_534)
            .port_count(3)
            .build(),
        ClientConfig::builder().port_count(0).build(),
        ClientConfig::builder().timeout(Duration::ZERO).build(),
    ];
    for (i, c) in configs.into_iter().enumerate() {
        match c {
            Ok(c) => return Err(format!("bad config #{i} accepted: {c:?}")),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let took = start.elapsed();
    if took >= args.timeout {
        return Err(format!("rejecting bad input took {} ms", took.as_millis()));
    }
    Ok(format!(
        "negative id: unrepresentable in u32; {} rejected at once ({})",
        errors.len(),
        errors.join("; ")
    ))
}

fn bench(args: &Args) -> ExitCode {
    let c = match client(args.base_port, args.ports, args.timeout) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("conformance bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = c.reg_init(args.modid, args.cmdid) {
        eprintln!("conformance bench: reg_init: {e}");
        return ExitCode::FAILURE;
    }
    let seconds = Duration::from_secs(args.seconds.max(1));
    let start = Instant::now();
    let (mut ops, mut errors) = (0u64, 0u64);
    while start.elapsed() < seconds {
        match c.get_host(args.modid, args.cmdid) {
            Ok(host) => {
                if c.report(args.modid, args.cmdid, host, Outcome::Success, None)
                    .is_err()
                {
                    errors += 1;
                }
            }
            Err(_) => errors += 1,
        }
        ops += 1;
    }
    let rate = ops as f64 / start.elapsed().as_secs_f64();
    if errors > 0 {
        eprintln!("conformance bench: {errors} of {ops} operations failed");
    }
    println!("BENCH ops_per_sec {rate:.0}");
    ExitCode::SUCCESS
}
