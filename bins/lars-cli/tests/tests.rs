//! The `lars` binary against a fake agent made of a real UDP socket.
#![allow(clippy::unwrap_used)]

mod sim;

use std::net::UdpSocket;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::Duration;

use lars_core::{Frame, HostAddr, MessageId, frame, proto};

/// Answers get_route and get_host with 10.0.0.1:80 (unless `silent`) and
/// records every frame. Dropping it stops and joins its thread.
struct FakeAgent {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    frames: Receiver<Frame>,
}

impl FakeAgent {
    fn start(silent: bool) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, frames) = mpsc::channel();
        let stop2 = Arc::clone(&stop);
        let host = "10.0.0.1:80".parse::<HostAddr>().unwrap().to_proto();
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_535];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let f = frame::decode_datagram(&buf[..n]).unwrap();
                let reply = match MessageId::from_i32(f.msgid) {
                    _ if silent => None,
                    Some(MessageId::GetHostRequest) => {
                        let r: proto::GetHostRequest = f.message().unwrap();
                        let rsp = proto::GetHostResponse {
                            seq: r.seq,
                            modid: r.modid,
                            cmdid: r.cmdid,
                            retcode: 0,
                            host: Some(host),
                        };
                        Some(frame::to_bytes(MessageId::GetHostResponse.into(), &rsp).unwrap())
                    }
                    Some(MessageId::ApiGetRouteRequest) => {
                        let r: proto::GetRouteRequest = f.message().unwrap();
                        let rsp = proto::GetRouteResponse {
                            modid: r.modid,
                            cmdid: r.cmdid,
                            host: vec![host],
                        };
                        Some(frame::to_bytes(MessageId::ApiGetRouteResponse.into(), &rsp).unwrap())
                    }
                    _ => None,
                };
                let _ = tx.send(f);
                if let Some(reply) = reply {
                    let _ = sock.send_to(&reply, from);
                }
            }
        });
        Self {
            port,
            stop,
            thread: Some(thread),
            frames,
        }
    }

    /// Runs `lars` with this fake as its only agent port.
    fn lars(&self, args: &[&str]) -> Output {
        let port = self.port.to_string();
        let mut all = vec!["--base-port", &port, "--ports", "1", "--timeout-ms", "200"];
        all.extend_from_slice(args);
        lars(&all)
    }

    fn reports(&self) -> Vec<proto::ReportRequest> {
        let mut out = Vec::new();
        while let Ok(f) = self.frames.recv_timeout(Duration::from_millis(200)) {
            if f.msgid == i32::from(MessageId::ReportRequest) {
                out.push(f.message().unwrap());
            }
        }
        out
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn lars(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lars"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["get-host", "get-route", "report", "simulator", "qps", "up"] {
        let o = lars(&[sub, "--help"]);
        assert!(o.status.success(), "{sub}");
        assert!(stdout(&o).contains("Usage: lars"), "{sub}");
        assert!(
            stdout(&o).contains("--base-port"),
            "{sub}: global options shown"
        );
    }
    assert!(lars(&["--help"]).status.success());
}

#[test]
fn get_host_and_get_route_print_the_agents_answer() {
    let fake = FakeAgent::start(false);
    let o = fake.lars(&["get-host", "1", "1"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o), "host is 10.0.0.1:80\n");
    let o = fake.lars(&["get-route", "1", "1"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o), "10.0.0.1:80\n");
}

