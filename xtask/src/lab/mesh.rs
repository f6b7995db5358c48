//! Mesh mode of the lab (`cargo xtask lab up --mesh istio|istio-legacy`): an Istio-like
//! sidecar in every pod, built from real parts, so the monitor can be tested where the
//! product must work (Envoy sidecars, mTLS everywhere).
//!
//! Per pod, inside its netns:
//!
//! - `istio-init`'s rules, loaded with `iptables-restore` (they live in the netns and go with
//!   it): `nat OUTPUT` sends the app's TCP through `ISTIO_OUTPUT` to `ISTIO_REDIRECT`
//!   (REDIRECT to 15001), except for the sidecar's own uid/gid 1337, traffic to 127.0.0.1 and
//!   the inbound-passthrough specials; `nat PREROUTING` sends inbound TCP through
//!   `ISTIO_INBOUND` to `ISTIO_IN_REDIRECT` (REDIRECT to 15006). IPv4 only: haproxy reads the
//!   original destination (SO_ORIGINAL_DST) for IPv4 sockets only, so IPv6 goes around the
//!   sidecar, in plaintext.
//! - the sidecar: haproxy, started as uid/gid 1337 (setpriv) **in the pod's cgroup**, like
//!   the app, so the monitor's cgroup hooks see the proxy's sockets as the pod's. On 15001
//!   (outbound) it takes the app's plaintext, and connects to the *original destination* (a
//!   `server 0.0.0.0:0`: haproxy's `dst`, which reads SO_ORIGINAL_DST through conntrack):
//!   to a mesh pod over mTLS with the pod's certificate, SNI
//!   `outbound_.<port>_._.<service>.<namespace>.svc.cluster.local` and ALPN `istio-http/1.1`
//!   (`istio` for non-HTTP TCP); to anything else in plaintext (Istio's PassthroughCluster).
//!   On 15006 (inbound) it terminates mTLS (client certificate required), adds
//!   `x-forwarded-client-cert` to HTTP requests, and forwards in plaintext to the app: from
//!   127.0.0.6 to the pod's own IP:port ([`Mesh::Istio`], Istio >= 1.10), or from 127.0.0.1 to
//!   127.0.0.1:port ([`Mesh::IstioLegacy`], Istio < 1.10).
//! - certificates made with openssl in the run directory: a mesh CA (`O=cluster.local`) and one
//!   certificate per pod with an empty subject and its SPIFFE ID
//!   `spiffe://cluster.local/ns/<namespace>/sa/<service account>` as URI SAN, as istiod
//!   issues them.
//!
//! haproxy 2.6 has no fetch for a certificate's URI SAN, so identities are read through a map
//! from the certificate's SHA-256 (of its DER, the XFCC `Hash`) to the SPIFFE ID in its SAN,
//! written when the lab issues the certificates (`certs.map`). The same map pins the server on
//! outbound HTTP: the response is refused (503) unless the server's certificate is the one
//! issued to the destination pod. (haproxy's `verify required` would check the certificate's
//! DNS names against the SNI, which an Istio certificate does not carry.)

use std::fmt::{self, Write as _};
use std::net::Ipv4Addr;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use super::{Lab, LabProcess, ProcessId};
use crate::inventory::Inventory;
use crate::util;

/// Which Istio the lab emulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mesh {
    /// Istio >= 1.10: the inbound sidecar forwards from 127.0.0.6 to the pod's own IP:port.
    Istio,
    /// Istio < 1.10: the inbound sidecar forwards from 127.0.0.1 to 127.0.0.1:port.
    IstioLegacy,
}

impl fmt::Display for Mesh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Istio => "istio",
            Self::IstioLegacy => "istio-legacy",
        })
    }
}

