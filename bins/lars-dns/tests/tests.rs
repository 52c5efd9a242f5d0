//! The `lars-dns` binary as an operator runs it: a config file, a store,
//! signals, and the exit code; reading from a replica (`replica`), and a
//! `[tls]` port (`tls`).
#![allow(clippy::unwrap_used)]

// The library's test fixtures (stores, a wire client), shared by path.
#[path = "../../../lars-dns/tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

mod replica;
mod tls;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lars_core::ModKey;
use lars_store::RouteAdmin;

use support::{Client, Fixture, SqliteFx, host};

const BIN: &str = env!("CARGO_BIN_EXE_lars-dns");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the child when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn exits_non_zero_when_the_database_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("lars_dns.conf");
    std::fs::write(
        &conf,
        "[reactor]\nport = 0\n[mysql]\ndb_host = 127.0.0.1\ndb_port = 1\ndb_user = root\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("-c")
        .arg(&conf)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot open the route store"), "{stderr}");
    assert!(stderr.contains("caused by"), "{stderr}");
}

#[test]
fn serves_and_stops_on_sigterm() {
    let fx = SqliteFx::new();
    let k = ModKey::new(1, 1);
    fx.admin().set_hosts(k, &[host("10.0.0.1:80")]).unwrap();
    let port = free_port();
    let conf = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        conf.path(),
        format!(
            "[reactor]\nip = 127.0.0.1\nport = {port}\nthreadNum = 2\n[store]\nurl = {}\n",
            fx.url()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(conf.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "dns did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut c = Client::connect(addr);
    assert_eq!(c.ask(k), vec![host("10.0.0.1:80")]);
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("dns did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_missing_config_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-lars_dns.conf");
    let out = Command::new(BIN).arg("-c").arg(&missing).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no-such-lars_dns.conf"), "{stderr}");
}

#[test]
fn strict_rejects_an_unknown_key_naming_file_section_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("lars_dns.conf");
    std::fs::write(&conf, "[reactor]\nprot = 1234\n").unwrap();
    let out = Command::new(BIN)
        .arg("--strict")
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("lars_dns.conf: [reactor] prot: unknown key"),
        "{stderr}"
    );
}

#[test]
fn warnings_carry_no_colour_escapes_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("lars_dns.conf");
    std::fs::write(
        &conf,
        "[reactor]\nport = 0\nprot = 1234\n[store]\nurl = mysql://root@127.0.0.1:1/lars\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("-c")
        .arg(&conf)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    // The logs go to stdout, the error to stderr.
    let stderr = String::from_utf8_lossy(&out.stderr) + String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("[reactor] prot: unknown key"), "{stderr}");
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
}
