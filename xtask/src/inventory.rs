//! The lab's view of the inventory file.
//!
//! One schema for the agent and the lab: the file is parsed with the vocabulary's
//! [`monitor_record::inventory::InventoryFile`] (what the agent's static identity source
//! reads, so a file the lab accepts is one the agent accepts), and the lab's view is built from
//! it: the topology and the `lab:` sections, which only the lab uses (servers to start in each
//! pod) and which are strict. YAML errors are reported
//! as `file:line:column: message`; semantic errors name the file and the pod.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Component, Path};

use anyhow::{Context as _, Result, bail};
use monitor_record::inventory::{InventoryEntry, InventoryFile};
use serde::Deserialize;

/// The IPv4 network every lab address must be in (assigned as a /16).
pub const LAB_V4_NET: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 77, 0, 0), 16);
/// The IPv6 network every lab address must be in (assigned as a /64).
pub const LAB_V6_NET: (Ipv6Addr, u8) = (Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0), 64);

/// Largest nginx route body the lab will generate (keeps a typo from filling /run).
pub const MAX_ROUTE_BYTES: u64 = 256 << 20;

/// An inventory file, as far as the lab is concerned.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// Node name the agent writes into every record.
    pub node: String,
    /// Pods on the node: each gets a netns and a cgroup in the lab.
    pub pods: Vec<Pod>,
    /// Hosts outside the cluster: each gets a netns on the lab bridge, outside the monitored
    /// cgroup tree.
    pub externals: Vec<External>,
}

/// A pod (the agent reads more fields than these; the lab ignores them).
#[derive(Debug, Clone)]
pub struct Pod {
    /// Pod name, unique in the file.
    pub name: String,
    /// Kubernetes namespace.
    pub namespace: Option<String>,
    /// Service the pod belongs to.
    pub service: Option<String>,
    /// Kubernetes service account (the lab's mesh mode names the pod's SPIFFE identity after
    /// it).
    pub service_account: Option<String>,
    /// Pod IPs: the first IPv4 (and the first IPv6, if any) are assigned to `eth0` in the lab.
    pub ips: Vec<IpAddr>,
    /// Cgroup path relative to the lab's root cgroup (the agent's `--cgroup`).
    pub cgroup: String,
    /// Lab-only settings.
    pub lab: LabSection,
}

/// An external host (outside the cluster).
#[derive(Debug, Clone)]
pub struct External {
    /// Name, unique in the file (pods and externals share one namespace of names).
    pub name: String,
    /// Addresses: the first IPv4 (and IPv6, if any) are assigned in the lab.
    pub ips: Vec<IpAddr>,
    /// Lab-only settings.
    pub lab: LabSection,
}

/// The `lab:` section of a pod or external.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabSection {
    /// Servers to start in this pod.
    #[serde(default)]
    pub serve: Vec<Server>,
}

/// One server started in a pod by the lab.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// What to run.
    pub kind: ServerKind,
    /// TCP port it listens on (all addresses, IPv4 and IPv6).
    pub port: u16,
    /// nginx only: path → exact body size in bytes, served as a static file with
    /// Content-Length. Unknown paths get 404.
    #[serde(default)]
    pub routes: BTreeMap<String, u64>,
}

/// Kinds of lab servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerKind {
    /// nginx serving static bodies of fixed sizes.
    Nginx,
    /// `xtask/lab/server.py`: chunked responses, POST echo, sized bodies.
    Python,
    /// `xtask/lab/echo.py`: a TCP echo server.
    TcpEcho,
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Nginx => "nginx",
            Self::Python => "python",
            Self::TcpEcho => "tcp-echo",
        })
    }
}

/// A pod or an external, seen uniformly by the lab.
#[derive(Debug, Clone, Copy)]
pub struct Host<'a> {
    /// Name.
    pub name: &'a str,
    /// Addresses from the file.
    pub ips: &'a [IpAddr],
    /// Cgroup relative to the lab root; `None` for externals.
    pub cgroup: Option<&'a str>,
    /// Servers to start.
    pub serve: &'a [Server],
}

impl Host<'_> {
    /// First IPv4 address (validated to exist by [`Inventory::load`]).
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        self.ips.iter().find_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
    }

    /// First IPv6 address, if any.
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        self.ips.iter().find_map(|ip| match ip {
            IpAddr::V6(v6) => Some(*v6),
            IpAddr::V4(_) => None,
        })
    }
}

