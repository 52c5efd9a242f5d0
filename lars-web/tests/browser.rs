//! End-to-end: a real headless Chromium (Debian's, driven through
//! chromedriver's W3C WebDriver API) logs in, adds a modid and a route, sees
//! it listed, sees a subscribed dns client receive the push, deletes it, and
//! saves screenshots of the routes and call-status pages under
//! `<target>/e2e/`.
//!
//! Skipped (with a note) only when chromium or chromedriver is missing and
//! env `CI` is unset; under CI it must run (`.ci/setup-browser.sh` installs
//! them).

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use lars_core::frame;
use lars_core::proto::{GetRouteRequest, GetRouteResponse};
use lars_dns::DnsConfig;
use lars_store::RouteRead;
use serde_json::{Value, json};

use crate::api::seed_status;
use crate::common::{Console, PASSWORD, USER, request};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const W3C_ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver on an ephemeral port; killed and reaped on drop.
struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Driver {
    fn start(log: &Path) -> Driver {
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let d = Driver {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        wait_until("chromedriver ready", Duration::from_secs(30), || {
            TcpStream::connect(d.addr).is_ok() && d.call("GET", "/status", None)["ready"] == true
        });
        d
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let headers: &[(&str, &str)] = if body.is_empty() {
            &[]
        } else {
            &[("Content-Type", "application/json")]
        };
        let r = request(self.addr, method, path, headers, body.as_bytes());
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        assert!(
            r.status < 400,
            "webdriver {method} {path}: {} {}",
            r.status,
            r.text()
        );
        v["value"].clone()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session.
struct Browser<'a> {
    driver: &'a Driver,
    id: String,
}

impl<'a> Browser<'a> {
    fn open(driver: &'a Driver, profile: &Path) -> Browser<'a> {
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-breakpad".to_owned(),
            "--disable-crash-reporter".to_owned(),
            "--window-size=1280,900".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        }}});
        let v = driver.call("POST", "/session", Some(caps));
        let b = Browser {
            driver,
            id: v["sessionId"].as_str().unwrap().to_owned(),
        };
        // Element lookups wait for the element (a clicked form's answer may
        // still be loading).
        b.call("POST", "/timeouts", Some(json!({ "implicit": 10_000 })));
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.driver
            .call(method, &format!("/session/{}{path}", self.id), body)
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn url(&self) -> String {
        self.call("GET", "/url", None).as_str().unwrap().to_owned()
    }

    fn source(&self) -> String {
        self.call("GET", "/source", None)
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        v[W3C_ELEMENT].as_str().unwrap().to_owned()
    }

    fn fill(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call("POST", &format!("/element/{e}/clear"), Some(json!({})));
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.call("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.call("GET", &format!("/element/{e}/text"), None)
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn screenshot(&self, to: &Path) {
        let b64 = self.call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, png).unwrap();
        println!("screenshot: {}", to.display());
    }
}

impl Drop for Browser<'_> {
    /// Ends the session, which quits Chromium (also when the test panics).
    fn drop(&mut self) {
        let path = format!("/session/{}", self.id);
        let _ = std::panic::catch_unwind(|| request(self.driver.addr, "DELETE", &path, &[], b""));
    }
}

fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `<target>/e2e`: `CARGO_TARGET_DIR`, else the target dir holding this test
/// binary (`<target>/debug/deps/tests-*`), else `<workspace>/target`.
fn artifacts_dir() -> PathBuf {
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        let t = PathBuf::from(t);
        let t = if t.is_absolute() {
            t
        } else {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(t)
        };
        return t.join("e2e");
    }
    if let Some(t) = std::env::current_exe()
        .ok()
        .and_then(|e| e.ancestors().nth(3).map(Path::to_path_buf))
    {
        if t.join("debug").is_dir() || t.join("release").is_dir() {
            return t.join("e2e");
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/e2e")
}

/// A dns client subscribed to one key.
struct Subscriber {
    sock: TcpStream,
}

impl Subscriber {
    fn subscribe(dns: SocketAddr, modid: i32, cmdid: i32) -> (Subscriber, GetRouteResponse) {
        use std::io::Write;
        let mut sock = TcpStream::connect(dns).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        sock.write_all(&frame::to_bytes(1, &GetRouteRequest { modid, cmdid }).unwrap())
            .unwrap();
        let mut s = Subscriber { sock };
        let first = s.next();
        (s, first)
    }

    /// The next GetRouteResponse (reply or push).
    fn next(&mut self) -> GetRouteResponse {
        loop {
            let mut head = [0u8; 8];
            self.sock.read_exact(&mut head).unwrap();
            let msgid = i32::from_le_bytes(head[0..4].try_into().unwrap());
            let len = u32::from_le_bytes(head[4..8].try_into().unwrap()) as usize;
            let mut body = vec![0u8; len];
            self.sock.read_exact(&mut body).unwrap();
            if msgid == 2 {
                return prost::Message::decode(&body[..]).unwrap();
            }
        }
    }

    /// Reads pushes until one for `(modid, cmdid)` satisfies `want`.
    fn wait_push(
        &mut self,
        modid: i32,
        cmdid: i32,
        want: impl Fn(&GetRouteResponse) -> bool,
    ) -> GetRouteResponse {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(Instant::now() < end, "no push for {modid}/{cmdid}");
            let r = self.next();
            if r.modid == modid && r.cmdid == cmdid && want(&r) {
                return r;
            }
        }
    }
}

fn tools_present() -> bool {
    Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()
}

