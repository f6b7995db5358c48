//! The syslog sink against a real rsyslogd: TLS (gnutls stream driver) on 127.0.0.1 with
//! certificates made here, octet-counted RFC 5424 / CEF messages written by rsyslog to a file
//! as received (`%rawmsg%`). Checks what arrives byte for byte, the kinds filter, CEF escaping,
//! a receiver that is down (bounded, delivered = 0), the retry after it is back, and client
//! certificates required by the receiver (`x509/certvalid`).
//!
//! Needs `rsyslogd` and its gnutls driver (`rsyslog-gnutls`; `cargo xtask setup` installs
//! both): the test fails, rather than skips, without them. Each test first moves its thread
//! into a private network namespace (root; CI runs as root), so rsyslog's port and the traffic
//! never touch the machine's own loopback.

use std::{
    fs,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use monitor_record::{
    peer::PeerKind, peer::Pod, record::Endpoint, record::LossRecord, record::Record,
    stored::StoredRecord, violation::PolicyRef, violation::Rule, violation::Severity,
    violation::Violation, violation::ViolationHttp,
};

use monitor_collector::{
    sink::Sink, sink::cef, sink::syslog::APP_NAME, sink::syslog::DEFAULT_FACILITY,
    sink::syslog::SyslogConfig, sink::syslog::SyslogSink, sink::syslog::rfc5424,
    sink::syslog::syslog_severity,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";
const NODE: &str = "vantage-node-1";
const BOOT: &str = "0b7e5c1d-2f4a-4d8e-9c3b-6a1f0e9d8c7b";

/// Moves the calling thread (and the processes it spawns) into a new network namespace with
/// only `lo`, up. The namespace goes away with the thread and its children.
fn private_netns() {
    // SAFETY: unshare has no memory-safety preconditions; it affects only this thread.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET) failed ({}): this test runs rsyslog in a private network \
         namespace and needs root (`cargo xtask test` runs as root)",
        std::io::Error::last_os_error()
    );
    let st = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("ip runs");
    assert!(
        st.success(),
        "ip link set lo up failed in the private netns"
    );
}

/// The directory holding rsyslog's modules, with the TCP input and the gnutls driver.
fn module_dir() -> PathBuf {
    assert!(
        Path::new(RSYSLOGD).exists(),
        "{RSYSLOGD} not found: install rsyslog and rsyslog-gnutls (`cargo xtask setup`)"
    );
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/rsyslog",
        "/usr/lib/aarch64-linux-gnu/rsyslog",
        "/usr/lib64/rsyslog",
        "/usr/lib/rsyslog",
    ];
    let dir = candidates
        .iter()
        .map(PathBuf::from)
        .find(|d| d.join("imtcp.so").exists())
        .unwrap_or_else(|| {
            panic!("rsyslog's imtcp.so not found in any of {candidates:?}: install rsyslog")
        });
    assert!(
        dir.join("lmnsd_gtls.so").exists(),
        "{} has no lmnsd_gtls.so: install rsyslog-gnutls (`cargo xtask setup`)",
        dir.display()
    );
    dir
}