/// uid and gid of the sidecar (Istio's proxy user), excluded from the outbound redirect.
pub const SIDECAR_UID: u32 = 1337;
/// Where `ISTIO_REDIRECT` sends the app's outbound TCP.
pub const OUTBOUND_PORT: u16 = 15001;
/// Where `ISTIO_IN_REDIRECT` sends inbound TCP.
pub const INBOUND_PORT: u16 = 15006;
/// Source address of the inbound sidecar's connections to the app ([`Mesh::Istio`]); on `lo`
/// (127.0.0.0/8) in every netns.
pub const INBOUND_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
/// The mesh's trust domain.
pub const TRUST_DOMAIN: &str = "cluster.local";
/// ALPN of mesh HTTP/1.1 (Istio's).
pub const ALPN_HTTP: &str = "istio-http/1.1";
/// ALPN of mesh TCP (Istio's).
pub const ALPN_TCP: &str = "istio";
/// Ports `ISTIO_INBOUND` does not redirect (HBONE, Envoy's Prometheus port, health, agent).
const INBOUND_EXCLUDED: [u16; 4] = [15008, 15090, 15021, 15020];
/// How long `up` waits for every sidecar to listen.
const SIDECAR_START_TIMEOUT: Duration = Duration::from_secs(10);

/// The mesh identity of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Pod name.
    pub pod: String,
    /// Its IPv4 address (what the sidecars see as original destination).
    pub ip: Ipv4Addr,
    /// Kubernetes namespace (`default` if the inventory gives none).
    pub namespace: String,
    /// Service (the pod's name if the inventory gives none).
    pub service: String,
    /// `spiffe://cluster.local/ns/<namespace>/sa/<service account, else service>`.
    pub spiffe_id: String,
}

impl Identity {
    /// `<service>.<namespace>.svc.cluster.local`.
    pub fn host(&self) -> String {
        format!("{}.{}.svc.{TRUST_DOMAIN}", self.service, self.namespace)
    }

    /// The SNI an Istio client sidecar sends to this pod's `port`.
    pub fn sni(&self, port: u16) -> String {
        format!("outbound_.{port}_._.{}", self.host())
    }
}

/// The identities of the inventory's pods (externals are outside the mesh).
pub fn identities(inventory: &Inventory) -> Vec<Identity> {
    inventory
        .pods
        .iter()
        .filter_map(|p| {
            let ip = p.ips.iter().find_map(|ip| match ip {
                std::net::IpAddr::V4(v4) => Some(*v4),
                std::net::IpAddr::V6(_) => None,
            })?;
            let namespace = p.namespace.clone().unwrap_or_else(|| "default".to_string());
            let service = p.service.clone().unwrap_or_else(|| p.name.clone());
            let sa = p.service_account.as_deref().unwrap_or(&service);
            Some(Identity {
                pod: p.name.clone(),
                ip,
                spiffe_id: format!("spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{sa}"),
                namespace,
                service,
            })
        })
        .collect()
}

/// A running sidecar.
#[derive(Debug, Clone)]
pub struct Sidecar {
    /// Pod it serves.
    pub pod: String,
    /// haproxy's PID (runs as uid/gid 1337 in the pod's cgroup and netns).
    pub pid: u32,
    /// The pod's SPIFFE ID (in its certificate).
    pub spiffe_id: String,
    /// haproxy's configuration.
    pub config: PathBuf,
    /// haproxy's log (one line per connection).
    pub log: PathBuf,
    /// The pod's certificate (PEM).
    pub cert: PathBuf,
}

/// Files shared by all sidecars, in `<run dir>/mesh/`.
#[derive(Debug, Clone)]
struct Shared {
    ca: PathBuf,
    /// pod IP → `<service>.<namespace>.svc.cluster.local`.
    services_map: PathBuf,
    /// pod IP → SPIFFE ID.
    ids_map: PathBuf,
    /// certificate SHA-256 (hex) → SPIFFE ID.
    certs_map: PathBuf,
}

