//! A TCP proxy a test can cut or freeze.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// A TCP proxy on 127.0.0.1 in front of `target`, for tests.
///
/// - [`cut`](Proxy::cut): every connection is closed and new ones are
///   refused until [`restore`](Proxy::restore): a server that is down.
/// - [`freeze`](Proxy::freeze): nothing is forwarded either way and nothing
///   is closed until [`thaw`](Proxy::thaw), which delivers what was held:
///   a server that hangs (SIGSTOP), as the network sees it (the kernel still
///   accepts connections and buffers bytes).
///
/// Dropping it closes every connection and joins every thread it started.
#[derive(Debug)]
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    cut: AtomicBool,
    frozen: AtomicBool,
    stop: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
    pipes: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn wait_thawed(&self) {
        while self.frozen.load(Ordering::SeqCst) && !self.stop.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn conns(&self) -> MutexGuard<'_, Vec<TcpStream>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pipes(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.pipes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close_all(&self) {
        for c in self.conns().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Proxy {
    /// Listens on an ephemeral port of 127.0.0.1 and forwards each connection
    /// to `target`. Panics when it cannot listen (a broken test machine).
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = match TcpListener::bind("127.0.0.1:0") {
            Ok(l) => l,
            Err(e) => panic!("proxy: cannot listen on 127.0.0.1: {e}"),
        };
        let addr = match listener.set_nonblocking(true).and(listener.local_addr()) {
            Ok(a) => a,
            Err(e) => panic!("proxy: {e}"),
        };
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let acceptor = thread::spawn(move || accept_loop(&listener, target, &s));
        Proxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Closes every connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        self.shared.close_all();
    }

    /// Accepts connections again after [`Proxy::cut`].
    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// Stops forwarding in both directions; connections stay open.
    pub fn freeze(&self) {
        self.shared.frozen.store(true, Ordering::SeqCst);
    }

    /// Forwards again, first what was held while frozen.
    pub fn thaw(&self) {
        self.shared.frozen.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.frozen.store(false, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        self.shared.close_all();
        let pipes: Vec<_> = self.shared.pipes().drain(..).collect();
        for p in pipes {
            let _ = p.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, target: SocketAddr, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(_) => {
                thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        if shared.cut.load(Ordering::SeqCst) {
            continue; // dropped: closed at once
        }
        let Ok(server) = TcpStream::connect(target) else {
            continue;
        };
        let clones = (|| {
            client.set_nonblocking(false)?;
            Ok::<_, std::io::Error>((
                client.try_clone()?,
                server.try_clone()?,
                client.try_clone()?,
                server.try_clone()?,
            ))
        })();
        let Ok((c_conn, s_conn, c_pipe, s_pipe)) = clones else {
            continue;
        };
        shared.conns().extend([c_conn, s_conn]);
        let mut pipes = shared.pipes();
        let s = Arc::clone(shared);
        pipes.push(thread::spawn(move || pipe(c_pipe, s_pipe, &s)));
        let s = Arc::clone(shared);
        pipes.push(thread::spawn(move || pipe(server, client, &s)));
    }
}

/// Copies `from` to `to` until either side closes, holding bytes (and the
/// close) while frozen.
fn pipe(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        shared.wait_thawed();
        match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                shared.wait_thawed();
                break;
            }
            Ok(n) => {
                shared.wait_thawed();
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use super::Proxy;

    /// An echo server on 127.0.0.1 for two connections.
    fn echo() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            for conn in l.incoming().take(2) {
                let Ok(mut c) = conn else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 || c.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, t)
    }

    fn roundtrip(c: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        c.write_all(msg)?;
        let mut got = vec![0u8; msg.len()];
        c.read_exact(&mut got)?;
        Ok(got)
    }

    #[test]
    fn forwards_freezes_and_cuts() {
        let (target, echo) = echo();
        let proxy = Proxy::start(target);
        let mut c = TcpStream::connect(proxy.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert_eq!(roundtrip(&mut c, b"one").unwrap(), b"one");

        proxy.freeze();
        c.write_all(b"two").unwrap();
        let mut buf = [0u8; 3];
        let held = c.read(&mut buf).unwrap_err();
        assert!(
            matches!(
                held.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{held}"
        );
        proxy.thaw();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"two");

        proxy.cut();
        let closed = roundtrip(&mut c, b"three");
        assert!(closed.is_err() || closed.unwrap().is_empty());
        proxy.restore();
        let mut c = TcpStream::connect(proxy.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(roundtrip(&mut c, b"four").unwrap(), b"four");
        drop(proxy);
        echo.join().unwrap();
    }
}