#[test]
fn browser_end_to_end() {
    if !tools_present() {
        lars_testkit::skip(
            "browser_end_to_end",
            &format!("{CHROMIUM} or {CHROMEDRIVER} missing (run .ci/setup-browser.sh)"),
        );
        return;
    }
    let c = Console::start();
    // A small realistic data set, so the screenshots show something.
    c.store.seed_demo().unwrap();
    seed_status(&c);
    let mut dns_config = DnsConfig::default();
    dns_config.reactor.addr.set_port(0);
    dns_config.http.addr = None;
    dns_config.version_interval = Duration::from_millis(200);
    let mut dns = lars_dns::Dns::start(dns_config, c.store.clone()).unwrap();
    let (mut sub, first) = Subscriber::subscribe(dns.local_addr(), 42, 7);
    assert!(first.host.is_empty(), "42/7 has no routes yet");

    let out = artifacts_dir();
    let profile = tempfile::tempdir().unwrap();
    let driver = Driver::start(&out.join("chromedriver.log"));
    let b = Browser::open(&driver, profile.path());
    let base = format!("http://{}", c.addr);

    // Log in.
    b.go(&format!("{base}/routes"));
    assert!(b.url().ends_with("/login"), "{}", b.url());
    b.fill("#username", USER);
    b.fill("#password", "wrong password");
    b.click("#login");
    assert!(b.text("#login-error").contains("wrong password"));
    b.fill("#username", USER);
    b.fill("#password", PASSWORD);
    b.click("#login");
    wait_until("the overview", Duration::from_secs(10), || {
        b.url() == format!("{base}/")
    });
    // The Secure, HttpOnly, SameSite=Strict cookie is kept by Chromium on
    // http://127.0.0.1 (a secure context).
    let cookies = b.call("GET", "/cookie", None);
    let sc = cookies
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "lars_session")
        .expect("session cookie");
    assert_eq!(sc["secure"], true);
    assert_eq!(sc["httpOnly"], true);
    assert_eq!(sc["sameSite"], "Strict");

    // Add a modid with its description.
    b.go(&format!("{base}/mods"));
    b.fill("#f-modid", "42");
    b.fill("#f-content", "checkout service");
    b.click("#desc-save");
    wait_until("the saved modid", Duration::from_secs(10), || {
        b.source().contains("checkout service")
    });
    b.go(&format!("{base}/cmds"));
    b.fill("#f-cmdid", "7");
    b.fill("#f-content", "create order");
    b.click("#desc-save");
    wait_until("the saved cmdid", Duration::from_secs(10), || {
        b.source().contains("create order")
    });

    // A bad ip is refused next to the field, then a good route is added.
    let v0 = c.store.version().unwrap();
    b.go(&format!("{base}/routes"));
    b.fill("#add-modid", "42");
    b.fill("#add-cmdid", "7");
    b.fill("#add-ip", "10.42.0");
    b.fill("#add-port", "8042");
    b.click("#add-host");
    assert!(b.text("span.err[data-field=ip]").contains("dotted-quad"));
    b.screenshot(&out.join("validation.png"));
    assert_eq!(c.store.version().unwrap(), v0);
    b.fill("#add-ip", "10.42.0.1");
    b.click("#add-host");
    wait_until("the key page", Duration::from_secs(10), || {
        b.url().contains("/routes/42/7")
    });
    assert!(b.text("#flash").contains("Host added"));
    b.fill("#key-add-ip", "10.42.0.2");
    b.fill("#key-add-port", "8043");
    b.click("#key-add");
    wait_until("the second host", Duration::from_secs(10), || {
        b.source().contains("10.42.0.2:8043")
    });
    b.screenshot(&out.join("key.png"));

    // Listed on the routes page.
    b.go(&format!("{base}/routes"));
    let table = b.text("#routes-table");
    assert!(
        table.contains("10.42.0.1:8042") && table.contains("checkout service"),
        "{table}"
    );
    b.screenshot(&out.join("routes.png"));

    // The subscribed dns client receives the push.
    let push = sub.wait_push(42, 7, |r| r.host.len() == 2);
    let hosts: Vec<String> = push
        .host
        .iter()
        .map(|h| lars_core::HostAddr::from_proto(h).unwrap().to_string())
        .collect();
    assert_eq!(hosts, ["10.42.0.1:8042", "10.42.0.2:8043"]);

    // Call status page: chart and the overloaded host.
    b.go(&format!("{base}/status/1/1"));
    assert!(b.source().contains("<svg"));
    assert!(b.text("#host-status").contains("overloaded"));
    b.screenshot(&out.join("call-status.png"));

    // Delete the key; the dns pushes the empty list.
    b.go(&format!("{base}/routes/42/7"));
    b.click("#delete-key");
    wait_until("the routes page", Duration::from_secs(10), || {
        b.url().contains("/routes?done=key-deleted")
    });
    assert!(!b.text("#routes-table").contains("10.42.0.1"));
    sub.wait_push(42, 7, |r| r.host.is_empty());

    // Versions page, then log out.
    b.go(&format!("{base}/versions"));
    assert!(b.text("#version").parse::<u64>().unwrap() >= c.store.version().unwrap().min(1));
    b.click("header .who button");
    wait_until("the login page", Duration::from_secs(10), || {
        b.url().ends_with("/login")
    });
    b.go(&format!("{base}/routes"));
    assert!(b.url().ends_with("/login"));
    drop(b);
    drop(driver);
    dns.stop();

    if std::env::var_os("LARS_UPDATE_SCREENSHOTS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
        std::fs::copy(out.join("routes.png"), docs.join("console-routes.png")).unwrap();
        std::fs::copy(out.join("call-status.png"), docs.join("console-status.png")).unwrap();
    }
}
