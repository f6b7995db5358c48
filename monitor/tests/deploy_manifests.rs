//! The Kubernetes manifests in `deploy/kubernetes/`, checked without a cluster.
//!
//! - Every YAML document is read into the matching `k8s-openapi` type (by `apiVersion` and
//!   `kind`), or, for cert-manager's `Issuer` and `Certificate` (not in k8s-openapi), into the
//!   small `cert_manager` structs below, which deny unknown fields and know only the fields
//!   these manifests use. k8s-openapi ignores unknown fields, so a misspelt field
//!   (`readOnlyRootFilesytem`) would parse and silently do nothing; [`round_trip`] catches it by
//!   serializing the typed object back and requiring every key and value of the original.
//! - Security properties of the agent DaemonSet (least privilege; the capability list the lab
//!   test reads) and the collector (non-root, single writer), and the agent's read-only RBAC.
//! - Each container's `command` + `args` is parsed by the real CLI (`monitor::cli::Cli`); every
//!   path it names is on a volume mount of the right kind (certificates renamed to what
//!   `--tls-dir` expects, the store on the PVC, the spool on the host...).
//! - The policy ConfigMap's text passes the same checks as `monitor policy lint`.
//! - `deploy/images/Dockerfile` pins its base images by digest, puts the binary where the
//!   manifests' `command` looks, and runs as the collector's `runAsUser`.
//!
//! Names across files (Services, Secrets, ServiceAccounts, Issuers, labels) are checked to
//! agree, since `kubectl apply` would accept a dangling reference and fail only at run time.

use std::{
    any::type_name,
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use clap::Parser as _;
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment},
    core::v1::{
        ConfigMap, Container, Namespace, PersistentVolumeClaim, PodSpec, PodTemplateSpec, Service,
        ServiceAccount, Volume, VolumeMount,
    },
    networking::v1::NetworkPolicy,
    policy::v1::PodDisruptionBudget,
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use monitor::{cli::Cli, cli::Command};
use serde::{Deserialize as _, Serialize, de::DeserializeOwned};
use serde_json::Value;

/// The namespace every namespaced object lives in.
const NAMESPACE: &str = "monitor";

/// What the capability lab test reads from `50-agent.yaml` and runs the agent with.
const AGENT_CAPABILITIES: [&str; 3] = ["BPF", "NET_ADMIN", "PERFMON"];

/// cert-manager `cert-manager.io/v1` kinds, reduced to the fields these manifests use. Every
/// struct denies unknown fields, so a field outside this subset fails the test: extend the
/// struct (checking the field against cert-manager's API reference) when a manifest needs it.
mod cert_manager {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use serde::{Deserialize, Serialize};

    /// `Issuer`: exactly one of `selfSigned` and `ca` here.
    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Issuer {
        pub api_version: String,
        pub kind: String,
        pub metadata: ObjectMeta,
        pub spec: IssuerSpec,
    }

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct IssuerSpec {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub self_signed: Option<SelfSignedIssuer>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ca: Option<CaIssuer>,
    }

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    pub struct SelfSignedIssuer {}

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct CaIssuer {
        pub secret_name: String,
    }

    /// `Certificate`.
    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Certificate {
        pub api_version: String,
        pub kind: String,
        pub metadata: ObjectMeta,
        pub spec: CertificateSpec,
    }

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct CertificateSpec {
        pub secret_name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub common_name: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub dns_names: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub ip_addresses: Vec<String>,
        #[serde(rename = "isCA", default, skip_serializing_if = "Option::is_none")]
        pub is_ca: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub duration: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub renew_before: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub usages: Vec<KeyUsage>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub private_key: Option<PrivateKey>,
        pub issuer_ref: IssuerRef,
    }