impl Inventory {
    /// Reads, parses and validates an inventory file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read inventory {}", path.display()))?;
        let inv = Self::parse(&text, &path.display().to_string())?;
        inv.validate()
            .with_context(|| format!("invalid inventory {}", path.display()))?;
        Ok(inv)
    }

    /// Parses YAML text; `origin` (a file name) prefixes error locations as
    /// `origin:line:column`. Does not validate.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let file: InventoryFile =
            serde_yaml_ng::from_str(text).map_err(|e| match e.location() {
                Some(loc) => anyhow::anyhow!(
                    "{origin}:{}:{}: {}",
                    loc.line(),
                    loc.column(),
                    strip_location(&e.to_string())
                ),
                None => anyhow::anyhow!("{origin}: {e}"),
            })?;
        let lab = |e: &InventoryEntry| -> Result<LabSection> {
            match &e.lab {
                None => Ok(LabSection::default()),
                Some(v) => serde_yaml_ng::from_value(v.clone()).map_err(|err| {
                    anyhow::anyhow!("{origin}: `lab:` section of {}: {err}", e.name)
                }),
            }
        };
        let mut pods = Vec::new();
        for e in &file.pods {
            let cgroup = e
                .cgroup
                .as_ref()
                .and_then(|c| c.to_str())
                .with_context(|| {
                    format!(
                        "{origin}: pod {} needs a `cgroup:` path for the lab",
                        e.name
                    )
                })?
                .to_owned();
            pods.push(Pod {
                name: e.name.clone(),
                namespace: (!e.namespace.is_empty()).then(|| e.namespace.clone()),
                service: e.service.clone(),
                service_account: e.service_account.clone(),
                ips: e.ips.clone(),
                cgroup,
                lab: lab(e)?,
            });
        }
        let mut externals = Vec::new();
        for e in &file.externals {
            externals.push(External {
                name: e.name.clone(),
                ips: e.ips.clone(),
                lab: lab(e)?,
            });
        }
        Ok(Self {
            node: file.node,
            pods,
            externals,
        })
    }

    /// Pods then externals, in file order.
    pub fn hosts(&self) -> impl Iterator<Item = Host<'_>> {
        let pods = self.pods.iter().map(|p| Host {
            name: &p.name,
            ips: &p.ips,
            cgroup: Some(&p.cgroup),
            serve: &p.lab.serve,
        });
        let ext = self.externals.iter().map(|x| Host {
            name: &x.name,
            ips: &x.ips,
            cgroup: None,
            serve: &x.lab.serve,
        });
        pods.chain(ext)
    }

    /// Checks what the lab relies on: unique names, IPs and cgroups; an IPv4 per host, inside
    /// the lab networks; safe cgroup paths; sane servers and routes.
    pub fn validate(&self) -> Result<()> {
        let mut names = BTreeSet::new();
        let mut ips = BTreeSet::new();
        let mut cgroups = BTreeSet::new();
        for h in self.hosts() {
            let name = h.name;
            if name.is_empty() {
                bail!("a pod or external has an empty name");
            }
            if !names.insert(name) {
                bail!("{name}: name used twice (pods and externals share names)");
            }
            if h.ipv4().is_none() {
                bail!(
                    "{name}: needs at least one IPv4 address in `ips` (the lab assigns it to eth0)"
                );
            }
            for ip in h.ips {
                check_lab_ip(*ip).with_context(|| format!("{name}: ips"))?;
                if !ips.insert(*ip) {
                    bail!("{name}: IP {ip} is used twice");
                }
            }
            if let Some(cg) = h.cgroup {
                check_cgroup_path(cg).with_context(|| format!("{name}: cgroup {cg:?}"))?;
                if !cgroups.insert(cg.trim_matches('/')) {
                    bail!("{name}: cgroup {cg:?} is used by two pods");
                }
            }
            let mut ports = BTreeSet::new();
            for s in h.serve {
                if s.port == 0 {
                    bail!("{name}: {} server with port 0", s.kind);
                }
                if !ports.insert(s.port) {
                    bail!("{name}: two servers on port {}", s.port);
                }
                check_routes(s)
                    .with_context(|| format!("{name}: {} server on port {}", s.kind, s.port))?;
            }
        }
        // A pod cgroup nested in another pod's cgroup would mix the two pods' processes.
        for a in &cgroups {
            for b in &cgroups {
                if a != b && Path::new(b).starts_with(a) {
                    bail!("cgroup {b:?} is nested inside another pod's cgroup {a:?}");
                }
            }
        }
        Ok(())
    }
}

/// serde_yaml_ng puts " at line L column C" into messages; we print the location up front,
/// so drop it from the message.
fn strip_location(msg: &str) -> String {
    let Some(i) = msg.find(" at line ") else {
        return msg.to_string();
    };
    let rest = &msg[i + " at line ".len()..];
    let skip_number = |s: &str| s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let after_line = &rest[rest.len() - skip_number(rest)..];
    match after_line.strip_prefix(" column ") {
        Some(col) => format!("{}{}", &msg[..i], &col[col.len() - skip_number(col)..]),
        None => msg.to_string(),
    }
}

