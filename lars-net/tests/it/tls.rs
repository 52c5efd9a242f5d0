//! TLS listeners and allowlists of the TCP server, with certificates made in
//! the test (lars_testkit::tls): mutual TLS, refusals counted and logged,
//! the plain port unchanged, certificate reload keeping open connections,
//! the handshake deadline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use lars_core::config::{Allowlist, ClientAuth, TlsListenerConfig};
use lars_net::TcpServer;
use lars_testkit::tls::TestPki;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use socket2::{Domain, Socket, Type};

use super::common::*;

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// Everything logged by this test binary (a global subscriber: the lines
/// come from the server's threads).
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || LogWriter(buf))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
}

struct LogWriter(&'static Mutex<Vec<u8>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logged(needle: &str) -> bool {
    String::from_utf8_lossy(&logs().lock().unwrap()).contains(needle)
}

fn listener(pki: &TestPki, auth: ClientAuth) -> TlsListenerConfig {
    TlsListenerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        ca: Some(pki.ca.clone()),
        client_auth: auth,
        allow: Allowlist::everyone(),
    }
}

fn client_config(ca: &Path, cert: Option<(&Path, &Path)>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match cert {
        Some((c, k)) => {
            let chain = CertificateDer::pem_file_iter(c)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            b.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(k).unwrap())
                .unwrap()
        }
        None => b.with_no_client_auth(),
    };
    Arc::new(cfg)
}

/// A blocking TLS client to `addr` (server name 127.0.0.1), handshake done
/// or failed (the error is returned).
fn tls_connect(addr: SocketAddr, cfg: Arc<ClientConfig>) -> std::io::Result<TlsStream> {
    let name = ServerName::IpAddress(addr.ip().into());
    let conn = ClientConnection::new(cfg, name).unwrap();
    let mut s = StreamOwned::new(conn, connect(addr));
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

fn tls_round_trip(s: &mut TlsStream, body: &[u8]) {
    let mut v = header(1, body.len() as i32);
    v.extend_from_slice(body);
    s.write_all(&v).unwrap();
    let mut h = [0u8; 8];
    s.read_exact(&mut h).unwrap();
    assert_eq!(h[..4], 2i32.to_le_bytes());
    let mut got = vec![0; i32::from_le_bytes(h[4..].try_into().unwrap()) as usize];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, body);
}

/// Sends one frame and expects the server to refuse: the handshake or
/// the first read fails, or the connection ends without a reply.
fn refused(addr: SocketAddr, cfg: Arc<ClientConfig>) -> String {
    let mut s = match tls_connect(addr, cfg) {
        Err(e) => return e.to_string(),
        Ok(s) => s,
    };
    // TLS 1.3: the client finishes its side before the server has checked
    // its certificate; the refusal arrives as an alert on the next read.
    let _ = s.write_all(&frame_bytes(1, b"x"));
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        Ok(0) => "closed".to_owned(),
        Ok(n) => panic!("refused client got {n} bytes"),
        Err(e) => e.to_string(),
    }
}

fn leaf(s: &TlsStream) -> Vec<u8> {
    s.conn.peer_certificates().unwrap()[0].as_ref().to_vec()
}

#[test]
fn mutual_tls_client_is_served_and_the_plain_port_still_works() {
    logs();
    let pki = TestPki::new("net-mtls");
    let mut server = builder()
        .threads(2)
        .tls(listener(&pki, ClientAuth::Required))
        .start()
        .unwrap();
    let tls_addr = server.tls_local_addr().unwrap();
    assert_ne!(tls_addr, server.local_addr());
    let cfg = client_config(&pki.ca, Some((&pki.client_cert, &pki.client_key)));
    let mut c = tls_connect(tls_addr, cfg).unwrap();
    // Many frames, some larger than a TLS record, both ways.
    for i in 0..50usize {
        tls_round_trip(&mut c, &vec![i as u8; 1 + i * 997]);
    }
    let mut plain = connect(server.local_addr());
    round_trip(&mut plain, b"original agent");
    let s = server.stats().snapshot();
    assert_eq!(s.tls_handshakes, 1);
    assert_eq!(s.frames_in, 51);
    assert_eq!(
        (
            s.tls_refused_no_cert,
            s.tls_refused_bad_cert,
            s.tls_refused_handshake
        ),
        (0, 0, 0)
    );
    drop(c);
    server.join();
}

