//! Three `lars-reporter` processes over one MySQL database, and a test
//! client that keeps the agents' side of the sharding contract
//! (docs/stats.md, "Several reporters") over real TCP: each key's reports go
//! to the reporter its ring position names; a reporter SIGKILLed mid-run
//! loses what it had not flushed; its keys are held, then go to the next
//! reporter with the current cumulative counters of all their hosts; the
//! reporter restarted gets them back the same way; it is killed once more
//! so the keys return to a reporter whose memory of them is stale. At the
//! end the store's history equals the calls sent: nothing lost, nothing
//! counted twice.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lars_core::proto::{HostCallResult, ReportStatusRequest};
use lars_core::ring::HashRing;
use lars_core::{MessageId, ModKey, frame};
use lars_store::StatsStore;

use super::BIN;

const REPORTERS: usize = 3;
const MODID: u32 = 9100;
const KEYS: u32 = 12;
const HOSTS: u16 = 3;
const CALLERS: [u32; 2] = [0x0a00_0101, 0x0a00_0102];
/// The client's report interval.
const TICK: Duration = Duration::from_millis(100);
/// How long a moved key is held (the agents' `handoff_hold`, shortened):
/// above the reporters' flush interval and `stream_reload_after`.
const HOLD: Duration = Duration::from_millis(2500);

/// A reporter process, killed (and reaped) when dropped.
struct Proc {
    child: Option<Child>,
    conf: PathBuf,
    addr: SocketAddr,
    http: SocketAddr,
}