    /// cert-manager's `KeyUsage` values (the spellings its API accepts).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
    pub enum KeyUsage {
        #[serde(rename = "signing")]
        Signing,
        #[serde(rename = "digital signature")]
        DigitalSignature,
        #[serde(rename = "content commitment")]
        ContentCommitment,
        #[serde(rename = "key encipherment")]
        KeyEncipherment,
        #[serde(rename = "key agreement")]
        KeyAgreement,
        #[serde(rename = "data encipherment")]
        DataEncipherment,
        #[serde(rename = "cert sign")]
        CertSign,
        #[serde(rename = "crl sign")]
        CrlSign,
        #[serde(rename = "server auth")]
        ServerAuth,
        #[serde(rename = "client auth")]
        ClientAuth,
    }

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct PrivateKey {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub algorithm: Option<KeyAlgorithm>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub size: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub encoding: Option<KeyEncoding>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub rotation_policy: Option<RotationPolicy>,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
    pub enum KeyAlgorithm {
        #[serde(rename = "RSA")]
        Rsa,
        #[serde(rename = "ECDSA")]
        Ecdsa,
        Ed25519,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
    pub enum KeyEncoding {
        #[serde(rename = "PKCS1")]
        Pkcs1,
        #[serde(rename = "PKCS8")]
        Pkcs8,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
    pub enum RotationPolicy {
        Never,
        Always,
    }

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct IssuerRef {
        pub name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub kind: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub group: Option<String>,
    }
}

use cert_manager::{Certificate, Issuer, KeyAlgorithm, KeyEncoding, KeyUsage};

/// One YAML document of a manifest file, untyped.
#[derive(Debug)]
struct Doc {
    /// File name under `deploy/kubernetes/`.
    file: String,
    /// Index of the document in its file (from 0).
    index: usize,
    value: Value,
}

impl Doc {
    fn str_at(&self, pointer: &str) -> &str {
        self.value
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("?")
    }

    /// `40-collector.yaml, document 1 (Deployment monitor-collector)`.
    fn at(&self) -> String {
        format!(
            "{}, document {} ({} {})",
            self.file,
            self.index,
            self.str_at("/kind"),
            self.str_at("/metadata/name")
        )
    }
}

/// A typed object and where it came from.
#[derive(Debug)]
struct Obj<T> {
    at: String,
    file: String,
    obj: T,
}

/// Every object of `deploy/kubernetes/`, by kind.
#[derive(Debug, Default)]
struct Manifests {
    namespaces: Vec<Obj<Namespace>>,
    service_accounts: Vec<Obj<ServiceAccount>>,
    cluster_roles: Vec<Obj<ClusterRole>>,
    cluster_role_bindings: Vec<Obj<ClusterRoleBinding>>,
    config_maps: Vec<Obj<ConfigMap>>,
    deployments: Vec<Obj<Deployment>>,
    daemon_sets: Vec<Obj<DaemonSet>>,
    services: Vec<Obj<Service>>,
    pdbs: Vec<Obj<PodDisruptionBudget>>,
    pvcs: Vec<Obj<PersistentVolumeClaim>>,
    network_policies: Vec<Obj<NetworkPolicy>>,
    issuers: Vec<Obj<Issuer>>,
    certificates: Vec<Obj<Certificate>>,
}

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// The YAML documents of one text (empty documents skipped).
fn documents(file: &str, text: &str) -> Vec<Doc> {
    serde_yaml_ng::Deserializer::from_str(text)
        .enumerate()
        .map(|(index, de)| {
            let value = Value::deserialize(de)
                .unwrap_or_else(|e| panic!("{file}, document {index}: not valid YAML: {e}"));
            Doc {
                file: file.to_owned(),
                index,
                value,
            }
        })
        .filter(|d| !d.value.is_null())
        .collect()
}

/// Every document of every `deploy/kubernetes/*.yaml`, in file order.
fn all_documents() -> Vec<Doc> {
    let dir = manifests_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    files
        .iter()
        .flat_map(|p| {
            let name = p
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(p)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
            documents(&name, &text)
        })
        .collect()
}

/// Reads `value` as `T` and checks that nothing was lost on the way: every key path of
/// `value` must be in `T` serialized back, with the same value. An `Err` lists each key path
/// that `T` does not know (a misspelt field, a field of another API version, a field at the
/// wrong level) or whose value changed.
fn round_trip<T: DeserializeOwned + Serialize>(value: &Value) -> Result<T, String> {
    let typed: T = serde_json::from_value(value.clone())
        .map_err(|e| format!("does not read as {}: {e}", type_name::<T>()))?;
    let back = serde_json::to_value(&typed)
        .map_err(|e| format!("{} does not serialize: {e}", type_name::<T>()))?;
    let mut problems = Vec::new();
    compare(value, &back, "", &mut problems);
    if problems.is_empty() {
        Ok(typed)
    } else {
        Err(format!(
            "{} does not know these fields (misspelt? wrong level? another API version?), or \
             changed their values:\n  {}",
            type_name::<T>(),
            problems.join("\n  ")
        ))
    }
}

/// Pushes to `out` every path of `orig` missing from, or different in, `back`.
fn compare(orig: &Value, back: &Value, path: &str, out: &mut Vec<String>) {
    match (orig, back) {
        (Value::Object(o), Value::Object(b)) => {
            for (key, v) in o {
                let p = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match b.get(key) {
                    Some(bv) => compare(v, bv, &p, out),
                    None => out.push(format!("{p}: unknown field (or a null value)")),
                }
            }
        }
        (Value::Array(o), Value::Array(b)) => {
            if o.len() != b.len() {
                out.push(format!("{path}: {} elements became {}", o.len(), b.len()));
                return;
            }
            for (i, (ov, bv)) in o.iter().zip(b).enumerate() {
                compare(ov, bv, &format!("{path}[{i}]"), out);
            }
        }
        (o, b) if o == b => {}
        (o, b) => out.push(format!("{path}: {o} became {b}")),
    }
}

/// [`round_trip`] for a document, panicking with its file, index and the unknown paths.
fn typed<T: DeserializeOwned + Serialize>(doc: &Doc) -> Obj<T> {
    let obj = round_trip(&doc.value).unwrap_or_else(|e| panic!("{}: {e}", doc.at()));
    Obj {
        at: doc.at(),
        file: doc.file.clone(),
        obj,
    }
}

/// Every document, typed by `apiVersion` and `kind`.
fn load() -> Manifests {
    let mut m = Manifests::default();
    for doc in all_documents() {
        let api = doc.str_at("/apiVersion").to_owned();
        let kind = doc.str_at("/kind").to_owned();
        match (api.as_str(), kind.as_str()) {
            ("v1", "Namespace") => m.namespaces.push(typed(&doc)),
            ("v1", "ServiceAccount") => m.service_accounts.push(typed(&doc)),
            ("v1", "ConfigMap") => m.config_maps.push(typed(&doc)),
            ("v1", "Service") => m.services.push(typed(&doc)),
            ("v1", "PersistentVolumeClaim") => m.pvcs.push(typed(&doc)),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => m.cluster_roles.push(typed(&doc)),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                m.cluster_role_bindings.push(typed(&doc));
            }
            ("apps/v1", "Deployment") => m.deployments.push(typed(&doc)),
            ("apps/v1", "DaemonSet") => m.daemon_sets.push(typed(&doc)),
            ("policy/v1", "PodDisruptionBudget") => m.pdbs.push(typed(&doc)),
            ("networking.k8s.io/v1", "NetworkPolicy") => m.network_policies.push(typed(&doc)),
            ("cert-manager.io/v1", "Issuer") => m.issuers.push(typed(&doc)),
            ("cert-manager.io/v1", "Certificate") => m.certificates.push(typed(&doc)),
            _ => panic!(
                "{}: unexpected apiVersion/kind {api}/{kind}: add it to this test's load()",
                doc.at()
            ),
        }
    }
    m
}

/// The one object of a kind with this name.
fn named<
    'a,
    T: k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
>(
    objs: &'a [Obj<T>],
    name: &str,
) -> &'a Obj<T> {
    let found: Vec<_> = objs
        .iter()
        .filter(|o| o.obj.metadata().name.as_deref() == Some(name))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {} named {name}, found {}",
        type_name::<T>(),
        found.len()
    );
    found[0]
}

fn pod_spec<'a>(template: &'a PodTemplateSpec, at: &str) -> &'a PodSpec {
    template
        .spec
        .as_ref()
        .unwrap_or_else(|| panic!("{at}: no pod spec"))
}

