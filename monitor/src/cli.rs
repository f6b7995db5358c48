//! Command-line definitions (clap derive). `main.rs` only dispatches on these.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// eBPF-backed network egress and endpoint monitor for Kubernetes nodes.
///
/// The agent watches every pod's TCP flows and HTTP/1.x messages from the kernel (cgroup_skb
/// programs on the pods' cgroup root), checks them against a policy, and writes one JSON record
/// per HTTP exchange, closed flow, violation and loss: to stdout, or over mTLS gRPC to the
/// collector, which stores them, feeds SIEMs and answers `observe` and `report`.
///
/// Quick start (lab): monitor certs init --out certs; monitor collector --tls-dir certs
/// --store /tmp/m.db --sink ndjson:stdout; monitor agent --inventory inv.yaml
/// --collector https://127.0.0.1:7443 --tls-dir certs; monitor observe --tls-dir certs -f
#[derive(Debug, Parser)]
#[command(name = "monitor", version, propagate_version = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node agent: attach to a cgroup v2 directory and write NDJSON records: to the
    /// collector with --collector (spooled on disk until acknowledged), else to stdout.
    ///
    /// Needs root (or CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN). Stops cleanly on SIGINT/SIGTERM,
    /// reporting exchanges and flows still in flight; the kernel programs detach when the
    /// process exits, also after a crash.
    ///
    /// Example: monitor agent --inventory deploy/examples/vantage/inventory.yaml \
    ///          --cgroup /sys/fs/cgroup/kubepods.slice \
    ///          --collector https://monitor-collector:7443 --tls-dir /etc/monitor/certs
    Agent(AgentArgs),

    /// Run the collector: receive records from agents (gRPC, mTLS), store them (SQLite),
    /// feed SIEM sinks, and answer `monitor observe` and `monitor report`.
    ///
    /// Acknowledges a batch only once it is committed to the store (WAL, synchronous=FULL), so
    /// an agent never forgets a record the collector does not hold; records resent after a
    /// reconnect are dropped by (node, boot_id, seq).
    ///
    /// Example: monitor collector --tls-dir /etc/monitor/certs --store /var/lib/monitor/collector.db \
    ///          --sink ndjson:file=/var/log/monitor/records.ndjson --sink syslog:tls=siem:6514,ca=ca.pem
    Collector(CollectorArgs),

    /// Live tail of the collector's records, with filters (like `hubble observe`).
    ///
    /// A readable table on a terminal, the records' JSON lines otherwise (--output ndjson), or
    /// OCSF events (--output ocsf). With --top, a live summary of counters per rule instead,
    /// redrawn in place.
    ///
    /// Example: monitor observe --tls-dir certs --kind violation --severity high --since 1h -f
    ///
    /// Example: monitor observe --tls-dir certs --kind violation --since 1h --top
    Observe(ObserveArgs),

    /// Forensic report for a path, a rule or a pod over a time range: requests by day, by
    /// source pod, by status; query keys and kept filter values; response bytes against the
    /// destination's other routes; hours of day. With --html FILE, also as one self-contained
    /// HTML page with charts.
    ///
    /// Example: monitor report --tls-dir certs --path /internal/admin/v0/users/lookup --since 21d
    ///
    /// Example: monitor report --tls-dir certs --rule undocumented-endpoint --html report.html
    Report(ReportArgs),

    /// Analyse packet captures (pcap or pcapng) through the agent's own pipeline: the same
    /// HTTP parsing, identity, policy rules, baselines and records, on the capture's own
    /// timestamps.
    ///
    /// Reads Ethernet, Linux cooked (SLL, SLL2: `tcpdump -i any`) and raw IP captures, IPv4
    /// and IPv6; puts TCP segments back in order (out-of-order and retransmitted segments are
    /// handled, missing ones counted and reported as loss records). Several files are merged by
    /// timestamp. Writes the selected record kinds (default: violations and losses) as NDJSON
    /// on stdout, or to --sink; with --store, every record goes into a collector store too, so
    /// that `monitor collector --store FILE --retention-days 0` answers `monitor report` and
    /// `monitor observe` on them. A summary goes to stderr; progress too, on a terminal.
    ///
    /// Capture on one interface (a pod's veth, the node's uplink, a mirror port): with
    /// `tcpdump -i any`, a packet crossing two interfaces is seen twice and counted as a
    /// retransmission.
    ///
    /// Exit status: 0, or 1 when a file could not be read to its end (what came before the
    /// damage is still analysed and written).
    ///
    /// Example: monitor analyze node-a.pcap --inventory inventory.yaml --policy policy.yaml \
    ///          --store incident.db
    Analyze(AnalyzeArgs),

    /// Make a CA and certificates for the collector, agents and the CLI (for the lab and for
    /// clusters without cert-manager).
    Certs {
        /// What to do.
        #[command(subcommand)]
        cmd: CertsCommand,
    },

    /// Work with policy files (see docs/policy.md).
    Policy {
        /// What to do.
        #[command(subcommand)]
        cmd: PolicyCommand,
    },
}

