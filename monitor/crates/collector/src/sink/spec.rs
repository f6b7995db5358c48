//! Parsing `--sink SPEC` (forms in the [module documentation](super)) and building the sink.

use std::{path::PathBuf, time::Duration};

use super::{
    Sink, SinkError,
    file::FileOptions,
    ndjson::NdjsonSink,
    ocsf::{DEFAULT_VENDOR, OcsfSink},
    syslog::{FACILITIES, SyslogConfig, SyslogSink},
};

/// The valid forms, shown with every parse error.
pub const FORMS: &str = "valid forms:
  ndjson:stdout
  ndjson:file=PATH[,max-bytes=SIZE][,keep=N][,fsync=on|off]
  ocsf:stdout[,vendor=NAME]
  ocsf:file=PATH[,max-bytes=SIZE][,keep=N][,fsync=on|off][,vendor=NAME]
  syslog:tls=HOST:PORT,ca=PEM[,cert=PEM,key=PEM][,server-name=NAME][,kinds=KIND+KIND|all][,facility=NAME][,timeout=DURATION][,vendor=NAME]";

/// Record kinds a syslog sink can select.
pub const KINDS: &[&str] = &["http", "flow", "loss", "violation", "policy", "quarantine"];

/// A parsed `--sink` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// `ndjson:...`.
    Ndjson(OutputSpec),
    /// `ocsf:...`.
    Ocsf {
        /// Where.
        output: OutputSpec,
        /// `metadata.product.vendor_name`.
        vendor: String,
    },
    /// `syslog:tls=...`.
    Syslog(SyslogConfig),
}

/// Stdout or a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputSpec {
    /// `stdout`.
    Stdout,
    /// `file=PATH,...`.
    File(FileOptions),
}

/// A `--sink` value that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --sink `{spec}`: {problem}\n{FORMS}")]
pub struct SinkSpecError {
    /// The whole value.
    pub spec: String,
    /// What is wrong with which part.
    pub problem: String,
}

fn parse_size(v: &str) -> Option<u64> {
    let (num, mult) = match v.char_indices().last()? {
        (i, 'K' | 'k') => (&v[..i], 1 << 10),
        (i, 'M' | 'm') => (&v[..i], 1 << 20),
        (i, 'G' | 'g') => (&v[..i], 1 << 30),
        _ => (v, 1),
    };
    num.parse::<u64>()
        .ok()?
        .checked_mul(mult)
        .filter(|n| *n > 0)
}

fn parse_duration(v: &str) -> Option<Duration> {
    let d = if let Some(ms) = v.strip_suffix("ms") {
        Duration::from_millis(ms.parse().ok()?)
    } else {
        Duration::from_secs(v.strip_suffix('s').unwrap_or(v).parse().ok()?)
    };
    (!d.is_zero()).then_some(d)
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "on" | "true" | "yes" => Some(true),
        "off" | "false" | "no" => Some(false),
        _ => None,
    }
}