fn pod_labels(template: &PodTemplateSpec) -> BTreeMap<String, String> {
    template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

/// The agent DaemonSet: the only object of `50-agent.yaml`.
fn agent(m: &Manifests) -> (&Obj<DaemonSet>, &PodSpec, &Container) {
    assert_eq!(m.daemon_sets.len(), 1, "expected one DaemonSet");
    let ds = &m.daemon_sets[0];
    let template = &ds.obj.spec.as_ref().expect("DaemonSet spec").template;
    let pod = pod_spec(template, &ds.at);
    let c = container(pod, "agent", &ds.at);
    (ds, pod, c)
}

/// The collector Deployment.
fn collector(m: &Manifests) -> (&Obj<Deployment>, &PodSpec, &Container) {
    assert_eq!(m.deployments.len(), 1, "expected one Deployment");
    let d = &m.deployments[0];
    let template = &d.obj.spec.as_ref().expect("Deployment spec").template;
    let pod = pod_spec(template, &d.at);
    let c = container(pod, "collector", &d.at);
    (d, pod, c)
}

fn container<'a>(pod: &'a PodSpec, name: &str, at: &str) -> &'a Container {
    pod.containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("{at}: no container named {name}"))
}

/// The container's `command` + `args` with `$(VAR)` replaced by a stand-in value; every
/// variable must be defined in the container's `env` (Kubernetes leaves an undefined one as
/// literal text, which the agent would take as the node's name).
fn command_line(c: &Container, at: &str) -> Vec<String> {
    let env: BTreeSet<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
    c.command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .map(|arg| {
            let mut out = arg.clone();
            while let Some(start) = out.find("$(") {
                let end = out[start..]
                    .find(')')
                    .map(|e| start + e)
                    .unwrap_or_else(|| panic!("{at}: unterminated $( in {arg:?}"));
                let var = out[start + 2..end].to_owned();
                assert!(
                    env.contains(var.as_str()),
                    "{at}: container {} uses $({var}) in {arg:?} but does not define env {var}",
                    c.name
                );
                out.replace_range(start..=end, &format!("value-of-{}", var.to_lowercase()));
            }
            out
        })
        .collect()
}

/// Parses a container's command line with the real CLI.
fn parse_cli(c: &Container, at: &str) -> Cli {
    let argv = command_line(c, at);
    assert!(
        argv.first().is_some_and(|a| a == "/usr/local/bin/monitor"),
        "{at}: container {} must run /usr/local/bin/monitor (the image's binary), got {argv:?}",
        c.name
    );
    Cli::try_parse_from(&argv).unwrap_or_else(|e| {
        panic!(
            "{at}: container {}: the CLI refuses {argv:?}:\n{}",
            c.name,
            e.render()
        )
    })
}

/// The volume mount holding `path` (the longest matching mountPath) and its volume.
fn mount_of<'a>(
    pod: &'a PodSpec,
    c: &'a Container,
    path: &Path,
) -> Option<(&'a VolumeMount, &'a Volume)> {
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| path.starts_with(&m.mount_path))
        .max_by_key(|m| m.mount_path.len())?;
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)?;
    Some((mount, volume))
}

/// Like [`mount_of`], panicking with a message when `path` is on no mount.
fn require_mount<'a>(
    pod: &'a PodSpec,
    c: &'a Container,
    path: &Path,
    what: &str,
    at: &str,
) -> (&'a VolumeMount, &'a Volume) {
    mount_of(pod, c, path).unwrap_or_else(|| {
        panic!(
            "{at}: {what} {} is on no volume mount of container {} (the root filesystem is \
             read-only and holds nothing of the node's)",
            path.display(),
            c.name
        )
    })
}

/// Every absolute path an argument names: `--flag=/x`, a bare `/x`, and `key=/x` parts of
/// comma-separated specs (`--sink=ocsf:file=/x,...`).
fn paths_in_args(argv: &[String]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for arg in argv.iter().skip(1) {
        let value = arg.split_once('=').map_or(arg.as_str(), |(_, v)| v);
        for part in value.split(',') {
            let p = part.rsplit_once('=').map_or(part, |(_, v)| v);
            if p.starts_with('/') {
                out.push(PathBuf::from(p));
            }
        }
    }
    out
}

/// The files a Secret volume shows, by file name: the Secret key each comes from.
fn secret_files(volume: &Volume, at: &str) -> (String, BTreeMap<String, String>) {
    let secret = volume
        .secret
        .as_ref()
        .unwrap_or_else(|| panic!("{at}: volume {} is not a Secret", volume.name));
    let name = secret
        .secret_name
        .clone()
        .unwrap_or_else(|| panic!("{at}: volume {} names no Secret", volume.name));
    let items = secret
        .items
        .iter()
        .flatten()
        .map(|i| (i.path.clone(), i.key.clone()))
        .collect();
    (name, items)
}

/// `--tls-dir` must be a Secret volume (no subPath, so renewals reach the pod) that shows a
/// cert-manager Secret's keys under the names the binary opens: `ca.pem`, `NAME.pem`,
/// `NAME.key`. Returns the Secret's name.
fn check_tls_dir(pod: &PodSpec, c: &Container, dir: &Path, name: &str, at: &str) -> String {
    let (mount, volume) = require_mount(pod, c, dir, "--tls-dir", at);
    assert_eq!(
        Path::new(&mount.mount_path),
        dir,
        "{at}: --tls-dir {} must be a volume's mountPath itself",
        dir.display()
    );
    assert!(
        mount.sub_path.is_none(),
        "{at}: no subPath on the TLS mount: the kubelet never updates subPath mounts, so \
         renewed certificates would not reach the pod"
    );
    assert_eq!(
        mount.read_only,
        Some(true),
        "{at}: mount the TLS files read-only"
    );
    let (secret, files) = secret_files(volume, at);
    let want: BTreeMap<String, String> = [
        ("ca.pem".to_owned(), "ca.crt".to_owned()),
        (format!("{name}.pem"), "tls.crt".to_owned()),
        (format!("{name}.key"), "tls.key".to_owned()),
    ]
    .into();
    assert_eq!(
        files, want,
        "{at}: the Secret volume for --tls-dir must map cert-manager's keys to the file names \
         `monitor` opens (file name → Secret key)"
    );
    secret
}

fn port_named(c: &Container, name: &str, at: &str) -> i32 {
    c.ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("{at}: container {} has no port named {name}", c.name))
        .container_port
}