/// CA, server and client certificates (PEM files in `dir`).
struct Pki {
    ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

fn make_pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "sink test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |names: Vec<String>, cn: &str, eku: ExtendedKeyUsagePurpose, stem: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![eku];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &issuer).unwrap();
        let (c, k) = (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}-key.pem")),
        );
        fs::write(&c, cert.pem()).unwrap();
        fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    };
    let (server_cert, server_key) = leaf(
        vec!["localhost".into(), "127.0.0.1".into()],
        "localhost",
        ExtendedKeyUsagePurpose::ServerAuth,
        "server",
    );
    let (client_cert, client_key) = leaf(
        vec!["collector.test".into()],
        "collector.test",
        ExtendedKeyUsagePurpose::ClientAuth,
        "client",
    );
    let ca_path = dir.join("ca.pem");
    fs::write(&ca_path, ca_cert.pem()).unwrap();
    Pki {
        ca: ca_path,
        client_cert,
        client_key,
        server_cert,
        server_key,
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running rsyslogd; stopped (by its PID) when dropped, also when a test fails.
struct Rsyslog {
    child: Option<Child>,
    dir: PathBuf,
}

impl Rsyslog {
    /// Starts rsyslogd listening with TLS on 127.0.0.1:`port`, writing messages of APP-NAME
    /// `monitor` to `dir/received.log` as received. `auth_mode`: `anon` (no client
    /// certificate needed) or `x509/certvalid` (a client certificate signed by the CA).
    fn start(dir: &Path, pki: &Pki, port: u16, auth_mode: &str) -> Self {
        let modules = module_dir();
        let work = dir.join("work");
        fs::create_dir_all(&work).unwrap();
        let conf = dir.join("rsyslog.conf");
        fs::write(
            &conf,
            format!(
                r#"global(
  workDirectory="{work}"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile="{ca}"
  defaultNetstreamDriverCertFile="{cert}"
  defaultNetstreamDriverKeyFile="{key}"
)
module(load="{modules}/imtcp.so" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="{auth_mode}")
input(type="imtcp" address="127.0.0.1" port="{port}")
template(name="raw" type="string" string="%rawmsg%\n")
if $app-name == "monitor" then {{
  action(type="omfile" file="{received}" template="raw")
}} else {{
  action(type="omfile" file="{internal}")
}}
"#,
                work = work.display(),
                ca = pki.ca.display(),
                cert = pki.server_cert.display(),
                key = pki.server_key.display(),
                modules = modules.display(),
                received = dir.join("received.log").display(),
                internal = dir.join("rsyslog-internal.log").display(),
            ),
        )
        .unwrap();
        let stderr = fs::File::create(dir.join("rsyslogd.stderr")).unwrap();
        let child = Command::new(RSYSLOGD)
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .arg("-M")
            .arg(&modules)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {RSYSLOGD}: {e}"));
        let mut me = Self {
            child: Some(child),
            dir: dir.to_owned(),
        };
        me.wait_listening(port);
        me
    }

    fn diagnostics(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!(
            "rsyslogd stderr:\n{}\nrsyslog internal messages:\n{}",
            read("rsyslogd.stderr"),
            read("rsyslog-internal.log")
        )
    }

    fn wait_listening(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!(
                    "rsyslogd exited ({status}) before listening\n{}",
                    self.diagnostics()
                );
            }
            // A plain TCP probe: rsyslog logs a failed handshake, which goes to the internal
            // log, not to received.log.
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "rsyslogd not listening on 127.0.0.1:{port} after 15 s\n{}",
                self.diagnostics()
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// Stops rsyslogd (SIGTERM to its PID, then waits for it).
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = libc::pid_t::try_from(c.id()).unwrap();
            // SAFETY: kill(2) on the PID of a child we spawned and have not yet reaped, so
            // the PID cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                sleep(Duration::from_millis(20));
            }
        }
    }

    /// The messages received so far, one per line.
    fn received(&self) -> Vec<String> {
        fs::read_to_string(self.dir.join("received.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits until `n` messages arrived (and a little longer, to see any extra ones).
    fn wait_received(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.received().len() < n && Instant::now() < deadline {
            sleep(Duration::from_millis(50));
        }
        sleep(Duration::from_millis(300));
        self.received()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Child::kill sends SIGKILL to this child's PID only.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn endpoint(ip: &str, port: u16, ns: &str, pod: &str) -> Endpoint {
    let mut p = Pod::named(pod, PeerKind::Pod);
    p.namespace = ns.into();
    Endpoint::new(
        Some(&std::sync::Arc::new(p)),
        Some(ip.parse().unwrap()),
        port,
    )
}

fn stored(rec: &Record, seq: u64) -> StoredRecord {
    let mut v = serde_json::to_value(rec).unwrap();
    let m = v.as_object_mut().unwrap();
    m.insert("seq".into(), seq.into());
    m.insert("boot_id".into(), BOOT.into());
    StoredRecord {
        id: seq as i64,
        node: NODE.into(),
        boot_id: BOOT.into(),
        seq,
        kind: rec.kind().into(),
        time_ns: 1_795_328_572_775_828_885 + seq as i64 * 1_000_000,
        json: v.to_string(),
    }
}

fn violation(seq: u64, message: &str) -> StoredRecord {
    let time = "2026-11-22T06:22:52.775828885Z";
    stored(
        &Record::Violation(Box::new(Violation {
            rule: Rule::SensitiveFields,
            severity: Severity::High,
            time: time.into(),
            node: NODE.into(),
            source: endpoint(
                "10.77.0.24",
                53202,
                "vantage",
                "svc-recommendation-engine-04",
            ),
            destination: endpoint("10.77.0.10", 80, "vantage", "svc-user-profile-service-0"),
            http: Some(ViolationHttp {
                method: "GET".into(),
                path: "/internal/admin/v0/users/lookup".into(),
                normalized_path: "/internal/admin/v0/users/lookup".into(),
                query: Some("fields=ssn_last4&state=REDACTED".into()),
                query_keys: vec!["fields".into(), "state".into()],
                status: Some(200),
                request_body_bytes: Some(0),
                response_body_bytes: Some(9612),
            }),
            route: "GET /internal/admin/v0/users/lookup".into(),
            policy: PolicyRef {
                file: "policy.yaml".into(),
                rule: "sensitive_fields[0]".into(),
                line: Some(12),
            },
            message: message.into(),
            count: 1,
            aggregated: false,
            first_seen: time.into(),
            last_seen: time.into(),
            flow_id: Some(8812),
        })),
        seq,
    )
}

fn loss(seq: u64) -> StoredRecord {
    stored(
        &Record::Loss(LossRecord {
            time: "2026-11-22T06:22:53Z".into(),
            node: NODE.into(),
            stage: "kernel",
            reason: "ringbuf-full",
            count: 3,
            window_start: "2026-11-22T06:22:52Z".into(),
        }),
        seq,
    )
}

/// An `http` record: not a default syslog kind.
fn http_like(seq: u64) -> StoredRecord {
    let mut r = loss(seq);
    r.kind = "http".into();
    r
}

/// The syslog message the sink sends for `r` (this process is the sink's PROCID).
fn expected(r: &StoredRecord) -> String {
    let ev = cef::event_of(r);
    rfc5424(
        DEFAULT_FACILITY,
        syslog_severity(ev.severity),
        r.time_ns,
        &r.node,
        APP_NAME,
        &std::process::id().to_string(),
        &r.kind,
        &ev.render("monitor", APP_NAME, env!("CARGO_PKG_VERSION")),
    )
}

fn config(port: u16, pki: &Pki) -> SyslogConfig {
    let mut cfg = SyslogConfig::new(format!("127.0.0.1:{port}"), &pki.ca);
    cfg.server_name = Some("localhost".into());
    cfg.timeout = Duration::from_secs(2);
    cfg
}

#[test]
fn rsyslog_receives_exactly_the_violations_and_the_retry_after_a_restart_delivers() {
    private_netns();
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let port = free_port();
    let mut rsyslog = Rsyslog::start(dir.path(), &pki, port, "anon");
    let mut sink = SyslogSink::new(config(port, &pki)).unwrap();

    let tricky = "pipe | equals = backslash \\ and\nnewline";
    let first = vec![
        violation(1, "plain message"),
        http_like(2),
        violation(3, tricky),
        loss(4),
        violation(5, "third violation"),
    ];
    sink.write(&first).unwrap();
    let want: Vec<String> = [&first[0], &first[2], &first[3], &first[4]]
        .into_iter()
        .map(expected)
        .collect();
    let got = rsyslog.wait_received(want.len());
    assert_eq!(
        got, want,
        "rsyslog did not receive exactly the violation and loss messages"
    );

    // The fields a SIEM parses, and the escaping, as rsyslog received them.
    let cef_header = format!(
        "CEF:0|monitor|monitor|{}|sensitive-fields|Sensitive fields in query|8|",
        env!("CARGO_PKG_VERSION")
    );
    for line in [&got[0], &got[1], &got[3]] {
        assert!(line.starts_with("<163>1 2026-11-22T06:22:52."), "{line}");
        assert!(line.contains(&format!(" {NODE} monitor ")), "{line}");
        assert!(line.contains(&cef_header), "{line}");
    }
    assert!(
        got[1].ends_with(r" msg=pipe | equals \= backslash \\ and\nnewline"),
        "escaping did not survive: {}",
        got[1]
    );
    assert!(
        got[1].contains(&format!("externalId={NODE}:{BOOT}:3 ")),
        "{}",
        got[1]
    );
    assert!(
        got[2].contains("|loss|Records lost: ringbuf-full|5|"),
        "{}",
        got[2]
    );

    // Receiver down: the write fails fast and reports nothing delivered.
    rsyslog.stop();
    let second = vec![violation(6, "while down"), violation(7, "while down too")];
    let t = Instant::now();
    let err = sink.write(&second).unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(err.delivered, 0, "{err:?}");
    assert!(
        err.kind.to_string().contains(&format!("127.0.0.1:{port}")),
        "{}",
        err.kind
    );

    // Back up on the same port: the retry delivers, once.
    let rsyslog = Rsyslog::start(dir.path(), &pki, port, "anon");
    sink.write(&second[err.delivered..]).unwrap();
    let mut all = want.clone();
    all.extend(second.iter().map(expected));
    let got = rsyslog.wait_received(all.len());
    assert_eq!(got, all, "after the restart");
}

#[test]
fn rsyslog_requiring_client_certificates_accepts_only_the_signed_client() {
    private_netns();
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let port = free_port();
    let rsyslog = Rsyslog::start(dir.path(), &pki, port, "x509/certvalid");

    // Without a client certificate nothing gets through (with TLS 1.3 the refusal may only
    // arrive after the handshake, so the write itself may look fine).
    let mut anonymous = SyslogSink::new(config(port, &pki)).unwrap();
    let _ = anonymous.write(&[violation(1, "no client certificate")]);
    sleep(Duration::from_millis(1500));
    assert_eq!(
        rsyslog.received(),
        Vec::<String>::new(),
        "rsyslog accepted a client without a certificate\n{}",
        rsyslog.diagnostics()
    );

    let mut cfg = config(port, &pki);
    cfg.client = Some((pki.client_cert.clone(), pki.client_key.clone()));
    let mut sink = SyslogSink::new(cfg).unwrap();
    let recs = vec![violation(2, "with a client certificate"), loss(3)];
    sink.write(&recs).unwrap();
    let want: Vec<String> = recs.iter().map(expected).collect();
    assert_eq!(
        rsyslog.wait_received(want.len()),
        want,
        "\n{}",
        rsyslog.diagnostics()
    );
}