#[test]
fn clients_without_a_certificate_or_from_another_ca_are_refused_logged_and_counted() {
    logs();
    let pki = TestPki::new("net-refuse");
    let mut server = builder()
        .tls(listener(&pki, ClientAuth::Required))
        .refused_log_interval(Duration::ZERO)
        .start()
        .unwrap();
    let addr = server.tls_local_addr().unwrap();

    let why = refused(addr, client_config(&pki.ca, None));
    assert!(
        wait_until(|| server.stats().snapshot().tls_refused_no_cert == 1),
        "{why}"
    );
    assert!(
        wait_until(|| logged(&format!(
            "tls {addr}: refused 1 connection(s): 1 with no client certificate (client_auth = required); last from 127.0.0.1:"
        ))),
        "{}",
        String::from_utf8_lossy(&logs().lock().unwrap())
    );

    let other = client_config(
        &pki.ca,
        Some((&pki.other_client_cert, &pki.other_client_key)),
    );
    let why = refused(addr, other);
    assert!(
        wait_until(|| server.stats().snapshot().tls_refused_bad_cert == 1),
        "{why}"
    );
    assert!(wait_until(|| logged(
        "1 with a client certificate that does not verify against [tls] ca"
    )));

    // An original (plain) client on the TLS port.
    // It gets an alert (bytes it cannot read), then the end of the stream.
    let mut plain = connect(addr);
    plain.write_all(&frame_bytes(1, b"plain")).unwrap();
    let mut got = Vec::new();
    assert!(
        plain.read_to_end(&mut got).is_ok() && got.len() < 16,
        "{got:?}"
    );
    assert!(wait_until(|| server
        .stats()
        .snapshot()
        .tls_refused_handshake
        == 1));

    // The right certificate still gets in.
    let ok = client_config(&pki.ca, Some((&pki.client_cert, &pki.client_key)));
    tls_round_trip(&mut tls_connect(addr, ok).unwrap(), b"welcome");
    let s = server.stats().snapshot();
    assert_eq!(s.tls_handshakes, 1, "{s:?}");
    assert!(s.refused_log_lines >= 3, "{s:?}");
    let mut text = lars_net::http::PromText::default();
    s.limits().prometheus("lars_x", &mut text);
    let text = text.into_string();
    for line in [
        "lars_x_tls_refused_total{reason=\"no_client_cert\"} 1\n",
        "lars_x_tls_refused_total{reason=\"bad_client_cert\"} 1\n",
        "lars_x_tls_refused_total{reason=\"handshake\"} 1\n",
        "lars_x_tls_handshakes_total 1\n",
    ] {
        assert!(text.contains(line), "{line} missing in {text}");
    }
    server.join();
}

#[test]
fn without_client_auth_any_tls_client_is_served_and_the_server_is_verified() {
    let pki = TestPki::new("net-noauth");
    let mut tls = listener(&pki, ClientAuth::None);
    tls.ca = None;
    let mut server = builder().tls(tls).start().unwrap();
    let addr = server.tls_local_addr().unwrap();
    tls_round_trip(
        &mut tls_connect(addr, client_config(&pki.ca, None)).unwrap(),
        b"a",
    );
    // A client trusting another CA refuses the server.
    let e = tls_connect(addr, client_config(&pki.other_ca, None)).err();
    assert!(e.is_some_and(|e| e.to_string().contains("UnknownIssuer")));
    server.join();
}

#[test]
fn reload_keeps_open_connections_new_handshakes_get_the_new_certificate() {
    let pki = TestPki::new("net-reload");
    let mut server = builder()
        .tls(listener(&pki, ClientAuth::Required))
        .start()
        .unwrap();
    let addr = server.tls_local_addr().unwrap();
    let cfg = client_config(&pki.ca, Some((&pki.client_cert, &pki.client_key)));
    let mut before = tls_connect(addr, Arc::clone(&cfg)).unwrap();
    tls_round_trip(&mut before, b"before");
    let old = leaf(&before);

    pki.reissue_server("rolled server");
    server.reload_tls().unwrap();
    // The connection opened before the reload keeps working.
    tls_round_trip(&mut before, b"still here");
    // A new one is served with the new certificate.
    let mut after = tls_connect(addr, Arc::clone(&cfg)).unwrap();
    tls_round_trip(&mut after, b"after");
    let new = leaf(&after);
    assert_ne!(
        old, new,
        "the new handshake must present the new certificate"
    );

    // A bad file: the reload fails, is counted, and the last good
    // certificate stays in use.
    std::fs::write(&pki.server_cert, "not a certificate").unwrap();
    assert!(server.reload_tls().is_err());
    // (At least: another test's reload_all may reload this server too.)
    let s = server.stats().snapshot();
    assert!(s.tls_reloads >= 1 && s.tls_reload_failures >= 1, "{s:?}");
    let mut third = tls_connect(addr, cfg).unwrap();
    tls_round_trip(&mut third, b"third");
    assert_eq!(leaf(&third), new);
    tls_round_trip(&mut before, b"and still");
    server.join();
}