#[test]
fn a_stalled_agent_fails_with_a_timeout_message() {
    let fake = FakeAgent::start(true);
    let o = fake.lars(&["get-host", "1", "1"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no reply from the agent within the timeout"),
        "{err}"
    );
}

#[test]
fn report_sends_outcome_and_timecost() {
    let fake = FakeAgent::start(false);
    let o = fake.lars(&[
        "report",
        "3",
        "4",
        "192.168.1.177",
        "7777",
        "1",
        "--timecost-ms",
        "5",
    ]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        stdout(&o),
        "report sent: modid = 3, cmdid = 4 | 192.168.1.177:7777 failure (UDP, not acknowledged)\n"
    );
    let reports = fake.reports();
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!((r.modid, r.cmdid, r.retcode, r.timecost), (3, 4, 1, 5));
    assert_eq!(
        r.host,
        Some(proto::HostInfo {
            ip: 3_232_235_953u32 as i32,
            port: 7777
        })
    );
}

#[test]
fn report_carries_a_latency_for_successes_and_failures() {
    let fake = FakeAgent::start(false);
    let ip = ["report", "3", "4", "192.168.1.177", "7777"];
    let run = |rest: &[&str]| {
        let mut args = ip.to_vec();
        args.extend_from_slice(rest);
        fake.lars(&args)
    };
    // Positional after the result, the option, a sub-millisecond latency
    // (sent as 1 ms: 0 means unknown), and none.
    for rest in [
        &["0", "12"][..],
        &["1", "250"],
        &["0", "--latency", "7"],
        &["0", "0.3"],
        &["0"],
    ] {
        let o = run(rest);
        assert!(o.status.success(), "{rest:?}: {o:?}");
    }
    let got: Vec<(i32, u32)> = fake
        .reports()
        .iter()
        .map(|r| (r.retcode, r.timecost))
        .collect();
    assert_eq!(got, vec![(0, 12), (1, 250), (0, 7), (0, 1), (0, 0)]);
    // One latency only; not negative.
    assert!(!run(&["0", "5", "--latency", "6"]).status.success());
    assert!(!run(&["0", "--latency", "-3"]).status.success());
}

#[test]
fn simulator_reports_a_latency_with_every_call_and_prints_its_percentiles() {
    let fake = FakeAgent::start(false);
    let base = [
        "simulator",
        "1",
        "1",
        "3",
        "20",
        "--interval-ms",
        "0",
        "--seed",
        "3",
    ];
    let run = |rest: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(rest);
        fake.lars(&args)
    };
    let o = run(&["--latency-ms", "8", "--latency-sigma", "0"]);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    assert!(
        out.contains("latency: lognormal, median 8 ms, sigma 0"),
        "{out}"
    );
    assert!(
        out.contains("latency reported: p50 8 ms, p99 8 ms (20 reports)"),
        "{out}"
    );
    let reports = fake.reports();
    assert_eq!(reports.len(), 20);
    // Failures carry their latency too.
    assert!(reports.iter().any(|r| r.retcode == 1), "{reports:?}");
    assert!(reports.iter().all(|r| r.timecost == 8), "{reports:?}");

    // The default: a 5 ms median, spread out; -v shows each call's latency.
    let o = run(&["-v"]);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    assert!(
        out.contains("latency: lognormal, median 5 ms, sigma 0.5"),
        "{out}"
    );
    assert!(out.contains(" ms\n"), "{out}");
    assert!(out.contains("latency reported: p50 "), "{out}");
    assert!(fake.reports().iter().all(|r| r.timecost >= 1));

    // Off: no timecost, like the original.
    let o = run(&["--latency-ms", "0"]);
    assert!(o.status.success(), "{o:?}");
    assert!(
        stdout(&o).contains("latency reported: none"),
        "{}",
        stdout(&o)
    );
    assert!(fake.reports().iter().all(|r| r.timecost == 0));
    assert!(!run(&["--latency-sigma", "-1"]).status.success());
}

#[test]
fn simulator_tallies_calls_per_host() {
    let fake = FakeAgent::start(false);
    let o = fake.lars(&[
        "simulator",
        "1",
        "1",
        "10",
        "12",
        "--interval-ms",
        "0",
        "--seed",
        "7",
    ]);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    assert!(out.contains("10.0.0.1:80: success: 0; error: 12"), "{out}");
    let reports = fake.reports();
    assert_eq!(reports.len(), 12);
    assert!(reports.iter().all(|r| r.retcode == 1));
}

