//! Tests of loading: positions, recovery, every semantic check, and that nothing panics.

use std::path::Path;

use super::{check, error::closest, validate::normalised};
use crate::{
    Diagnostic, PolicyErrors,
    pattern::glob_match,
    schema::{Caller, CallerKeyword, PolicyFile},
};

const VANTAGE: &str = include_str!("../../../../../deploy/examples/vantage/policy.yaml");

fn errors(text: &str) -> Vec<Diagnostic> {
    match check(text, Path::new("p.yaml")) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.0,
    }
}

/// The one error of `text`, as `(line, column, message)`.
fn one(text: &str) -> (usize, usize, String) {
    let e = errors(text);
    assert_eq!(e.len(), 1, "expected one error, got: {e:#?}");
    (e[0].line, e[0].column, e[0].message.clone())
}

#[track_caller]
fn expect_one(text: &str, line: usize, column: usize, needle: &str) {
    let (l, c, m) = one(text);
    assert_eq!((l, c), (line, column), "position of `{m}`");
    assert!(m.contains(needle), "`{m}` does not contain `{needle}`");
}

/// Like [`expect_one`], with the column given as the first occurrence of `token` on `line`.
#[track_caller]
fn expect_at(text: &str, line: usize, token: &str, needle: &str) {
    let l = text.lines().nth(line - 1).unwrap();
    let column = l
        .find(token)
        .unwrap_or_else(|| panic!("`{token}` not in `{l}`"))
        + 1;
    expect_one(text, line, column, needle);
}

const HEAD: &str = "version: 1\nprotected_prefixes: [/internal/]\n";

