use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use lars_net::{HttpResponse, StatusServer};

fn get(addr: std::net::SocketAddr, req: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(super::common::WAIT)).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn status_get_query_post_and_404() {
    let mut server = StatusServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(|req| match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/status") => HttpResponse::json(format!(
                "{{\"modid\":{}}}",
                req.query("modid").unwrap_or("null")
            )),
            ("POST", "/echo") => HttpResponse::text(String::from_utf8_lossy(&req.body)),
            _ => HttpResponse::not_found(),
        }),
    )
    .unwrap();
    let addr = server.local_addr();
    let ok = get(addr, "GET /status?modid=3 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(ok.contains("Content-Type: application/json\r\n"));
    assert!(ok.contains("Content-Length: 11\r\n"));
    assert!(ok.ends_with("\r\n\r\n{\"modid\":3}"), "{ok}");

    let nf = get(addr, "GET /nope HTTP/1.1\r\n\r\n");
    assert!(nf.starts_with("HTTP/1.1 404 Not Found\r\n"), "{nf}");

    let post = get(
        addr,
        "POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert!(post.ends_with("\r\n\r\nhello"), "{post}");

    let bad = get(addr, "NONSENSE\r\n\r\n");
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    server.stop();
    assert!(TcpStream::connect(addr).is_err());
}