#[test]
fn qps_prints_rates_and_the_reference_ratio() {
    let fake = FakeAgent::start(false);
    let o = fake.lars(&["qps", "1", "--duration", "1"]);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    assert!(out.contains("lars [  1s] qps = "), "{out}");
    assert!(out.contains("raw [  1s] qps = "), "{out}");
    assert!(out.contains("ratio lars/raw = "), "{out}");
    assert!(out.contains("no host 0, errors 0"), "{out}");
    assert_eq!(
        out.matches("lars: 1 threads").count(),
        1,
        "one summary: {out}"
    );
}

#[test]
fn report_without_an_agent_fails() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    // Nothing listens on `port` once the probe socket is dropped.
    let o = lars(&[
        "--base-port",
        &port,
        "--ports",
        "1",
        "--timeout-ms",
        "100",
        "report",
        "1",
        "1",
        "127.0.0.1",
        "9001",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(!stdout(&o).contains("SUCC"), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no agent answered"),
        "{o:?}"
    );
}

#[test]
fn simulator_accepts_a_fractional_error_rate() {
    let fake = FakeAgent::start(false);
    let o = fake.lars(&["simulator", "1", "1", "0.3", "5", "--interval-ms", "0"]);
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("err_rate = 3/10"), "{o:?}");
    let o = fake.lars(&["simulator", "1", "1", "3", "5", "--interval-ms", "0"]);
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("err_rate = 3/10"), "{o:?}");
}

// ---- store, console and `lars up` ------------------------------------------

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        stdout(o),
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(o)
}

fn route_commands_against(store: &str) {
    let s = ["--store", store];
    let with = |args: &[&str]| -> Output {
        let mut all = args.to_vec();
        all.extend_from_slice(&s);
        lars(&all)
    };
    assert!(ok(&with(&["db", "init"])).contains("is ready"));
    // A MySQL database may keep what an interrupted earlier run left.
    let _ = with(&["route", "del", "77", "6"]);
    assert!(ok(&with(&["db", "seed-demo"])).contains("demo routes"));
    let list = ok(&with(&["route", "list", "--modid", "1"]));
    assert!(list.contains("9 host(s) in 3 key(s)"), "{list}");
    assert!(list.contains("127.0.0.1:9023"), "{list}");

    assert!(
        ok(&with(&["route", "add", "77", "6", "10.0.0.9:80"]))
            .contains("added 10.0.0.9:80 to 77/6")
    );
    let again = with(&["route", "add", "77", "6", "10.0.0.9:80"]);
    assert!(!again.status.success(), "adding twice must fail");
    assert!(String::from_utf8_lossy(&again.stderr).contains("77/6"));
    let list = ok(&with(&["route", "list", "--modid", "77"]));
    assert!(
        list.contains("10.0.0.9:80") && list.contains("1 host(s) in 1 key(s)"),
        "{list}"
    );

    ok(&with(&[
        "route",
        "set",
        "77",
        "6",
        "10.0.0.1:1",
        "10.0.0.2:2",
    ]));
    let list = ok(&with(&["route", "list", "--modid", "77", "--cmdid", "6"]));
    assert!(
        list.contains("10.0.0.2:2") && !list.contains("10.0.0.9:80"),
        "{list}"
    );
    ok(&with(&["route", "del", "77", "6", "10.0.0.1:1"]));
    ok(&with(&["route", "del", "77", "6"]));
    let list = ok(&with(&["route", "list", "--modid", "77"]));
    assert!(list.contains("0 host(s) in 0 key(s)"), "{list}");
    let missing = with(&["route", "del", "77", "6"]);
    assert!(
        !missing.status.success(),
        "deleting a missing key must fail"
    );

    // A malformed host never reaches the store.
    assert!(
        !with(&["route", "add", "77", "6", "10.0.0.1"])
            .status
            .success()
    );
    assert!(
        !with(&["route", "add", "77", "6", "10.0.0.1:0"])
            .status
            .success()
    );
}

#[test]
fn route_and_db_commands_edit_a_sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    route_commands_against(&format!("sqlite://{}/lars.db", dir.path().display()));
}

#[test]
fn route_and_db_commands_edit_a_mysql_store() {
    let Some(db) = lars_testkit::MysqlDb::create("lars_cli", "route_and_db_commands") else {
        return;
    };
    route_commands_against(&db.url());
}

