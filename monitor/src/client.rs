//! The CLI's side of the collector: connecting with mTLS, time arguments (`15m`, `21d`,
//! RFC 3339), and the table `monitor observe` prints on a terminal.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use monitor_wire::{proto::ObservedRecord, tls::TlsFiles};

use crate::cli::ClientTlsArgs;

/// Errors of the CLI's client side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No TLS files and no --insecure.
    #[error(
        "no client certificate: give --tls-dir DIR (with ca.pem, {name}.pem, {name}.key from \
         `monitor certs init`) or --ca/--cert/--key; or --insecure against a collector started \
         with --insecure"
    )]
    NoTls {
        /// The expected file stem.
        name: String,
    },
    /// `http://` without --insecure, or `https://` with it.
    #[error("{0}")]
    Scheme(String),
    /// Connecting failed.
    #[error("cannot connect to the collector at {url}: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// Why (whole error chain).
        reason: String,
    },
    /// TLS files unusable.
    #[error(transparent)]
    Tls(#[from] monitor_wire::tls::TlsError),
    /// A bad --since/--until.
    #[error(
        "{arg} {value:?}: use a duration back from now (90s, 15m, 6h, 21d, 2w) or an RFC 3339 \
         time (2026-11-01T00:00:00Z)"
    )]
    When {
        /// The option.
        arg: &'static str,
        /// What was given.
        value: String,
    },
}

/// The TLS files from `--tls-dir` and/or `--ca/--cert/--key`; `None` with `--insecure`.
pub fn tls_files(args: &ClientTlsArgs, name: &str) -> Result<Option<TlsFiles>, ClientError> {
    if args.insecure {
        return Ok(None);
    }
    TlsFiles::resolve(
        args.tls_dir.as_deref(),
        name,
        args.ca.as_deref(),
        args.cert.as_deref(),
        args.key.as_deref(),
    )
    .map(Some)
    .ok_or_else(|| ClientError::NoTls { name: name.into() })
}

/// Checks the URL's scheme against the TLS choice; returns the host (default server name).
pub fn check_url(url: &str, tls: bool) -> Result<String, ClientError> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        ClientError::Scheme(format!(
            "collector URL {url:?} has no scheme: use https://HOST:PORT"
        ))
    })?;
    match (scheme, tls) {
        ("https", true) | ("http", false) => {}
        ("http", true) => {
            return Err(ClientError::Scheme(format!(
                "collector URL {url:?} is plain http: use https:// (mTLS), or pass --insecure to \
                 talk to a collector started with --insecure"
            )));
        }
        ("https", false) => {
            return Err(ClientError::Scheme(format!(
                "collector URL {url:?} is https but --insecure was given: use http:// with \
                 --insecure, or drop --insecure"
            )));
        }
        _ => {
            return Err(ClientError::Scheme(format!(
                "collector URL {url:?}: scheme must be https (or http with --insecure)"
            )));
        }
    }
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    Ok(host.to_owned())
}

/// A channel to the collector for the CLI (observe, report).
pub async fn connect(url: &str, args: &ClientTlsArgs) -> Result<Channel, ClientError> {
    let files = tls_files(args, "cli")?;
    let host = check_url(url, files.is_some())?;
    let err = |reason: String| ClientError::Connect {
        url: url.to_owned(),
        reason,
    };
    let mut ep = Endpoint::from_shared(url.to_owned())
        .map_err(|e| err(e.to_string()))?
        .connect_timeout(Duration::from_secs(5));
    if let Some(f) = &files {
        let name = args.server_name.clone().unwrap_or(host);
        ep = ep
            .tls_config(monitor_wire::tls::client_config(f, &name)?)
            .map_err(|e| err(e.to_string()))?;
    }
    ep.connect()
        .await
        .map_err(|e| err(monitor_wire::error_chain(&e)))
}

/// Parses `--since`/`--until`: a duration back from `now_ns` (`90s`, `15m`, `6h`, `21d`,
/// `2w`) or an RFC 3339 time. Returns Unix ns.
pub fn parse_when(arg: &'static str, value: &str, now_ns: i64) -> Result<i64, ClientError> {
    let bad = || ClientError::When {
        arg,
        value: value.to_owned(),
    };
    if let Ok(t) =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
    {
        return i64::try_from(t.unix_timestamp_nanos()).map_err(|_| bad());
    }
    let split = value.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = value.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(secs * 1_000_000_000)
        .and_then(|d| now_ns.checked_sub(d))
        .ok_or_else(bad)
}

/// RFC 3339 (UTC, seconds) for a Unix ns time.
pub fn rfc3339_secs(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns)).map_or_else(
        |_| ns.to_string(),
        |t| {
            t.replace_nanosecond(0)
                .unwrap_or(t)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| ns.to_string())
        },
    )
}