impl SinkSpec {
    /// Parses one `--sink` value.
    pub fn parse(spec: &str) -> Result<Self, SinkSpecError> {
        let err = |problem: String| SinkSpecError {
            spec: spec.to_owned(),
            problem,
        };
        let Some((ty, rest)) = spec.split_once(':') else {
            return Err(err(
                "expected TYPE:OPTIONS (TYPE is ndjson, ocsf or syslog)".into(),
            ));
        };
        let mut opts: Vec<(&str, Option<&str>)> = Vec::new();
        for part in rest.split(',') {
            let (k, v) = match part.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (part, None),
            };
            if k.is_empty() {
                return Err(err(format!("empty option in `{rest}`")));
            }
            if opts.iter().any(|(seen, _)| *seen == k) {
                return Err(err(format!("option `{k}` given twice")));
            }
            opts.push((k, v));
        }
        let value = |k: &str, v: Option<&str>| -> Result<String, SinkSpecError> {
            match v {
                Some(v) if !v.is_empty() => Ok(v.to_owned()),
                _ => Err(err(format!("option `{k}` needs a value ({k}=...)"))),
            }
        };
        match ty {
            "ndjson" | "ocsf" => {
                let mut output = None;
                let mut file: Option<FileOptions> = None;
                let mut vendor = DEFAULT_VENDOR.to_owned();
                let (mut max, mut keep, mut fsync) = (None, None, None);
                for (k, v) in opts {
                    match (k, v) {
                        ("stdout", None) => output = Some(OutputSpec::Stdout),
                        ("file", v) => file = Some(FileOptions::new(value(k, v)?)),
                        ("max-bytes", v) => {
                            let s = value(k, v)?;
                            max = Some(parse_size(&s).ok_or_else(|| {
                                err(format!(
                                    "max-bytes `{s}` is not a size (e.g. 1048576, 512K, 100M, 1G)"
                                ))
                            })?);
                        }
                        ("keep", v) => {
                            let s = value(k, v)?;
                            keep = Some(s.parse::<usize>().map_err(|_| {
                                err(format!("keep `{s}` is not a number of files (e.g. 5)"))
                            })?);
                        }
                        ("fsync", v) => {
                            let s = value(k, v)?;
                            fsync = Some(
                                parse_bool(&s)
                                    .ok_or_else(|| err(format!("fsync `{s}` is not on or off")))?,
                            );
                        }
                        ("vendor", v) if ty == "ocsf" => vendor = value(k, v)?,
                        (k, _) => {
                            return Err(err(format!("unknown option `{k}` for {ty}")));
                        }
                    }
                }
                let output = match (output, file) {
                    (Some(_), Some(_)) => {
                        return Err(err("give either stdout or file=PATH, not both".into()));
                    }
                    (None, None) => {
                        return Err(err(format!("{ty} needs stdout or file=PATH")));
                    }
                    (Some(o), None) => {
                        if max.is_some() || keep.is_some() || fsync.is_some() {
                            return Err(err(
                                "max-bytes, keep and fsync apply to file=PATH only".into()
                            ));
                        }
                        o
                    }
                    (None, Some(mut f)) => {
                        f.max_bytes = max;
                        f.keep = keep.unwrap_or(f.keep);
                        f.fsync = fsync.unwrap_or(f.fsync);
                        OutputSpec::File(f)
                    }
                };
                Ok(if ty == "ndjson" {
                    Self::Ndjson(output)
                } else {
                    Self::Ocsf { output, vendor }
                })
            }
            "syslog" => {
                let mut addr = None;
                let mut ca = None;
                let (mut cert, mut key) = (None, None);
                let mut cfg = SyslogConfig::new(String::new(), PathBuf::new());
                for (k, v) in opts {
                    match k {
                        "tls" => {
                            let a = value(k, v)?;
                            let port_ok = a
                                .rsplit_once(':')
                                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
                            if !port_ok {
                                return Err(err(format!(
                                    "tls `{a}` is not HOST:PORT (e.g. siem.example.com:6514)"
                                )));
                            }
                            addr = Some(a);
                        }
                        "ca" => ca = Some(PathBuf::from(value(k, v)?)),
                        "cert" => cert = Some(PathBuf::from(value(k, v)?)),
                        "key" => key = Some(PathBuf::from(value(k, v)?)),
                        "server-name" => cfg.server_name = Some(value(k, v)?),
                        "vendor" => cfg.vendor = value(k, v)?,
                        "kinds" => {
                            let s = value(k, v)?;
                            cfg.kinds = if s == "all" {
                                KINDS.iter().map(|k| (*k).to_owned()).collect()
                            } else {
                                let mut kinds = Vec::new();
                                for kind in s.split('+') {
                                    if !KINDS.contains(&kind) {
                                        return Err(err(format!(
                                            "unknown kind `{kind}` in kinds (valid: {}, or all)",
                                            KINDS.join(", ")
                                        )));
                                    }
                                    kinds.push(kind.to_owned());
                                }
                                kinds
                            };
                        }
                        "facility" => {
                            let s = value(k, v)?;
                            cfg.facility = FACILITIES
                                .iter()
                                .find(|(n, _)| *n == s)
                                .map(|(_, f)| *f)
                                .ok_or_else(|| {
                                    err(format!(
                                        "unknown facility `{s}` (kern, user, daemon, auth, ..., \
                                         local0..local7)"
                                    ))
                                })?;
                        }
                        "timeout" => {
                            let s = value(k, v)?;
                            cfg.timeout = parse_duration(&s).ok_or_else(|| {
                                err(format!("timeout `{s}` is not a duration (e.g. 5s, 500ms)"))
                            })?;
                        }
                        k => return Err(err(format!("unknown option `{k}` for syslog"))),
                    }
                }
                cfg.addr = addr.ok_or_else(|| err("syslog needs tls=HOST:PORT".into()))?;
                cfg.ca = ca.ok_or_else(|| {
                    err("syslog needs ca=PEM (the CA that signs the receiver's certificate)".into())
                })?;
                cfg.client = match (cert, key) {
                    (Some(c), Some(k)) => Some((c, k)),
                    (None, None) => None,
                    _ => return Err(err("cert=PEM and key=PEM go together".into())),
                };
                Ok(Self::Syslog(cfg))
            }
            other => Err(err(format!(
                "unknown sink type `{other}` (ndjson, ocsf or syslog)"
            ))),
        }
    }

    /// Builds the sink (opening and recovering files, loading TLS material).
    pub fn build(&self) -> Result<Box<dyn Sink>, SinkError> {
        Ok(match self {
            Self::Ndjson(OutputSpec::Stdout) => Box::new(NdjsonSink::stdout()),
            Self::Ndjson(OutputSpec::File(f)) => Box::new(NdjsonSink::file(f.clone())?),
            Self::Ocsf {
                output: OutputSpec::Stdout,
                vendor,
            } => Box::new(OcsfSink::stdout(vendor)),
            Self::Ocsf {
                output: OutputSpec::File(f),
                vendor,
            } => Box::new(OcsfSink::file(f.clone(), vendor)?),
            Self::Syslog(cfg) => Box::new(SyslogSink::new(cfg.clone())?),
        })
    }
}

