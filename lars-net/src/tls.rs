//! TLS for the framed TCP server and client (rustls, ring provider).
//!
//! The reactor keeps its model: a TLS connection is a non-blocking
//! `rustls::Connection` beside the socket, driven by the same mio readiness
//! (`read_tls` / `process_new_packets` / plaintext reader on READABLE,
//! plaintext writer / `write_tls` on flush), and frames are decoded from the
//! plaintext exactly as on a plain connection.
//!
//! [`ServerTls`] and [`ClientTls`] hold the configuration built from PEM
//! files and can [`reload`](ServerTls::reload) it from the same paths: new
//! handshakes use the new files, connections already open keep theirs, and
//! a bad new file keeps the old configuration (logged, counted). Libraries
//! install no signal handler: a binary catches SIGHUP and calls
//! [`reload_all`], which reloads every TLS configuration this process built.

use std::fmt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

use lars_core::config::{ClientAuth, ClientTlsConfig, TlsListenerConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::error::{NetError, Result};
use crate::stats::NetStats;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(what: impl fmt::Display) -> NetError {
    NetError::Tls(what.to_string())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_err(format_args!("{}: {e}", path.display())))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| tls_err(format_args!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(tls_err(format_args!(
            "{}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        tls_err(format_args!(
            "{}: no usable PEM private key ({e})",
            path.display()
        ))
    })
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>> {
    let mut store = RootCertStore::empty();
    for cert in certs(path)? {
        store
            .add(cert)
            .map_err(|e| tls_err(format_args!("{}: bad CA certificate: {e}", path.display())))?;
    }
    Ok(Arc::new(store))
}

/// Builds a rustls server configuration from the files of `[tls]`.
fn server_config(files: &TlsListenerConfig) -> Result<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?;
    let builder = match (&files.ca, files.client_auth) {
        (Some(ca), ClientAuth::Required) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
                .build()
                .map_err(|e| tls_err(format_args!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        (None, ClientAuth::Required) => {
            return Err(tls_err("client_auth = required needs a ca file"));
        }
        (_, ClientAuth::None) => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(certs(&files.cert)?, key(&files.key)?)
        .map_err(|e| {
            tls_err(format_args!(
                "{} / {}: {e}",
                files.cert.display(),
                files.key.display()
            ))
        })?;
    // No TLS 1.3 session tickets: agents keep one long connection, so
    // resumption buys nothing, and tickets are data the server sends
    // unasked. A client of a one-way link (reports) that never reads and
    // then closes would leave them unread, and Linux answers such a close
    // with a reset that discards the reports the server has not read yet.
    cfg.send_tls13_tickets = 0;
    Ok(cfg)
}

/// Builds a rustls client configuration from a client's `[tls]`.
fn client_config(files: &ClientTlsConfig) -> Result<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_root_certificates(roots(&files.ca)?);
    let cfg = match (&files.cert, &files.key) {
        (Some(cert), Some(key_path)) => builder
            .with_client_auth_cert(certs(cert)?, key(key_path)?)
            .map_err(|e| {
                tls_err(format_args!(
                    "{} / {}: {e}",
                    cert.display(),
                    key_path.display()
                ))
            })?,
        _ => builder.with_no_client_auth(),
    };
    Ok(cfg)
}

/// Something [`reload_all`] can reload.
trait Reload: Send + Sync {
    fn reload_now(&self) -> Result<()>;
    fn describe(&self) -> String;
}

static RELOADABLE: Mutex<Vec<Weak<dyn Reload>>> = Mutex::new(Vec::new());

fn register(r: Weak<dyn Reload>) {
    let mut list = RELOADABLE.lock().unwrap_or_else(PoisonError::into_inner);
    list.retain(|w| w.strong_count() > 0);
    list.push(r);
}

/// What [`reload_all`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Configurations reloaded from their files.
    pub reloaded: usize,
    /// Configurations whose new files were bad (each keeps its old one).
    pub failed: usize,
}

/// Reloads every TLS configuration (servers' and clients') this process
/// built and still uses, from the same paths: what a binary does on SIGHUP.
/// Each success and failure is logged.
pub fn reload_all() -> ReloadReport {
    let live: Vec<Arc<dyn Reload>> = {
        let mut list = RELOADABLE.lock().unwrap_or_else(PoisonError::into_inner);
        list.retain(|w| w.strong_count() > 0);
        list.iter().filter_map(Weak::upgrade).collect()
    };
    let mut report = ReloadReport::default();
    for r in live {
        match r.reload_now() {
            Ok(()) => report.reloaded += 1,
            Err(_) => report.failed += 1,
        }
    }
    report
}

struct ServerTlsInner {
    files: TlsListenerConfig,
    current: RwLock<Arc<ServerConfig>>,
    stats: Arc<NetStats>,
}

impl Reload for ServerTlsInner {
    fn reload_now(&self) -> Result<()> {
        match server_config(&self.files) {
            Ok(cfg) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(cfg);
                NetStats::inc(&self.stats.tls_reloads);
                tracing::info!(
                    "tls {}: reloaded {} and {}{}",
                    self.files.addr,
                    self.files.cert.display(),
                    self.files.key.display(),
                    self.files
                        .ca
                        .as_ref()
                        .map_or_else(String::new, |ca| format!(" (ca {})", ca.display()))
                );
                Ok(())
            }
            Err(e) => {
                NetStats::inc(&self.stats.tls_reload_failures);
                tracing::error!(
                    "tls {}: reload failed, keeping the previous certificate: {e}",
                    self.files.addr
                );
                Err(e)
            }
        }
    }

    fn describe(&self) -> String {
        format!("server {}", self.files.addr)
    }
}

