//! Load tool for `echo_server`: `--conns N` blocking ping-pong connections for
//! `--duration S` seconds, printing round trips per second each second. Then
//! it measures a raw reference in the same run — a minimal blocking std echo
//! server of the same framed message, in this process on an ephemeral port,
//! same conns and duration — and prints both totals and their ratio.
//!
//! `cargo run --release --example echo_client -- --addr 127.0.0.1:9900 --conns 1 --duration 5`
#![allow(clippy::unwrap_used)]

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::BytesMut;
use clap::Parser;
use prost::Message;

/// The echo payload (same as `echo_server`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoMessage {
    /// Free text.
    #[prost(string, tag = "1")]
    pub content: String,
    /// Sequence number.
    #[prost(int32, tag = "2")]
    pub id: i32,
}

const ECHO: i32 = 1;

#[derive(Parser, Debug)]
#[command(about = "lars-net echo load tool")]
struct Args {
    /// The lars-net echo server.
    #[arg(long, default_value = "127.0.0.1:9900")]
    addr: SocketAddr,
    /// Concurrent ping-pong connections.
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Message text.
    #[arg(long, default_value = "hello lars, this is an echo message")]
    content: String,
    /// Skip the raw-socket reference.
    #[arg(long)]
    no_reference: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dur = Duration::from_secs(args.duration.max(1));
    println!(
        "lars-net echo server {}: {} conn(s), {:?}",
        args.addr, args.conns, dur
    );
    let lars = run_load(args.addr, args.conns, dur, &args.content)?;
    println!("lars-net total: {lars:.0} round trips/s");
    if args.no_reference {
        return Ok(());
    }
    let reference = RawServer::start()?;
    println!(
        "raw blocking std reference {}: {} conn(s), {:?}",
        reference.addr, args.conns, dur
    );
    let raw = run_load(reference.addr, args.conns, dur, &args.content)?;
    reference.stop();
    println!("raw reference total: {raw:.0} round trips/s");
    println!(
        "RESULT conns={} lars={lars:.0}/s raw={raw:.0}/s ratio={:.2}",
        args.conns,
        lars / raw
    );
    Ok(())
}

fn write_frame(out: &mut BytesMut, msg: &EchoMessage) {
    out.clear();
    out.extend_from_slice(&ECHO.to_le_bytes());
    out.extend_from_slice(&(msg.encoded_len() as i32).to_le_bytes());
    msg.encode(out).unwrap(); // BytesMut grows on demand
}

/// Reads one frame into `body`; `Ok(None)` on a clean EOF.
fn read_frame(r: &mut impl Read, body: &mut Vec<u8>) -> std::io::Result<Option<i32>> {
    let mut h = [0u8; 8];
    match r.read_exact(&mut h) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let msgid = i32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let len = i32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let len = usize::try_from(len)
        .ok()
        .filter(|l| *l <= 65_527)
        .ok_or_else(|| std::io::Error::other("bad length"))?;
    body.resize(len, 0);
    r.read_exact(body)?;
    Ok(Some(msgid))
}

/// Runs `conns` ping-pong threads against `addr` for `dur`; prints each
/// second's rate; returns the overall rate.
fn run_load(addr: SocketAddr, conns: usize, dur: Duration, content: &str) -> anyhow::Result<f64> {
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for c in 0..conns {
        let stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        let count = Arc::clone(&count);
        let stop = Arc::clone(&stop);
        let content = content.to_owned();
        threads.push(thread::spawn(move || -> anyhow::Result<()> {
            let mut reader = BufReader::new(stream.try_clone()?);
            let mut writer = stream;
            let mut out = BytesMut::with_capacity(256);
            let mut body = Vec::with_capacity(256);
            let mut id = (c as i32) << 24;
            while !stop.load(Ordering::Relaxed) {
                id = id.wrapping_add(1);
                write_frame(
                    &mut out,
                    &EchoMessage {
                        content: content.clone(),
                        id,
                    },
                );
                writer.write_all(&out)?;
                let msgid = read_frame(&mut reader, &mut body)?.context("server closed")?;
                let reply = EchoMessage::decode(&body[..])?;
                if msgid != ECHO || reply.id != id || reply.content != content {
                    bail!("bad echo: msgid {msgid}, id {} vs {id}", reply.id);
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    let start = Instant::now();
    let mut last = 0;
    let mut tick = start;
    while start.elapsed() < dur {
        thread::sleep(Duration::from_secs(1).min(dur.saturating_sub(start.elapsed())));
        let now = count.load(Ordering::Relaxed);
        let dt = tick.elapsed().as_secs_f64();
        tick = Instant::now();
        println!("  {:>8.0} round trips/s", (now - last) as f64 / dt);
        last = now;
    }
    let total = count.load(Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
    }
    Ok(total as f64 / secs)
}

/// The reference: blocking std sockets, a thread per connection, the same
/// framed protobuf decode and re-encode as the lars-net echo server.
struct RawServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: thread::JoinHandle<()>,
}

impl RawServer {
    fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let st = Arc::clone(&stop);
        let accept = thread::spawn(move || {
            let mut conns = Vec::new();
            for s in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(s) = s else { continue };
                conns.push(thread::spawn(move || {
                    let _ = raw_echo(s);
                }));
            }
            for c in conns {
                let _ = c.join();
            }
        });
        Ok(Self { addr, stop, accept })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
        let _ = self.accept.join();
    }
}

fn raw_echo(s: TcpStream) -> anyhow::Result<()> {
    s.set_nodelay(true)?;
    let mut reader = BufReader::new(s.try_clone()?);
    let mut writer = BufWriter::new(s);
    let mut body = Vec::with_capacity(256);
    let mut out = BytesMut::with_capacity(256);
    while let Some(msgid) = read_frame(&mut reader, &mut body)? {
        if msgid == ECHO {
            let msg = EchoMessage::decode(&body[..])?;
            write_frame(&mut out, &msg);
            writer.write_all(&out)?;
            writer.flush()?;
        }
    }
    Ok(())
}