/// `monitor policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check policy files: syntax, structure and every semantic rule, reporting every problem
    /// with FILE:LINE:COLUMN and a hint.
    ///
    /// Prints `FILE: ok (summary)` on stdout for each clean file and the diagnostics on stderr
    /// for the others; exits with status 1 if any file has an error.
    ///
    /// Example: monitor policy lint deploy/examples/vantage/policy.yaml
    Lint {
        /// Policy files to check.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },

    /// Re-evaluate the stored history (a collector store) under a candidate policy, and print
    /// what would have fired that did not, and what fired that would no longer, grouped by rule
    /// and source.
    ///
    /// Replays the stored HTTP exchanges and flows, in time order, through the same rules and
    /// baselines as the agent. What "fired" is the violations stored in the same time range.
    /// Query values in stored records are already redacted (unless the policy in force kept
    /// them), so rules on query values see what the store holds.
    ///
    /// Example: monitor policy dry-run --policy new-policy.yaml --store collector.db --since 7d
    DryRun(DryRunArgs),

    /// Draft a policy from the traffic a collector store holds: the protected prefixes (the
    /// base policy's, else /internal/), the base's catalog with what was seen of each entry,
    /// the egress graph (service-to-service edges and external addresses, with ports), and as
    /// comments each destination's routes (ids templated as {id}), callers, methods, statuses
    /// and response sizes.
    ///
    /// Requests under a protected prefix that the base does not document are never documented
    /// by the draft: they are listed as "seen, not documented: review" comments (first seen,
    /// callers, counts), and stay violations until you document them. So `monitor policy
    /// dry-run` of the draft over the same history fires on the review items only. The draft
    /// goes to stdout (or --output); a progress line to stderr on a terminal. With
    /// --networkpolicy, Kubernetes NetworkPolicies for the same graph too (a default deny per
    /// namespace, DNS, and one allow policy per observed edge and external address).
    ///
    /// Example: monitor policy suggest --store collector.db --since 14d -o draft.yaml
    ///
    /// Example: monitor policy suggest --store collector.db --base policy.yaml --networkpolicy np.yaml
    Suggest(SuggestArgs),
}

