//! Certificates generated in the test (issue 16): a CA, a server certificate
//! (for `localhost` and `127.0.0.1`) and a client certificate signed by it,
//! and a second, unrelated CA with its own client certificate for the
//! negative tests. Everything is written as PEM files to a temp directory of
//! the test's own, removed on drop.
//!
//! ```
//! let pki = lars_testkit::tls::TestPki::new("doc");
//! assert!(pki.ca.exists() && pki.server_cert.exists() && pki.other_client_key.exists());
//! ```

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A CA with a key, able to sign leaf certificates.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("ca key");
    let cert = params.self_signed(&key).expect("ca cert");
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A leaf certificate's PEMs: (certificate, key).
fn leaf(ca: &Ca, cn: &str, names: &[&str], server: bool) -> (String, String) {
    let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    let mut params = CertificateParams::new(names).expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, &ca.issuer).expect("leaf cert");
    (cert.pem(), key.serialize_pem())
}

/// PEM files of a test PKI in a directory of their own (removed on drop).
#[derive(Debug)]
pub struct TestPki {
    /// The directory holding every file.
    pub dir: PathBuf,
    /// The CA certificate (trusted by servers for client certificates and by
    /// clients for the server certificate).
    pub ca: PathBuf,
    /// The server certificate (SANs `localhost`, `127.0.0.1`, `::1`), signed
    /// by [`ca`](Self::ca).
    pub server_cert: PathBuf,
    /// The server key.
    pub server_key: PathBuf,
    /// A client certificate (CN `lars-agent`) signed by [`ca`](Self::ca).
    pub client_cert: PathBuf,
    /// The client key.
    pub client_key: PathBuf,
    /// An unrelated CA.
    pub other_ca: PathBuf,
    /// A client certificate signed by the unrelated CA (must be refused by a
    /// server that trusts only [`ca`](Self::ca)).
    pub other_client_cert: PathBuf,
    /// Its key.
    pub other_client_key: PathBuf,
    main_ca: Ca,
}

fn write(path: &Path, text: &str) {
    if let Err(e) = std::fs::write(path, text) {
        panic!("cannot write {}: {e}", path.display());
    }
}

impl TestPki {
    /// Generates everything into a fresh temp directory named after `name`
    /// and this process.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("lars-pki-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("cannot create {}: {e}", dir.display());
        }
        let main_ca = ca("lars test CA");
        let other = ca("unrelated test CA");
        let pki = Self {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            other_ca: dir.join("other-ca.pem"),
            other_client_cert: dir.join("other-client.pem"),
            other_client_key: dir.join("other-client.key"),
            dir,
            main_ca,
        };
        write(&pki.ca, &pki.main_ca.pem);
        write(&pki.other_ca, &other.pem);
        pki.reissue_server("lars test server");
        let (c, k) = leaf(&pki.main_ca, "lars-agent", &["lars-agent"], false);
        write(&pki.client_cert, &c);
        write(&pki.client_key, &k);
        let (c, k) = leaf(&other, "intruder", &["intruder"], false);
        write(&pki.other_client_cert, &c);
        write(&pki.other_client_key, &k);
        pki
    }

    /// Writes a new server certificate and key (a new key pair, common name
    /// `cn`, signed by the same CA) over the server files: what rolling a
    /// certificate does before SIGHUP.
    pub fn reissue_server(&self, cn: &str) {
        let (c, k) = leaf(&self.main_ca, cn, &["localhost", "127.0.0.1", "::1"], true);
        write(&self.server_cert, &c);
        write(&self.server_key, &k);
    }

    /// Writes a new client certificate and key signed by the main CA to
    /// `<dir>/<name>.pem` and `<dir>/<name>.key`; returns both paths.
    pub fn issue_client(&self, name: &str) -> (PathBuf, PathBuf) {
        let (c, k) = leaf(&self.main_ca, name, &[name], false);
        let cert = self.dir.join(format!("{name}.pem"));
        let key = self.dir.join(format!("{name}.key"));
        write(&cert, &c);
        write(&key, &k);
        (cert, key)
    }
}

impl TestPki {
    /// A rustls client configuration trusting [`ca`](Self::ca), with the
    /// client certificate when `with_cert` (for a blocking
    /// `rustls::StreamOwned` in tests and benchmarks).
    pub fn client_config(&self, with_cert: bool) -> std::sync::Arc<rustls::ClientConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&self.ca).expect("ca file") {
            roots.add(c.expect("ca pem")).expect("ca cert");
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_root_certificates(roots);
        let cfg = if with_cert {
            let chain = CertificateDer::pem_file_iter(&self.client_cert)
                .expect("client cert file")
                .map(|c| c.expect("client cert pem"))
                .collect();
            let key = PrivateKeyDer::from_pem_file(&self.client_key).expect("client key");
            b.with_client_auth_cert(chain, key).expect("client auth")
        } else {
            b.with_no_client_auth()
        };
        std::sync::Arc::new(cfg)
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}