#[test]
fn a_bad_store_url_is_a_clear_error() {
    let o = lars(&["route", "list", "--store", "postgres://x"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("cannot open the store"), "{err}");
}

#[test]
fn web_add_user_creates_a_console_user_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}/lars.db", dir.path().display());
    let add = |password: &str| {
        Command::new(env!("CARGO_BIN_EXE_lars"))
            .args(["web", "add-user", "bob", "--store", &store])
            .env("LARS_WEB_PASSWORD", password)
            .output()
            .unwrap()
    };
    assert!(
        !add("short").status.success(),
        "a short password is refused"
    );
    assert!(ok(&add("a long enough password")).contains("user bob created"));
    assert!(
        !add("a long enough password").status.success(),
        "the name is taken"
    );
}

/// Three consecutive free UDP ports on loopback.
fn free_udp_base() -> u16 {
    for _ in 0..100 {
        let first = UdpSocket::bind("127.0.0.1:0").unwrap();
        let base = first.local_addr().unwrap().port();
        if base > 65_000 {
            continue;
        }
        let rest: Vec<_> = (1..3)
            .map(|i| UdpSocket::bind(("127.0.0.1", base + i)))
            .collect();
        if rest.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no three consecutive free UDP ports");
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Kills the child on drop so a failing test leaves no process behind.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn up_runs_every_service_and_stops_on_sigint() {
    use std::io::BufRead as _;

    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}/lars.db", dir.path().display());
    let base = free_udp_base().to_string();
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_lars"))
            .args([
                "up",
                "--demo",
                "--store",
                &store,
                "--base-port",
                &base,
                "--dns-addr",
                "127.0.0.1:0",
                "--reporter-addr",
                "127.0.0.1:0",
                "--dns-status",
                "127.0.0.1:0",
                "--reporter-status",
                "127.0.0.1:0",
                "--agent-status",
                "127.0.0.1:0",
                "--web-addr",
                "127.0.0.1:0",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = child.0.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut banner = Vec::new();
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("lars up prints its banner");
        let done = line.starts_with("try:");
        banner.push(line);
        if done {
            break;
        }
    }
    let banner = banner.join("\n");
    assert!(
        banner.contains("demo routes 1/1, 1/2, 1/3 written"),
        "{banner}"
    );
    assert!(banner.contains("9 host(s) in the route table"), "{banner}");
    assert!(
        banner.contains(&format!("udp 127.0.0.1:{base}-")),
        "{banner}"
    );
    assert!(banner.contains("(user admin, password "), "{banner}");

    // Every status page answers.
    let statuses: Vec<&str> = banner
        .split("status http://")
        .skip(1)
        .map(|rest| rest.split('/').next().unwrap())
        .collect();
    assert_eq!(statuses.len(), 3, "{banner}");
    for addr in statuses {
        let rsp = http_get(addr, "/status");
        assert!(rsp.starts_with("HTTP/1.1 200"), "{addr}: {rsp}");
    }
    let console = banner
        .split("console   http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_owned();
    assert!(http_get(&console, "/login").starts_with("HTTP/1.1 200"));

    // An application asks the agent; the agent pulls the demo route from the dns.
    let mut answer = String::new();
    for _ in 0..100 {
        let o = lars(&[
            "--base-port",
            &base,
            "--timeout-ms",
            "200",
            "get-host",
            "1",
            "1",
        ]);
        answer = stdout(&o);
        if o.status.success() && answer.contains("127.0.0.1:900") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        answer.contains("127.0.0.1:900"),
        "get-host never answered: {answer}"
    );
    ok(&lars(&[
        "--base-port",
        &base,
        "report",
        "1",
        "1",
        "127.0.0.1",
        "9001",
        "0",
    ]));

    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut status = None;
    for _ in 0..300 {
        if let Some(s) = child.0.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = status.expect("lars up stops within 15 s of SIGINT");
    assert!(status.success(), "{status:?}");
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(rest.iter().any(|l| l == "stopping"), "{rest:?}");
    reader.join().unwrap();
}