/// `monitor policy suggest` options.
#[derive(Debug, clap::Args)]
pub struct SuggestArgs {
    /// The collector's store (SQLite; read only: safe while the collector runs), or the store
    /// written by `monitor analyze --store`.
    #[arg(long, value_name = "FILE")]
    pub store: PathBuf,
    /// Start of the history: a duration back from now (`15m`, `14d`) or RFC 3339.
    #[arg(long, default_value = "14d")]
    pub since: String,
    /// End of the history (default: no end).
    #[arg(long)]
    pub until: Option<String>,
    /// Only this node's records.
    #[arg(long)]
    pub node: Option<String>,
    /// The policy in force (or any reviewed one): its protected prefixes, catalog, egress
    /// allowlist, sensitive fields, redaction, quarantine, baselines and aggregation are kept,
    /// and what it does not document or allow is listed for review. Without it, the draft
    /// protects /internal/ and documents nothing under it.
    #[arg(long, value_name = "POLICY")]
    pub base: Option<PathBuf>,
    /// Write the draft to this file instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also write Kubernetes NetworkPolicies (multi-document YAML) for the graph to this file.
    #[arg(long, value_name = "FILE")]
    pub networkpolicy: Option<PathBuf>,
    /// No progress line, even on a terminal.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `monitor policy dry-run` options.
#[derive(Debug, clap::Args)]
pub struct DryRunArgs {
    /// The candidate policy.
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// The collector's store (SQLite; read only: safe while the collector runs).
    #[arg(long, value_name = "FILE")]
    pub store: PathBuf,
    /// Start of the history: a duration back from now (`15m`, `7d`) or RFC 3339.
    #[arg(long, default_value = "7d")]
    pub since: String,
    /// End of the history (default: now).
    #[arg(long)]
    pub until: Option<String>,
    /// Only this node's records.
    #[arg(long)]
    pub node: Option<String>,
    /// Output: `text` (grouped tables) or `json` (one object).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

/// `monitor analyze` options.
#[derive(Debug, clap::Args)]
pub struct AnalyzeArgs {
    /// Capture files (pcap or pcapng), merged by timestamp.
    #[arg(required = true, value_name = "CAPTURE")]
    pub captures: Vec<PathBuf>,
    /// Who is who: an inventory YAML (pods and named external hosts with their IPs).
    /// Both ends of every flow are identified by address.
    #[arg(long, value_name = "FILE")]
    pub inventory: PathBuf,
    /// The policy to evaluate (docs/policy.md). Without one, no violations are found and every
    /// query value is redacted.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Where the selected records go (repeatable; see `monitor collector --help` for specs).
    #[arg(long = "sink", value_name = "SPEC", default_value = "ndjson:stdout")]
    pub sinks: Vec<String>,
    /// Record kinds sent to the sinks, comma-separated (http, flow, loss, violation, policy,
    /// quarantine), or `all`.
    #[arg(long, default_value = "violation,loss", value_delimiter = ',')]
    pub kinds: Vec<String>,
    /// Also store every record in this collector store (SQLite; created if missing).
    #[arg(long, value_name = "FILE")]
    pub store: Option<PathBuf>,
    /// Node name written in the records (default: the inventory's node).
    #[arg(long)]
    pub node: Option<String>,
    /// Flows without a packet for this many seconds (capture time) are closed.
    #[arg(long, default_value_t = 300)]
    pub idle_timeout: u64,
    /// Most flows tracked at once; more are ignored and reported as `flow-table-full` losses.
    #[arg(long, default_value_t = 65_536)]
    pub max_flows: usize,
    /// No progress line, even on a terminal.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `monitor agent` options.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Identity from an inventory YAML listing this node's pods (name, namespace, service,
    /// IPs, cgroup path). The lab's source; exactly one of --inventory and --kubernetes.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "kubernetes",
        conflicts_with = "kubernetes"
    )]
    pub inventory: Option<PathBuf>,

    /// Identity from the Kubernetes API (in-cluster config or ~/.kube/config): this node's
    /// Pods, Services, EndpointSlices and NetworkPolicies. Needs --node-name.
    #[arg(long, requires = "node_name")]
    pub kubernetes: bool,

    /// This node's name (set it from the downward API: spec.nodeName).
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// Policy YAML (see docs/policy.md): documented endpoints, allowed callers, egress
    /// allowlist, quarantine, baselines. Reloaded when the file changes; a bad edit keeps the
    /// last good policy. Without a policy no violations are reported and every query value is
    /// redacted.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// cgroup v2 directory whose sockets are monitored (every cgroup below it too).
    /// On Kubernetes nodes usually /sys/fs/cgroup (or its kubepods slice).
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/cgroup")]
    pub cgroup: PathBuf,

    /// Serve Prometheus metrics on http://ADDR/metrics and a health check on /healthz
    /// (200 once attached), e.g. 0.0.0.0:9464. Off when not given.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Create this file (containing the agent's PID) once the programs are attached.
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,

    /// Close flows with no packet for this many seconds (FIN/RST normally close them).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub idle_timeout: u64,

    /// Ring-buffer drain period in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10)]
    pub drain_ms: u64,