#[test]
fn reload_all_reaches_every_server_of_the_process() {
    let pki = TestPki::new("net-reload-all");
    let mut server = builder()
        .tls(listener(&pki, ClientAuth::None))
        .start()
        .unwrap();
    let before = server.stats().snapshot().tls_reloads;
    let report = lars_net::reload_tls();
    assert!(report.reloaded >= 1, "{report:?}");
    assert_eq!(server.stats().snapshot().tls_reloads, before + 1);
    server.join();
}

#[test]
fn a_handshake_not_finished_within_frame_timeout_is_closed_and_counted() {
    let pki = TestPki::new("net-hs-timeout");
    let mut server = builder()
        .tls(listener(&pki, ClientAuth::Required))
        .frame_timeout(Duration::from_millis(200))
        .start()
        .unwrap();
    let mut silent = connect(server.tls_local_addr().unwrap());
    assert!(is_closed(&mut silent));
    let s = server.stats().snapshot();
    assert_eq!((s.tls_handshake_timeout, s.closed_partial_frame), (1, 0));
    server.join();
}

/// A client connection from `local_ip` (any 127.x.y.z is loopback).
fn connect_from(local_ip: &str, server: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{local_ip}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&server.into()).unwrap();
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

#[test]
fn the_allowlist_refuses_other_addresses_at_once_and_counts_them() {
    logs();
    let pki = TestPki::new("net-allow");
    let mut tls = listener(&pki, ClientAuth::None);
    tls.allow = "127.0.0.3/32".parse().unwrap();
    let mut server = builder()
        .allow("127.0.0.1/32, 10.0.0.0/8".parse().unwrap())
        .tls(tls)
        .refused_log_interval(Duration::ZERO)
        .start()
        .unwrap();
    let (plain, tls_addr) = (server.local_addr(), server.tls_local_addr().unwrap());
    round_trip(&mut connect_from("127.0.0.1", plain), b"allowed");
    let mut out = connect_from("127.0.0.2", plain);
    assert!(is_closed(&mut out));
    assert!(wait_until(
        || server.stats().snapshot().refused_not_allowed == 1
    ));
    assert!(wait_until(|| logged(&format!(
        "tcp {plain}: refused 1 connection(s): 1 from an address not in the allowlist (allow); last from 127.0.0.2:"
    ))));
    // The TLS listener has its own list.
    let mut out = connect_from("127.0.0.1", tls_addr);
    assert!(is_closed(&mut out));
    assert!(wait_until(
        || server.stats().snapshot().refused_not_allowed == 2
    ));
    let s = server.stats().snapshot();
    assert_eq!(s.refused, 2);
    assert_eq!(s.limits().refused_not_allowed, 2);
    assert_eq!((s.refused_max_conn, s.refused_per_peer), (0, 0));
    server.join();
}

#[test]
fn bad_certificate_files_fail_the_start_naming_the_file() {
    let pki = TestPki::new("net-badfile");
    let mut tls = listener(&pki, ClientAuth::Required);
    tls.key = pki.dir.join("missing.key");
    let e = builder().tls(tls).start().unwrap_err().to_string();
    assert!(e.contains("missing.key"), "{e}");
    let mut tls = listener(&pki, ClientAuth::Required);
    tls.ca = Some(pki.server_key.clone());
    let e = builder().tls(tls).start().unwrap_err().to_string();
    assert!(e.contains("server.key"), "{e}");
}

fn client_tls(ca: &Path, cert: Option<(&Path, &Path)>) -> lars_net::ClientTls {
    lars_net::ClientTls::load(&lars_core::config::ClientTlsConfig {
        ca: ca.to_owned(),
        cert: cert.map(|c| c.0.to_owned()),
        key: cert.map(|c| c.1.to_owned()),
        server_name: None,
    })
    .unwrap()
}

/// A TcpClient over TLS whose replies (msgid 2) go to the returned channel;
/// it sends `hello` on every connect.
fn tls_client(
    addr: SocketAddr,
    tls: lars_net::ClientTls,
) -> (lars_net::TcpClient, std::sync::mpsc::Receiver<Vec<u8>>) {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let tx = Mutex::new(tx);
    let client = lars_net::TcpClient::builder(addr)
        .backoff(Duration::from_millis(10), Duration::from_millis(100))
        .tls(tls)
        .on_connect(|c| c.send_raw(1, b"hello").unwrap())
        .router(lars_net::Router::new().route(2, move |_, f| {
            let _ = tx.lock().unwrap().send(f.body.to_vec());
        }))
        .start()
        .unwrap();
    (client, rx)
}