/// Liveness and readiness probes must GET `/healthz` on the `--metrics-addr` port.
fn check_health_probes(c: &Container, metrics_port: u16, at: &str) {
    for (what, probe) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("{at}: container {} needs an httpGet {what}", c.name));
        assert_eq!(get.path.as_deref(), Some("/healthz"), "{at}: {what} path");
        let port = match &get.port {
            IntOrString::Int(p) => *p,
            IntOrString::String(name) => port_named(c, name, at),
        };
        assert_eq!(
            port,
            i32::from(metrics_port),
            "{at}: {what} must use the --metrics-addr port"
        );
    }
}

fn check_resources(c: &Container, at: &str) {
    let r = c
        .resources
        .as_ref()
        .unwrap_or_else(|| panic!("{at}: container {} sets no resources", c.name));
    for (what, map) in [("requests", &r.requests), ("limits", &r.limits)] {
        let map = map
            .as_ref()
            .unwrap_or_else(|| panic!("{at}: container {} sets no {what}", c.name));
        for res in ["cpu", "memory"] {
            assert!(
                map.contains_key(res),
                "{at}: container {} sets no {what}.{res}",
                c.name
            );
        }
    }
}

/// Hours in a Go duration (`2160h`, `1h30m`), as cert-manager reads `duration`.
fn go_duration_hours(s: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut num = String::new();
    let mut seen = false;
    for ch in s.chars() {
        if ch.is_ascii_digit() || ch == '.' {
            num.push(ch);
            continue;
        }
        let n: f64 = num.parse().ok()?;
        num.clear();
        total += n * match ch {
            'h' => 1.0,
            'm' => 1.0 / 60.0,
            's' => 1.0 / 3600.0,
            _ => return None,
        };
        seen = true;
    }
    (seen && num.is_empty()).then_some(total)
}

#[test]
fn every_document_reads_with_no_unknown_fields() {
    let m = load();
    let count = m.namespaces.len()
        + m.service_accounts.len()
        + m.cluster_roles.len()
        + m.cluster_role_bindings.len()
        + m.config_maps.len()
        + m.deployments.len()
        + m.daemon_sets.len()
        + m.services.len()
        + m.pdbs.len()
        + m.pvcs.len()
        + m.network_policies.len()
        + m.issuers.len()
        + m.certificates.len();
    assert_eq!(count, all_documents().len());
    assert_eq!(m.namespaces.len(), 1);
    assert_eq!(
        m.namespaces[0].obj.metadata.name.as_deref(),
        Some(NAMESPACE)
    );
}

#[test]
fn unknown_field_check_names_the_path() {
    let yaml = "
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: x}
spec:
  selector: {matchLabels: {a: b}}
  template:
    spec:
      containers:
        - name: agent
          securityContext:
            readOnlyRootFilesytem: true
";
    let doc = &documents("test.yaml", yaml)[0];
    let err = round_trip::<DaemonSet>(&doc.value).expect_err("a misspelt field must fail");
    assert!(
        err.contains("spec.template.spec.containers[0].securityContext.readOnlyRootFilesytem"),
        "{err}"
    );
    // A field of the wrong type or at the wrong level fails too; a correct one passes.
    let good = yaml.replace("Filesytem", "Filesystem");
    round_trip::<DaemonSet>(&documents("test.yaml", &good)[0].value).expect("correct field");
    let cert = "
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: x}
spec:
  secretName: s
  issuerRef: {name: i}
  usages: [client auth]
  dnsName: [a]
";
    let err = round_trip::<Certificate>(&documents("c.yaml", cert)[0].value)
        .expect_err("cert-manager structs deny unknown fields");
    assert!(err.contains("dnsName"), "{err}");
}

#[test]
fn every_object_is_labelled_and_namespaced() {
    for doc in all_documents() {
        let at = doc.at();
        let kind = doc.str_at("/kind");
        let labels = doc.value.pointer("/metadata/labels");
        assert_eq!(
            labels
                .and_then(|l| l.get("app.kubernetes.io/name"))
                .and_then(Value::as_str),
            Some("monitor"),
            "{at}: label app.kubernetes.io/name: monitor"
        );
        let cluster_scoped = matches!(kind, "Namespace" | "ClusterRole" | "ClusterRoleBinding");
        if kind != "Namespace" {
            assert!(
                labels
                    .and_then(|l| l.get("app.kubernetes.io/component"))
                    .is_some(),
                "{at}: label app.kubernetes.io/component"
            );
        }
        let ns = doc
            .value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str);
        if cluster_scoped {
            assert_eq!(ns, None, "{at}: cluster-scoped, no namespace");
        } else {
            assert_eq!(ns, Some(NAMESPACE), "{at}: namespace {NAMESPACE}");
        }
    }
}

/// The shape the capability lab test reads: one document, a DaemonSet, container `agent`,
/// `drop: [ALL]` and `add:` a list of names without `CAP_`.
#[test]
fn agent_manifest_keeps_the_lab_test_contract() {
    let path = manifests_dir().join("50-agent.yaml");
    let text = std::fs::read_to_string(&path).expect("50-agent.yaml");
    let docs = documents("50-agent.yaml", &text);
    assert_eq!(
        docs.len(),
        1,
        "50-agent.yaml must hold exactly one document"
    );
    let doc = &docs[0];
    assert_eq!(doc.str_at("/kind"), "DaemonSet");
    let containers = doc
        .value
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .expect("containers");
    let agent = containers
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some("agent"))
        .expect("container `agent`");
    let caps = agent
        .pointer("/securityContext/capabilities")
        .expect("securityContext.capabilities");
    assert_eq!(caps.get("drop"), Some(&serde_json::json!(["ALL"])));
    let add: BTreeSet<&str> = caps
        .get("add")
        .and_then(Value::as_array)
        .expect("capabilities.add must be a YAML list")
        .iter()
        .map(|v| v.as_str().expect("capability names are strings"))
        .collect();
    assert!(
        add.iter().all(|c| !c.starts_with("CAP_")),
        "no CAP_ prefix: {add:?}"
    );
    assert_eq!(add, AGENT_CAPABILITIES.into());
}

