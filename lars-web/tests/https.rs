//! The console over HTTPS (`serve_https`, `lars web --tls-cert --tls-key`)
//! with a certificate made in the test: a login gets its `Secure` session
//! cookie over TLS, a plain-http request to the HTTPS port gets no page,
//! and a slow handshake does not hold up the others.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use lars_testkit::tls::TestPki;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

fn client(ca: &std::path::Path) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// One request over TLS with `Connection: close`; the whole response.
fn https(addr: SocketAddr, cfg: Arc<ClientConfig>, request: &str) -> String {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let conn = ClientConnection::new(cfg, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut s = StreamOwned::new(conn, tcp);
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw).into_owned()
}

#[test]
fn login_over_https_gets_a_secure_cookie_and_plain_http_gets_nothing() {
    let pki = TestPki::new("web-https");
    let dir = tempfile::tempdir().unwrap();
    let store = lars_store::open(&format!("sqlite://{}/lars.db", dir.path().display())).unwrap();
    lars_web::add_user(&store, "admin", "the-right-password").unwrap();
    let config = lars_web::WebConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        ..lars_web::WebConfig::default()
    };
    let tls = lars_web::WebTls {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
    };
    let web = lars_web::serve_https(config, store, &tls).unwrap();
    let addr = web.local_addr();

    // A client that opens a connection and never says hello holds no one
    // up: handshakes run beside the server.
    let _silent = TcpStream::connect(addr).unwrap();

    let body = r#"{"username":"admin","password":"the-right-password"}"#;
    let resp = https(
        addr,
        client(&pki.ca),
        &format!(
            "POST /api/login HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            addr.port(),
            body.len()
        ),
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let cookie = resp
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {resp}"));
    assert!(cookie.contains("; Secure"), "{cookie}");

    // Plain http on the HTTPS port: no HTTP answer.
    let mut plain = TcpStream::connect(addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let _ = plain.read_to_end(&mut raw);
    assert!(
        !raw.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );

    // A client that trusts another CA refuses the console.
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let conn = ClientConnection::new(
        client(&pki.other_ca),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut s = StreamOwned::new(conn, tcp);
    let e = s.write_all(b"GET / HTTP/1.1\r\n\r\n").and_then(|()| {
        let mut b = [0u8; 1];
        s.read(&mut b).map(|_| ())
    });
    assert!(e.is_err_and(|e| e.to_string().contains("UnknownIssuer")));
    web.stop();
}

#[test]
fn a_bad_certificate_file_fails_the_start_naming_it() {
    let pki = TestPki::new("web-https-bad");
    let dir = tempfile::tempdir().unwrap();
    let store = lars_store::open(&format!("sqlite://{}/lars.db", dir.path().display())).unwrap();
    let tls = lars_web::WebTls {
        cert: pki.dir.join("nope.pem"),
        key: pki.server_key.clone(),
    };
    let config = lars_web::WebConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        ..lars_web::WebConfig::default()
    };
    let e = lars_web::serve_https(config, store, &tls).unwrap_err();
    let text = format!("{e} {}", std::error::Error::source(&e).unwrap());
    assert!(text.contains("nope.pem"), "{text}");
}