#[test]
fn vantage_policy_is_clean_and_has_rule_lines() {
    let (spec, lines) = check(VANTAGE, Path::new("policy.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.version, 1);
    assert_eq!(spec.endpoints.len(), 3);
    assert_eq!(spec.endpoints[2].path, "/internal/admin/cache/flush");
    assert_eq!(spec.endpoints[2].services, ["svc-product-catalog"]);
    assert_eq!(
        spec.endpoints[2].callers,
        [Caller::Keyword(CallerKeyword::SelfService)]
    );
    assert_eq!(
        spec.redaction.keep_values,
        ["fields", "state", "limit", "page"]
    );
    // Same result as plain serde_yaml_ng.
    let plain: PolicyFile = serde_yaml_ng::from_str(VANTAGE).unwrap();
    assert_eq!(plain, spec);
    for key in [
        "protected_prefixes[0]",
        "endpoints[0]",
        "endpoints[2]",
        "egress.edges[0]",
        "egress.external[0]",
        "quarantine",
        "sensitive_fields",
        "baselines.response_size",
        "baselines.rate",
        "baselines.new_edges",
    ] {
        let line = lines[key];
        let text_line = VANTAGE.lines().nth(line - 1).unwrap();
        let last = key.rsplit(['.', ']']).find(|s| !s.is_empty()).unwrap();
        assert!(
            key.ends_with(']') && text_line.trim_start().starts_with('-')
                || text_line.trim_start().starts_with(&format!("{last}:")),
            "{key} → line {line}: {text_line}"
        );
    }
    let flush = VANTAGE.lines().nth(lines["endpoints[2]"] - 1).unwrap();
    assert!(flush.contains("/internal/admin/cache/flush"), "{flush}");
}

#[test]
fn agrees_with_serde_yaml_ng_on_defaults() {
    let text = "version: 1\nsensitive_fields:\n  names: [email]\nquarantine: {}\n";
    let (spec, _) = check(text, Path::new("p")).unwrap();
    let plain: PolicyFile = serde_yaml_ng::from_str(text).unwrap();
    assert_eq!(spec, plain);
    assert_eq!(spec.aggregation.window_seconds, 60);
    assert!(spec.quarantine.unwrap().network_policies);
}

#[test]
fn syntax_error_has_serde_position() {
    let text = "version: 1\nendpoints:\n  - path: /internal/x\n   services: [a]\n";
    let (l, c, m) = one(text);
    let serde = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text).unwrap_err();
    let loc = serde.location().unwrap();
    assert_eq!((l, c), (loc.line(), loc.column()));
    assert!(m.starts_with("YAML syntax error"), "{m}");
    assert!(!m.contains(&format!("at line {l} column {c}")), "{m}");
    expect_one(
        "version: 1\nprotected_prefixes: [/internal/\n",
        3,
        1,
        "syntax",
    );
}

#[test]
fn empty_and_non_mapping_files() {
    expect_one("", 1, 1, "empty");
    expect_one("# only a comment\n", 1, 1, "empty");
    expect_one("- version: 1\n", 1, 1, "not a list");
    expect_one("version: 1\n---\nversion: 1\n", 2, 1, "more than one");
}

#[test]
fn unknown_field_names_it_and_lists_expected() {
    let e = errors("version: 1\nendpoint: []\n");
    assert_eq!((e[0].line, e[0].column), (2, 1));
    assert!(
        e[0].message.contains("unknown field `endpoint`"),
        "{}",
        e[0].message
    );
    assert!(
        e[0].message.contains("`protected_prefixes`"),
        "{}",
        e[0].message
    );
    assert_eq!(e[0].hint.as_deref(), Some("did you mean `endpoints`?"));
    let text =
        format!("{HEAD}endpoints:\n  - path: /internal/x\n    servics: [a]\n    callers: [self]\n");
    let e = errors(&text);
    // The typo explains the missing `services`: one error.
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!((e[0].line, e[0].column), (5, 5));
    assert!(e[0].message.starts_with(
        "endpoints[0].servics: unknown field `servics`, expected one of `path`, `services`"
    ));
}

#[test]
fn missing_field_points_at_its_holder() {
    let text = format!("{HEAD}endpoints:\n  - path: /internal/x\n    services: [a]\n");
    expect_one(&text, 4, 5, "missing field `callers`");
    expect_one("protected_prefixes: []\n", 1, 1, "missing field `version`");
    expect_one(
        "version: 1\nbaselines:\n  rate:\n    min_minutes: 3\n",
        3,
        3,
        "missing field `factor`",
    );
}

#[test]
fn type_errors_point_at_the_value() {
    expect_one("version: \"1\"\n", 1, 10, "expected u32");
    expect_one(
        "version: 1\negress:\n  edges:\n    - {from: a, to: b, ports: [80, 70000]}\n",
        4,
        36,
        "expected u16",
    );
    expect_one(
        "version: 1\nquarantine:\n  mode: enforced\n",
        3,
        9,
        "unknown value `enforced`",
    );
    let text = format!(
        "{HEAD}endpoints:\n  - path: /internal/x\n    services: [a]\n    callers: [self, svc-a]\n"
    );
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!((e[0].line, e[0].column), (6, 21));
    assert!(e[0].message.contains("unknown caller `svc-a`"));
    assert!(e[0].hint.as_deref().unwrap().contains("service: svc-a"));
    let text = format!(
        "{HEAD}endpoints:\n  - path: /internal/x\n    services: [a]\n    callers:\n      - svc: a\n"
    );
    expect_one(&text, 7, 9, "unknown field `svc` in a caller");
}

#[test]
fn duplicate_keys() {
    expect_one("version: 1\nversion: 1\n", 2, 1, "duplicate key `version`");
}

#[test]
fn version_must_be_one() {
    expect_one("version: 2\n", 1, 10, "unsupported policy version 2");
}

#[test]
fn prefix_checks() {
    expect_one("version: 1\nprotected_prefixes: [/]\n", 2, 22, "every path");
    expect_one(
        "version: 1\nprotected_prefixes:\n  - /internal\n",
        3,
        5,
        "start and end with `/`",
    );
    expect_one(
        "version: 1\nprotected_prefixes: [internal/]\n",
        2,
        22,
        "start and end",
    );
    expect_one(
        "version: 1\nprotected_prefixes: [/Internal/]\n",
        2,
        22,
        "uppercase",
    );
}

fn endpoint(path: &str) -> String {
    format!("{HEAD}endpoints:\n  - path: {path}\n    services: [a]\n    callers: [self]\n")
}

#[test]
fn endpoint_path_checks() {
    for (p, needle) in [
        ("internal/x", "does not start with `/`"),
        ("/internal//x", "`//`"),
        ("/internal/./x", "`.` or `..`"),
        ("/internal/a/../x", "`.` or `..`"),
        ("/internal/x%2F", "`%`"),
        ("\"/internal/x?a=1\"", "query"),
        ("/internal/Admin", "uppercase"),
        ("/internal/*/x", "`*`"),
        ("'/internal\\x'", "`\\`"),
        ("/internal/x;v=1", "`;`"),
        ("/api/x", "not under any protected prefix"),
        ("/internalx", "not under any protected prefix"),
    ] {
        expect_one(&endpoint(p), 4, 11, needle);
    }
    let e = errors(&endpoint("/internal/Admin"));
    assert!(e[0].hint.as_deref().unwrap().contains("`/internal/admin`"));
    let e = errors(&endpoint("/api/x"));
    assert!(e[0].hint.as_deref().unwrap().contains("never be checked"));
    // Subtrees and the prefix itself are fine.
    for p in ["/internal/debug/**", "/internal/**", "/internal/x/"] {
        check(&endpoint(p), Path::new("p")).unwrap_or_else(|e| panic!("{p}: {e}"));
    }
}

#[test]
fn endpoint_services_methods_callers() {
    let ep = |body: &str| format!("{HEAD}endpoints:\n  - path: /internal/x\n{body}");
    expect_one(
        &ep("    services: []\n    callers: [self]\n"),
        5,
        15,
        "no service",
    );
    expect_one(
        &ep("    services: [\"*\", a]\n    callers: [self]\n"),
        5,
        16,
        "must be alone",
    );
    expect_one(
        &ep("    services: [a]\n    methods: [GET, post]\n    callers: [self]\n"),
        6,
        20,
        "uppercase",
    );
    expect_one(
        &ep("    services: [a]\n    methods: [\"GE T\"]\n    callers: [self]\n"),
        6,
        15,
        "not an HTTP method",
    );
    expect_one(
        &ep("    services: [a]\n    callers: []\n"),
        6,
        14,
        "no caller",
    );
    expect_one(
        &ep("    services: [a]\n    callers:\n      - {service: a, namespace: b}\n"),
        7,
        9,
        "both `service` and `namespace`",
    );
    expect_one(
        &ep("    services: [a]\n    callers:\n      - {}\n"),
        7,
        9,
        "names nobody",
    );
    expect_one(
        &ep("    services: [a]\n    callers:\n      - pod: Bad_Pod\n"),
        7,
        14,
        "not a pod name",
    );
}

#[test]
fn duplicate_endpoints() {
    let text = format!(
        "{HEAD}endpoints:\n  - {{path: /internal/x, services: [a, b], callers: [self]}}\n  - {{path: /internal/x/, services: [b], callers: [self]}}\n  - {{path: /internal/x, services: [c], callers: [self]}}\n"
    );
    let (l, c, m) = one(&text);
    assert_eq!((l, c), (5, 12));
    assert!(
        m.contains("duplicate endpoint") && m.contains("line 4"),
        "{m}"
    );
    let text = format!(
        "{HEAD}endpoints:\n  - {{path: /internal/x, services: [\"*\"], callers: [self]}}\n  - {{path: /internal/x, services: [z], callers: [self]}}\n"
    );
    expect_one(&text, 5, 12, "duplicate endpoint");
}

#[test]
fn sensitive_field_checks() {
    let s = |body: &str| format!("version: 1\nsensitive_fields:\n{body}");
    expect_one(&s("  names: []\n"), 3, 10, "no sensitive");
    expect_one(&s("  names: [email, \"ssn.*\"]\n"), 3, 18, "contains `.`");
    expect_one(&s("  names: [Email]\n"), 3, 11, "uppercase");
    expect_one(&s("  names: [\"*\"]\n"), 3, 11, "every query key");
    expect_one(
        &s("  names: [email]\n  critical_at: 1\n"),
        4,
        16,
        "at least 2",
    );
    expect_one(
        &s("  names: [email]\n  selector_keys: [fields, Fields]\n"),
        4,
        27,
        "duplicate selector key",
    );
    expect_one(
        &s("  names: [email]\n  selector_keys: [\"\"]\n"),
        4,
        19,
        "empty selector key",
    );
}

#[test]
fn keep_values_checks() {
    let text = "version: 1\nsensitive_fields:\n  names: [ssn*, address_*]\nredaction:\n  keep_values: [state, ssn_last4, state]\n";
    let e = errors(text);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_eq!((e[0].line, e[0].column), (5, 24));
    assert!(e[0].message.contains("matches `ssn*`"), "{}", e[0].message);
    assert!(e[0].hint.as_deref().unwrap().contains("written in clear"));
    assert_eq!((e[1].line, e[1].column), (5, 35));
    assert!(e[1].message.contains("duplicate key `state`"));
}

#[test]
fn egress_checks() {
    let g = |body: &str| format!("version: 1\negress:\n{body}");
    expect_at(
        &g("  edges:\n    - {from: \"\", to: b}\n"),
        4,
        "\"\"",
        "empty `from`",
    );
    expect_at(
        &g("  edges:\n    - {from: a, to: b, ports: [0]}\n"),
        4,
        "0]",
        "port 0",
    );
    let x = |cidr: &str| {
        g(&format!(
            "  external:\n    - name: p\n      cidrs: [{cidr}]\n"
        ))
    };
    expect_at(&x("10.0.0.0/33"), 5, "10.", "out of range");
    expect_at(&x("10.0.0.300/8"), 5, "10.", "not an IPv4 or IPv6");
    expect_at(&x("fd77::1/129"), 5, "fd77", "out of range");
    let e = errors(&x("10.77.200.1/24"));
    assert_eq!((e[0].line, e[0].column), (5, 15));
    assert!(e[0].message.contains("host bits"));
    assert!(
        e[0].hint.as_deref().unwrap().contains("`10.77.200.0/24`"),
        "{:?}",
        e[0].hint
    );
    let e = errors(&x("\"fd77::1:0/96\""));
    assert!(
        e[0].hint.as_deref().unwrap().contains("`fd77::/96`"),
        "{:?}",
        e[0].hint
    );
    for ok in [
        "10.77.200.1",
        "10.77.200.1/32",
        "0.0.0.0/0",
        "fd77::/64",
        "2001:db8::1",
    ] {
        check(&x(ok), Path::new("p")).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    expect_at(
        &g("  external:\n    - {name: p, cidrs: []}\n"),
        4,
        "[]",
        "no address range",
    );
    expect_at(
        &g(
            "  external:\n    - {name: p, cidrs: [10.0.0.0/8]}\n    - {name: p, cidrs: [10.0.0.0/8]}\n",
        ),
        5,
        "p,",
        "duplicate external destination `p`",
    );
    expect_at(
        &g("  external:\n    - {name: \" \", cidrs: [10.0.0.0/8]}\n"),
        4,
        "\" \"",
        "empty name",
    );
}

#[test]
fn quarantine_checks() {
    expect_one(
        "version: 1\nquarantine:\n  network_policies: false\n",
        2,
        1,
        "selects nothing",
    );
    expect_one(
        "version: 1\nquarantine:\n  pods: [vantage/svc-x-04, Bad/x]\n",
        3,
        28,
        "not a namespace name",
    );
    expect_one(
        "version: 1\nquarantine:\n  pods: [\"a/b/c\"]\n",
        3,
        10,
        "more than one `/`",
    );
    expect_one(
        "version: 1\nquarantine:\n  pods: [\"-x\"]\n",
        3,
        10,
        "not a pod name",
    );
    check(
            "version: 1\nquarantine:\n  pods: [vantage/svc-recommendation-engine-04, x.y]\n  network_policies: false\n",
            Path::new("p"),
        )
        .unwrap();
}

#[test]
fn baseline_and_aggregation_checks() {
    let b = |body: &str| format!("version: 1\nbaselines:\n{body}");
    expect_at(
        &b("  response_size: {factor: 1}\n"),
        3,
        "1}",
        "greater than 1",
    );
    expect_at(
        &b("  response_size: {factor: .inf}\n"),
        3,
        ".inf",
        "greater than 1",
    );
    expect_at(
        &b("  response_size: {factor: 9, min_samples: 0}\n"),
        3,
        "0}",
        "`min_samples` must be at least 1",
    );
    expect_at(&b("  rate: {factor: 0.5}\n"), 3, "0.5", "greater than 1");
    expect_at(
        &b("  rate: {factor: 10, min_minutes: 0}\n"),
        3,
        "0}",
        "`min_minutes`",
    );
    expect_at(
        &b("  new_edges: {learn_seconds: 0}\n"),
        3,
        "0}",
        "`learn_seconds`",
    );
    expect_at(
        "version: 1\naggregation: {window_seconds: 0}\n",
        2,
        "0}",
        "`window_seconds`",
    );
}

#[test]
fn reports_every_error_in_one_run() {
    let text = "\
version: 2
protected_prefixes: [/internal]
endpoints:
  - path: /internal/X
    services: []
    callers: [self]
  - path: /internal/y
    services: [a]
    callers: [selff]
  - path: /internal/z
    services: [a]
    methods: [get]
    callers: [self]
    colour: blue
sensitive_fields:
  names: [ssn*]
  critical_at: nope
egress:
  edges:
    - {from: a, to: b, ports: [99999]}
    - {from: a, to: b, ports: [0]}
  external:
    - {name: p, cidrs: [10.1.2.3/8]}
quarantine:
  pods: [UPPER]
baselines:
  rate: {factor: 1}
";
    let e = errors(text);
    let got: Vec<(usize, usize)> = e.iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(
        got,
        [
            (1, 10),  // version 2
            (2, 22),  // prefix without trailing /
            (4, 11),  // uppercase path
            (5, 15),  // no services
            (9, 15),  // unknown caller keyword
            (12, 15), // lowercase method
            (14, 5),  // unknown field colour
            (17, 16), // critical_at not a number
            (20, 32), // port out of u16
            (21, 32), // port 0
            (23, 25), // host bits
            (25, 10), // pod name
            (27, 18), // factor
        ],
        "{e:#?}"
    );
    // In file order, each once.
    let shown = PolicyErrors(e).to_string();
    assert_eq!(shown.matches("p.yaml:").count(), 13, "{shown}");
}

#[test]
fn a_structural_error_does_not_hide_the_rest_of_its_section() {
    // A bad optional field takes its default; the section's other checks still run.
    let e = errors("version: 1\nquarantine:\n  mode: enforced\n  pods: [UPPER]\n");
    let got: Vec<(usize, usize)> = e.iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(got, [(3, 9), (4, 10)], "{e:#?}");
    // A bad required field is reported once (not again as missing), and its endpoint set
    // aside; the next endpoint is still checked.
    let text = format!(
        "{HEAD}endpoints:\n  - {{path: /internal/x, services: [a], callers: 5}}\n  - {{path: /internal/Y, services: [a], callers: [self]}}\n"
    );
    let e = errors(&text);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(
        e[0].message
            .contains("invalid type: integer `5`, expected a sequence")
    );
    assert!(
        e[1].message.starts_with("endpoints[1].path:"),
        "{}",
        e[1].message
    );
    // A mapping missing a required field is set aside, not its whole section.
    let e = errors(
        "version: 1\nbaselines:\n  rate: {min_minutes: 3}\n  new_edges: {learn_seconds: 0}\n",
    );
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e[0].message.contains("missing field `factor`"));
    assert!(e[1].message.contains("`learn_seconds` must be at least 1"));
}

#[test]
fn aliases_and_anchors_resolve() {
    let text = format!(
        "{HEAD}x-callers: &c [self]\nendpoints:\n  - {{path: /internal/x, services: [a], callers: *c}}\n"
    );
    // `x-callers` is not a field: reported, and the alias still resolves for the endpoint.
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(e[0].message.contains("unknown field `x-callers`"));
}

#[test]
fn summary_of_a_checked_policy() {
    let (spec, _) = check(VANTAGE, Path::new("p")).unwrap();
    let s = spec.summary();
    assert!(s.contains("3 endpoints"), "{s}");
    assert!(s.contains("1 external"), "{s}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// Any edit of a valid policy is either accepted or rejected with positioned
    /// diagnostics inside the file; never a panic.
    #[test]
    fn edits_never_panic_and_errors_are_positioned(
        start in 0..VANTAGE.len(),
        len in 0usize..40,
        insert in "[ -~\n\t\u{e9}]{0,12}",
    ) {
        let mut text = VANTAGE.to_owned();
        let start = (0..=start).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        let end = (start + len).min(text.len());
        let end = (end..=text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
        text.replace_range(start..end, &insert);
        let lines = text.lines().count().max(1);
        if let Err(e) = check(&text, Path::new("p")) {
            proptest::prop_assert!(!e.0.is_empty());
            for d in &e.0 {
                proptest::prop_assert!(d.line >= 1 && d.line <= lines + 1, "{d}");
                proptest::prop_assert!(d.column >= 1, "{d}");
            }
        }
    }

    /// Arbitrary short YAML-ish text never panics.
    #[test]
    fn arbitrary_text_never_panics(text in "[a-z_:\\[\\]{}, \n\\-*&!|>'\"#0-9./%?]{0,200}") {
        let _ = check(&text, Path::new("p"));
    }
}

#[test]
fn glob_and_cidr_helpers() {
    assert!(glob_match("ssn*", "ssn_last4"));
    assert!(glob_match("address_*", "address_"));
    assert!(glob_match("card*", "card"));
    assert!(glob_match("?ob", "dob"));
    assert!(!glob_match("address_*", "state"));
    assert!(!glob_match("email", "emails"));
    assert!(glob_match("*mail*", "e_mail_x"));
    assert_eq!(normalised("/a//b/./c/../d"), "/a/b/d");
    assert_eq!(
        closest("endpoint", &["endpoints", "egress"]),
        Some("endpoints")
    );
    assert_eq!(closest("zzz", &["endpoints"]), None);
}

#[test]
fn bad_fixtures_fail_with_positions() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../tests/fixtures/policy");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            n += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            let e = check(&text, &path).expect_err(&path.display().to_string());
            assert!(e.0.iter().all(|d| d.line > 0 && d.column > 0), "{e}");
        }
    }
    assert!(n >= 5, "{n} fixtures in {}", dir.display());
}