/// istio-init's IPv4 rules (`iptables-restore` input), with Istio's chain names.
pub fn iptables_rules() -> String {
    let uid = SIDECAR_UID;
    let mut r = String::new();
    let _ = writeln!(
        r,
        "# Generated by `cargo xtask lab up --mesh`: Istio's istio-init rules."
    );
    let _ = writeln!(r, "*nat");
    for chain in ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"] {
        let _ = writeln!(r, ":{chain} ACCEPT [0:0]");
    }
    for chain in [
        "ISTIO_INBOUND",
        "ISTIO_IN_REDIRECT",
        "ISTIO_OUTPUT",
        "ISTIO_REDIRECT",
    ] {
        let _ = writeln!(r, ":{chain} - [0:0]");
    }
    let _ = writeln!(r, "-A PREROUTING -p tcp -j ISTIO_INBOUND");
    let _ = writeln!(r, "-A OUTPUT -p tcp -j ISTIO_OUTPUT");
    for port in INBOUND_EXCLUDED {
        let _ = writeln!(r, "-A ISTIO_INBOUND -p tcp -m tcp --dport {port} -j RETURN");
    }
    let _ = writeln!(r, "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT");
    let _ = writeln!(
        r,
        "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {INBOUND_PORT}"
    );
    // The inbound sidecar's connections to the app (from 127.0.0.6 over lo) go straight in.
    let _ = writeln!(r, "-A ISTIO_OUTPUT -s {INBOUND_SOURCE}/32 -o lo -j RETURN");
    // The sidecar calling its own pod's IP (app → own service): back in through inbound.
    let _ = writeln!(
        r,
        "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m tcp ! --dport 15008 -m owner \
         --uid-owner {uid} -j ISTIO_IN_REDIRECT"
    );
    // The app calling its own pod over lo: no sidecar.
    let _ = writeln!(
        r,
        "-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner {uid} -j RETURN"
    );
    // The sidecar's own connections leave as they are.
    let _ = writeln!(r, "-A ISTIO_OUTPUT -m owner --uid-owner {uid} -j RETURN");
    let _ = writeln!(
        r,
        "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --gid-owner {uid} -j ISTIO_IN_REDIRECT"
    );
    let _ = writeln!(
        r,
        "-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner {uid} -j RETURN"
    );
    let _ = writeln!(r, "-A ISTIO_OUTPUT -m owner --gid-owner {uid} -j RETURN");
    let _ = writeln!(r, "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN");
    // Everything else the app sends: to the outbound sidecar.
    let _ = writeln!(r, "-A ISTIO_OUTPUT -j ISTIO_REDIRECT");
    let _ = writeln!(
        r,
        "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {OUTBOUND_PORT}"
    );
    let _ = writeln!(r, "COMMIT");
    r
}