    /// Deliver records to this collector (`https://HOST:PORT`; `http://` needs --insecure)
    /// instead of printing them. Records wait in the spool until the collector acknowledges.
    #[arg(long, value_name = "URL", env = "MONITOR_COLLECTOR")]
    pub collector: Option<String>,

    /// mTLS files for --collector.
    #[command(flatten)]
    pub tls: ClientTlsArgs,

    /// Spool directory: everything not yet acknowledged by the collector, kept across
    /// restarts (a hostPath on Kubernetes).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/monitor/spool")]
    pub spool_dir: PathBuf,

    /// Spool size cap in MiB; past it the oldest records are dropped and reported as lost.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    pub spool_max_mib: u64,

    /// With --collector, also print the records on stdout.
    #[arg(long)]
    pub stdout: bool,

    /// Benchmark mode (`cargo xtask bench`, the "kernel side only" variant): attach the
    /// kernel programs and drain the ring buffer, counting records, without the pipeline: no
    /// HTTP records, no policy, no delivery. Prints one JSON line of cumulative counts a
    /// second on stdout (`"kind":"drain-stats"`: records, bytes, kernel counters).
    #[arg(long, conflicts_with_all = ["collector", "policy", "kubernetes"])]
    pub drain_only: bool,

    /// Service mesh handling. `auto`: Istio's sidecar rules apply once a socket of the proxy
    /// uid/gid, a connection accepted on a redirect port, or a connection to a redirect port
    /// on loopback is seen; `istio`: from the start; `none`: never (every socket is the
    /// application's). With the rules, each exchange is reported once, from the application's
    /// own socket: to the destination it asked for (its connect(), before the sidecar
    /// redirect; `destination.nat` keeps the sidecar's address), or, on the server, from the
    /// caller the sidecar names in x-forwarded-client-cert (`spiffe_id`, `attested_by`). The
    /// sidecar's own connections are `proxy` flow records, with no HTTP records and no
    /// violations of their own.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = MeshArg::Auto)]
    pub mesh: MeshArg,

    /// uid of the mesh's sidecar proxy: its sockets are proxy legs (Istio: 1337).
    #[arg(long, value_name = "UID", default_value_t = 1337)]
    pub mesh_proxy_uid: u32,

    /// gid of the mesh's sidecar proxy (Istio: 1337).
    #[arg(long, value_name = "GID", default_value_t = 1337)]
    pub mesh_proxy_gid: u32,

    /// Ports the pods' nat rules redirect to the sidecar, comma-separated: a connection to one
    /// on loopback is the application's outbound leg, one accepted on it a proxy leg (Istio:
    /// 15001 outbound, 15006 inbound).
    #[arg(
        long,
        value_name = "PORTS",
        value_delimiter = ',',
        default_values_t = [15001u16, 15006]
    )]
    pub mesh_redirect_ports: Vec<u16>,

    /// Source addresses of the sidecar's inbound forward to the application, comma-separated
    /// (Istio >= 1.10: 127.0.0.6 and ::6; older Istio forwards from 127.0.0.1, which is told
    /// by the sidecar's own socket instead).
    #[arg(
        long,
        value_name = "ADDRS",
        value_delimiter = ',',
        default_values_t = [
            std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 6)),
            std::net::IpAddr::V6(std::net::Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6)),
        ]
    )]
    pub mesh_inbound_sources: Vec<std::net::IpAddr>,
}

/// `--mesh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MeshArg {
    /// Istio's rules once a mesh is seen.
    Auto,
    /// Istio's sidecar mode (or any mesh with the --mesh-* settings).
    Istio,
    /// No mesh.
    None,
}

/// Client-side mTLS options (agent, observe, report).
#[derive(Debug, Clone, clap::Args)]
pub struct ClientTlsArgs {
    /// Directory with `ca.pem` and this client's `<NAME>.pem` / `<NAME>.key` (as written by
    /// `monitor certs init`); NAME is `agent` for the agent and `cli` for observe/report.
    /// Overridden file by file by --ca, --cert and --key.
    #[arg(long, value_name = "DIR", env = "MONITOR_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,

    /// CA certificate that signed the collector's certificate.
    #[arg(long, value_name = "FILE", env = "MONITOR_TLS_CA")]
    pub ca: Option<PathBuf>,

