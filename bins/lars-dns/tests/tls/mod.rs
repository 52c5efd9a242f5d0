//! The `lars-dns` binary with a `[tls]` port (issue 16): an agent-like
//! mutual-TLS client gets routes there while the plain port keeps serving,
//! and SIGHUP rolls the certificate without dropping connections (a bad new
//! file keeps the old one).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use lars_core::proto::{GetRouteRequest, GetRouteResponse};
use lars_core::{HostAddr, MessageId, ModKey, frame};
use lars_store::RouteAdmin;
use lars_testkit::tls::TestPki;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

use super::{BIN, Running, free_port};
const WAIT: Duration = Duration::from_secs(15);

type Tls = StreamOwned<ClientConnection, TcpStream>;

fn tls_connect(pki: &TestPki, addr: SocketAddr) -> std::io::Result<Tls> {
    let mut tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(WAIT))?;
    let name = ServerName::IpAddress(addr.ip().into());
    let mut conn = ClientConnection::new(pki.client_config(true), name).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    Ok(StreamOwned::new(conn, tcp))
}

/// Asks for `key` on `s` and returns the hosts of the answer.
fn ask(s: &mut impl ReadWrite, key: ModKey) -> usize {
    let (modid, cmdid) = key.to_wire();
    let req = frame::to_bytes(
        MessageId::GetRouteRequest.into(),
        &GetRouteRequest { modid, cmdid },
    )
    .unwrap();
    s.write_all(&req).unwrap();
    let mut head = [0u8; 8];
    s.read_exact(&mut head).unwrap();
    let mut body = vec![0u8; i32::from_le_bytes(head[4..].try_into().unwrap()) as usize];
    s.read_exact(&mut body).unwrap();
    let resp: GetRouteResponse = prost::Message::decode(&body[..]).unwrap();
    resp.host.len()
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn leaf(s: &Tls) -> Vec<u8> {
    s.conn.peer_certificates().unwrap()[0].as_ref().to_vec()
}

fn hup(pid: u32) {
    let ok = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -HUP {pid}");
}

#[test]
fn tls_port_serves_mutual_tls_and_sighup_rolls_the_certificate_keeping_connections() {
    let pki = TestPki::new("dns-bin-tls");
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("lars.db").display());
    let key = ModKey::new(3, 1);
    lars_store::open(&url)
        .unwrap()
        .set_hosts(key, &["10.0.3.1:80".parse::<HostAddr>().unwrap()])
        .unwrap();
    let (port, tls_port) = (free_port(), free_port());
    let conf = dir.path().join("lars_dns.conf");
    std::fs::write(
        &conf,
        format!(
            "[reactor]\nip = 127.0.0.1\nport = {port}\nthreadNum = 2\nallow = 127.0.0.0/8\n\
             [tls]\nport = {tls_port}\ncert = {}\nkey = {}\nca = {}\nclient_auth = required\n\
             [store]\nurl = {url}\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            pki.ca.display(),
        ),
    )
    .unwrap();
    let log = dir.path().join("dns.log");
    let child = Command::new(BIN)
        .arg("--strict")
        .arg("-c")
        .arg(&conf)
        .env("RUST_LOG", "info")
        // The binary logs to stdout; errors before logging go to stderr.
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("dns.err")).unwrap())
        .spawn()
        .unwrap();
    let mut dns = Running(child);
    let pid = dns.0.id();
    let tls_addr: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let deadline = Instant::now() + WAIT;
    let mut before = loop {
        match tls_connect(&pki, tls_addr) {
            Ok(s) => break s,
            Err(e) => {
                if let Some(status) = dns.0.try_wait().unwrap() {
                    let err = std::fs::read_to_string(dir.path().join("dns.err"));
                    panic!("lars-dns exited with {status}: {err:?}");
                }
                assert!(Instant::now() < deadline, "no TLS port: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    assert_eq!(ask(&mut before, key), 1);
    let old = leaf(&before);
    // The plain port still serves an original agent.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(ask(&mut plain, key), 1);

    // Roll the certificate, SIGHUP: a new connection gets the new one.
    pki.reissue_server("rolled by SIGHUP");
    hup(pid);
    let deadline = Instant::now() + WAIT;
    let new = loop {
        let s = tls_connect(&pki, tls_addr).unwrap();
        if leaf(&s) != old {
            break leaf(&s);
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(50));
    };
    // The connection opened before keeps working.
    assert_eq!(ask(&mut before, key), 1);

    // A bad file: the reload fails (logged), the last good certificate stays.
    std::fs::write(&pki.server_key, "not a key").unwrap();
    hup(pid);
    let deadline = Instant::now() + WAIT;
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("reload failed, keeping the previous certificate")
    {
        assert!(
            Instant::now() < deadline,
            "no reload failure logged: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut after = tls_connect(&pki, tls_addr).unwrap();
    assert_eq!(leaf(&after), new);
    assert_eq!(ask(&mut after, key), 1);
    assert_eq!(ask(&mut before, key), 1);
    drop(dns);
}