impl std::str::FromStr for SinkSpec {
    type Err = SinkSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(spec: &str) -> String {
        let e = SinkSpec::parse(spec).unwrap_err();
        let shown = e.to_string();
        assert!(
            shown.contains(spec),
            "error does not show the spec: {shown}"
        );
        assert!(
            shown.contains("valid forms:"),
            "error does not show the forms: {shown}"
        );
        e.problem
    }

    #[test]
    fn valid_forms() {
        assert_eq!(
            SinkSpec::parse("ndjson:stdout").unwrap(),
            SinkSpec::Ndjson(OutputSpec::Stdout)
        );
        let mut f = FileOptions::new("/var/log/m.ndjson");
        f.max_bytes = Some(100 << 20);
        f.keep = 3;
        f.fsync = false;
        assert_eq!(
            SinkSpec::parse("ndjson:file=/var/log/m.ndjson,max-bytes=100M,keep=3,fsync=off")
                .unwrap(),
            SinkSpec::Ndjson(OutputSpec::File(f))
        );
        assert_eq!(
            SinkSpec::parse("ocsf:file=/x.json,vendor=Acme").unwrap(),
            SinkSpec::Ocsf {
                output: OutputSpec::File(FileOptions::new("/x.json")),
                vendor: "Acme".into()
            }
        );
        assert_eq!(
            SinkSpec::parse("ocsf:stdout").unwrap(),
            SinkSpec::Ocsf {
                output: OutputSpec::Stdout,
                vendor: DEFAULT_VENDOR.into()
            }
        );
        let SinkSpec::Syslog(s) = SinkSpec::parse(
            "syslog:tls=siem.example.com:6514,ca=ca.pem,cert=c.pem,key=k.pem,\
             server-name=siem,kinds=violation+loss+quarantine,facility=local7,timeout=500ms",
        )
        .unwrap() else {
            panic!("not syslog")
        };
        assert_eq!(s.addr, "siem.example.com:6514");
        assert_eq!(s.ca, PathBuf::from("ca.pem"));
        assert_eq!(s.client, Some(("c.pem".into(), "k.pem".into())));
        assert_eq!(s.server_name.as_deref(), Some("siem"));
        assert_eq!(s.kinds, ["violation", "loss", "quarantine"]);
        assert_eq!(s.facility, 23);
        assert_eq!(s.timeout, Duration::from_millis(500));
        let SinkSpec::Syslog(d) = SinkSpec::parse("syslog:tls=h:6514,ca=ca.pem").unwrap() else {
            panic!("not syslog")
        };
        assert_eq!(
            (d.kinds.as_slice(), d.facility),
            (&["violation".to_owned(), "loss".to_owned()][..], 20)
        );
        let SinkSpec::Syslog(all) = SinkSpec::parse("syslog:tls=h:1,ca=c,kinds=all").unwrap()
        else {
            panic!("not syslog")
        };
        assert_eq!(all.kinds.len(), KINDS.len());
    }