/// The sidecar's haproxy configuration for pod `me`, its certificate `pem` (certificate and
/// key) and the shared files.
fn haproxy_config(mesh: Mesh, me: &Identity, pem: &Path, shared: &Shared) -> String {
    let pem = pem.display();
    let ca = shared.ca.display();
    let services = shared.services_map.display();
    let ids = shared.ids_map.display();
    let certs = shared.certs_map.display();
    let hash = "ssl_c_der,sha2(256),hex,lower";
    // Both styles forward to the port the client asked for (haproxy: a server without a port
    // keeps the original destination's).
    let app = match mesh {
        Mesh::Istio => format!("0.0.0.0:0 source {INBOUND_SOURCE}"),
        Mesh::IstioLegacy => "127.0.0.1 source 127.0.0.1".to_string(),
    };
    format!(
        r#"# Generated by `cargo xtask lab up --mesh {mesh}`: the sidecar of pod {pod}
# ({id}), emulating Istio's Envoy. Runs as uid/gid {SIDECAR_UID} in the pod's cgroup and netns.
global
    log stderr format raw local0 info
    nbthread 1
    maxconn 1024

defaults
    log global
    option dontlognull
    timeout connect 5s
    timeout client 5m
    timeout server 5m
    timeout tunnel 1h

# Outbound (Istio's virtualOutbound): the app's TCP, REDIRECTed by ISTIO_REDIRECT. `dst` is
# the original destination (SO_ORIGINAL_DST). HTTP is told from other TCP by sniffing.
frontend outbound
    mode tcp
    option tcplog
    bind 0.0.0.0:{OUTBOUND_PORT}
    tcp-request inspect-delay 1s
    tcp-request content set-var(sess.peer_id) dst,map_ip({ids})
    tcp-request content set-var-fmt(sess.sni) "outbound_.%[dst_port]_._.%[dst,map_ip({services})]"
    tcp-request content accept if HTTP
    tcp-request content accept if {{ req.len gt 0 }}
    use_backend outbound_http if {{ var(sess.peer_id) -m found }} HTTP
    use_backend outbound_tcp if {{ var(sess.peer_id) -m found }}
    default_backend passthrough

# To a mesh pod: mTLS, one upstream connection per app connection. The server must present
# the certificate issued to the destination pod (certs.map), else 503.
backend outbound_http
    mode http
    http-reuse never
    http-response set-var(txn.server_id) ssl_s_der,sha2(256),hex,lower,map({certs})
    http-response deny deny_status 503 unless {{ var(txn.server_id),strcmp(sess.peer_id) eq 0 }}
    server original_dst 0.0.0.0:0 ssl crt {pem} verify none sni var(sess.sni) alpn {ALPN_HTTP} proto h1

backend outbound_tcp
    mode tcp
    server original_dst 0.0.0.0:0 ssl crt {pem} verify none sni var(sess.sni) alpn {ALPN_TCP}

# Not a mesh pod (an external host): plaintext, as Istio's PassthroughCluster.
backend passthrough
    mode tcp
    server original_dst 0.0.0.0:0

# Inbound (Istio's virtualInbound): TCP REDIRECTed by ISTIO_IN_REDIRECT; mTLS with a client
# certificate of the mesh CA required.
frontend inbound
    mode tcp
    option tcplog
    bind 0.0.0.0:{INBOUND_PORT} ssl crt {pem} ca-file {ca} verify required alpn {ALPN_HTTP},{ALPN_TCP}
    use_backend inbound_http if {{ ssl_fc_alpn -m str {ALPN_HTTP} }}
    default_backend inbound_tcp

backend inbound_http
    mode http
    http-reuse never
    http-request set-header x-forwarded-client-cert "By={id};Hash=%[{hash}];Subject=\"%[ssl_c_s_dn]\";URI=%[{hash},map({certs})]"
    server app {app}

backend inbound_tcp
    mode tcp
    server app {app}
"#,
        pod = me.pod,
        id = me.spiffe_id,
    )
}