fn check_lab_ip(ip: IpAddr) -> Result<()> {
    match ip {
        IpAddr::V4(v4) => {
            let (net, len) = LAB_V4_NET;
            let mask = u32::MAX << (32 - len);
            let host = u32::from(v4) & !mask;
            if u32::from(v4) & mask != u32::from(net) {
                bail!("{ip} is outside the lab network {net}/{len}");
            }
            if host == 0 || host == !mask {
                bail!("{ip} is the network or broadcast address of {net}/{len}");
            }
        }
        IpAddr::V6(v6) => {
            let (net, len) = LAB_V6_NET;
            let mask = u128::MAX << (128 - len);
            if u128::from(v6) & mask != u128::from(net) {
                bail!("{ip} is outside the lab network {net}/{len}");
            }
            if u128::from(v6) & !mask == 0 {
                bail!("{ip} is the subnet-router anycast address of {net}/{len}");
            }
        }
    }
    Ok(())
}

fn check_cgroup_path(cg: &str) -> Result<()> {
    let p = Path::new(cg);
    if cg.trim_matches('/').is_empty() {
        bail!("must not be empty");
    }
    if p.is_absolute() {
        bail!("must be relative to the lab's root cgroup (no leading /)");
    }
    for c in p.components() {
        match c {
            Component::Normal(s) if !s.to_string_lossy().starts_with("cgroup.") => {}
            _ => bail!("only plain path components are allowed (no `.`, `..`, `cgroup.*`)"),
        }
    }
    Ok(())
}

/// Characters allowed in nginx routes: they are written into the nginx config and the file
/// system, so keep to unreserved URL characters.
fn route_char_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || "/-_.~:@+,".contains(c)
}

fn check_routes(s: &Server) -> Result<()> {
    if s.kind != ServerKind::Nginx {
        if !s.routes.is_empty() {
            bail!("`routes` is only for nginx servers");
        }
        return Ok(());
    }
    let files: Vec<String> = s.routes.keys().map(|r| route_file(r)).collect();
    for (route, bytes) in &s.routes {
        if !route.starts_with('/') {
            bail!("route {route:?} must start with /");
        }
        if let Some(c) = route.chars().find(|c| !route_char_ok(*c)) {
            bail!(
                "route {route:?}: character {c:?} not allowed (use A-Z a-z 0-9 / - _ . ~ : @ + ,)"
            );
        }
        let inner = route.trim_start_matches('/').trim_end_matches('/');
        if !inner.is_empty()
            && inner
                .split('/')
                .any(|seg| seg.is_empty() || seg == "." || seg == ".." || seg == INDEX_FILE)
        {
            bail!("route {route:?}: empty, `.`, `..` or `{INDEX_FILE}` path segment");
        }
        if *bytes > MAX_ROUTE_BYTES {
            bail!(
                "route {route:?}: {bytes} bytes is more than the lab's limit of {MAX_ROUTE_BYTES}"
            );
        }
        let file = route_file(route);
        if let Some(other) = files.iter().find(|f| f.starts_with(&format!("{file}/"))) {
            bail!("route {route:?} is a file but also a directory of another route ({other})");
        }
    }
    Ok(())
}

/// File name (under the server's document root) that serves `route`; routes ending in `/`
/// are served by an index file in that directory.
pub fn route_file(route: &str) -> String {
    if route.ends_with('/') {
        format!("{route}{INDEX_FILE}")
    } else {
        route.to_string()
    }
}

/// Name of the file serving directory routes (`/`, `/foo/`).
pub const INDEX_FILE: &str = "__index";

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
node: n1
pods:
  - name: web
    namespace: ns
    service: web
    labels: {app: web}
    service_account: sa
    ips: ["10.77.0.10", "fd77::10"]
    cgroup: web
    lab:
      serve:
        - {kind: nginx, port: 80, routes: {"/": 612, "/small": 100, "/a/b": 9}}
        - {kind: python, port: 8080}
        - {kind: tcp-echo, port: 9000}
  - name: client
    ips: ["10.77.0.20"]
    cgroup: clients/client
externals:
  - name: ext
    ips: ["10.77.200.1"]
