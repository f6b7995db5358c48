//! mTLS between agents (and the CLI) and the collector, with rustls (ring):
//!
//! - [`Certs`]: make a CA and server/client certificates (rcgen) for the lab and for users who
//!   have no PKI of their own (`monitor certs init`, `monitor certs issue`).
//! - [`ServerTls`]: the collector's server side: client certificate required, signed by the
//!   configured CA; the three files are re-read when they change, and a bad new file keeps the
//!   last good configuration (logged, counted).
//! - [`client_config`]: the client side for tonic (agent and CLI), read from files on every
//!   (re)connect so rotated certificates are picked up.

use std::{
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::{
    RootCertStore, ServerConfig,
    crypto::ring::default_provider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::WebPkiClientVerifier,
};
use tokio_rustls::TlsAcceptor;

/// Errors reading, checking or writing certificates and keys.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path} (check the path and permissions)")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the kind expected.
    #[error("{path}: {what}; expected a PEM file (`monitor certs init` makes a working set)")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// rustls rejected the combination (e.g. the key does not match the certificate).
    #[error("TLS configuration from {files} rejected: {reason}")]
    Config {
        /// The files involved.
        files: String,
        /// rustls' reason.
        reason: String,
    },
    /// Certificate generation failed.
    #[error("cannot create the certificate for {name}: {source}")]
    Generate {
        /// Subject.
        name: String,
        /// rcgen's reason.
        source: rcgen::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The three PEM files of one side of an mTLS connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate(s) that signed the peer's certificate.
    pub ca: PathBuf,
    /// This side's certificate chain.
    pub cert: PathBuf,
    /// This side's private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// `ca.pem`, `<name>.pem`, `<name>.key` in `dir` (the layout `monitor certs init` writes).
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        }
    }

    /// The files from a `--tls-dir` (named for `name`), each overridden by an explicit
    /// `--ca`/`--cert`/`--key`; `None` unless all three are known.
    pub fn resolve(
        dir: Option<&Path>,
        name: &str,
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Option<Self> {
        let from_dir = dir.map(|d| Self::in_dir(d, name));
        let pick = |explicit: Option<&Path>, dir: Option<&PathBuf>| {
            explicit.map(Path::to_path_buf).or_else(|| dir.cloned())
        };
        Some(Self {
            ca: pick(ca, from_dir.as_ref().map(|f| &f.ca))?,
            cert: pick(cert, from_dir.as_ref().map(|f| &f.cert))?,
            key: pick(key, from_dir.as_ref().map(|f| &f.key))?,
        })
    }

    fn describe(&self) -> String {
        format!(
            "ca {}, cert {}, key {}",
            self.ca.display(),
            self.cert.display(),
            self.key.display()
        )
    }

    /// Modification time and length of each file: what "changed" means for reloading.
    fn stamp(&self) -> Vec<Option<(SystemTime, u64)>> {
        [&self.ca, &self.cert, &self.key]
            .iter()
            .map(|p| {
                fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            what: format!("not a PEM certificate file ({e})"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        what: format!("no private key ({e})"),
    })
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certs(path)? {
        roots.add(c).map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            what: format!("not a usable CA certificate ({e})"),
        })?;
    }
    Ok(roots)
}

/// The collector's rustls configuration: client certificates required (signed by `files.ca`),
/// HTTP/2 only.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(default_provider());
    let cfg_err = |e: rustls::Error| TlsError::Config {
        files: files.describe(),
        reason: e.to_string(),
    };
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&files.ca)?), provider.clone())
            .build()
            .map_err(|e| TlsError::Config {
                files: files.describe(),
                reason: e.to_string(),
            })?;
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(cfg_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&files.cert)?, key(&files.key)?)
        .map_err(cfg_err)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// The collector's TLS acceptor, reloaded when its files change.
#[derive(Debug)]
pub struct ServerTls {
    files: TlsFiles,
    state: Mutex<ServerTlsState>,
}

struct ServerTlsState {
    acceptor: TlsAcceptor,
    stamp: Vec<Option<(SystemTime, u64)>>,
    checked: Instant,
    failures: u64,
}

