//! The incident the demo replays (docs/design.md#the-problem): the pods it needs, the calls of each phase, the
//! backdoor's lookups, and the operator's quarantine edit of the policy. Nothing here runs a
//! process; [`super::phases`] plays it against the lab.

use std::path::Path;

use anyhow::{Context as _, Result};

use crate::inventory::ServerKind;
use crate::lab::Lab;

/// The route the backdoor called.
pub const LOOKUP_ROUTE: &str = "/internal/admin/v0/users/lookup";

/// The fields the backdoor's queries asked for (docs/design.md#the-problem).
pub const LOOKUP_FIELDS: &str =
    "ssn_last4,email,phone,address_street,address_city,address_state,address_zip";

/// The US states the backdoor filtered by, in order (docs/design.md#the-problem).
pub const LOOKUP_STATES: [&str; 6] = ["CA", "NY", "TX", "FL", "IL", "PA"];

/// Records per response the backdoor asked for.
pub const LOOKUP_LIMIT: u32 = 48;

/// The quarantined pod, as the policy names it.
pub const QUARANTINED: &str = "vantage/svc-recommendation-engine-04";

/// The compromised replica.
pub const BACKDOOR_POD: &str = "svc-recommendation-engine-04";

/// Preference calls from replicas 01-03 before the backdoor starts: more than the policy's
/// `min_samples` (20), so the response-size baseline exists when the first lookup arrives.
pub const BASELINE_CALLS: usize = 27;

/// Lookups the quarantined pod still attempts (each one times out).
pub const BLOCKED_ATTEMPTS: usize = 3;

/// curl's `--max-time` for the attempts under quarantine (its SYN and one retransmission).
pub const BLOCKED_TIMEOUT_S: u32 = 2;

/// The service the backdoor reads from.
pub(super) const USER_PROFILE: &str = "svc-user-profile-service-0";
const CATALOG: &str = "svc-product-catalog-0";
const CHECKOUT: &str = "svc-checkout-0";
const GATEWAY: &str = "svc-api-gateway-0";
const SCRAPER: &str = "monitoring-scraper-0";
const PARTNER: &str = "partner-api";
const RECO: [&str; 4] = [
    "svc-recommendation-engine-01",
    "svc-recommendation-engine-02",
    "svc-recommendation-engine-03",
    BACKDOOR_POD,
];

/// Every pod the incident involves (the inventory must have them all).
pub(super) fn pods() -> impl Iterator<Item = &'static str> {
    [USER_PROFILE, CATALOG, CHECKOUT, GATEWAY, SCRAPER, PARTNER]
        .into_iter()
        .chain(RECO)
}

/// The backdoor's request target for one state.
pub fn lookup_target(state: &str) -> String {
    format!("{LOOKUP_ROUTE}?fields={LOOKUP_FIELDS}&state={state}&limit={LOOKUP_LIMIT}")
}

/// One HTTP exchange made with curl from a pod.
pub(super) struct Call<'a> {
    /// The calling pod.
    pub(super) from: &'a str,
    /// The pod whose nginx answers.
    pub(super) to: &'a str,
    /// `GET` or `POST` (with an empty body).
    pub(super) method: &'a str,
    /// Path and query.
    pub(super) target: String,
}

impl<'a> Call<'a> {
    /// A `GET` of `target`.
    pub(super) fn get(from: &'a str, to: &'a str, target: impl Into<String>) -> Self {
        Self {
            from,
            to,
            method: "GET",
            target: target.into(),
        }
    }
}

/// Phase 1, documented and allowed traffic: (who calls, the calls) per group, in order; each
/// call on its own connection.
pub(super) fn background(lab: &Lab) -> Vec<(&'static str, Vec<Call<'_>>)> {
    // Preferences from replicas 01-03, round-robin.
    let mut n = 1000;
    let prefs: Vec<Call<'_>> = (0..BASELINE_CALLS)
        .map(|i| {
            n += 7;
            Call::get(
                RECO[i % 3],
                USER_PROFILE,
                format!("/api/v2/users/preferences?user_id={n}"),
            )
        })
        .collect();
    let checkout: Vec<Call<'_>> = (0..2)
        .map(|i| {
            Call::get(
                CHECKOUT,
                USER_PROFILE,
                format!("/api/v2/users/preferences?user_id={}", 4242 + i),
            )
        })
        .collect();
    let products: Vec<Call<'_>> = (1..=2)
        .map(|page| Call::get(GATEWAY, CATALOG, format!("/api/v1/products?page={page}")))
        .collect();
    let mut groups = vec![
        ("svc-recommendation-engine-01..03", prefs),
        (CHECKOUT, checkout),
        (GATEWAY, products),
    ];

    // The monitoring stack probes and scrapes every service that serves both routes.
    let servers: Vec<&str> = lab
        .inventory()
        .pods
        .iter()
        .filter(|p| {
            p.lab.serve.iter().any(|s| {
                s.kind == ServerKind::Nginx
                    && s.routes.contains_key("/internal/health")
                    && s.routes.contains_key("/internal/metrics")
            })
        })
        .map(|p| p.name.as_str())
        .collect();
    for target in ["/internal/health", "/internal/metrics"] {
        let calls = servers
            .iter()
            .map(|to| Call::get(SCRAPER, to, target))
            .collect();
        groups.push((SCRAPER, calls));
    }
    // The catalog flushes its own cache (same service: the runbook allows it).
    groups.push((
        CATALOG,
        vec![Call {
            from: CATALOG,
            to: CATALOG,
            method: "POST",
            target: "/internal/admin/cache/flush".into(),
        }],
    ));
    // Checkout calls the payment partner (an approved external destination).
    groups.push((CHECKOUT, vec![Call::get(CHECKOUT, PARTNER, "/v1/ping")]));
    groups
}

/// `original` with its top-level `quarantine:` section replaced by one that quarantines `pod`
/// (`namespace/name`) in enforce mode; everything else is kept as written. The section is the
/// `quarantine:` line and the indented lines under it; it is appended when there is none. The
/// new section has four lines, as the Vantage policy's, so later line numbers do not move.
pub fn quarantine_policy(original: &str, pod: &str) -> String {
    let section =
        format!("quarantine:\n  mode: enforce\n  pods: [{pod}]\n  network_policies: true\n");
    let lines: Vec<&str> = original.split_inclusive('\n').collect();
    let Some(start) = lines.iter().position(|l| {
        l.strip_prefix("quarantine:")
            .is_some_and(|r| r.trim().is_empty() || r.starts_with([' ', '#', '{']))
    }) else {
        let mut out = original.to_owned();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&section);
        return out;
    };
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.trim().is_empty() || !l.starts_with([' ', '\t']))
        .map_or(lines.len(), |n| start + 1 + n);
    let mut out: String = lines[..start].concat();
    out.push_str(&section);
    out.push_str(&lines[end..].concat());
    out
}

/// Replaces `path` with `text` the safe way (a file next to it, renamed over it), as an
/// operator should edit a policy the agent watches.
pub fn replace_file(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("yaml.new");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}