#[test]
fn agent_daemonset_is_least_privilege() {
    let m = load();
    let (ds, pod, c) = agent(&m);
    let at = &ds.at;
    assert_eq!(ds.file, "50-agent.yaml");

    // No host namespaces, no privileged mode.
    assert_ne!(pod.host_network, Some(true), "{at}: no hostNetwork");
    assert_ne!(pod.host_pid, Some(true), "{at}: no hostPID");
    assert_ne!(pod.host_ipc, Some(true), "{at}: no hostIPC");
    assert_eq!(pod.containers.len(), 1, "{at}: one container");
    assert!(pod.init_containers.is_none(), "{at}: no init containers");
    let sc = c.security_context.as_ref().expect("securityContext");
    assert_ne!(sc.privileged, Some(true), "{at}: not privileged");
    assert_eq!(
        sc.allow_privilege_escalation,
        Some(false),
        "{at}: allowPrivilegeEscalation"
    );
    assert_eq!(
        sc.read_only_root_filesystem,
        Some(true),
        "{at}: readOnlyRootFilesystem"
    );
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(
        caps.drop.as_deref(),
        Some(&["ALL".to_owned()][..]),
        "{at}: drop ALL"
    );
    let add: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
    assert_eq!(
        add,
        AGENT_CAPABILITIES.into(),
        "{at}: exactly these capabilities"
    );
    let seccomp = sc
        .seccomp_profile
        .as_ref()
        .or(pod
            .security_context
            .as_ref()
            .and_then(|s| s.seccomp_profile.as_ref()))
        .expect("a seccomp profile");
    assert_eq!(
        seccomp.type_, "RuntimeDefault",
        "{at}: seccomp RuntimeDefault"
    );

    // Every node: a toleration with no key and `Exists` tolerates every taint.
    assert!(
        pod.tolerations
            .iter()
            .flatten()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "{at}: tolerate every taint (operator: Exists, no key, no effect)"
    );
    assert!(pod.affinity.is_none(), "{at}: no affinity: every node");

    // Host paths: exactly cgroup v2 and BTF read-only, and the spool read-write. No bpffs,
    // tracefs, /proc, container runtime socket...
    let mut host_paths = BTreeMap::new();
    for v in pod.volumes.iter().flatten() {
        if let Some(hp) = &v.host_path {
            let mount = c
                .volume_mounts
                .iter()
                .flatten()
                .find(|m| m.name == v.name)
                .unwrap_or_else(|| panic!("{at}: hostPath volume {} not mounted", v.name));
            host_paths.insert(hp.path.clone(), mount.read_only == Some(true));
        }
    }
    let want: BTreeMap<String, bool> = [
        ("/sys/fs/cgroup".to_owned(), true),
        ("/sys/kernel/btf".to_owned(), true),
        ("/var/lib/monitor/spool".to_owned(), false),
    ]
    .into();
    assert_eq!(host_paths, want, "{at}: hostPath → read-only");

    let cli = parse_cli(c, at);
    let Command::Agent(args) = cli.command else {
        panic!("{at}: the agent container must run `monitor agent`");
    };
    let metrics = args
        .metrics_addr
        .expect("--metrics-addr (the probes need /healthz)");
    assert_eq!(
        port_named(c, "metrics", at),
        i32::from(metrics.port()),
        "{at}: port `metrics` is --metrics-addr's"
    );
    check_health_probes(c, metrics.port(), at);
    check_resources(c, at);
}

#[test]
fn collector_is_non_root_and_single_writer() {
    let m = load();
    let (d, pod, c) = collector(&m);
    let at = &d.at;
    let spec = d.obj.spec.as_ref().expect("spec");
    assert_eq!(
        spec.replicas,
        Some(1),
        "{at}: one replica (SQLite has one writer)"
    );
    assert_eq!(
        spec.strategy.as_ref().and_then(|s| s.type_.as_deref()),
        Some("Recreate"),
        "{at}: Recreate, so the old pod has let go of the store before the new one opens it"
    );
    let psc = pod.security_context.as_ref().expect("pod securityContext");
    let sc = c
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert!(
        sc.run_as_non_root == Some(true) || psc.run_as_non_root == Some(true),
        "{at}: runAsNonRoot"
    );
    let uid = sc.run_as_user.or(psc.run_as_user).expect("runAsUser");
    assert_ne!(uid, 0, "{at}: not root");
    assert_eq!(
        sc.allow_privilege_escalation,
        Some(false),
        "{at}: allowPrivilegeEscalation"
    );
    assert_eq!(
        sc.read_only_root_filesystem,
        Some(true),
        "{at}: readOnlyRootFilesystem"
    );
    assert_ne!(sc.privileged, Some(true));
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(
        caps.drop.as_deref(),
        Some(&["ALL".to_owned()][..]),
        "{at}: drop ALL"
    );
    assert!(
        caps.add.as_ref().is_none_or(Vec::is_empty),
        "{at}: adds no capability"
    );
    let seccomp = sc
        .seccomp_profile
        .as_ref()
        .or(psc.seccomp_profile.as_ref())
        .expect("seccomp");
    assert_eq!(seccomp.type_, "RuntimeDefault");
    assert_ne!(pod.host_network, Some(true));
    assert!(
        pod.volumes.iter().flatten().all(|v| v.host_path.is_none()),
        "{at}: no hostPath"
    );

    let cli = parse_cli(c, at);
    let Command::Collector(args) = cli.command else {
        panic!("{at}: the collector container must run `monitor collector`");
    };
    assert!(!args.insecure, "{at}: never --insecure");
    // The store's directory is the PVC, writable.
    let store_dir = args.store.parent().expect("--store has a directory");
    let (mount, volume) = require_mount(pod, c, &args.store, "--store", at);
    assert_eq!(
        Path::new(&mount.mount_path),
        store_dir,
        "{at}: the PVC is the store's directory"
    );
    assert_ne!(mount.read_only, Some(true), "{at}: the store is written");
    let claim = volume
        .persistent_volume_claim
        .as_ref()
        .unwrap_or_else(|| panic!("{at}: --store must be on a PersistentVolumeClaim"));
    let pvc = named(&m.pvcs, &claim.claim_name);
    assert_eq!(
        pvc.obj
            .spec
            .as_ref()
            .and_then(|s| s.access_modes.clone())
            .unwrap_or_default(),
        vec!["ReadWriteOnce".to_owned()],
        "{}: one writer, ReadWriteOnce",
        pvc.at
    );
    for sink in &args.sinks {
        monitor_collector::sink::SinkSpec::parse(sink)
            .unwrap_or_else(|e| panic!("{at}: --sink {sink:?} is refused: {e}"));
    }
    let metrics = args
        .metrics_addr
        .expect("--metrics-addr (the probes need /healthz)");
    assert_eq!(port_named(c, "metrics", at), i32::from(metrics.port()));
    assert_eq!(port_named(c, "grpc", at), i32::from(args.listen.port()));
    check_health_probes(c, metrics.port(), at);
    check_resources(c, at);

    // A PodDisruptionBudget selects the collector.
    let labels = pod_labels(&spec.template);
    assert!(
        m.pdbs.iter().any(|p| p
            .obj
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .and_then(|s| s.match_labels.as_ref())
            .is_some_and(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))),
        "{at}: a PodDisruptionBudget selects the collector's pods"
    );
}

