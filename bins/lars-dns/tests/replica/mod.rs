//! The `lars-dns` binary reading from a replica (`[store] read_url`) as an
//! operator configures it, against a private MariaDB primary and replica.

use std::io::Read as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lars_core::ModKey;
use lars_store::RouteAdmin;
use lars_testkit::mariadb::MariadbPair;

use super::support::{self, Client, host, http_get};

use super::{BIN, Running, free_port};

/// The replica is read with a user that may only SELECT (nothing is created
/// or written there), its password never shows in the logs or on /status,
/// `--strict` accepts the new keys, and an edit on the primary reaches a
/// subscriber through the replica.
#[test]
fn the_binary_reads_the_replica_with_a_select_only_user() {
    let Some(pair) = MariadbPair::start_or_skip("the_binary_reads_the_replica", 0) else {
        return;
    };
    let primary_url = format!("{}/lars", pair.primary_url());
    let admin = lars_store::open(&primary_url).unwrap();
    let k = ModKey::new(1, 1);
    admin.set_hosts(k, &[host("10.0.0.1:80")]).unwrap();
    pair.primary_exec("CREATE USER 'reader'@'%' IDENTIFIED BY 'sekrit-pw'")
        .unwrap();
    pair.primary_exec("GRANT SELECT ON lars.* TO 'reader'@'%'")
        .unwrap();
    pair.wait_caught_up(Duration::from_secs(30)).unwrap();

    let (port, http) = (free_port(), free_port());
    let replica_port = pair.replica_addr().port();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("lars_dns.conf");
    std::fs::write(
        &conf,
        format!(
            "[reactor]\nip = 127.0.0.1\nport = {port}\nthreadNum = 2\n\
             [store]\nurl = {primary_url}\n\
             read_url = mysql://reader:sekrit-pw@127.0.0.1:{replica_port}/lars?prefer_socket=false\n\
             read_fallback_after = 30\nread_max_lag = 0\n\
             [dns]\nversion_interval = 0.05\n\
             [http]\nip = 127.0.0.1\nport = {http}\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("dns.log");
    let child = Command::new(BIN)
        .arg("--strict")
        .arg("-c")
        .arg(&conf)
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut dns = Running(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(addr).is_err() {
        if let Some(status) = dns.0.try_wait().unwrap() {
            let mut err = String::new();
            dns.0
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("lars-dns exited with {status}: {err}");
        }
        assert!(Instant::now() < deadline, "dns did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut c = Client::connect(addr);
    assert_eq!(c.ask(k), vec![host("10.0.0.1:80")]);
    admin.set_hosts(k, &[host("10.0.0.2:80")]).unwrap();
    let pushed = c
        .recv(Duration::from_secs(10))
        .expect("no push within 10 s");
    assert_eq!(support::hosts_of(&pushed), vec![host("10.0.0.2:80")]);

    let http: SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    let (_, status) = http_get(http, "/status");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let reads = &status["reads"];
    assert_eq!(reads["reading"], "replica", "{status:#}");
    assert_eq!(reads["fallbacks"], 0, "{status:#}");
    assert_eq!(
        reads["replica_url"],
        format!("mysql://reader:***@127.0.0.1:{replica_port}/lars?prefer_socket=false"),
    );
    drop(dns);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("routes read from the replica"), "{log}");
    assert!(!log.contains("sekrit-pw"), "the password was logged: {log}");
}