impl Proc {
    fn start(name: &str, port: u16, http: u16, url: &str) -> Proc {
        let conf = lars_testkit::temp_conf(
            "lars-reporter-handoff",
            name,
            &format!(
                "[reactor]\nip = 127.0.0.1\nport = {port}\nthreadNum = 1\n\
                 [http]\nip = 127.0.0.1\nport = {http}\n\
                 [store]\nurl = {url}\n\
                 [reporter]\ndb_thread_cnt = 2\nflush_interval = 0.2\n\
                 stream_reload_after = 1\n"
            ),
        );
        let child = Command::new(BIN)
            .arg("-c")
            .arg(&conf)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut p = Proc {
            child: Some(child),
            conf,
            addr,
            http: SocketAddr::from(([127, 0, 0, 1], http)),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            if let Some(status) = p.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("{name} exited before listening: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "{name} not listening on {addr} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    /// SIGKILL: nothing flushed.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: everything accepted is flushed.
    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let pid = c.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                assert!(status.success(), "reporter exited with {status}");
                return;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("reporter did not stop within 40 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A counter of its `/status` JSON.
    fn status_counter(&self, name: &str) -> u64 {
        let mut s = TcpStream::connect(self.http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /status HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        let pat = format!("\"{name}\": ");
        let at = body
            .find(&pat)
            .unwrap_or_else(|| panic!("no {name} in {body}"))
            + pat.len();
        body[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.conf);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The agents: cumulative counters per (caller, key, host), where each key
/// goes, and one connection per reporter.
struct Agents {
    counters: BTreeMap<(u32, u32, u16), (u32, u32)>,
    sent: BTreeMap<u32, (u64, u64)>,
    owner: Vec<usize>,
    held_until: Vec<Option<(usize, Instant)>>,
    links: Vec<Option<TcpStream>>,
    rng: u64,
}

impl Agents {
    fn new() -> Self {
        let ring = HashRing::new(REPORTERS);
        Self {
            counters: BTreeMap::new(),
            sent: BTreeMap::new(),
            owner: (1..=KEYS)
                .map(|c| ring.worker(ModKey::new(MODID, c)))
                .collect(),
            held_until: vec![None; KEYS as usize],
            links: (0..REPORTERS).map(|_| None).collect(),
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    fn rand(&mut self, n: u32) -> u32 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % u64::from(n)) as u32
    }

    /// Keys of reporter `from` are held, then go to `to`.
    fn move_keys(&mut self, from: usize, to: usize, now: Instant) {
        for k in 0..KEYS as usize {
            let heading = self.held_until[k].map_or(self.owner[k], |(t, _)| t);
            if heading == from {
                self.held_until[k] = Some((to, now + HOLD));
            }
        }
    }

    /// Keys whose home is `home` (by the ring) go back to it after a hold.
    fn move_home(&mut self, home: usize, now: Instant) {
        let ring = HashRing::new(REPORTERS);
        for k in 0..KEYS {
            if ring.worker(ModKey::new(MODID, k + 1)) == home {
                self.held_until[k as usize] = Some((home, now + HOLD));
            }
        }
    }

    fn link(&mut self, r: usize, procs: &[Proc]) -> Option<&mut TcpStream> {
        if self.links[r].is_none() {
            let s = TcpStream::connect_timeout(&procs[r].addr, Duration::from_secs(1)).ok()?;
            s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
            self.links[r] = Some(s);
        }
        self.links[r].as_mut()
    }

    /// One report interval: new calls everywhere; every key not held goes
    /// to its owner (a hold that ended first moves the key).
    fn tick(&mut self, procs: &[Proc], now: Instant) {
        for caller in CALLERS {
            for k in 1..=KEYS {
                for h in 0..HOSTS {
                    let (s, e) = (self.rand(20), self.rand(3));
                    let cnt = self.counters.entry((caller, k, h)).or_default();
                    cnt.0 += s;
                    cnt.1 += e;
                    let tot = self.sent.entry(k).or_default();
                    tot.0 += u64::from(s);
                    tot.1 += u64::from(e);
                }
            }
        }
        for k in 0..KEYS as usize {
            if let Some((to, until)) = self.held_until[k] {
                if now < until {
                    continue;
                }
                self.owner[k] = to;
                self.held_until[k] = None;
            }
            let mut bytes = Vec::new();
            for caller in CALLERS {
                let req = ReportStatusRequest {
                    modid: MODID as i32,
                    cmdid: k as i32 + 1,
                    caller: caller as i32,
                    ts: 0,
                    results: (0..HOSTS)
                        .map(|h| {
                            let (succ, err) = self.counters[&(caller, k as u32 + 1, h)];
                            HostCallResult {
                                ip: 0x0a00_0001,
                                port: i32::from(9000 + h),
                                succ,
                                err,
                                overload: false,
                            }
                        })
                        .collect(),
                };
                bytes.extend(frame::to_bytes(MessageId::ReportStatusRequest as i32, &req).unwrap());
            }
            let r = self.owner[k];
            let failed = match self.link(r, procs) {
                Some(s) => s.write_all(&bytes).is_err(),
                None => false,
            };
            if failed {
                // The reporter is gone: what was sent may be lost; the
                // counters are cumulative, the next owner gets them whole.
                self.links[r] = None;
            }
        }
    }

    fn drop_link(&mut self, r: usize) {
        self.links[r] = None;
    }
}

/// Runs the client's ticks for `d`.
fn run_for(agents: &mut Agents, procs: &[Proc], d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        agents.tick(procs, Instant::now());
        std::thread::sleep(TICK);
    }
}

#[test]
fn three_reporters_one_killed_and_restarted_totals_exact() {
    let Some(db) = lars_testkit::MysqlDb::create("lars_reporter_bin", "handoff") else {
        return;
    };
    let url = db.url();
    let store = lars_store::open(&url).unwrap();
    let ports: Vec<(u16, u16)> = (0..REPORTERS).map(|_| (free_port(), free_port())).collect();
    let mut procs: Vec<Proc> = ports
        .iter()
        .enumerate()
        .map(|(i, &(p, h))| Proc::start(&format!("r{i}"), p, h, &url))
        .collect();
    let mut agents = Agents::new();
    let victim = agents.owner[0];
    let next = (victim + 1) % REPORTERS;

    run_for(&mut agents, &procs, Duration::from_secs(2));
    let reloaded = procs[next].status_counter("streams_reloaded");
    // SIGKILL mid-run: its unflushed rows are lost; its keys go to the next
    // reporter after the hold.
    procs[victim].kill();
    agents.drop_link(victim);
    agents.move_keys(victim, next, Instant::now());
    run_for(&mut agents, &procs, HOLD + Duration::from_secs(2));
    assert!(
        procs[next].status_counter("streams_reloaded") > reloaded,
        "the new owner re-read the moved streams"
    );

    // Back: the keys return home after the hold (its memory is only the
    // start-up resume, older than what the other reporter counted).
    let (p, h) = ports[victim];
    procs[victim] = Proc::start("r-again", p, h, &url);
    agents.move_home(victim, Instant::now());
    run_for(&mut agents, &procs, HOLD + Duration::from_secs(2));

    // Killed once more: the keys go to a reporter whose memory of them is
    // stale (it counted them before they went home).
    procs[victim].kill();
    agents.drop_link(victim);
    agents.move_keys(victim, next, Instant::now());
    run_for(&mut agents, &procs, HOLD + Duration::from_secs(1));

    // No new calls; every held key delivered; every reporter flushes.
    assert!(agents.held_until.iter().all(Option::is_none));
    for (i, p) in procs.iter_mut().enumerate() {
        agents.drop_link(i);
        p.stop();
    }
    for k in 1..=KEYS {
        let got = store
            .history_totals(Some(ModKey::new(MODID, k)), 0)
            .unwrap();
        assert_eq!(
            got,
            agents.sent[&k],
            "key {k}: the store's history equals the calls sent (owner {})",
            agents.owner[k as usize - 1]
        );
    }
}
