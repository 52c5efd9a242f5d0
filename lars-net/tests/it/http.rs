use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lars_net::{HttpResponse, StatusServer};

fn get(addr: std::net::SocketAddr, req: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(super::common::WAIT)).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The http tests count this process's `lars-http` threads: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn status_get_query_post_and_404() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
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

fn http_threads() -> usize {
    super::common::thread_names()
        .iter()
        .filter(|n| n.starts_with("lars-http"))
        .count()
}

#[test]
fn slow_and_silent_clients_do_not_block_status() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before = http_threads();
    let mut server = StatusServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(|_| HttpResponse::json("{}")),
    )
    .unwrap();
    let addr = server.local_addr();
    // 5 silent clients and 5 that drip a byte every 0.5 s, for as long as
    // the test runs.
    let silent: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut drippers: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for d in &drippers {
        d.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    }
    let done = Arc::new(AtomicBool::new(false));
    let dripping = {
        let done = Arc::clone(&done);
        let mut ds: Vec<TcpStream> = drippers.iter().map(|d| d.try_clone().unwrap()).collect();
        std::thread::spawn(move || {
            let req = b"GET /status HTTP/1.1\r\nHost: x\r\n";
            let mut i = 0;
            while !done.load(Ordering::Acquire) {
                for d in &mut ds {
                    let _ = d.write_all(&req[i % req.len()..][..1]);
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..3 {
        let t = Instant::now();
        let ok = get(addr, "GET /status HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "took {:?}",
            t.elapsed()
        );
    }
    // The whole request must arrive within READ_TIMEOUT: drippers are cut
    // although they keep sending.
    let t = Instant::now();
    for d in &mut drippers {
        assert!(
            super::common::wait_until(|| super::common::is_closed(d)),
            "dripping client still open after {:?}",
            t.elapsed()
        );
    }
    done.store(true, Ordering::Release);
    dripping.join().unwrap();
    server.stop();
    assert!(TcpStream::connect(addr).is_err());
    // A joined thread may linger in /proc/self/task for a moment.
    assert!(
        super::common::wait_until(|| http_threads() <= before),
        "{:?}",
        super::common::thread_names()
    );
    drop(silent);
}