"#;

    #[test]
    fn parses_and_validates_with_agent_fields() {
        let inv = Inventory::parse(GOOD, "t.yaml").unwrap();
        inv.validate().unwrap();
        let web: Vec<_> = inv.hosts().collect();
        assert_eq!(web.len(), 3);
        assert_eq!(web[0].ipv4(), Some(Ipv4Addr::new(10, 77, 0, 10)));
        assert_eq!(web[0].ipv6(), Some("fd77::10".parse().unwrap()));
        assert_eq!(web[0].serve[2].kind, ServerKind::TcpEcho);
        assert_eq!(web[2].cgroup, None);
        assert_eq!(inv.pods[0].service_account.as_deref(), Some("sa"));
        assert_eq!(inv.pods[1].service_account, None);
    }

    /// One schema: a field the agent's inventory reader does not know is an error for the lab
    /// too, with its position (the lab used to accept files the agent then refused).
    #[test]
    fn fields_the_agent_rejects_are_rejected() {
        let bad = "node: n\npods:\n  - name: a\n    image_digest: x\n    ips: [\"10.77.0.1\"]\n    cgroup: a\n";
        let e = Inventory::parse(bad, "inv.yaml").unwrap_err().to_string();
        assert!(
            e.starts_with("inv.yaml:4:") && e.contains("image_digest"),
            "{e}"
        );
    }

    #[test]
    fn yaml_errors_have_file_line_column() {
        let bad = "node: n\npods:\n  - name: a\n    ips: [\"10.77.0.1\"\n    cgroup: a\n";
        let e = Inventory::parse(bad, "inv.yaml").unwrap_err().to_string();
        assert!(e.starts_with("inv.yaml:"), "{e}");
        assert!(!e.contains("at line 5 column"), "{e}");
        let loc: Vec<&str> = e.splitn(4, ':').collect();
        assert!(
            loc[1].parse::<usize>().is_ok() && loc[2].parse::<usize>().is_ok(),
            "{e}"
        );
    }

    #[test]
    fn type_errors_have_location_too() {
        let bad = "node: n\npods:\n  - name: a\n    ips: [\"not-an-ip\"]\n    cgroup: a\n";
        let e = Inventory::parse(bad, "inv.yaml").unwrap_err().to_string();
        assert!(e.starts_with("inv.yaml:4:"), "{e}");
    }

    #[test]
    fn lab_section_is_strict() {
        let bad = "node: n\npods:\n  - name: a\n    ips: [\"10.77.0.1\"]\n    cgroup: a\n    lab: {serve: [{kind: nginx, port: 80, rutes: {}}]}\n";
        let e = Inventory::parse(bad, "inv.yaml").unwrap_err().to_string();
        assert!(e.contains("rutes"), "{e}");
        let bad = "node: n\npods:\n  - name: a\n    ips: [\"10.77.0.1\"]\n    cgroup: a\n    lab: {serve: [{kind: apache, port: 80}]}\n";
        assert!(Inventory::parse(bad, "inv.yaml").is_err());
    }

    fn invalid(yaml: &str) -> String {
        let inv = Inventory::parse(yaml, "t").unwrap();
        format!("{:#}", inv.validate().unwrap_err())
    }

    #[test]
    fn semantic_errors() {
        let base = |ips: &str, cg: &str, serve: &str| {
            format!(
                "node: n\npods:\n  - name: a\n    ips: {ips}\n    cgroup: {cg}\n    lab: {{serve: {serve}}}\n"
            )
        };
        assert!(invalid(&base("[\"192.168.1.1\"]", "a", "[]")).contains("outside the lab network"));
        assert!(invalid(&base("[\"fd77::1\"]", "a", "[]")).contains("IPv4"));
        assert!(invalid(&base("[\"10.77.0.1\"]", "../x", "[]")).contains("plain path"));
        assert!(invalid(&base("[\"10.77.0.1\"]", "/x", "[]")).contains("relative"));
        assert!(
            invalid(&base(
                "[\"10.77.0.1\"]",
                "a",
                "[{kind: nginx, port: 80, routes: {\"x\": 1}}]"
            ))
            .contains("must start with /")
        );
        assert!(
            invalid(&base(
                "[\"10.77.0.1\"]",
                "a",
                "[{kind: nginx, port: 80, routes: {\"/$x\": 1}}]"
            ))
            .contains("not allowed")
        );
        assert!(
            invalid(&base(
                "[\"10.77.0.1\"]",
                "a",
                "[{kind: nginx, port: 80, routes: {\"/a\": 1, \"/a/b\": 2}}]"
            ))
            .contains("also a directory")
        );
        assert!(
            invalid(&base(
                "[\"10.77.0.1\"]",
                "a",
                "[{kind: python, port: 80}, {kind: tcp-echo, port: 80}]"
            ))
            .contains("two servers on port 80")
        );
    }

    #[test]
    fn location_is_stripped_once() {
        assert_eq!(
            strip_location("did not find ',' at line 5 column 5, while parsing"),
            "did not find ',', while parsing"
        );
        assert_eq!(strip_location("bad at line 3 column 12"), "bad");
        assert_eq!(strip_location("no location"), "no location");
    }

    #[test]
    fn route_files() {
        assert_eq!(route_file("/"), "/__index");
        assert_eq!(route_file("/x/"), "/x/__index");
        assert_eq!(route_file("/x/y"), "/x/y");
    }
}
