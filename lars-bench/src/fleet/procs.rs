//! The fleet's service processes: the real `lars-dns` and `lars-reporter`
//! binaries, each started from a config file written into the run's
//! temporary directory, SIGKILLed and reaped on drop.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::FleetError;

/// Which service binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dns,
    Reporter,
}

impl Kind {
    fn bin_name(self) -> &'static str {
        match self {
            Kind::Dns => "lars-dns",
            Kind::Reporter => "lars-reporter",
        }
    }

    fn env_var(self) -> &'static str {
        match self {
            Kind::Dns => "LARS_DNS_BIN",
            Kind::Reporter => "LARS_REPORTER_BIN",
        }
    }
}

/// Finds a service binary: `explicit`, else `$LARS_DNS_BIN` /
/// `$LARS_REPORTER_BIN`, else next to the running executable (the `lars`
/// tool), else one directory up (a test executable in `target/<profile>/deps`).
pub(crate) fn locate(kind: Kind, explicit: Option<&Path>) -> Result<PathBuf, FleetError> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(FleetError::MissingBinary(format!(
                "{} not found at {}",
                kind.bin_name(),
                p.display()
            )))
        };
    }
    if let Some(p) = std::env::var_os(kind.env_var()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(FleetError::MissingBinary(format!(
                "{}={} is not a file",
                kind.env_var(),
                p.display()
            )))
        };
    }
    let exe = std::env::current_exe().map_err(FleetError::Io)?;
    let mut tried = Vec::new();
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join(kind.bin_name());
        if candidate.is_file() {
            return Ok(candidate);
        }
        tried.push(candidate.display().to_string());
    }
    Err(FleetError::MissingBinary(format!(
        "{} not found (tried {}); build it (cargo build --release --workspace) or set {}",
        kind.bin_name(),
        tried.join(", "),
        kind.env_var()
    )))
}

/// A free TCP port on 127.0.0.1 (bound and released: the child binds it a
/// moment later, which a concurrent process could in principle take first;
/// the child then fails to start and [`Service::wait_ready`] says so).
pub(crate) fn free_port() -> io::Result<u16> {
    let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

/// A private directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub(crate) struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub(crate) fn new(prefix: &str) -> io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)?;
        Ok(Self { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// One running service process. Dropping it SIGKILLs and reaps the child.
#[derive(Debug)]
pub(crate) struct Service {
    kind: Kind,
    name: String,
    bin: PathBuf,
    conf: PathBuf,
    log: PathBuf,
    addr: SocketAddr,
    child: Option<Child>,
}

impl Service {
    /// Starts `bin -c conf`, stderr into `log` (appended), listening (once
    /// ready) on `addr`.
    pub(crate) fn spawn(
        kind: Kind,
        name: String,
        bin: &Path,
        conf: PathBuf,
        log: PathBuf,
        addr: SocketAddr,
    ) -> Result<Self, FleetError> {
        let mut s = Self {
            kind,
            name,
            bin: bin.to_path_buf(),
            conf,
            log,
            addr,
            child: None,
        };
        s.start()?;
        Ok(s)
    }

    fn start(&mut self) -> Result<(), FleetError> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(FleetError::Io)?;
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.conf)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                FleetError::Service(format!("cannot start {}: {e}", self.bin.display()))
            })?;
        tracing::debug!(name = %self.name, pid = child.id(), "started");
        self.child = Some(child);
        Ok(())
    }

    /// The TCP address it serves.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id, while running.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits until its port accepts a connection, or fails naming the
    /// process and the end of its log.
    pub(crate) fn wait_ready(&mut self, within: Duration) -> Result<(), FleetError> {
        let deadline = Instant::now() + within;
        loop {
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait().ok().flatten(),
                None => None,
            };
            if let Some(status) = exited {
                self.child = None;
                return Err(FleetError::Service(format!(
                    "{} ({}) exited at start ({status}): {}",
                    self.name,
                    self.kind.bin_name(),
                    log_tail(&self.log)
                )));
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(FleetError::Service(format!(
                    "{} did not accept on {} within {:?}: {}",
                    self.name,
                    self.addr,
                    within,
                    log_tail(&self.log)
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (std's `Child::kill`) and reap.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Err(e) = child.kill() {
                tracing::warn!(name = %self.name, "kill: {e}");
            }
            let _ = child.wait();
        }
    }

    /// Starts it again from the same config (same port).
    pub(crate) fn restart(&mut self) -> Result<(), FleetError> {
        self.kill();
        self.start()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last lines of a child's log, for an error message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(5);
    let tail = lines.get(start..).unwrap_or_default().join(" | ");
    if tail.is_empty() {
        format!("(no output in {})", path.display())
    } else {
        tail
    }
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (children
/// inherit it) and returns the soft limit now in force.
pub(crate) fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        let raised = rustix::process::Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!("cannot raise RLIMIT_NOFILE to the hard limit: {e}");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}