fn peer(p: Option<&monitor_wire::proto::Peer>) -> String {
    let Some(p) = p else {
        return "-".into();
    };
    let who = match (p.namespace.as_str(), p.pod.as_str()) {
        ("", "") => p.ip.clone(),
        ("", pod) => pod.to_owned(),
        (ns, pod) => format!("{ns}/{pod}"),
    };
    if p.port > 0 && p.pod.is_empty() {
        format!("{who}:{}", p.port)
    } else {
        who
    }
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut c: String = s.chars().take(n.saturating_sub(1)).collect();
        c.push('…');
        c
    }
}

/// The header of [`table_row`]'s columns.
pub fn table_header() -> String {
    format!(
        "{:<20} {:<24} {:<8} {:<36} {:<36} {}",
        "TIME", "KIND/RULE", "SEVERITY", "SOURCE", "DESTINATION", "REQUEST / MESSAGE"
    )
}

/// One record as a table row for a terminal.
pub fn table_row(r: &ObservedRecord) -> String {
    let what = if r.rule.is_empty() {
        r.kind.clone()
    } else {
        r.rule.clone()
    };
    let request = if r.method.is_empty() {
        String::new()
    } else if r.status > 0 {
        format!("{} {} {}", r.method, r.path, r.status)
    } else {
        format!("{} {}", r.method, r.path)
    };
    let tail = match (request.is_empty(), r.message.is_empty()) {
        (false, false) => format!("{request} — {}", r.message),
        (false, true) => request,
        (true, _) => r.message.clone(),
    };
    format!(
        "{:<20} {:<24} {:<8} {:<36} {:<36} {}",
        rfc3339_secs(r.time_unix_nano),
        clip(&what, 24),
        if r.severity.is_empty() {
            "-"
        } else {
            &r.severity
        },
        clip(&peer(r.source.as_ref()), 36),
        clip(&peer(r.destination.as_ref()), 36),
        clip(&tail, 120)
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn when_accepts_durations_and_rfc3339_and_names_bad_input() {
        let now = 1_000_000 * 1_000_000_000;
        assert_eq!(
            parse_when("--since", "90s", now).unwrap(),
            now - 90_000_000_000
        );
        assert_eq!(
            parse_when("--since", "21d", now).unwrap(),
            now - 21 * 86_400 * 1_000_000_000
        );
        assert_eq!(
            parse_when("--since", "1970-01-01T00:00:10Z", now).unwrap(),
            10_000_000_000
        );
        for bad in ["", "d", "10y", "yesterday", "-5m", "20000000000w"] {
            let e = parse_when("--since", bad, now).unwrap_err().to_string();
            assert!(e.contains("--since") && e.contains("15m"), "{bad}: {e}");
        }
    }

    #[test]
    fn url_scheme_must_match_the_tls_choice() {
        assert_eq!(
            check_url("https://collector.monitor.svc:7443", true).unwrap(),
            "collector.monitor.svc"
        );
        assert_eq!(check_url("https://[::1]:7443", true).unwrap(), "::1");
        assert!(
            check_url("http://127.0.0.1:7443", true)
                .unwrap_err()
                .to_string()
                .contains("--insecure")
        );
        assert!(check_url("https://x:1", false).is_err());
        assert!(check_url("127.0.0.1:7443", true).is_err());
    }

    #[test]
    fn tls_files_need_all_three_or_insecure() {
        let mut a = ClientTlsArgs {
            tls_dir: None,
            ca: None,
            cert: None,
            key: None,
            server_name: None,
            insecure: false,
        };
        assert!(
            tls_files(&a, "cli")
                .unwrap_err()
                .to_string()
                .contains("cli.pem")
        );
        a.tls_dir = Some("/etc/m".into());
        a.key = Some("/k".into());
        let f = tls_files(&a, "cli").unwrap().unwrap();
        assert_eq!(f.cert, PathBuf::from("/etc/m/cli.pem"));
        assert_eq!(f.key, PathBuf::from("/k"));
        a.insecure = true;
        assert!(tls_files(&a, "cli").unwrap().is_none());
    }

    #[test]
    fn a_row_shows_rule_peers_and_request() {
        let r = ObservedRecord {
            kind: "violation".into(),
            rule: "undocumented-endpoint".into(),
            severity: "critical".into(),
            time_unix_nano: 1_700_000_000_000_000_000,
            source: Some(monitor_wire::proto::Peer {
                namespace: "vantage".into(),
                pod: "svc-recommendation-engine-04".into(),
                ..Default::default()
            }),
            destination: Some(monitor_wire::proto::Peer {
                ip: "10.0.0.9".into(),
                port: 443,
                ..Default::default()
            }),
            method: "GET".into(),
            path: "/internal/admin/v0/users/lookup".into(),
            status: 200,
            message: "undocumented".into(),
            ..Default::default()
        };
        let row = table_row(&r);
        assert!(row.starts_with("2023-11-14T22:13:20Z"), "{row}");
        for part in [
            "undocumented-endpoint",
            "critical",
            "vantage/svc-recommendation-engine-04",
            "10.0.0.9:443",
            "GET /internal/admin/v0/users/lookup 200 — undocumented",
        ] {
            assert!(row.contains(part), "{part} in {row}");
        }
    }
}