impl std::fmt::Debug for ServerTlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTlsState")
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

/// How often the certificate files are checked for changes (on the next handshake after it).
const RELOAD_CHECK: Duration = Duration::from_secs(1);

impl ServerTls {
    /// Loads the files; fails if they are unusable.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let stamp = files.stamp();
        let acceptor = TlsAcceptor::from(server_config(&files)?);
        Ok(Self {
            files,
            state: Mutex::new(ServerTlsState {
                acceptor,
                stamp,
                checked: Instant::now(),
                failures: 0,
            }),
        })
    }

    /// The acceptor for the next connection: reloaded first if a file changed since the last
    /// check (at most once a second). A failed reload keeps the previous configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if st.checked.elapsed() >= RELOAD_CHECK {
            st.checked = Instant::now();
            let stamp = self.files.stamp();
            if stamp != st.stamp {
                st.stamp = stamp;
                match server_config(&self.files) {
                    Ok(cfg) => {
                        st.acceptor = TlsAcceptor::from(cfg);
                        tracing::info!(files = %self.files.describe(), "TLS certificates reloaded");
                    }
                    Err(e) => {
                        st.failures += 1;
                        tracing::error!(
                            error = %e,
                            "TLS certificate reload failed; the previous certificates stay in use"
                        );
                    }
                }
            }
        }
        st.acceptor.clone()
    }

    /// Reloads that failed since start.
    pub fn reload_failures(&self) -> u64 {
        self.state.lock().map_or(0, |s| s.failures)
    }
}

/// The client side for tonic: the CA to trust, this client's certificate, and the name the
/// server's certificate must carry. Reads the files now.
pub fn client_config(
    files: &TlsFiles,
    server_name: &str,
) -> Result<tonic::transport::ClientTlsConfig, TlsError> {
    // Parse here so a bad file fails with its name, not deep inside the handshake.
    certs(&files.ca)?;
    certs(&files.cert)?;
    key(&files.key)?;
    Ok(tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read(&files.ca)?))
        .identity(tonic::transport::Identity::from_pem(
            read(&files.cert)?,
            read(&files.key)?,
        ))
        .domain_name(server_name))
}

/// A PEM certificate and its private key.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PEM, PKCS#8).
    pub key_pem: String,
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// The collector (TLS server).
    Server,
    /// An agent or the CLI (TLS client).
    Client,
}

/// Certificate creation for the lab and for users without a PKI.
#[derive(Debug)]
pub struct Certs;