    #[test]
    fn errors_name_the_bad_part() {
        assert!(problem("ndjson").contains("TYPE:OPTIONS"));
        assert!(problem("kafka:broker=x").contains("unknown sink type `kafka`"));
        assert!(problem("ndjson:").contains("empty option"));
        assert!(problem("ndjson:file=").contains("`file` needs a value"));
        assert!(problem("ndjson:stdout,max-bytes=1M").contains("file=PATH only"));
        assert!(problem("ndjson:stdout,file=/x").contains("not both"));
        assert!(problem("ndjson:file=/x,max-bytes=lots").contains("max-bytes `lots`"));
        assert!(problem("ocsf:file=/x,keep=many").contains("keep `many`"));
        assert!(problem("ndjson:file=/x,fsync=maybe").contains("fsync `maybe`"));
        assert!(problem("ndjson:file=/x,vendor=a").contains("unknown option `vendor` for ndjson"));
        assert!(problem("ndjson:file=/x,keep=1,keep=2").contains("`keep` given twice"));
        assert!(problem("syslog:tls=siem,ca=c").contains("tls `siem` is not HOST:PORT"));
        assert!(problem("syslog:ca=c").contains("needs tls=HOST:PORT"));
        assert!(problem("syslog:tls=h:1").contains("needs ca=PEM"));
        assert!(problem("syslog:tls=h:1,ca=c,cert=x").contains("go together"));
        assert!(
            problem("syslog:tls=h:1,ca=c,kinds=violation+bogus").contains("unknown kind `bogus`")
        );
        assert!(
            problem("syslog:tls=h:1,ca=c,facility=local9").contains("unknown facility `local9`")
        );
        assert!(problem("syslog:tls=h:1,ca=c,timeout=soon").contains("timeout `soon`"));
        assert!(problem("syslog:tls=h:1,ca=c,port=1").contains("unknown option `port` for syslog"));
    }

    #[test]
    fn build_opens_files_and_loads_tls_material() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.ndjson");
        let sink = SinkSpec::parse(&format!("ndjson:file={}", path.display()))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(sink.name(), format!("ndjson:{}", path.display()));
        assert!(path.exists());
        let err = SinkSpec::parse("ndjson:file=/nonexistent-dir/r.ndjson")
            .unwrap()
            .build()
            .unwrap_err();
        assert!(
            err.kind.to_string().contains("/nonexistent-dir/r.ndjson"),
            "{}",
            err.kind
        );
        let err = SinkSpec::parse(&format!("syslog:tls=127.0.0.1:1,ca={}", path.display()))
            .unwrap()
            .build()
            .unwrap_err();
        assert!(
            err.kind.to_string().contains("no PEM CERTIFICATE"),
            "{}",
            err.kind
        );
    }
}