#[test]
fn agent_rbac_is_read_only_on_four_resources() {
    let m = load();
    let (ds, pod, _) = agent(&m);
    let sa = pod
        .service_account_name
        .as_deref()
        .expect("agent serviceAccountName");
    named(&m.service_accounts, sa);
    let bindings: Vec<_> = m
        .cluster_role_bindings
        .iter()
        .filter(|b| {
            b.obj.subjects.iter().flatten().any(|s| {
                s.kind == "ServiceAccount"
                    && s.name == sa
                    && s.namespace.as_deref() == Some(NAMESPACE)
            })
        })
        .collect();
    assert_eq!(
        bindings.len(),
        1,
        "{}: one ClusterRoleBinding for {sa}",
        ds.at
    );
    let role_ref = &bindings[0].obj.role_ref;
    assert_eq!(role_ref.kind, "ClusterRole");
    let role = named(&m.cluster_roles, &role_ref.name);
    let mut granted = BTreeSet::new();
    for rule in role.obj.rules.iter().flatten() {
        let verbs: BTreeSet<&str> = rule.verbs.iter().map(String::as_str).collect();
        assert_eq!(
            verbs,
            ["get", "list", "watch"].into(),
            "{}: only get, list, watch",
            role.at
        );
        assert!(
            rule.non_resource_urls.is_none(),
            "{}: no nonResourceURLs",
            role.at
        );
        assert!(
            rule.resource_names.is_none(),
            "{}: no resourceNames",
            role.at
        );
        for group in rule.api_groups.iter().flatten() {
            for res in rule.resources.iter().flatten() {
                assert!(
                    granted.insert((group.clone(), res.clone())),
                    "{}: {group}/{res} granted twice",
                    role.at
                );
            }
        }
    }
    let want: BTreeSet<(String, String)> = [
        ("", "pods"),
        ("", "services"),
        ("discovery.k8s.io", "endpointslices"),
        ("networking.k8s.io", "networkpolicies"),
    ]
    .iter()
    .map(|(g, r)| ((*g).to_owned(), (*r).to_owned()))
    .collect();
    assert_eq!(
        granted, want,
        "{}: exactly the four resources the agent watches",
        role.at
    );

    // The collector needs no API access: no binding, no token.
    let (d, cpod, _) = collector(&m);
    let csa = cpod
        .service_account_name
        .as_deref()
        .expect("collector serviceAccountName");
    let csa_obj = named(&m.service_accounts, csa);
    assert!(
        m.cluster_role_bindings.iter().all(|b| b
            .obj
            .subjects
            .iter()
            .flatten()
            .all(|s| s.name != csa)),
        "{}: the collector's ServiceAccount is bound to nothing",
        d.at
    );
    assert!(
        cpod.automount_service_account_token == Some(false)
            || csa_obj.obj.automount_service_account_token == Some(false),
        "{}: no API token in the collector's pods",
        d.at
    );
}