#[test]
fn the_tcp_client_speaks_mutual_tls_and_frames_sent_before_the_handshake_wait_for_it() {
    let pki = TestPki::new("net-client");
    let mut server = builder()
        .tls(listener(&pki, ClientAuth::Required))
        .start()
        .unwrap();
    let addr = server.tls_local_addr().unwrap();
    let tls = client_tls(&pki.ca, Some((&pki.client_cert, &pki.client_key)));
    let (mut client, rx) = tls_client(addr, tls);
    // Sent at once, before the handshake is over: 100 frames of 60 KB
    // (more than rustls buffers before the handshake).
    let sender = client.sender();
    for i in 0..100u8 {
        sender.send_frames(frame_bytes(1, &vec![i; 60_000]));
    }
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), b"hello");
    for i in 0..100u8 {
        let got = rx.recv_timeout(WAIT).unwrap();
        assert!(
            got.len() == 60_000 && got.iter().all(|&b| b == i),
            "frame {i}"
        );
    }
    let s = server.stats().snapshot();
    assert_eq!((s.tls_handshakes, s.frames_in), (1, 101));
    assert_eq!(client.stats().snapshot().tls_handshakes, 1);
    client.join();
    server.join();
}

#[test]
fn a_tcp_client_without_the_right_certificate_is_refused_again_and_again() {
    let pki = TestPki::new("net-client-refused");
    let mut server = builder()
        .tls(listener(&pki, ClientAuth::Required))
        .start()
        .unwrap();
    let addr = server.tls_local_addr().unwrap();
    for (cert, counter) in [
        (None, "no_cert"),
        (
            Some((&*pki.other_client_cert, &*pki.other_client_key)),
            "bad_cert",
        ),
    ] {
        let (mut client, rx) = tls_client(addr, client_tls(&pki.ca, cert));
        assert!(
            wait_until(|| {
                let s = server.stats().snapshot();
                let n = match counter {
                    "no_cert" => s.tls_refused_no_cert,
                    _ => s.tls_refused_bad_cert,
                };
                n >= 2 && client.stats().snapshot().tls_refused_handshake >= 2
            }),
            "{counter}: {:?}",
            server.stats().snapshot()
        );
        assert!(rx.try_recv().is_err(), "a refused client got a reply");
        assert_eq!(server.stats().snapshot().frames_in, 0);
        client.join();
    }
    // A client that does not trust the server's CA refuses it.
    let (mut client, rx) = tls_client(addr, client_tls(&pki.other_ca, None));
    assert!(wait_until(|| client
        .stats()
        .snapshot()
        .tls_refused_handshake
        >= 2));
    assert!(rx.try_recv().is_err());
    client.join();
    server.join();
}

#[test]
fn a_one_way_stream_closed_without_reading_arrives_whole() {
    let pki = TestPki::new("net-bulk");
    let mut server = TcpServer::builder("127.0.0.1:0".parse().unwrap())
        .router(lars_net::Router::new().route(7, |_, _| {}))
        .tls(listener(&pki, ClientAuth::Required))
        .start()
        .unwrap();
    let addr = server.tls_local_addr().unwrap();
    let cfg = client_config(&pki.ca, Some((&pki.client_cert, &pki.client_key)));
    let mut c = tls_connect(addr, cfg).unwrap();
    let one = frame_bytes(7, &[5u8; 60]);
    let batch: Vec<u8> = one.repeat(256);
    for _ in 0..800 {
        c.write_all(&batch).unwrap();
    }
    c.flush().unwrap();
    // Closed at once without reading anything, like a reporting agent that
    // stops: data the server sent unasked (TLS 1.3 session tickets) would
    // sit unread and turn the close into a reset that discards what the
    // server has not read yet.
    drop(c);
    let want = 800 * 256;
    assert!(
        wait_until(|| server.stats().snapshot().frames_in == want),
        "{:?}",
        server.stats().snapshot()
    );
    server.join();
}

#[test]
fn a_client_reload_takes_the_new_ca_for_the_next_handshake() {
    let pki = TestPki::new("net-client-reload");
    let mut server = builder()
        .tls(listener(&pki, ClientAuth::Required))
        .start()
        .unwrap();
    let addr = server.tls_local_addr().unwrap();
    // The client's CA file holds the wrong CA: the server is refused.
    let ca = pki.dir.join("client-ca.pem");
    std::fs::copy(&pki.other_ca, &ca).unwrap();
    let tls = client_tls(&ca, Some((&pki.client_cert, &pki.client_key)));
    let (mut client, rx) = tls_client(addr, tls.clone());
    assert!(wait_until(|| client
        .stats()
        .snapshot()
        .tls_refused_handshake
        >= 1));
    assert!(rx.try_recv().is_err());
    // The right CA is written to the same path and reloaded (what SIGHUP
    // does): the next attempt gets in.
    std::fs::copy(&pki.ca, &ca).unwrap();
    tls.reload().unwrap();
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), b"hello");
    client.join();
    server.join();
}