impl Lab {
    /// Issues the certificates, loads the rules and starts a sidecar in every pod; waits
    /// until each listens on 15001 and 15006. Every sidecar is recorded before the wait, so a
    /// failure here is cleaned up by the caller's teardown.
    pub(super) fn start_mesh(&mut self, mesh: Mesh) -> Result<()> {
        let tools = Tools::find()?;
        let dir = self.state.run_dir.join("mesh");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let ids = identities(&self.inventory);
        let shared = issue_certificates(&tools, &dir, &ids)?;
        let rules = dir.join("istio-iptables.rules");
        write(&rules, iptables_rules().as_bytes(), 0o644)?;

        for id in &ids {
            util::check_interrupted()?;
            let m = self.member(&id.pod)?.clone();
            // Istio's init container: the rules exist before the app's first connection.
            util::output(
                Command::new("nsenter")
                    .arg(format!("--net=/run/netns/{}", m.netns))
                    .arg(&tools.iptables_restore)
                    .arg(&rules),
            )
            .with_context(|| format!("pod {}: loading istio-init's rules", id.pod))?;

            let host_dir = self.state.run_dir.join(&id.pod);
            std::fs::create_dir_all(&host_dir)
                .with_context(|| format!("cannot create {}", host_dir.display()))?;
            let pem = dir.join(format!("{}.pem", id.pod));
            let config = host_dir.join("sidecar.cfg");
            write(
                &config,
                haproxy_config(mesh, id, &pem, &shared).as_bytes(),
                0o644,
            )?;
            let log = host_dir.join("sidecar.log");
            let log_file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .with_context(|| format!("cannot open {}", log.display()))?;
            let mut cmd = self.command_os(&id.pod, tools.setpriv.as_os_str())?;
            cmd.args([
                format!("--reuid={SIDECAR_UID}"),
                format!("--regid={SIDECAR_UID}"),
                "--clear-groups".to_string(),
            ])
            .arg(&tools.haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .process_group(0);
            let child = cmd
                .spawn()
                .with_context(|| format!("{}: cannot start {}", id.pod, util::display_cmd(&cmd)))?;
            let pid = child.id();
            self.children.push(child);
            if let Some(pid) = ProcessId::of(pid) {
                self.state.processes.push(LabProcess {
                    id: pid,
                    pod: id.pod.clone(),
                    what: "sidecar:haproxy".to_string(),
                });
                self.state.save()?;
            }
            self.sidecars.push(Sidecar {
                pod: id.pod.clone(),
                pid,
                spiffe_id: id.spiffe_id.clone(),
                config,
                log,
                cert: pem,
            });
        }

        let deadline = Instant::now() + SIDECAR_START_TIMEOUT;
        for s in &self.sidecars {
            wait_listening(s, deadline).map_err(|why| {
                let kept = std::env::temp_dir().join(format!(
                    "monitor-lab-{}-{}-sidecar.log",
                    self.state.prefix, s.pod
                ));
                let log = match std::fs::copy(&s.log, &kept) {
                    Ok(_) => kept,
                    Err(_) => s.log.clone(),
                };
                anyhow::anyhow!(
                    "pod {}: sidecar (haproxy, pid {}) {why} (timeout {}s); its log, kept in {}:\n{}",
                    s.pod,
                    s.pid,
                    SIDECAR_START_TIMEOUT.as_secs(),
                    log.display(),
                    super::indent(&util::tail_file(&log, 20))
                )
            })?;
        }
        for s in &self.sidecars {
            let m = self.member(&s.pod)?;
            let cgroup = m
                .cgroup
                .as_deref()
                .and_then(|c| c.strip_prefix(&self.state.cgroup_mount).ok())
                .map_or_else(String::new, |c| format!("/{}", c.display()));
            let inbound = match mesh {
                Mesh::Istio => format!("{}:<port> from {INBOUND_SOURCE}", m.ipv4),
                Mesh::IstioLegacy => "127.0.0.1:<port> from 127.0.0.1".to_string(),
            };
            crate::outln!(
                "lab {}: sidecar {} in {}: haproxy pid {} uid {SIDECAR_UID} cgroup {cgroup}; \
                 :{OUTBOUND_PORT} → mTLS to the original destination, :{INBOUND_PORT} → {inbound}",
                self.state.prefix,
                s.spiffe_id,
                s.pod,
                s.pid,
            );
        }
        Ok(())
    }
}

/// Paths of the programs mesh mode runs.
#[derive(Debug)]
struct Tools {
    haproxy: PathBuf,
    openssl: PathBuf,
    iptables_restore: PathBuf,
    setpriv: PathBuf,
}

impl Tools {
    fn find() -> Result<Self> {
        let find = |name: &str, package: &str| {
            find_program(name).with_context(|| {
                format!(
                    "the lab's mesh mode needs {name} (Debian package {package}), which is not \
                     installed: run `cargo xtask setup`"
                )
            })
        };
        Ok(Self {
            haproxy: find("haproxy", "haproxy")?,
            openssl: find("openssl", "openssl")?,
            iptables_restore: find("iptables-restore", "iptables")?,
            setpriv: find("setpriv", "util-linux")?,
        })
    }
}

/// `name` in `$PATH` or the system's program directories.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Writes `bytes` to `path` with `mode` (replacing the file).
fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    std::io::Write::write_all(&mut f, bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // The umask may have taken bits away.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

/// Makes the mesh CA and one certificate per pod in `dir` (`<pod>.pem`: certificate and key,
/// readable by the sidecar's uid only), and the maps the sidecars read.
fn issue_certificates(tools: &Tools, dir: &Path, ids: &[Identity]) -> Result<Shared> {
    let ca = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    util::output(
        Command::new(&tools.openssl)
            .args(["req", "-x509"])
            .args(ec)
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca)
            .args(["-days", "30", "-subj", &format!("/O={TRUST_DOMAIN}")])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
    )
    .context("making the mesh CA with openssl")?;
    std::fs::set_permissions(&ca_key, std::fs::Permissions::from_mode(0o600))?;

    let mut certs_map = String::new();
    for id in ids {
        let crt = dir.join(format!("{}.crt", id.pod));
        let key = dir.join(format!("{}.key", id.pod));
        util::output(
            Command::new(&tools.openssl)
                .args(["req", "-x509"])
                .args(ec)
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&crt)
                .arg("-CA")
                .arg(&ca)
                .arg("-CAkey")
                .arg(&ca_key)
                // Istio's workload certificates: no subject, the SPIFFE ID as URI SAN.
                .args(["-days", "30", "-subj", "/"])
                .args([
                    "-addext",
                    &format!("subjectAltName=critical,URI:{}", id.spiffe_id),
                ])
                .args(["-addext", "basicConstraints=critical,CA:FALSE"])
                .args([
                    "-addext",
                    "keyUsage=critical,digitalSignature,keyEncipherment",
                ])
                .args(["-addext", "extendedKeyUsage=serverAuth,clientAuth"]),
        )
        .with_context(|| format!("pod {}: making its certificate with openssl", id.pod))?;
        let fingerprint = util::output(
            Command::new(&tools.openssl)
                .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
                .arg(&crt),
        )?;
        let hash = parse_fingerprint(&fingerprint).with_context(|| {
            format!(
                "pod {}: unexpected openssl fingerprint {fingerprint:?}",
                id.pod
            )
        })?;
        let _ = writeln!(certs_map, "{hash} {}", id.spiffe_id);

        let mut pem =
            std::fs::read(&crt).with_context(|| format!("cannot read {}", crt.display()))?;
        pem.extend(std::fs::read(&key).with_context(|| format!("cannot read {}", key.display()))?);
        let pem_path = dir.join(format!("{}.pem", id.pod));
        write(&pem_path, &pem, 0o600)?;
        std::os::unix::fs::chown(&pem_path, Some(SIDECAR_UID), Some(SIDECAR_UID))
            .with_context(|| format!("cannot chown {}", pem_path.display()))?;
        std::fs::remove_file(&key).with_context(|| format!("cannot remove {}", key.display()))?;
    }

