//! Test helpers: a console over a fresh SQLite store, and a tiny blocking
//! HTTP/1.1 client on std sockets (no extra client stack to compile).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use lars_store::Store;
use lars_web::{WebConfig, WebHandle};

pub const USER: &str = "admin";
pub const PASSWORD: &str = "s3cret-passw0rd";

/// A running console over its own store.
pub struct Console {
    pub store: Store,
    pub web: Option<WebHandle>,
    pub addr: SocketAddr,
    _dir: Option<tempfile::TempDir>,
    /// `(server url, database)` dropped at the end.
    mysql: Option<(String, String)>,
}

impl Console {
    /// Over SQLite in a temp dir.
    pub fn start() -> Console {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/lars.db", dir.path().display());
        Console::on(&url, Some(dir), None)
    }

    /// Over a fresh MySQL database named after `name` and the pid; `None`
    /// (with a note) when `LARS_MYSQL_URL` is unset.
    pub fn start_mysql(name: &str) -> Option<Console> {
        let server = lars_testkit::mysql_server(&format!("the MySQL run of {name}"))?;
        let db: String = format!("lars_web_{name}_{}", std::process::id())
            .chars()
            .take(64)
            .collect();
        drop_db(&server, &db);
        Some(Console::on(
            &format!("{server}/{db}"),
            None,
            Some((server, db)),
        ))
    }

    fn on(url: &str, dir: Option<tempfile::TempDir>, mysql: Option<(String, String)>) -> Console {
        let store = lars_store::open(url).unwrap();
        lars_web::add_user(&store, USER, PASSWORD).unwrap();
        let config = WebConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            ..WebConfig::default()
        };
        let web = lars_web::serve(config, store.clone()).unwrap();
        let addr = web.local_addr();
        Console {
            store,
            web: Some(web),
            addr,
            _dir: dir,
            mysql,
        }
    }

    pub fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
        request(self.addr, method, path, headers, body.as_bytes())
    }

    /// Logs in through the API; returns (bearer token, csrf token, cookie
    /// header value).
    pub fn api_login(&self) -> (String, String, String) {
        let r = self.req(
            "POST",
            "/api/login",
            &[("Content-Type", "application/json")],
            &format!(r#"{{"username":"{USER}","password":"{PASSWORD}"}}"#),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        let cookie = r.cookie("lars_session").unwrap();
        (
            v["token"].as_str().unwrap().to_owned(),
            v["csrf_token"].as_str().unwrap().to_owned(),
            format!("lars_session={cookie}"),
        )
    }

    /// Logs in through the login form like a browser; returns (cookie
    /// header value, csrf token of the logged-in session).
    pub fn form_login(&self) -> (String, String) {
        let r = self.req("GET", "/login", &[], "");
        assert_eq!(r.status, 200);
        let anon = format!("lars_session={}", r.cookie("lars_session").unwrap());
        let csrf = r.csrf();
        let body = format!("csrf={csrf}&username={USER}&password={PASSWORD}");
        let r = self.req("POST", "/login", &[("Cookie", &anon), FORM], &body);
        assert_eq!(r.status, 303, "{}", r.text());
        assert_eq!(r.header("location"), Some("/"));
        let cookie = format!("lars_session={}", r.cookie("lars_session").unwrap());
        assert_ne!(cookie, anon, "login must rotate the session id");
        let r = self.req("GET", "/routes", &[("Cookie", &cookie)], "");
        assert_eq!(r.status, 200);
        (cookie, r.csrf())
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if let Some(w) = self.web.take() {
            w.stop();
        }
        if let Some((server, db)) = self.mysql.take() {
            drop_db(&server, &db);
        }
    }
}

fn drop_db(server: &str, db: &str) {
    use mysql::prelude::Queryable;
    let mut c = mysql::Conn::new(mysql::Opts::from_url(server).unwrap()).unwrap();
    c.query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
        .unwrap();
}

pub const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");
pub const JSON: (&str, &str) = ("Content-Type", "application/json");

/// A response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookies().into_iter().find_map(|c| {
            let first = c.split(';').next()?;
            let (k, v) = first.split_once('=')?;
            (k.trim() == name).then(|| v.trim().to_owned())
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The CSRF token of the first form on the page.
    pub fn csrf(&self) -> String {
        let t = self.text();
        let at = t
            .find(r#"name="csrf" value=""#)
            .expect("page has a csrf field");
        let rest = &t[at + r#"name="csrf" value=""#.len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    exchange(
        TcpStream::connect(addr).unwrap(),
        addr,
        method,
        path,
        headers,
        body,
    )
}

/// One request like [`request`], sent from source address `from` (any
/// `127.x.y.z` is loopback on Linux: a second client address).
pub fn request_from(
    from: std::net::IpAddr,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::new(from, 0).into()).unwrap();
    sock.connect(&addr.into()).unwrap();
    exchange(sock.into(), addr, method, path, headers, body)
}

fn exchange(
    mut s: TcpStream,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    // Some servers (chromedriver) keep the connection open despite
    // `Connection: close`: stop at the end of the message.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            let complete = match len {
                Some(n) => raw.len() >= end + 4 + n,
                None if head.contains("transfer-encoding: chunked") => raw.ends_with(b"0\r\n\r\n"),
                None => false,
            };
            if complete {
                break;
            }
        }
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> Resp {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("complete head");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = b.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&b[..nl]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + size]);
        b = &b[nl + 2 + size + 2..];
    }
    out
}

/// Percent-encodes a form value.
pub fn enc(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