/// Every absolute path in a container's arguments is on a volume mount, the TLS directories
/// show the files `monitor` opens, the policy file is the ConfigMap's key, the spool and the
/// cgroup root are the host's, and the agent reaches the collector by its Service's name.
#[test]
fn command_lines_parse_and_name_mounted_paths() {
    let m = load();
    let (ds, apod, ac) = agent(&m);
    let (d, cpod, cc) = collector(&m);
    for (at, pod, c) in [(&ds.at, apod, ac), (&d.at, cpod, cc)] {
        let argv = command_line(c, at);
        parse_cli(c, at);
        for path in paths_in_args(&argv) {
            require_mount(pod, c, &path, "argument path", at);
        }
        for mount in c.volume_mounts.iter().flatten() {
            assert!(
                pod.volumes.iter().flatten().any(|v| v.name == mount.name),
                "{at}: mount {} names no volume",
                mount.name
            );
        }
    }

    // Agent.
    let at = &ds.at;
    let Command::Agent(a) = parse_cli(ac, at).command else {
        panic!("{at}: agent");
    };
    assert!(
        a.kubernetes && a.inventory.is_none(),
        "{at}: identity from the API"
    );
    assert_eq!(
        a.node_name.as_deref(),
        Some("value-of-node_name"),
        "{at}: --node-name=$(NODE_NAME)"
    );
    let node_env = ac
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "NODE_NAME")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    assert_eq!(
        node_env,
        Some("spec.nodeName"),
        "{at}: NODE_NAME from the downward API"
    );
    let host_of = |path: &Path, what: &str| {
        let (mount, volume) = require_mount(apod, ac, path, what, at);
        assert_eq!(
            Path::new(&mount.mount_path),
            path,
            "{at}: {what} is a mount itself"
        );
        volume
            .host_path
            .as_ref()
            .unwrap_or_else(|| panic!("{at}: {what} must be a hostPath"))
            .path
            .clone()
    };
    assert_eq!(host_of(&a.cgroup, "--cgroup"), "/sys/fs/cgroup");
    assert_eq!(
        host_of(&a.spool_dir, "--spool-dir"),
        "/var/lib/monitor/spool"
    );
    assert!(!a.tls.insecure, "{at}: never --insecure");
    let agent_secret = check_tls_dir(
        apod,
        ac,
        a.tls.tls_dir.as_deref().expect("--tls-dir"),
        "agent",
        at,
    );
    assert!(
        a.tls.ca.is_none() && a.tls.cert.is_none() && a.tls.key.is_none(),
        "{at}: --tls-dir only"
    );

    // The policy file is the ConfigMap's key, through a whole-volume mount (reloads need it).
    let policy = a.policy.as_deref().expect("--policy");
    let (mount, volume) = require_mount(apod, ac, policy, "--policy", at);
    assert!(
        mount.sub_path.is_none(),
        "{at}: no subPath on the policy mount (no live reload)"
    );
    let cm_src = volume
        .config_map
        .as_ref()
        .expect("--policy on a ConfigMap volume");
    let rel = policy
        .strip_prefix(&mount.mount_path)
        .expect("under the mount")
        .to_string_lossy()
        .into_owned();
    let key = cm_src
        .items
        .iter()
        .flatten()
        .find(|i| i.path == rel)
        .map_or(rel.clone(), |i| i.key.clone());
    let cm = named(&m.config_maps, &cm_src.name);
    assert!(
        cm.obj.data.as_ref().is_some_and(|d| d.contains_key(&key)),
        "{at}: ConfigMap {} has no key {key} for --policy",
        cm_src.name
    );

    // The collector URL is the Service, on its gRPC port, and a name its certificate carries.
    let url = a.collector.as_deref().expect("--collector");
    let rest = url.strip_prefix("https://").expect("--collector https://");
    let (host, port) = rest
        .trim_end_matches('/')
        .rsplit_once(':')
        .expect("HOST:PORT");
    let svc_name = host
        .strip_suffix(&format!(".{NAMESPACE}.svc"))
        .unwrap_or_else(|| {
            panic!("{at}: --collector host {host} should be SERVICE.{NAMESPACE}.svc")
        });
    let svc = named(&m.services, svc_name);
    let svc_spec = svc.obj.spec.as_ref().expect("Service spec");
    let svc_port = svc_spec
        .ports
        .iter()
        .flatten()
        .find(|p| p.port.to_string() == port)
        .unwrap_or_else(|| panic!("{}: no port {port}", svc.at));
    let target = match &svc_port.target_port {
        Some(IntOrString::String(n)) => port_named(cc, n, &d.at),
        Some(IntOrString::Int(p)) => *p,
        None => svc_port.port,
    };
    let Command::Collector(col) = parse_cli(cc, &d.at).command else {
        panic!("collector");
    };
    assert_eq!(
        target,
        i32::from(col.listen.port()),
        "{}: targets --listen",
        svc.at
    );
    let selector = svc_spec.selector.clone().unwrap_or_default();
    let collector_labels = pod_labels(&d.obj.spec.as_ref().expect("spec").template);
    let agent_labels = pod_labels(&ds.obj.spec.as_ref().expect("spec").template);
    assert!(
        !selector.is_empty()
            && selector
                .iter()
                .all(|(k, v)| collector_labels.get(k) == Some(v)),
        "{}: selects the collector's pods",
        svc.at
    );
    assert!(
        !selector.iter().all(|(k, v)| agent_labels.get(k) == Some(v)),
        "{}: must not select the agents",
        svc.at
    );

    // Collector certificates.
    let collector_secret = check_tls_dir(
        cpod,
        cc,
        col.tls_dir.as_deref().expect("--tls-dir"),
        "collector",
        &d.at,
    );
    let cert_for = |secret: &str| {
        m.certificates
            .iter()
            .find(|c| c.obj.spec.secret_name == secret)
            .unwrap_or_else(|| panic!("no Certificate writes Secret {secret}"))
    };
    let server = cert_for(&collector_secret);
    assert!(
        server.obj.spec.dns_names.iter().any(|n| n == host),
        "{}: the collector certificate must name {host} (the agents' --collector)",
        server.at
    );
    assert!(
        server.obj.spec.usages.contains(&KeyUsage::ServerAuth),
        "{}: server auth",
        server.at
    );
    let client = cert_for(&agent_secret);
    assert!(
        client.obj.spec.usages.contains(&KeyUsage::ClientAuth),
        "{}: client auth",
        client.at
    );

    // Collector ingress: the agents may reach --listen.
    let np = m
        .network_policies
        .iter()
        .find(|n| {
            n.obj
                .spec
                .as_ref()
                .and_then(|s| s.pod_selector.as_ref())
                .and_then(|s| s.match_labels.as_ref())
                .is_some_and(|sel| sel.iter().all(|(k, v)| collector_labels.get(k) == Some(v)))
        })
        .expect("a NetworkPolicy for the collector");
    let admits_agents = np
        .obj
        .spec
        .as_ref()
        .and_then(|s| s.ingress.as_ref())
        .into_iter()
        .flatten()
        .any(|rule| {
            let from_agents = rule.from.iter().flatten().any(|peer| {
                peer.namespace_selector.is_none()
                    && peer
                        .pod_selector
                        .as_ref()
                        .and_then(|s| s.match_labels.as_ref())
                        .is_some_and(|sel| sel.iter().all(|(k, v)| agent_labels.get(k) == Some(v)))
            });
            let on_grpc = rule.ports.iter().flatten().any(|p| {
                p.port == Some(IntOrString::Int(i32::from(col.listen.port())))
                    || p.port == Some(IntOrString::String("grpc".into()))
            });
            from_agents && on_grpc
        });
    assert!(
        admits_agents,
        "{}: admit the agents on the gRPC port",
        np.at
    );
}

#[test]
fn policy_configmap_passes_lint() {
    let m = load();
    let (_, pod, _) = agent(&m);
    let cm_name = pod
        .volumes
        .iter()
        .flatten()
        .find_map(|v| v.config_map.as_ref())
        .map(|cm| cm.name.clone())
        .expect("a ConfigMap volume on the agent");
    let cm = named(&m.config_maps, &cm_name);
    let data = cm.obj.data.as_ref().expect("data");
    assert!(!data.is_empty(), "{}: no policy", cm.at);
    let raw = std::fs::read_to_string(manifests_dir().join(&cm.file)).expect("policy file");
    for (key, text) in data {
        // Diagnostics count lines from the embedded text; shift them to the manifest's lines
        // (the text starts on the line after `KEY: |`, indented by 4).
        let header = raw
            .lines()
            .position(|l| l.trim_start().starts_with(&format!("{key}: |")))
            .unwrap_or_else(|| panic!("{}: write key {key} as a `|` block scalar", cm.at));
        let path = PathBuf::from(format!("{}/{}", "deploy/kubernetes", cm.file));
        if let Err(errors) = monitor_policy::Policy::parse(text, &path) {
            let shifted: Vec<String> = errors
                .0
                .into_iter()
                .map(|mut d| {
                    d.line += header + 1;
                    d.column += 4;
                    d.to_string()
                })
                .collect();
            panic!(
                "{}: the embedded policy (key {key}) fails `monitor policy lint`:\n{}",
                cm.at,
                shifted.join("\n")
            );
        }
    }
}