    /// This client's certificate (the collector requires one).
    #[arg(long, value_name = "FILE", env = "MONITOR_TLS_CERT")]
    pub cert: Option<PathBuf>,

    /// This client's private key.
    #[arg(long, value_name = "FILE", env = "MONITOR_TLS_KEY")]
    pub key: Option<PathBuf>,

    /// Name the collector's certificate must carry (default: the URL's host).
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,

    /// Talk plain TCP (`http://`): no encryption, no authentication. For local experiments
    /// only; the collector must run with --insecure too.
    #[arg(long)]
    pub insecure: bool,
}

/// `monitor collector` options.
#[derive(Debug, clap::Args)]
pub struct CollectorArgs {
    /// Address to listen on for agents and the CLI.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:7443")]
    pub listen: std::net::SocketAddr,

    /// Directory with `ca.pem` (the CA that signs clients), `collector.pem` and
    /// `collector.key`. Overridden file by file by --ca, --cert, --key. The files are re-read
    /// when they change; a bad new file keeps the previous certificates.
    #[arg(long, value_name = "DIR", env = "MONITOR_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,

    /// CA certificate(s) that sign agent and CLI certificates.
    #[arg(long, value_name = "FILE", env = "MONITOR_TLS_CA")]
    pub ca: Option<PathBuf>,

    /// The collector's certificate.
    #[arg(long, value_name = "FILE", env = "MONITOR_TLS_CERT")]
    pub cert: Option<PathBuf>,

    /// The collector's private key.
    #[arg(long, value_name = "FILE", env = "MONITOR_TLS_KEY")]
    pub key: Option<PathBuf>,

    /// Serve plain TCP without TLS or client authentication: anyone who can connect can write
    /// records and read them all. Only for local experiments.
    #[arg(long)]
    pub insecure: bool,

    /// The store (SQLite database file; created if missing).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/var/lib/monitor/collector.db"
    )]
    pub store: PathBuf,

    /// Delete records older than this many days (by the time they happened); 0 keeps
    /// everything (a store of analysed captures, whose records may be months old).
    #[arg(long, value_name = "DAYS", default_value_t = 30)]
    pub retention_days: u64,

    /// A SIEM sink (repeatable), e.g. `ndjson:stdout`,
    /// `ndjson:file=/var/log/monitor/records.ndjson,max-bytes=100M,keep=5`,
    /// `ocsf:file=/var/log/monitor/ocsf.ndjson`,
    /// `syslog:tls=siem.example:6514,ca=/etc/monitor/siem-ca.pem`. See docs/collector.md.
    #[arg(long = "sink", value_name = "SPEC")]
    pub sinks: Vec<String>,

    /// Serve Prometheus metrics on http://ADDR/metrics and /healthz.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Create this file (containing the PID) once listening.
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,
}

/// Where the CLI finds the collector.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The collector (`https://HOST:PORT`).
    #[arg(
        long,
        value_name = "URL",
        env = "MONITOR_COLLECTOR",
        default_value = "https://127.0.0.1:7443"
    )]
    pub collector: String,

    /// mTLS files.
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

/// How to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A table (observe) or text report, for people.
    Table,
    /// JSON: one record per line (observe) or one document (report).
    Json,
}

/// `monitor observe` options.
#[derive(Debug, clap::Args)]
pub struct ObserveArgs {
    /// Where the collector is.
    #[command(flatten)]
    pub client: ClientArgs,

    /// Record kinds to show (repeatable): http, flow, loss, violation, policy, quarantine.
    #[arg(long, value_name = "KIND")]
    pub kind: Vec<String>,

    /// Violation rules to show (repeatable), e.g. undocumented-endpoint.
    #[arg(long, value_name = "RULE")]
    pub rule: Vec<String>,

    /// Namespace of the source or destination.
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,

    /// Pod (source or destination).
    #[arg(long, value_name = "POD")]
    pub pod: Option<String>,

    /// Service (source or destination).
    #[arg(long, value_name = "SVC")]
    pub service: Option<String>,

    /// Lowest violation severity: low, medium, high, critical.
    #[arg(long, value_name = "LEVEL")]
    pub severity: Option<String>,