    let shared = Shared {
        ca,
        services_map: dir.join("services.map"),
        ids_map: dir.join("ids.map"),
        certs_map: dir.join("certs.map"),
    };
    let mut services = String::new();
    let mut spiffe = String::new();
    for id in ids {
        let _ = writeln!(services, "{} {}", id.ip, id.host());
        let _ = writeln!(spiffe, "{} {}", id.ip, id.spiffe_id);
    }
    write(&shared.services_map, services.as_bytes(), 0o644)?;
    write(&shared.ids_map, spiffe.as_bytes(), 0o644)?;
    write(&shared.certs_map, certs_map.as_bytes(), 0o644)?;
    Ok(shared)
}

/// `sha256 Fingerprint=AB:CD:...` (openssl x509 -fingerprint) → `abcd...`.
fn parse_fingerprint(out: &str) -> Option<String> {
    let hex: String = out
        .trim()
        .split_once('=')?
        .1
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// Waits until the sidecar listens on both ports (read from `/proc/<pid>/net/tcp`, its
/// netns's table: no probe connection, so nothing in its log).
fn wait_listening(s: &Sidecar, deadline: Instant) -> std::result::Result<(), &'static str> {
    loop {
        let table = std::fs::read_to_string(format!("/proc/{}/net/tcp", s.pid));
        match table {
            Ok(t)
                if [OUTBOUND_PORT, INBOUND_PORT]
                    .iter()
                    .all(|p| listens(&t, *p)) =>
            {
                return Ok(());
            }
            Ok(_) => {}
            Err(_) => return Err("exited during start-up"),
        }
        if !util::process_running(s.pid) {
            return Err("exited during start-up");
        }
        if util::interrupted() {
            return Err("interrupted (Ctrl-C)");
        }
        if Instant::now() >= deadline {
            return Err("does not listen");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Whether `/proc/net/tcp` text has a listening socket on 0.0.0.0:`port`.
fn listens(table: &str, port: u16) -> bool {
    let local = format!("00000000:{port:04X}");
    table.lines().skip(1).any(|l| {
        let mut f = l.split_whitespace();
        f.nth(1) == Some(local.as_str()) && f.nth(1) == Some("0A")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &str = r#"
node: n
pods:
  - {name: web, namespace: shop, service: web, service_account: web-sa, ips: ["fd77::10", "10.77.0.10"], cgroup: web}
  - {name: lone, ips: ["10.77.0.11"], cgroup: lone}
externals:
  - {name: ext, ips: ["10.77.200.1"]}
"#;

    #[test]
    fn identities_follow_istio_naming() {
        let inv = Inventory::parse(INV, "t").unwrap();
        let ids = identities(&inv);
        assert_eq!(ids.len(), 2, "externals are outside the mesh");
        assert_eq!(ids[0].ip, Ipv4Addr::new(10, 77, 0, 10));
        assert_eq!(ids[0].spiffe_id, "spiffe://cluster.local/ns/shop/sa/web-sa");
        assert_eq!(ids[0].sni(80), "outbound_.80_._.web.shop.svc.cluster.local");
        assert_eq!(
            ids[1].spiffe_id,
            "spiffe://cluster.local/ns/default/sa/lone"
        );
        assert_eq!(ids[1].host(), "lone.default.svc.cluster.local");
    }

    #[test]
    fn rules_have_istio_chains_in_istio_order() {
        let r = iptables_rules();
        let lines: Vec<&str> = r
            .lines()
            .filter(|l| l.starts_with("-A ISTIO_OUTPUT"))
            .collect();
        assert_eq!(lines[0], "-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN");
        assert!(
            lines[1].ends_with("--uid-owner 1337 -j ISTIO_IN_REDIRECT"),
            "{}",
            lines[1]
        );
        assert_eq!(lines.last(), Some(&"-A ISTIO_OUTPUT -j ISTIO_REDIRECT"));
        assert!(r.contains("-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001\n"));
        assert!(r.contains("-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006\n"));
        assert!(r.contains("-A PREROUTING -p tcp -j ISTIO_INBOUND\n"));
        assert!(r.ends_with("COMMIT\n"));
    }

    #[test]
    fn config_styles_differ_in_the_inbound_forward_only() {
        let inv = Inventory::parse(INV, "t").unwrap();
        let me = &identities(&inv)[0];
        let shared = Shared {
            ca: "/m/ca.crt".into(),
            services_map: "/m/services.map".into(),
            ids_map: "/m/ids.map".into(),
            certs_map: "/m/certs.map".into(),
        };
        let new = haproxy_config(Mesh::Istio, me, Path::new("/m/web.pem"), &shared);
        let old = haproxy_config(Mesh::IstioLegacy, me, Path::new("/m/web.pem"), &shared);
        assert!(
            new.contains("    server app 0.0.0.0:0 source 127.0.0.6\n"),
            "{new}"
        );
        assert!(
            old.contains("    server app 127.0.0.1 source 127.0.0.1\n"),
            "{old}"
        );
        assert!(new.contains("bind 0.0.0.0:15001\n") && new.contains("bind 0.0.0.0:15006 ssl"));
        assert!(new.contains("alpn istio-http/1.1 proto h1"));
        assert!(new.contains(
            "x-forwarded-client-cert \"By=spiffe://cluster.local/ns/shop/sa/web-sa;Hash=%[ssl_c_der,sha2(256),hex,lower];"
        ));
        let strip = |s: &str| {
            s.lines()
                .filter(|l| !l.starts_with("    server app") && !l.starts_with("# Generated"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(strip(&new), strip(&old));
    }

    #[test]
    fn fingerprints_and_listeners() {
        let fp = format!("sha256 Fingerprint={}\n", ["AB"; 32].join(":"));
        assert_eq!(parse_fingerprint(&fp).unwrap(), "ab".repeat(32));
        assert_eq!(parse_fingerprint("SHA256 Fingerprint=AB:CD"), None);
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n   \
                     0: 00000000:3A99 00000000:0000 0A 00000000:00000000\n   \
                     1: 0100007F:3A9E 0100007F:1234 01 00000000:00000000\n";
        assert!(listens(table, 15001));
        assert!(
            !listens(table, 15006),
            "established, not listening, and on 127.0.0.1"
        );
    }
}
