//! The semantic checks, run on the typed policy once it is read: version, protected prefixes,
//! the endpoint catalog (paths, services, methods, callers, duplicates), sensitive fields,
//! redaction, egress, quarantine, baselines and aggregation.
//!
//! Positions are looked up by path (`endpoints[2].callers[0]`) in the tree's [`Index`]. A section
//! replaced by its default is not checked; list indexes are mapped back to the file's around
//! skipped elements; checks across sections only use sections read whole. The value rules
//! themselves (what a good path, CIDR, glob or pod name is) are in [`super::validate`].

use std::collections::HashMap;

use super::{
    decode::Decoded,
    problem::Problem,
    tree::Index,
    validate::{
        check_cidr, glob_problem, is_tchar, overlap, path_problem, pod_name_problem, subtree_key,
        subtree_root,
    },
};
use crate::{
    pattern::glob_match,
    schema::{Baselines, Caller, CallerSelector, Egress, PolicyFile, Quarantine, SensitiveFields},
};

/// Runs the semantic checks on what was read, and returns what they find, positioned with
/// `index`.
pub(super) fn run(index: &Index, decoded: &Decoded) -> Vec<Problem> {
    let mut checker = Checker {
        index,
        decoded,
        out: Vec::new(),
    };
    checker.run(&decoded.spec);
    checker.out
}

/// Runs the semantic checks on the typed policy, and positions what it finds.
///
/// When something was set aside while reading (a structural error), the typed lists lack those
/// elements: [`Checker::el`] maps a typed index back to the element's index in the file, and
/// "empty list" checks look at the file, so that nothing set aside causes a second, false error.
struct Checker<'a> {
    index: &'a Index,
    decoded: &'a Decoded,
    out: Vec<Problem>,
}