    /// Node.
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,

    /// From this time: a duration back from now (`90s`, `15m`, `6h`, `21d`) or RFC 3339.
    /// Default: everything stored, or with --follow only new records.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,

    /// Until this time (same forms as --since).
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,

    /// Keep streaming new records.
    #[arg(long, short = 'f')]
    pub follow: bool,

    /// Stop after this many records.
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,

    /// Output format: `table` (default on a terminal), `ndjson` (the records' JSON, one per
    /// line; default otherwise; `json` is the same), or `ocsf` (each record mapped to an OCSF
    /// 1.3.0 event, as the collector's `ocsf:` sink writes it). There is no ECS mapping yet.
    #[arg(long, short = 'o', value_enum)]
    pub output: Option<ObserveFormat>,

    /// A live summary instead of one line per record: counters per violation rule (occurrences,
    /// records, severity, last seen, last source and destination) and per record kind,
    /// redrawn in place every second. Implies --follow unless --until is given; with --since,
    /// the stored records from then are counted first.
    #[arg(long, conflicts_with = "output")]
    pub top: bool,
}

/// How `monitor observe` prints records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ObserveFormat {
    /// A table for people.
    Table,
    /// The records' JSON, one per line.
    #[value(alias = "json")]
    Ndjson,
    /// OCSF 1.3.0 events, one per line (the collector's OCSF mapping).
    Ocsf,
}

/// `monitor report` options.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("subject").required(true).args(["path", "rule", "pod"])))]
pub struct ReportArgs {
    /// Where the collector is.
    #[command(flatten)]
    pub client: ClientArgs,

    /// Requests to this path (as sent, no query); a trailing `*` matches a prefix.
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,

    /// Violations of this rule, e.g. undocumented-endpoint.
    #[arg(long, value_name = "RULE")]
    pub rule: Option<String>,

    /// Requests sent by this pod (`namespace/name` or `name`).
    #[arg(long, value_name = "POD")]
    pub pod: Option<String>,

    /// From this time: a duration back from now (`6h`, `21d`) or RFC 3339. Default: all.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,

    /// Until this time (same forms).
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,

    /// Rows per table.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub top: u32,

    /// Output format; default: text on a terminal, json otherwise.
    #[arg(long, short = 'o', value_enum)]
    pub output: Option<OutputFormat>,

    /// Write the report as one self-contained HTML page to this file: charts by day, by hour,
    /// by source, by status, filter values, response sizes against the other routes,
    /// violations, and the callers around the subject. No scripts, nothing fetched: open it
    /// anywhere, attach it to a ticket. The text or JSON report then goes to stdout only with
    /// --output.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

/// `monitor certs` subcommands.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a CA, a collector certificate and client certificates in a directory:
    /// `ca.pem`/`ca.key`, `collector.pem`/`.key`, and `<client>.pem`/`.key` per --client.
    ///
    /// Example: monitor certs init --out certs --collector-name monitor-collector.monitor.svc
    Init {
        /// Output directory (created). Existing files are not overwritten.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Names (DNS or IP) the collector is reached by (repeatable).
        #[arg(
            long = "collector-name",
            value_name = "NAME",
            default_values = ["localhost", "127.0.0.1"]
        )]
        collector_names: Vec<String>,
        /// Client certificates to make (repeatable).
        #[arg(long = "client", value_name = "NAME", default_values = ["agent", "cli"])]
        clients: Vec<String>,
        /// Validity in days.
        #[arg(long, value_name = "DAYS", default_value_t = 365)]
        days: u32,
    },
    /// Issue one more client (or server) certificate from the CA in a directory.
    ///
    /// Example: monitor certs issue --dir certs --name node-7
    Issue {
        /// Directory holding `ca.pem` and `ca.key`; the new files go there too.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Certificate name (common name and file name).
        #[arg(long, value_name = "NAME")]
        name: String,
        /// A server certificate with these names instead of a client one (repeatable).
        #[arg(long = "server-name", value_name = "NAME")]
        server_names: Vec<String>,
        /// Validity in days.
        #[arg(long, value_name = "DAYS", default_value_t = 365)]
        days: u32,
    },
}