/// A TLS listener's configuration, loaded from its PEM files and
/// reloadable from the same paths. Cloning shares it.
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<ServerTlsInner>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.inner.files)
            .finish()
    }
}

impl ServerTls {
    /// Loads the certificate, key and (with `client_auth = required`) CA
    /// files; an unreadable or bad file is an error naming it.
    pub fn load(files: &TlsListenerConfig) -> Result<Self> {
        Self::load_counted(files, Arc::default())
    }

    /// [`load`](Self::load), counting reloads in a server's `stats`.
    pub(crate) fn load_counted(files: &TlsListenerConfig, stats: Arc<NetStats>) -> Result<Self> {
        let cfg = server_config(files)?;
        let inner = Arc::new(ServerTlsInner {
            files: files.clone(),
            current: RwLock::new(Arc::new(cfg)),
            stats,
        });
        let weak: Weak<dyn Reload> = Arc::downgrade(&inner) as Weak<dyn Reload>;
        register(weak);
        Ok(Self { inner })
    }

    /// A server certificate and key without client authentication (e.g.
    /// the console's HTTPS), reloadable like a listener's.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self> {
        Self::load(&TlsListenerConfig {
            addr: std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0),
            cert: cert.to_owned(),
            key: key.to_owned(),
            ca: None,
            client_auth: ClientAuth::None,
            allow: lars_core::config::Allowlist::everyone(),
        })
    }

    /// The configuration new handshakes use now (for a server outside the
    /// reactor, e.g. tokio-rustls; take it again for each handshake so a
    /// reload is seen).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current()
    }

    /// Re-reads the files: new handshakes use them, connections already
    /// open keep theirs. On error the previous configuration stays (the
    /// error is logged and counted).
    pub fn reload(&self) -> Result<()> {
        self.inner.reload_now()
    }

    /// The configuration new handshakes use.
    pub(crate) fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(
            &self
                .inner
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// The files and settings it was built from.
    pub fn files(&self) -> &TlsListenerConfig {
        &self.inner.files
    }

    /// Successful reloads so far.
    pub fn reloads(&self) -> u64 {
        self.inner.stats.tls_reloads.load(Ordering::Relaxed)
    }

    /// Reloads that failed (the previous configuration was kept).
    pub fn reload_failures(&self) -> u64 {
        self.inner.stats.tls_reload_failures.load(Ordering::Relaxed)
    }
}

