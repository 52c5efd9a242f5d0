//! A TCP proxy that can freeze: while frozen it forwards nothing either way
//! and closes nothing, the way a stopped (SIGSTOP) database server looks
//! from the network (the kernel still accepts connections and buffers
//! bytes). Bytes read while frozen are delivered after [`FreezeProxy::thaw`].
//! Shared by the lars-store, lars-reporter and lars-dns tests (`#[path]`).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// The proxy; dropping it closes every connection and joins its threads.
pub struct FreezeProxy {
    pub addr: SocketAddr,
    frozen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl FreezeProxy {
    pub fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let threads: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (fz, st, cs, ts) = (frozen.clone(), stop.clone(), conns.clone(), threads.clone());
        let acceptor = thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(target) else {
                            continue;
                        };
                        let mut list = cs.lock().unwrap();
                        list.push(client.try_clone().unwrap());
                        list.push(server.try_clone().unwrap());
                        let mut t = ts.lock().unwrap();
                        let c2 = client.try_clone().unwrap();
                        let s2 = server.try_clone().unwrap();
                        t.push(pipe(c2, s2, fz.clone(), st.clone()));
                        t.push(pipe(server, client, fz.clone(), st.clone()));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            addr,
            frozen,
            stop,
            conns,
            threads,
            acceptor: Some(acceptor),
        }
    }

    /// Stops forwarding in both directions; connections stay open.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// Forwards again, first what was held.
    pub fn thaw(&self) {
        self.frozen.store(false, Ordering::SeqCst);
    }
}

impl Drop for FreezeProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.frozen.store(false, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            a.join().unwrap();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        for t in self.threads.lock().unwrap().drain(..) {
            t.join().unwrap();
        }
    }
}

fn wait_thawed(frozen: &AtomicBool, stop: &AtomicBool) {
    while frozen.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(5));
    }
}

fn pipe(
    mut from: TcpStream,
    mut to: TcpStream,
    frozen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            wait_thawed(&frozen, &stop);
            match from.read(&mut buf) {
                Ok(0) | Err(_) => {
                    // A close is news too: it waits for the thaw.
                    wait_thawed(&frozen, &stop);
                    break;
                }
                Ok(n) => {
                    // Read while frozen: hold it until thawed.
                    wait_thawed(&frozen, &stop);
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    })
}