impl Checker<'_> {
    /// A problem with the value at `path`.
    fn at(&mut self, path: &str, message: impl Into<String>, hint: impl Into<Option<String>>) {
        let pos = self.index.value(path);
        self.out.push(Problem::new(pos, path, message, hint.into()));
    }

    /// A problem with the entry at `path` as a whole (its key).
    fn at_key(&mut self, path: &str, message: impl Into<String>, hint: impl Into<Option<String>>) {
        let pos = self.index.key(path);
        self.out.push(Problem::new(pos, path, message, hint.into()));
    }

    /// The section was read (not replaced by its default after a structural error).
    fn ok(&self, section: &str) -> bool {
        !self.decoded.dirty.contains(section)
    }

    /// The section was read whole (nothing in it set aside).
    fn whole(&self, section: &str) -> bool {
        !self.decoded.partial.contains(section)
    }

    /// The path of the `k`th element of the typed list at `list`, as numbered in the file.
    fn el(&self, list: &str, k: usize) -> String {
        let (mut i, mut seen) = (0, 0);
        loop {
            let p = format!("{list}[{i}]");
            i += 1;
            if self.decoded.masks.contains(&p) {
                continue;
            }
            if seen == k {
                return p;
            }
            seen += 1;
        }
    }

    /// The list at `path` is empty in the file (not merely after setting elements aside, nor
    /// set aside itself).
    fn empty_in_file(&self, path: &str) -> bool {
        !self.decoded.masks.contains(path) && !self.index.contains(&format!("{path}[0]"))
    }

    /// Every check, section by section; a section replaced by its default is not checked.
    fn run(&mut self, spec: &PolicyFile) {
        if self.ok("version") && spec.version != 1 {
            self.at(
                "version",
                format!("unsupported policy version {}", spec.version),
                Some("this monitor reads `version: 1`".into()),
            );
        }
        if self.ok("protected_prefixes") {
            self.prefixes(&spec.protected_prefixes);
        }
        if self.ok("endpoints") {
            let prefixes = (self.ok("protected_prefixes") && self.whole("protected_prefixes"))
                .then_some(spec.protected_prefixes.as_slice());
            self.endpoints(spec, prefixes);
        }
        if self.ok("sensitive_fields")
            && let Some(s) = &spec.sensitive_fields
        {
            self.sensitive(s);
        }
        if self.ok("redaction") {
            let sensitive = if self.ok("sensitive_fields") {
                spec.sensitive_fields.as_ref().map(|s| s.names.as_slice())
            } else {
                None
            };
            self.redaction(&spec.redaction.keep_values, sensitive);
        }
        if self.ok("egress")
            && let Some(e) = &spec.egress
        {
            self.egress(e);
        }
        if self.ok("quarantine")
            && let Some(q) = &spec.quarantine
        {
            self.quarantine(q);
        }
        if self.ok("baselines")
            && let Some(b) = &spec.baselines
        {
            self.baselines(b);
        }
        if self.ok("aggregation") && spec.aggregation.window_seconds < 1 {
            self.at(
                "aggregation.window_seconds",
                "`window_seconds` must be at least 1",
                Some(
                    "repeats within this window are reported once, with a count; 60 is usual"
                        .into(),
                ),
            );
        }
    }

    fn prefixes(&mut self, prefixes: &[String]) {
        for (i, p) in prefixes.iter().enumerate() {
            let path = self.el("protected_prefixes", i);
            if p == "/" {
                self.at(
                    &path,
                    "the prefix `/` would protect every path",
                    Some("protect the internal subtree only, e.g. `/internal/`".to_owned()),
                );
            } else if !p.starts_with('/') || !p.ends_with('/') {
                let fixed = format!("/{}/", p.trim_matches('/'));
                self.at(
                    &path,
                    format!("the prefix `{p}` must start and end with `/`"),
                    Some(format!(
                        "write `{fixed}`: a prefix is whole path segments, so `/internal/` covers \
                         `/internal/x` but not `/internals`"
                    )),
                );
            } else if let Some((msg, hint)) = path_problem(p, false) {
                self.at(&path, format!("the prefix {msg}"), Some(hint));
            }
        }
    }

    fn endpoints(&mut self, spec: &PolicyFile, prefixes: Option<&[String]>) {
        // (normalised path, typed index, its path) of the endpoints seen, for duplicates.
        let mut seen: Vec<(String, usize, String)> = Vec::new();
        for (i, ep) in spec.endpoints.iter().enumerate() {
            let base = self.el("endpoints", i);
            let ppath = format!("{base}.path");
            let path_ok = if let Some((msg, hint)) = path_problem(&ep.path, true) {
                self.at(&ppath, format!("the path {msg}"), Some(hint));
                false
            } else {
                true
            };
            if path_ok && let Some(prefixes) = prefixes {
                let covered = subtree_root(&ep.path).to_ascii_lowercase() + "/";
                let under = prefixes
                    .iter()
                    .any(|p| p.len() > 1 && covered.starts_with(&p.to_ascii_lowercase()));
                if !under {
                    let first = ep
                        .path
                        .trim_start_matches('/')
                        .split('/')
                        .next()
                        .unwrap_or("");
                    self.at(
                        &ppath,
                        format!("`{}` is not under any protected prefix", ep.path),
                        Some(format!(
                            "it would never be checked: add its prefix (e.g. `/{first}/`) to \
                             `protected_prefixes`, or remove the endpoint"
                        )),
                    );
                }
            }
            self.services(&base, &ep.services);
            for (j, m) in ep.methods.iter().enumerate() {
                let p = self.el(&format!("{base}.methods"), j);
                if m.is_empty() || !m.bytes().all(is_tchar) {
                    self.at(
                        &p,
                        format!("`{m}` is not an HTTP method"),
                        Some(
                            "methods are tokens such as GET, POST, PUT, DELETE; leave `methods` \
                             out for any method"
                                .to_owned(),
                        ),
                    );
                } else if m.bytes().any(|b| b.is_ascii_lowercase()) {
                    self.at(
                        &p,
                        format!("method `{m}` must be uppercase"),
                        Some(format!(
                            "write `{}`: HTTP methods are case-sensitive and sent in uppercase",
                            m.to_ascii_uppercase()
                        )),
                    );
                }
            }
            let cpath = format!("{base}.callers");
            if self.empty_in_file(&cpath) {
                self.at(
                    &cpath,
                    "no caller may call this endpoint",
                    Some(
                        "list who may call it: `self` for the same service only, `node` for \
                         kubelet probes, `{service: NAME}`, `{namespace: NAME}`, `{pod: NAME}`"
                            .to_owned(),
                    ),
                );
            }
            for (j, c) in ep.callers.iter().enumerate() {
                if let Caller::Selector(sel) = c {
                    let p = self.el(&cpath, j);
                    self.selector(&p, sel);
                }
            }
            if path_ok {
                let norm = subtree_key(&ep.path);
                if let Some((_, _, other)) = seen.iter().find(|(p, k, _)| {
                    *p == norm && overlap(&spec.endpoints[*k].services, &ep.services)
                }) {
                    let line = self.index.value(other).line;
                    self.at(
                        &ppath,
                        format!(
                            "duplicate endpoint `{}`: {other} (line {line}) has the same path for \
                             an overlapping set of services",
                            ep.path
                        ),
                        Some("merge the two entries' callers and methods into one".to_owned()),
                    );
                }
                seen.push((norm, i, base));
            }
        }
    }

    fn services(&mut self, base: &str, services: &[String]) {
        let spath = format!("{base}.services");
        if self.empty_in_file(&spath) {
            self.at(
                &spath,
                "no service serves this endpoint",
                Some("list the services that serve it, or `[\"*\"]` for every service".to_owned()),
            );
        }
        for (j, s) in services.iter().enumerate() {
            let p = self.el(&spath, j);
            if s.trim().is_empty() {
                self.at(
                    &p,
                    "empty service name",
                    Some("name a service, or `*` for every service".to_owned()),
                );
            } else if s == "*" && services.len() > 1 {
                self.at(
                    &p,
                    "`*` (every service) must be alone",
                    Some(
                        "`*` already covers the other services listed: keep one or the other"
                            .to_owned(),
                    ),
                );
            }
        }
    }

    fn selector(&mut self, path: &str, sel: &CallerSelector) {
        let set: Vec<(&str, &String)> = [
            ("service", &sel.service),
            ("namespace", &sel.namespace),
            ("pod", &sel.pod),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        .collect();
        match set.as_slice() {
            [] => self.at(
                path,
                "a caller selector names nobody",
                Some("set exactly one of `service`, `namespace`, `pod`".to_owned()),
            ),
            [(k, v)] => {
                let p = format!("{path}.{k}");
                if v.trim().is_empty() {
                    self.at(&p, format!("empty `{k}`"), Some(format!("name a {k}")));
                } else if *k == "pod"
                    && let Some(msg) = pod_name_problem(v)
                {
                    self.at(
                        &p,
                        msg,
                        Some(
                            "a pod is `name` or `namespace/name` (lowercase DNS-1123 names)"
                                .to_owned(),
                        ),
                    );
                }
            }
            [first, second, ..] => self.at(
                path,
                format!(
                    "a caller selector sets both `{}` and `{}`: it must name exactly one",
                    first.0, second.0
                ),
                Some(format!(
                    "split it into two callers, `- {}: {}` and `- {}: {}` (either may call)",
                    first.0, first.1, second.0, second.1
                )),
            ),
        }
    }

    fn sensitive(&mut self, s: &SensitiveFields) {
        if self.empty_in_file("sensitive_fields.names") {
            self.at(
                "sensitive_fields.names",
                "no sensitive field names",
                Some(
                    "list glob patterns such as `ssn*`, `email`; or remove `sensitive_fields`"
                        .to_owned(),
                ),
            );
        }
        for (i, n) in s.names.iter().enumerate() {
            let p = self.el("sensitive_fields.names", i);
            if let Some((msg, hint)) = glob_problem(n) {
                self.at(&p, msg, Some(hint));
            }
        }
        self.names(
            "sensitive_fields.selector_keys",
            &s.selector_keys,
            "selector key",
        );
        if s.critical_at < 2 {
            self.at(
                "sensitive_fields.critical_at",
                format!("`critical_at` must be at least 2 (it is {})", s.critical_at),
                Some(
                    "it is the number of distinct sensitive names in one request that raises \
                     the severity to critical; 3 is usual"
                        .to_owned(),
                ),
            );
        }
    }

    /// Non-empty strings, unique (case-insensitively).
    fn names(&mut self, list: &str, names: &[String], what: &str) {
        for (i, n) in names.iter().enumerate() {
            let p = self.el(list, i);
            if n.trim().is_empty() {
                self.at(&p, format!("empty {what}"), Some("remove it".to_owned()));
            } else if let Some(j) = names[..i].iter().position(|m| m.eq_ignore_ascii_case(n)) {
                let first = self.el(list, j);
                let line = self.index.value(&first).line;
                let case = if names[j] == *n {
                    ""
                } else {
                    "; keys match case-insensitively"
                };
                self.at(
                    &p,
                    format!("duplicate {what} `{n}` (also {first}, line {line}{case})"),
                    Some("remove one".to_owned()),
                );
            }
        }
    }

    fn redaction(&mut self, keep: &[String], sensitive: Option<&[String]>) {
        self.names("redaction.keep_values", keep, "key");
        for (i, k) in keep.iter().enumerate() {
            if let Some(pat) = sensitive
                .unwrap_or_default()
                .iter()
                .find(|pat| glob_match(&pat.to_ascii_lowercase(), &k.to_ascii_lowercase()))
            {
                let p = self.el("redaction.keep_values", i);
                self.at(
                    &p,
                    format!(
                        "`{k}` is a sensitive field (it matches `{pat}`): its values must not be \
                         kept"
                    ),
                    Some(format!(
                        "its values would be written in clear into records and SIEMs; remove \
                         `{k}` from `keep_values`"
                    )),
                );
            }
        }
    }

    fn egress(&mut self, e: &Egress) {
        for (i, edge) in e.edges.iter().enumerate() {
            let base = self.el("egress.edges", i);
            for (field, v) in [("from", &edge.from), ("to", &edge.to)] {
                if v.trim().is_empty() {
                    self.at(
                        &format!("{base}.{field}"),
                        format!("empty `{field}`"),
                        Some("name a service, or `*` for any".to_owned()),
                    );
                }
            }
            self.ports(&base, &edge.ports);
        }
        // name → path of its first use
        let mut names: HashMap<&str, String> = HashMap::new();
        for (i, x) in e.external.iter().enumerate() {
            let base = self.el("egress.external", i);
            if x.name.trim().is_empty() {
                self.at(
                    &format!("{base}.name"),
                    "empty name",
                    Some("name the destination: it is shown in records and violations".to_owned()),
                );
            } else if let Some(first) = names.get(x.name.as_str()) {
                let line = self.index.value(first).line;
                self.at(
                    &format!("{base}.name"),
                    format!(
                        "duplicate external destination `{}` (also {first}, line {line})",
                        x.name
                    ),
                    Some(
                        "names identify destinations in records: make it unique, or merge the \
                         two entries"
                            .to_owned(),
                    ),
                );
            } else {
                names.insert(&x.name, base.clone());
            }
            let cpath = format!("{base}.cidrs");
            if self.empty_in_file(&cpath) {
                self.at(
                    &cpath,
                    "no address range",
                    Some("list CIDRs such as `203.0.113.0/24` or single addresses".to_owned()),
                );
            }
            for (j, c) in x.cidrs.iter().enumerate() {
                if let Err((msg, hint)) = check_cidr(c) {
                    let p = self.el(&cpath, j);
                    self.at(&p, msg, Some(hint));
                }
            }
            self.ports(&base, &x.ports);
            for (j, f) in x.from.iter().enumerate() {
                if f.trim().is_empty() {
                    let p = self.el(&format!("{base}.from"), j);
                    self.at(
                        &p,
                        "empty service name",
                        Some("name a service, or leave `from` out for any".to_owned()),
                    );
                }
            }
        }
    }

    fn ports(&mut self, base: &str, ports: &[u16]) {
        for (j, p) in ports.iter().enumerate() {
            if *p == 0 {
                let path = self.el(&format!("{base}.ports"), j);
                self.at(
                    &path,
                    "port 0 is not a port",
                    Some("ports are numbers from 1 to 65535; leave `ports` out for any".to_owned()),
                );
            }
        }
    }

    fn quarantine(&mut self, q: &Quarantine) {
        if self.empty_in_file("quarantine.pods") && q.selector.is_empty() && !q.network_policies {
            self.at_key(
                "quarantine",
                "the quarantine selects nothing",
                Some(
                    "list `pods`, set a label `selector`, or set `network_policies: true`; or \
                     remove `quarantine`"
                        .to_owned(),
                ),
            );
        }
        for (i, p) in q.pods.iter().enumerate() {
            if let Some(msg) = pod_name_problem(p) {
                let path = self.el("quarantine.pods", i);
                self.at(
                    &path,
                    msg,
                    Some(
                        "a pod is `name` or `namespace/name`, lowercase DNS-1123 names (e.g. \
                         `vantage/svc-recommendation-engine-04`)"
                            .to_owned(),
                    ),
                );
            }
        }
        for k in q.selector.keys() {
            if k.trim().is_empty() {
                self.at_key(
                    &format!("quarantine.selector.{k}"),
                    "empty label key",
                    Some(
                        "a selector lists `label: value` pairs, all of which a pod must have"
                            .to_owned(),
                    ),
                );
            }
        }
    }

    fn baselines(&mut self, b: &Baselines) {
        let factor = |c: &mut Self, path: &str, f: f64, what: &str| {
            if !(f > 1.0 && f.is_finite()) {
                c.at(
                    path,
                    format!("`factor` must be a number greater than 1 (it is {f})"),
                    Some(format!(
                        "it is how many times the baseline {what} fires; 9 to 10 is usual"
                    )),
                );
            }
        };
        let at_least_one = |c: &mut Self, path: &str, v: u64, hint: &str| {
            if v < 1 {
                let field = path.rsplit('.').next().unwrap_or(path);
                c.at(
                    path,
                    format!("`{field}` must be at least 1"),
                    Some(hint.to_owned()),
                );
            }
        };
        if let Some(s) = &b.response_size {
            factor(
                self,
                "baselines.response_size.factor",
                s.factor,
                "response size",
            );
            at_least_one(
                self,
                "baselines.response_size.min_samples",
                s.min_samples,
                "responses needed before the baseline is used; 20 is usual",
            );
        }
        if let Some(r) = &b.rate {
            factor(self, "baselines.rate.factor", r.factor, "per-minute rate");
            at_least_one(
                self,
                "baselines.rate.min_minutes",
                r.min_minutes,
                "minutes observed before the baseline is used; 10 is usual",
            );
        }
        if let Some(n) = &b.new_edges {
            at_least_one(
                self,
                "baselines.new_edges.learn_seconds",
                n.learn_seconds,
                "seconds after start during which edges are learnt silently; 300 is usual",
            );
        }
    }
}