#[test]
fn certificates_form_one_ca() {
    let m = load();
    let issuers: BTreeMap<&str, &Obj<Issuer>> = m
        .issuers
        .iter()
        .map(|i| (i.obj.metadata.name.as_deref().expect("name"), i))
        .collect();
    for i in issuers.values() {
        let s = &i.obj.spec;
        assert!(
            s.self_signed.is_some() != s.ca.is_some(),
            "{}: exactly one of selfSigned and ca",
            i.at
        );
    }
    let ca_certs: Vec<_> = m
        .certificates
        .iter()
        .filter(|c| c.obj.spec.is_ca == Some(true))
        .collect();
    assert_eq!(ca_certs.len(), 1, "one CA Certificate");
    let ca = ca_certs[0];
    for cert in &m.certificates {
        let spec = &cert.obj.spec;
        let issuer_ref = &spec.issuer_ref;
        assert_eq!(
            issuer_ref.kind.as_deref(),
            Some("Issuer"),
            "{}: a namespaced Issuer",
            cert.at
        );
        let issuer = issuers
            .get(issuer_ref.name.as_str())
            .unwrap_or_else(|| panic!("{}: no Issuer {}", cert.at, issuer_ref.name));
        if spec.is_ca == Some(true) {
            assert!(
                issuer.obj.spec.self_signed.is_some(),
                "{}: the CA is self-signed",
                cert.at
            );
        } else {
            let secret = issuer.obj.spec.ca.as_ref().map(|c| c.secret_name.as_str());
            assert_eq!(
                secret,
                Some(ca.obj.spec.secret_name.as_str()),
                "{}: issued by the CA Issuer",
                cert.at
            );
            let duration = spec.duration.as_deref().expect("duration");
            let renew = spec.renew_before.as_deref().expect("renewBefore");
            let (d, r) = (
                go_duration_hours(duration).expect("a Go duration"),
                go_duration_hours(renew).expect("a Go duration"),
            );
            assert!(r < d, "{}: renewBefore < duration", cert.at);
        }
        let key = spec.private_key.as_ref().expect("privateKey");
        // PKCS#8, the format `monitor certs init` writes; every key type rustls reads.
        assert_eq!(key.encoding, Some(KeyEncoding::Pkcs8), "{}: PKCS8", cert.at);
        assert_eq!(
            key.algorithm,
            Some(KeyAlgorithm::Ecdsa),
            "{}: ECDSA",
            cert.at
        );
    }
    // Every Secret a pod mounts is written by a Certificate (the CA's own is mounted by none).
    let (_, apod, _) = agent(&m);
    let (_, cpod, _) = collector(&m);
    for pod in [apod, cpod] {
        for v in pod.volumes.iter().flatten() {
            if let Some(s) = &v.secret {
                let name = s.secret_name.as_deref().expect("secretName");
                assert_ne!(
                    name, ca.obj.spec.secret_name,
                    "the CA key Secret is never mounted"
                );
                assert!(
                    m.certificates
                        .iter()
                        .any(|c| c.obj.spec.secret_name == name),
                    "Secret {name} is written by no Certificate"
                );
            }
        }
    }
    assert!(
        m.certificates
            .iter()
            .any(|c| c.obj.spec.common_name.as_deref() == Some("cli")
                && c.obj.spec.usages.contains(&KeyUsage::ClientAuth)),
        "a `cli` client certificate for observe/report"
    );
}

/// The image the manifests run: base images pinned by digest, the binary where `command`
/// looks, and the runtime user the collector's `runAsUser` names.
#[test]
fn dockerfile_pins_bases_and_matches_the_manifests() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/images/Dockerfile");
    let text = std::fs::read_to_string(&path).expect("deploy/images/Dockerfile");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    // Every FROM names a stage built earlier or an image ARG whose default is pinned.
    let image_args: BTreeMap<&str, &str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("ARG "))
        .filter_map(|a| a.split_once('='))
        .filter(|(name, _)| name.ends_with("_IMAGE"))
        .collect();
    let mut stages = BTreeSet::new();
    for l in lines.iter().filter(|l| l.starts_with("FROM ")) {
        let words: Vec<&str> = l.split_whitespace().collect();
        let image = words[1];
        if let Some(arg) = image.strip_prefix("${").and_then(|a| a.strip_suffix('}')) {
            let value = image_args
                .get(arg)
                .unwrap_or_else(|| panic!("Dockerfile: {l}: no ARG {arg} with a default"));
            let (_, digest) = value
                .split_once("@sha256:")
                .unwrap_or_else(|| panic!("Dockerfile: ARG {arg}={value} is not pinned by digest"));
            assert!(
                digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()),
                "Dockerfile: ARG {arg}: a sha256 digest has 64 hex digits"
            );
        } else {
            assert!(
                stages.contains(image),
                "Dockerfile: {l}: use a pinned *_IMAGE ARG or an earlier stage"
            );
        }
        if let Some(i) = words.iter().position(|w| w.eq_ignore_ascii_case("AS")) {
            stages.insert(words[i + 1]);
        }
    }
    // The default target is the last stage: it must run as the collector's user and hold the
    // binary the manifests' `command` runs.
    let last_from = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM");
    let last = &lines[last_from..];
    assert!(
        last.iter()
            .any(|l| l.starts_with("COPY ") && l.ends_with(" /usr/local/bin/monitor")),
        "Dockerfile: the runtime stage must put the binary at /usr/local/bin/monitor"
    );
    let user = last
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("Dockerfile: the runtime stage sets USER");
    let m = load();
    let (d, pod, c) = collector(&m);
    let uid = c
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_user)
        .or(pod.security_context.as_ref().and_then(|s| s.run_as_user))
        .expect("runAsUser");
    assert_eq!(
        user.split(':').next(),
        Some(uid.to_string().as_str()),
        "{}: runAsUser is the image's USER",
        d.at
    );
}
