//! Echo server on lars-net: answers every `EchoMessage` (msgid 1) with the
//! same message. Pair it with `echo_client`.
//!
//! `cargo run --release --example echo_server -- --addr 127.0.0.1:9900 --threads 2`
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use lars_net::{Router, TcpServer};

/// The echo payload.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoMessage {
    /// Free text.
    #[prost(string, tag = "1")]
    pub content: String,
    /// Sequence number.
    #[prost(int32, tag = "2")]
    pub id: i32,
}

/// Message id of [`EchoMessage`] both ways.
const ECHO: i32 = 1;

#[derive(Parser, Debug)]
#[command(about = "lars-net echo server")]
struct Args {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:9900")]
    addr: SocketAddr,
    /// Worker loops.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Stop after this many seconds (0: run until killed).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let router = Router::new().route(ECHO, |conn, frame| match frame.message::<EchoMessage>() {
        Ok(msg) => {
            if let Err(e) = conn.send(ECHO, &msg) {
                eprintln!("reply failed: {e}");
            }
        }
        Err(e) => {
            eprintln!("{}: {e}; closing", conn.id());
            conn.close();
        }
    });
    let mut server = TcpServer::builder(args.addr)
        .threads(args.threads)
        .router(router)
        .start()?;
    println!(
        "echo server on {} with {} worker(s)",
        server.local_addr(),
        args.threads
    );
    if args.seconds == 0 {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    std::thread::sleep(Duration::from_secs(args.seconds));
    server.join();
    println!("{:?}", server.stats().snapshot());
    Ok(())
}