impl Certs {
    /// A new CA valid for `days` days from now.
    pub fn ca(common_name: &str, days: u32) -> Result<Issued, TlsError> {
        let gen_err = |source| TlsError::Generate {
            name: common_name.to_owned(),
            source,
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, days);
        let key = KeyPair::generate().map_err(gen_err)?;
        let cert = params.self_signed(&key).map_err(gen_err)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A leaf certificate signed by `ca`, for `name` (its common name) and `alt_names` (DNS
    /// names or IP addresses), valid from `not_before_days_ago` days ago for `days` days (a
    /// negative total makes an expired certificate, which tests use).
    pub fn leaf(
        ca: &Issued,
        name: &str,
        alt_names: &[String],
        usage: Usage,
        days: i64,
    ) -> Result<Issued, TlsError> {
        let gen_err = |source| TlsError::Generate {
            name: name.to_owned(),
            source,
        };
        let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(gen_err)?;
        let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(gen_err)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name);
        params.subject_alt_names = alt_names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()
            .map_err(gen_err)?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        let now = time::OffsetDateTime::now_utc();
        if days >= 0 {
            params.not_before = now - time::Duration::hours(1);
            params.not_after = now + time::Duration::days(days);
        } else {
            params.not_before = now + time::Duration::days(days * 2);
            params.not_after = now + time::Duration::days(days);
        }
        let key = KeyPair::generate().map_err(gen_err)?;
        let cert = params.signed_by(&key, &issuer).map_err(gen_err)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Reads a CA written by [`Certs::write`] from `dir` (`ca.pem`, `ca.key`).
    pub fn read_ca(dir: &Path) -> Result<Issued, TlsError> {
        let text = |p: PathBuf| {
            String::from_utf8(read(&p)?).map_err(|_| TlsError::Pem {
                path: p,
                what: "not UTF-8 text".into(),
            })
        };
        Ok(Issued {
            cert_pem: text(dir.join("ca.pem"))?,
            key_pem: text(dir.join("ca.key"))?,
        })
    }

    /// Writes `<name>.pem` and `<name>.key` (mode 0600) into `dir`, creating it.
    pub fn write(dir: &Path, name: &str, issued: &Issued) -> Result<(), TlsError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let werr = |path: &Path| {
            let path = path.to_owned();
            move |source| TlsError::Write { path, source }
        };
        fs::create_dir_all(dir).map_err(werr(dir))?;
        let cert = dir.join(format!("{name}.pem"));
        fs::write(&cert, &issued.cert_pem).map_err(werr(&cert))?;
        let key = dir.join(format!("{name}.key"));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key)
            .map_err(werr(&key))?;
        std::io::Write::write_all(&mut f, issued.key_pem.as_bytes()).map_err(werr(&key))?;
        Ok(())
    }
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "monitor");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(dir: &Path) -> Issued {
        let ca = Certs::ca("test CA", 30).unwrap();
        Certs::write(dir, "ca", &ca).unwrap();
        let srv = Certs::leaf(
            &ca,
            "collector",
            &["localhost".into(), "127.0.0.1".into()],
            Usage::Server,
            30,
        )
        .unwrap();
        Certs::write(dir, "collector", &srv).unwrap();
        ca
    }

    #[test]
    fn a_generated_set_loads_and_a_mismatched_key_is_rejected_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let ca = set(dir.path());
        let files = TlsFiles::in_dir(dir.path(), "collector");
        server_config(&files).unwrap();
        // The CA read back signs further certificates.
        let back = Certs::read_ca(dir.path()).unwrap();
        let agent = Certs::leaf(&back, "agent", &[], Usage::Client, 30).unwrap();
        Certs::write(dir.path(), "agent", &agent).unwrap();
        client_config(&TlsFiles::in_dir(dir.path(), "agent"), "localhost").unwrap();
        // The collector certificate with the agent's key: rustls refuses, naming the files.
        let other = Certs::leaf(&ca, "x", &[], Usage::Server, 30).unwrap();
        fs::write(&files.key, other.key_pem).unwrap();
        let err = server_config(&files).unwrap_err().to_string();
        assert!(err.contains("collector.key"), "{err}");
    }

    #[test]
    fn missing_and_garbage_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        set(dir.path());
        let files = TlsFiles::in_dir(dir.path(), "collector");
        let err = server_config(&TlsFiles::in_dir(dir.path(), "nobody"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot read") && err.contains("nobody.pem"),
            "{err}"
        );
        fs::write(&files.ca, "not pem").unwrap();
        let err = server_config(&files).unwrap_err().to_string();
        assert!(
            err.contains("ca.pem") && err.contains("CERTIFICATE"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_rotation_keeps_the_previous_acceptor_and_a_good_one_is_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let ca = set(dir.path());
        let files = TlsFiles::in_dir(dir.path(), "collector");
        let tls = ServerTls::load(files.clone()).unwrap();
        tls.state.lock().unwrap().checked = Instant::now() - RELOAD_CHECK;
        fs::write(&files.cert, "garbage").unwrap();
        let _ = tls.acceptor();
        assert_eq!(tls.reload_failures(), 1);
        let fresh =
            Certs::leaf(&ca, "collector", &["localhost".into()], Usage::Server, 30).unwrap();
        Certs::write(dir.path(), "collector", &fresh).unwrap();
        tls.state.lock().unwrap().checked = Instant::now() - RELOAD_CHECK;
        let _ = tls.acceptor();
        assert_eq!(tls.reload_failures(), 1, "the good rotation must load");
        assert_eq!(tls.state.lock().unwrap().stamp, files.stamp());
    }
}