struct ClientTlsInner {
    files: ClientTlsConfig,
    current: RwLock<Arc<ClientConfig>>,
    stats: Arc<NetStats>,
}

impl Reload for ClientTlsInner {
    fn reload_now(&self) -> Result<()> {
        match client_config(&self.files) {
            Ok(cfg) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(cfg);
                NetStats::inc(&self.stats.tls_reloads);
                tracing::info!("tls client: reloaded {}", self.describe());
                Ok(())
            }
            Err(e) => {
                NetStats::inc(&self.stats.tls_reload_failures);
                tracing::error!(
                    "tls client: reload failed, keeping the previous configuration: {e}"
                );
                Err(e)
            }
        }
    }

    fn describe(&self) -> String {
        let mut s = format!("ca {}", self.files.ca.display());
        if let Some(cert) = &self.files.cert {
            s.push_str(&format!(", cert {}", cert.display()));
        }
        s
    }
}

/// A TLS client configuration (CA to check the server with, optional
/// client certificate, optional server name), reloadable from the same
/// paths. Cloning shares it.
#[derive(Clone)]
pub struct ClientTls {
    inner: Arc<ClientTlsInner>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("files", &self.inner.files)
            .finish()
    }
}

impl ClientTls {
    /// Loads the CA and (if set) the client certificate and key.
    pub fn load(files: &ClientTlsConfig) -> Result<Self> {
        if let Some(name) = &files.server_name {
            ServerName::try_from(name.clone())
                .map_err(|e| tls_err(format_args!("server_name {name:?}: {e}")))?;
        }
        let cfg = client_config(files)?;
        let inner = Arc::new(ClientTlsInner {
            files: files.clone(),
            current: RwLock::new(Arc::new(cfg)),
            stats: Arc::default(),
        });
        let weak: Weak<dyn Reload> = Arc::downgrade(&inner) as Weak<dyn Reload>;
        register(weak);
        Ok(Self { inner })
    }

    /// Re-reads the files (see [`ServerTls::reload`]).
    pub fn reload(&self) -> Result<()> {
        self.inner.reload_now()
    }

    /// The files and settings it was built from.
    pub fn files(&self) -> &ClientTlsConfig {
        &self.inner.files
    }

    /// A client connection to `peer`: the server name is `server_name`
    /// when configured, else the peer's IP address. (Public for blocking
    /// clients such as the load tools, which drive it with
    /// `rustls::StreamOwned`.)
    pub fn connect(&self, peer: std::net::SocketAddr) -> Result<rustls::ClientConnection> {
        let name = match &self.inner.files.server_name {
            Some(n) => ServerName::try_from(n.clone()).map_err(tls_err)?,
            None => ServerName::IpAddress(peer.ip().into()),
        };
        let cfg = Arc::clone(
            &self
                .inner
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        );
        rustls::ClientConnection::new(cfg, name).map_err(tls_err)
    }
}

/// Why a TLS handshake failed, as counted in `tls_refused{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsRefusal {
    /// The client sent no certificate and one is required.
    NoClientCert,
    /// The client's certificate does not chain to `[tls] ca` (or is
    /// expired, revoked, not for client auth...).
    BadClientCert,
    /// Anything else (a plain client on the TLS port, no common version or
    /// cipher, a broken message...).
    Handshake,
}

impl TlsRefusal {
    pub(crate) fn of(e: &rustls::Error) -> Self {
        match e {
            rustls::Error::NoCertificatesPresented => Self::NoClientCert,
            rustls::Error::InvalidCertificate(_) => Self::BadClientCert,
            _ => Self::Handshake,
        }
    }
}
