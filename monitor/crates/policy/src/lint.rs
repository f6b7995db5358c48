//! Parsing a policy file with positions, and every semantic check.
//!
//! How a file is checked, so that one run reports every problem:
//!
//! 1. **Syntax**: `saphyr-parser` turns the text into events with positions, from which a small
//!    tree of YAML nodes is built (`Node`). A syntax error stops here; it is reported with the
//!    position and message of `serde_yaml_ng`'s parser (the one the rest of the project uses),
//!    or `saphyr`'s when only that one rejects the text.
//! 2. **Structure**: the typed [`PolicyFile`] is read with serde from that tree, through a
//!    deserializer that knows where each node is, so every type error, unknown field and missing
//!    field points at its node (the value; the key for an unknown field; the key holding the
//!    mapping for a missing field). After an error the node is set aside and the file is read
//!    again: an optional field takes its default, a list element is skipped, a mapping that
//!    lacks a required field is set aside in turn. So every bad endpoint, edge, caller... is
//!    reported, not just the first, and the rest of each section is still checked.
//! 3. **Semantics**: the checks run on the typed value and look positions up by path
//!    (`endpoints[2].callers[0]`). A section replaced by its default is not checked; list
//!    indexes are mapped back to the file's around skipped elements; checks across sections
//!    only use sections read whole. No set-aside node causes a second, false error.
//!
//! [`lint_files`] is `monitor policy lint`: the report formatting lives here, not in `main.rs`.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    fmt,
    io::{self, Write},
    net::IpAddr,
    path::{Path, PathBuf},
};

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span, StrInput};
use serde::Deserialize as _;
use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer as _, MapAccess, SeqAccess, Visitor,
};

use super::pattern::{glob_match, network};
use super::{
    Diagnostic, Policy, PolicyErrors,
    schema::{Caller, CallerSelector, PolicyFile},
};

/// Parses and checks `text`; on success also returns the line of each rule, keyed by its path
/// in the file.
///
/// Every node of the file has an entry: sections (`"quarantine"`, `"sensitive_fields"`,
/// `"baselines.rate"`), list elements (`"endpoints[2]"`, `"egress.edges[0]"`,
/// `"protected_prefixes[0]"`, `"quarantine.pods[1]"`) and their fields
/// (`"endpoints[2].callers[0]"`). A mapping entry's line is its key's; a list element's is the
/// line where it starts.
///
/// On failure, every problem found is returned, in file order.
pub fn check(
    text: &str,
    path: &Path,
) -> Result<(PolicyFile, BTreeMap<String, usize>), PolicyErrors> {
    let to_diags = |problems: Vec<Problem>| {
        PolicyErrors(
            problems
                .into_iter()
                .map(|p| p.into_diagnostic(path))
                .collect(),
        )
    };
    let root = match build_tree(text) {
        Ok(root) => root,
        Err(TreeError::Syntax(e)) => return Err(to_diags(vec![syntax_problem(text, &e)])),
        Err(TreeError::Other(p)) => return Err(to_diags(vec![p])),
    };
    let index = Index::new(&root.node);
    let mut problems = root.problems;
    let spec = match &root.node.kind {
        Kind::Map(_) => decode(&root.node, &mut problems),
        Kind::Scalar { text, .. } if text.trim().is_empty() => {
            problems.push(Problem::new(
                root.node.pos,
                "",
                "the policy file is empty",
                Some("start with `version: 1`; docs/policy.md describes every section".into()),
            ));
            None
        }
        other => {
            problems.push(Problem::new(
                root.node.pos,
                "",
                format!(
                    "a policy is a mapping of sections (`version`, `protected_prefixes`, \
                     `endpoints`, ...), not {}",
                    kind_name(other)
                ),
                Some("start with `version: 1`; docs/policy.md describes every section".into()),
            ));
            None
        }
    };
    if let Some(decoded) = &spec {
        let mut checker = Checker {
            index: &index,
            decoded,
            out: Vec::new(),
        };
        checker.run(&decoded.spec);
        problems.extend(checker.out);
    }
    if spec.is_none() && problems.is_empty() {
        problems.push(Problem::new(
            root.node.pos,
            "",
            "the policy could not be read",
            Some("please report this file: the linter found no specific problem".into()),
        ));
    }
    match spec {
        Some(decoded) if problems.is_empty() => Ok((decoded.spec, index.lines())),
        _ => {
            // File order; the same problem found twice (once per read) is reported once.
            problems.sort_by_key(|p| p.pos);
            let mut seen = HashSet::new();
            problems.retain(|p| seen.insert((p.pos, p.path.clone(), p.message.clone())));
            Err(to_diags(problems))
        }
    }
}

/// `monitor policy lint FILE...`: checks each file, prints every diagnostic to `err` followed by
/// a `FILE: N error(s)` line, and `FILE: ok (summary)` to `out` for each clean file. Returns
/// `true` when every file is clean.
pub fn lint_files(files: &[PathBuf], out: &mut dyn Write, err: &mut dyn Write) -> io::Result<bool> {
    let mut clean = true;
    for file in files {
        match Policy::load(file) {
            Ok(policy) => writeln!(out, "{}: ok ({})", file.display(), summary(&policy.spec))?,
            Err(errors) => {
                clean = false;
                for d in &errors.0 {
                    writeln!(err, "{d}")?;
                }
                let n = errors.0.len();
                writeln!(
                    err,
                    "{}: {n} error{}",
                    file.display(),
                    if n == 1 { "" } else { "s" }
                )?;
            }
        }
    }
    Ok(clean)
}

/// A one-line summary of a checked policy: `3 endpoints, 5 edges, 1 external, ...`.
pub fn summary(spec: &PolicyFile) -> String {
    fn n(count: usize, what: &str) -> String {
        format!("{count} {what}{}", if count == 1 { "" } else { "s" })
    }
    let mut parts = vec![
        n(spec.protected_prefixes.len(), "protected prefix"),
        n(spec.endpoints.len(), "endpoint"),
    ];
    let (edges, external) = spec
        .egress
        .as_ref()
        .map_or((0, 0), |e| (e.edges.len(), e.external.len()));
    parts.push(n(edges, "edge"));
    parts.push(format!("{external} external"));
    parts.push(n(
        spec.sensitive_fields.as_ref().map_or(0, |s| s.names.len()),
        "sensitive name",
    ));
    parts.push(format!(
        "{} kept query value{}",
        spec.redaction.keep_values.len(),
        if spec.redaction.keep_values.len() == 1 {
            ""
        } else {
            "s"
        }
    ));
    match &spec.quarantine {
        Some(q) => {
            let mut what = vec![n(q.pods.len(), "pod")];
            if !q.selector.is_empty() {
                what.push("a label selector".into());
            }
            if q.network_policies {
                what.push("deny-all NetworkPolicies".into());
            }
            let mode = match q.mode {
                super::schema::QuarantineMode::Observe => "observe",
                super::schema::QuarantineMode::Enforce => "enforce",
            };
            parts.push(format!("quarantine {mode}: {}", what.join(" + ")));
        }
        None => parts.push("no quarantine".into()),
    }
    let baselines: Vec<&str> = spec.baselines.as_ref().map_or_else(Vec::new, |b| {
        [
            (b.response_size.is_some(), "response-size"),
            (b.rate.is_some(), "rate"),
            (b.new_edges.is_some(), "new-edges"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    });
    parts.push(if baselines.is_empty() {
        "no baselines".into()
    } else {
        format!("baselines: {}", baselines.join(", "))
    });
    parts.push(format!("aggregation {}s", spec.aggregation.window_seconds));
    parts.join(", ")
}

// ------------------------------------------------------------------------------------------------
// Problems and positions

/// A 1-based position in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
struct Pos {
    line: usize,
    column: usize,
}

impl Pos {
    fn of(span: &Span) -> Self {
        Self {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

/// A diagnostic before it is tied to a file.
#[derive(Debug, Clone)]
struct Problem {
    pos: Pos,
    /// The node's path (`endpoints[0].path`), empty for the file as a whole.
    path: String,
    message: String,
    hint: Option<String>,
}

impl Problem {
    fn new(pos: Pos, path: &str, message: impl Into<String>, hint: Option<String>) -> Self {
        Self {
            pos,
            path: path.to_owned(),
            message: message.into(),
            hint,
        }
    }

    fn into_diagnostic(self, file: &Path) -> Diagnostic {
        Diagnostic {
            file: file.to_owned(),
            line: self.pos.line,
            column: self.pos.column,
            message: if self.path.is_empty() {
                self.message
            } else {
                format!("{}: {}", self.path, self.message)
            },
            hint: self.hint,
        }
    }
}

/// One step of a node's path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Seg {
    Key(String),
    Index(usize),
}

fn render(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if s.is_empty() => s.push_str(k),
            Seg::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Seg::Index(i) => {
                s.push('[');
                s.push_str(&i.to_string());
                s.push(']');
            }
        }
    }
    s
}

fn child(path: &[Seg], seg: Seg) -> Vec<Seg> {
    let mut p = path.to_vec();
    p.push(seg);
    p
}

// ------------------------------------------------------------------------------------------------
// The YAML tree

/// A YAML node with its position.
#[derive(Debug, Clone)]
struct Node {
    kind: Kind,
    pos: Pos,
}

#[derive(Debug, Clone)]
enum Kind {
    /// `plain`: unquoted (and untagged), so subject to type resolution (`1`, `true`, `~`).
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Entries in file order; duplicate keys are reported and dropped while building.
    Map(Vec<(Node, Node)>),
}

impl Node {
    fn key_text(&self) -> String {
        match &self.kind {
            Kind::Scalar { text, .. } => text.clone(),
            _ => "?".into(),
        }
    }
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Scalar { .. } => "a scalar",
        Kind::Seq(_) => "a list",
        Kind::Map(_) => "a mapping",
    }
}

/// The document's root node, and problems found while building it (duplicate keys).
#[derive(Debug)]
struct Tree {
    node: Node,
    problems: Vec<Problem>,
}

#[derive(Debug)]
enum TreeError {
    Syntax(ScanError),
    Other(Problem),
}

/// Deeper nesting than this is refused (a policy is 5 levels deep).
const MAX_DEPTH: usize = 64;
/// More nodes than this (after alias expansion) are refused: protects against alias bombs.
const MAX_NODES: usize = 200_000;

struct Builder<'a> {
    parser: Parser<'a, StrInput<'a>>,
    /// Anchored nodes and their sizes in nodes.
    anchors: HashMap<usize, (Node, usize)>,
    nodes: usize,
    problems: Vec<Problem>,
}

fn build_tree(text: &str) -> Result<Tree, TreeError> {
    let mut b = Builder {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        nodes: 0,
        problems: Vec::new(),
    };
    let empty = |pos| Node {
        kind: Kind::Scalar {
            text: String::new(),
            plain: true,
        },
        pos,
    };
    let first = Pos { line: 1, column: 1 };
    let mut root = None;
    loop {
        let (ev, span) = b.next()?;
        match ev {
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::StreamEnd => break,
            Event::DocumentStart(_) if root.is_some() => {
                return Err(TreeError::Other(Problem::new(
                    Pos::of(&span),
                    "",
                    "more than one YAML document (`---`) in the policy file",
                    Some("keep one policy per file".into()),
                )));
            }
            Event::DocumentStart(_) => {
                let (ev, span) = b.next()?;
                root = Some(if matches!(ev, Event::DocumentEnd | Event::StreamEnd) {
                    empty(Pos::of(&span))
                } else {
                    b.node(ev, span, 0)?.0
                });
            }
            _ => {
                return Err(TreeError::Other(Problem::new(
                    Pos::of(&span),
                    "",
                    "unexpected YAML event outside a document",
                    None,
                )));
            }
        }
    }
    Ok(Tree {
        node: root.unwrap_or_else(|| empty(first)),
        problems: b.problems,
    })
}

impl<'a> Builder<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), TreeError> {
        match self.parser.next_event() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => Err(TreeError::Syntax(e)),
            None => Err(TreeError::Other(Problem::new(
                Pos::default(),
                "",
                "unexpected end of the YAML stream",
                None,
            ))),
        }
    }

    fn count(&mut self, n: usize, pos: Pos) -> Result<(), TreeError> {
        self.nodes += n;
        if self.nodes > MAX_NODES {
            return Err(TreeError::Other(Problem::new(
                pos,
                "",
                format!("the policy has more than {MAX_NODES} nodes (after expanding aliases)"),
                Some("a policy is a few hundred lines; check for aliases that multiply".into()),
            )));
        }
        Ok(())
    }

    /// Builds the node starting with `ev`; returns it with its size in nodes.
    fn node(
        &mut self,
        ev: Event<'a>,
        span: Span,
        depth: usize,
    ) -> Result<(Node, usize), TreeError> {
        let pos = Pos::of(&span);
        if depth > MAX_DEPTH {
            return Err(TreeError::Other(Problem::new(
                pos,
                "",
                format!("nesting deeper than {MAX_DEPTH} levels"),
                None,
            )));
        }
        self.count(1, pos)?;
        let (node, size, anchor) = match ev {
            Event::Scalar(text, style, anchor, tag) => {
                // `!!str 1` is a string; other tags are ignored.
                let plain = style == ScalarStyle::Plain
                    && !tag.as_ref().is_some_and(|t| t.suffix.ends_with("str"));
                let kind = Kind::Scalar {
                    text: text.into_owned(),
                    plain,
                };
                (Node { kind, pos }, 1, anchor)
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                let mut size = 1;
                loop {
                    let (ev, span) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    let (item, n) = self.node(ev, span, depth + 1)?;
                    size += n;
                    items.push(item);
                }
                let kind = Kind::Seq(items);
                (Node { kind, pos }, size, anchor)
            }
            Event::MappingStart(anchor, _) => {
                let mut entries: Vec<(Node, Node)> = Vec::new();
                let mut size = 1;
                loop {
                    let (ev, span) = self.next()?;
                    if matches!(ev, Event::MappingEnd) {
                        break;
                    }
                    let (key, n) = self.node(ev, span, depth + 1)?;
                    size += n;
                    let (ev, span) = self.next()?;
                    let (value, n) = self.node(ev, span, depth + 1)?;
                    size += n;
                    let text = key.key_text();
                    if let Some((first, _)) = entries.iter().find(|(k, _)| {
                        matches!(k.kind, Kind::Scalar { .. }) && k.key_text() == text
                    }) {
                        self.problems.push(Problem::new(
                            key.pos,
                            "",
                            format!("duplicate key `{text}` (first at line {})", first.pos.line),
                            Some("a key may appear once per mapping; merge the two".into()),
                        ));
                        continue;
                    }
                    entries.push((key, value));
                }
                let kind = Kind::Map(entries);
                (Node { kind, pos }, size, anchor)
            }
            Event::Alias(id) => {
                let Some((node, size)) = self.anchors.get(&id).cloned() else {
                    return Err(TreeError::Other(Problem::new(
                        pos,
                        "",
                        "alias to an unknown anchor",
                        None,
                    )));
                };
                self.count(size, pos)?;
                return Ok((node, size));
            }
            _ => {
                return Err(TreeError::Other(Problem::new(
                    pos,
                    "",
                    "unexpected YAML event",
                    None,
                )));
            }
        };
        if anchor > 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        Ok((node, size))
    }
}

/// A syntax error, with `serde_yaml_ng`'s message and position when it rejects the text too.
fn syntax_problem(text: &str, e: &ScanError) -> Problem {
    let hint = Some(
        "check the indentation (spaces, not tabs) and the quoting around this position; values \
         containing `: `, `#`, `[`, `{` or starting with `*`, `&`, `!` need quotes"
            .into(),
    );
    if let Err(se) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text)
        && let Some(loc) = se.location()
    {
        let mut message = se.to_string();
        let at = format!(" at line {} column {}", loc.line(), loc.column());
        if let Some(i) = message.find(&at) {
            message.replace_range(i..i + at.len(), "");
        }
        return Problem::new(
            Pos {
                line: loc.line(),
                column: loc.column(),
            },
            "",
            format!("YAML syntax error: {message}"),
            hint,
        );
    }
    let m = e.marker();
    Problem::new(
        Pos {
            line: m.line(),
            column: m.col() + 1,
        },
        "",
        format!("YAML syntax error: {}", e.info()),
        hint,
    )
}

/// Where every node is: path → (key position for mapping entries, value position).
#[derive(Debug)]
struct Index {
    nodes: HashMap<String, (Option<Pos>, Pos)>,
}

impl Index {
    fn new(root: &Node) -> Self {
        fn walk(
            node: &Node,
            path: &[Seg],
            key: Option<Pos>,
            out: &mut HashMap<String, (Option<Pos>, Pos)>,
        ) {
            if !path.is_empty() {
                out.insert(render(path), (key, node.pos));
            }
            match &node.kind {
                Kind::Scalar { .. } => {}
                Kind::Seq(items) => {
                    for (i, item) in items.iter().enumerate() {
                        walk(item, &child(path, Seg::Index(i)), None, out);
                    }
                }
                Kind::Map(entries) => {
                    for (k, v) in entries {
                        walk(v, &child(path, Seg::Key(k.key_text())), Some(k.pos), out);
                    }
                }
            }
        }
        let mut nodes = HashMap::new();
        walk(root, &[], None, &mut nodes);
        Self { nodes }
    }

    /// Each node's line: its key's for mapping entries, its own for list elements.
    fn lines(&self) -> BTreeMap<String, usize> {
        self.nodes
            .iter()
            .map(|(p, (k, v))| (p.clone(), k.unwrap_or(*v).line))
            .collect()
    }

    /// The position of `path`'s value, or (when it is absent: a default) of its nearest
    /// ancestor's key.
    fn value(&self, path: &str) -> Pos {
        match self.nodes.get(path) {
            Some((_, v)) => *v,
            None => self.key(path),
        }
    }

    /// The position of `path`'s key (its value for a list element), or of its nearest ancestor.
    fn key(&self, path: &str) -> Pos {
        let mut p = path;
        loop {
            if let Some((k, v)) = self.nodes.get(p) {
                return k.unwrap_or(*v);
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return Pos { line: 1, column: 1 },
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Structure: serde over the tree

/// What was read: the typed policy (partial when something was set aside) and what was set aside.
#[derive(Debug)]
struct Decoded {
    spec: PolicyFile,
    /// Paths set aside (rendered): list elements and unknown keys are absent from `spec`.
    masks: HashSet<String>,
    /// Top-level sections replaced by their default (or `version` read as 1): not checked.
    dirty: BTreeSet<String>,
    /// Top-level sections with anything set aside: not used by checks across sections.
    partial: BTreeSet<String>,
}

/// Reads the typed policy, setting aside what fails and reading again, until it reads or nothing
/// more can be set aside.
fn decode(root: &Node, problems: &mut Vec<Problem>) -> Option<Decoded> {
    let mut ctx = Ctx::default();
    // Unknown keys set aside, per mapping, with the field they probably meant.
    let mut typos: HashSet<(Vec<Seg>, &'static str)> = HashSet::new();
    for _ in 0..1000 {
        let de = De {
            node: root,
            path: Vec::new(),
            key_pos: None,
            ctx: &ctx,
        };
        let e = match PolicyFile::deserialize(de) {
            Ok(spec) => {
                let top = |p: &Vec<Seg>| match p.first() {
                    Some(Seg::Key(k)) => Some(k.clone()),
                    _ => None,
                };
                let mut dirty: BTreeSet<String> = ctx
                    .masks
                    .iter()
                    .filter(|p| p.len() == 1)
                    .filter_map(top)
                    .collect();
                if ctx.synth_version {
                    dirty.insert("version".into());
                }
                return Some(Decoded {
                    spec,
                    masks: ctx.masks.iter().map(|p| render(p)).collect(),
                    dirty,
                    partial: ctx.masks.iter().filter_map(top).collect(),
                });
            }
            Err(e) => e,
        };
        let (pos, path) = e.at.clone().unwrap_or((root.pos, Vec::new()));
        // A missing field that was there but set aside (or misspelt) was already reported.
        let suppressed = match e.kind {
            ErrKind::Missing(f) => {
                typos.contains(&(path.clone(), f))
                    || ctx.masks.contains(&child(&path, Seg::Key(f.into())))
            }
            _ => false,
        };
        if let ErrKind::Unknown {
            suggestion: Some(s),
        } = e.kind
        {
            typos.insert((path[..path.len().saturating_sub(1)].to_vec(), s));
        }
        if !suppressed {
            problems.push(Problem::new(pos, &render(&path), e.message, e.hint));
        }
        // Set aside the node the error is about (for a missing field: the mapping lacking it).
        // An optional field then takes its default; a required one makes its mapping miss it,
        // which sets the mapping aside in turn on the next read, and so on up to a list element
        // or a section.
        if path == [Seg::Key("version".into())]
            || (path.is_empty() && matches!(e.kind, ErrKind::Missing("version")))
        {
            if ctx.synth_version {
                return None; // no progress
            }
            ctx.synth_version = true;
        } else if path.is_empty() || !ctx.masks.insert(path) {
            return None; // the root itself, or no progress
        }
    }
    None
}

#[derive(Debug, Default)]
struct Ctx {
    /// Nodes set aside (skipped as if absent).
    masks: HashSet<Vec<Seg>>,
    /// Read `version: 1` in place of a missing or bad `version` (to check the rest).
    synth_version: bool,
}

#[derive(Debug, Clone)]
enum ErrKind {
    Other,
    Missing(&'static str),
    Unknown { suggestion: Option<&'static str> },
}

/// A serde error with, once known, the position and path of the node it is about.
#[derive(Debug)]
struct DeError {
    message: String,
    hint: Option<String>,
    kind: ErrKind,
    at: Option<(Pos, Vec<Seg>)>,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        let message = msg.to_string();
        let hint = if message.contains("expected u16") {
            Some("ports are numbers from 1 to 65535".into())
        } else if message.starts_with("invalid type: string")
            && ["u8", "u16", "u32", "u64", "usize", "f64"]
                .iter()
                .any(|t| message.ends_with(&format!("expected {t}")))
        {
            Some("write the number without quotes".into())
        } else if message.ends_with("expected a sequence") {
            Some("write a list: `[a, b]`, or one `- item` per line".into())
        } else if message.contains("expected a boolean") {
            Some("write `true` or `false`".into())
        } else {
            None
        };
        Self {
            message,
            hint,
            kind: ErrKind::Other,
            at: None,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        let example = match field {
            "version" => "`version: 1` at the top of the file".to_owned(),
            "callers" => "`callers: [self]` (and who else may call it)".to_owned(),
            "services" => {
                "`services: [svc-name]`, or `services: [\"*\"]` for every service".to_owned()
            }
            "path" => "`path: /internal/...`".to_owned(),
            "names" => "`names: [ssn*, email]`".to_owned(),
            "factor" => "`factor: 9`".to_owned(),
            "learn_seconds" => "`learn_seconds: 300`".to_owned(),
            "cidrs" => "`cidrs: [203.0.113.0/24]`".to_owned(),
            other => format!("`{other}:`"),
        };
        Self {
            message: format!("missing field `{field}`"),
            hint: Some(format!(
                "add {example}; docs/policy.md describes every field"
            )),
            kind: ErrKind::Missing(field),
            at: None,
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let suggestion = closest(field, expected);
        let hint = match suggestion {
            Some(s) => format!("did you mean `{s}`?"),
            None => "remove it, or check its indentation: it may belong to another section".into(),
        };
        Self {
            message: format!("unknown field `{field}`, expected {}", one_of(expected)),
            hint: Some(hint),
            kind: ErrKind::Unknown { suggestion },
            at: None,
        }
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Self {
            message: format!("unknown value `{variant}`, expected {}", one_of(expected)),
            hint: closest(variant, expected).map(|s| format!("did you mean `{s}`?")),
            kind: ErrKind::Other,
            at: None,
        }
    }
}

impl DeError {
    fn locate(mut self, pos: Pos, path: &[Seg]) -> Self {
        if self.at.is_none() {
            self.at = Some((pos, path.to_vec()));
        }
        self
    }
}

fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.as_slice() {
        [] => "none".into(),
        [one] => one.clone(),
        [a, b] => format!("{a} or {b}"),
        all => format!("one of {}", all.join(", ")),
    }
}

/// The candidate within edit distance 2 (or containing it, contained in it, or sharing its first
/// five characters), if any.
fn closest(word: &str, candidates: &[&'static str]) -> Option<&'static str> {
    let w = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&w, c), *c))
        .filter(|(d, c)| {
            *d <= 2
                || (w.len() >= 3 && (c.contains(&w) || w.contains(c)))
                || w.get(..5).is_some_and(|p| c.starts_with(p))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Deserializes one node.
#[derive(Debug)]
struct De<'a> {
    node: &'a Node,
    path: Vec<Seg>,
    /// The key holding this node, when it is a mapping entry's value.
    key_pos: Option<Pos>,
    ctx: &'a Ctx,
}

impl De<'_> {
    /// Errors are about this node; a missing field is about the key holding it.
    fn locate(&self, e: DeError) -> DeError {
        let pos = match e.kind {
            ErrKind::Missing(_) => self.key_pos.unwrap_or(self.node.pos),
            _ => self.node.pos,
        };
        e.locate(pos, &self.path)
    }

    fn is_null(&self) -> bool {
        matches!(&self.node.kind, Kind::Scalar { text, plain: true }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    fn is_empty_plain(&self) -> bool {
        matches!(&self.node.kind, Kind::Scalar { text, plain: true } if text.is_empty())
    }

    fn seq<'de, V: Visitor<'de>>(&self, items: &[Node], v: V) -> Result<V::Value, DeError> {
        v.visit_seq(SeqAcc {
            items: items.iter().enumerate(),
            path: &self.path,
            ctx: self.ctx,
        })
    }

    fn map<'de, V: Visitor<'de>>(
        &self,
        entries: &[(Node, Node)],
        v: V,
    ) -> Result<V::Value, DeError> {
        let root = self.path.is_empty();
        v.visit_map(MapAcc {
            entries: entries.iter(),
            path: &self.path,
            ctx: self.ctx,
            pending: None,
            synth: (root && self.ctx.synth_version).then(synthetic_version),
            saw_version: false,
        })
    }
}

fn synthetic_version() -> (Node, Node) {
    let scalar = |t: &str| Node {
        kind: Kind::Scalar {
            text: t.into(),
            plain: true,
        },
        pos: Pos { line: 1, column: 1 },
    };
    (scalar("version"), scalar("1"))
}

/// YAML 1.2 core-schema resolution of a plain scalar, as `serde_yaml_ng` does it.
fn visit_plain<'de, V: Visitor<'de>>(t: &str, v: V) -> Result<V::Value, DeError> {
    match t {
        "" | "~" | "null" | "Null" | "NULL" => return v.visit_unit(),
        "true" | "True" | "TRUE" => return v.visit_bool(true),
        "false" | "False" | "FALSE" => return v.visit_bool(false),
        _ => {}
    }
    if let Some(u) = parse_uint(t) {
        return v.visit_u64(u);
    }
    if let Some(rest) = t.strip_prefix('-')
        && let Some(u) = parse_uint(rest)
        && !rest.starts_with('+')
        && let Ok(i) = i64::try_from(u)
    {
        return v.visit_i64(-i);
    }
    if let Some(f) = parse_float(t) {
        return v.visit_f64(f);
    }
    v.visit_str(t)
}

fn parse_uint(t: &str) -> Option<u64> {
    let t = t.strip_prefix('+').unwrap_or(t);
    for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(rest) = t.strip_prefix(prefix) {
            return (!rest.is_empty() && rest.chars().all(|c| c.is_digit(radix)))
                .then(|| u64::from_str_radix(rest, radix).ok())
                .flatten();
        }
    }
    (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .then(|| t.parse().ok())
        .flatten()
}

fn parse_float(t: &str) -> Option<f64> {
    let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
    match unsigned {
        ".inf" | ".Inf" | ".INF" if t.starts_with('-') => return Some(f64::NEG_INFINITY),
        ".inf" | ".Inf" | ".INF" => return Some(f64::INFINITY),
        ".nan" | ".NaN" | ".NAN" if t == unsigned => return Some(f64::NAN),
        _ => {}
    }
    // [0-9]*(\.[0-9]*)?([eE][-+]?[0-9]+)? with at least one digit before the exponent.
    let (mantissa, exp) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let ok = digits(int)
        && digits(frac)
        && !(int.is_empty() && frac.is_empty())
        && exp.is_none_or(|e| {
            let e = e.strip_prefix(['+', '-']).unwrap_or(e);
            !e.is_empty() && digits(e)
        });
    if !ok {
        return None;
    }
    t.parse::<f64>().ok().filter(|f| f.is_finite())
}

impl<'de> Deserializer<'de> for De<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let r = match &self.node.kind {
            Kind::Scalar { text, plain: true } => visit_plain(text, v),
            Kind::Scalar { text, plain: false } => v.visit_str(text),
            Kind::Seq(items) => self.seq(items, v),
            Kind::Map(entries) => self.map(entries, v),
        };
        r.map_err(|e| self.locate(e))
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Scalar { text, .. } => v.visit_str(text).map_err(|e| self.locate(e)),
            _ => self.deserialize_any(v),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let r = if self.is_null() {
            v.visit_none()
        } else {
            let (pos, path) = (self.node.pos, self.path.clone());
            return v.visit_some(self).map_err(|e| e.locate(pos, &path));
        };
        r.map_err(|e| self.locate(e))
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        if self.is_null() {
            v.visit_unit().map_err(|e| self.locate(e))
        } else {
            self.deserialize_any(v)
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        let (pos, path) = (self.node.pos, self.path.clone());
        v.visit_newtype_struct(self)
            .map_err(|e| e.locate(pos, &path))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        if self.is_empty_plain() {
            return self.seq(&[], v).map_err(|e| self.locate(e));
        }
        self.deserialize_any(v)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        if self.is_empty_plain() {
            return self.map(&[], v).map_err(|e| self.locate(e));
        }
        self.deserialize_any(v)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Scalar { text, .. } => {
                let access: de::value::StrDeserializer<'_, DeError> =
                    text.as_str().into_deserializer();
                v.visit_enum(access).map_err(|e| self.locate(e))
            }
            _ => self.deserialize_any(v),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf
    }
}

#[derive(Debug)]
struct SeqAcc<'a> {
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
    path: &'a [Seg],
    ctx: &'a Ctx,
}

impl<'de> SeqAccess<'de> for SeqAcc<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        for (i, node) in self.items.by_ref() {
            let path = child(self.path, Seg::Index(i));
            if self.ctx.masks.contains(&path) {
                continue;
            }
            let de = De {
                node,
                path: path.clone(),
                key_pos: None,
                ctx: self.ctx,
            };
            return seed
                .deserialize(de)
                .map(Some)
                .map_err(|e| explain(e, node, &path));
        }
        Ok(None)
    }
}

#[derive(Debug)]
struct MapAcc<'a> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    path: &'a [Seg],
    ctx: &'a Ctx,
    /// The value whose key was just read, its path and its key's position.
    pending: Option<(&'a Node, Vec<Seg>, Pos)>,
    /// The root's stand-in `version: 1`, read after the entries.
    synth: Option<(Node, Node)>,
    saw_version: bool,
}

impl<'de> MapAccess<'de> for MapAcc<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        for (k, v) in self.entries.by_ref() {
            let path = child(self.path, Seg::Key(k.key_text()));
            if self.ctx.masks.contains(&path)
                || (self.synth.is_some() && path == [Seg::Key("version".into())])
            {
                continue;
            }
            self.pending = Some((v, path.clone(), k.pos));
            let de = De {
                node: k,
                path: path.clone(),
                key_pos: None,
                ctx: self.ctx,
            };
            return seed
                .deserialize(de)
                .map(Some)
                .map_err(|e| e.locate(k.pos, &path));
        }
        if let Some((k, _)) = &self.synth
            && !self.saw_version
        {
            self.saw_version = true;
            let name = k.key_text();
            return seed
                .deserialize(name.as_str().into_deserializer())
                .map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        if let Some((value, path, key_pos)) = self.pending.take() {
            let de = De {
                node: value,
                path: path.clone(),
                key_pos: Some(key_pos),
                ctx: self.ctx,
            };
            return seed.deserialize(de).map_err(|e| explain(e, value, &path));
        }
        // The synthetic `version: 1`.
        let (_, v) = self
            .synth
            .as_ref()
            .ok_or_else(|| <DeError as de::Error>::custom("internal error: value without a key"))?;
        let de = De {
            node: v,
            path: vec![Seg::Key("version".into())],
            key_pos: None,
            ctx: self.ctx,
        };
        seed.deserialize(de)
    }
}

/// Locates an error raised after the node's own deserializer returned (by the type's
/// `Deserialize` impl), and replaces serde's message about an untagged [`Caller`] with what is
/// wrong with the caller.
fn explain(e: DeError, node: &Node, path: &[Seg]) -> DeError {
    if e.at.is_some() || !e.message.contains("untagged enum Caller") {
        return e.locate(node.pos, path);
    }
    let hint = "a caller is `self` (the same service), `node` (the node itself: kubelet probes), \
                or a mapping naming one of `service`, `namespace`, `pod`";
    let other = |message: String, hint: String, pos: Pos| DeError {
        message,
        hint: Some(hint),
        kind: ErrKind::Other,
        at: Some((pos, path.to_vec())),
    };
    match &node.kind {
        Kind::Scalar { text, .. } => {
            let lower = text.to_ascii_lowercase();
            let h = if lower == "self" || lower == "node" {
                format!("keywords are lowercase: write `{lower}`")
            } else if lower.contains("kubelet") || lower.contains("probe") || lower == "host" {
                "kubelet probes come from the node itself: write `node`".to_owned()
            } else if !text.is_empty() {
                format!("{hint}; for a service write `service: {text}`")
            } else {
                hint.to_owned()
            };
            other(format!("unknown caller `{text}`"), h, node.pos)
        }
        Kind::Seq(_) => other("a caller cannot be a list".into(), hint.into(), node.pos),
        Kind::Map(entries) => {
            const FIELDS: &[&str] = &["service", "namespace", "pod"];
            if let Some((k, _)) = entries
                .iter()
                .find(|(k, _)| !FIELDS.contains(&k.key_text().as_str()))
            {
                let word = k.key_text();
                let h = closest(&word, FIELDS)
                    .map_or_else(|| hint.to_owned(), |s| format!("did you mean `{s}`?"));
                return other(
                    format!(
                        "unknown field `{word}` in a caller, expected {}",
                        one_of(FIELDS)
                    ),
                    h,
                    k.pos,
                );
            }
            match entries
                .iter()
                .find(|(_, v)| !matches!(v.kind, Kind::Scalar { .. }))
            {
                Some((k, v)) => other(
                    format!(
                        "caller `{}` must be a name, not {}",
                        k.key_text(),
                        kind_name(&v.kind)
                    ),
                    hint.into(),
                    v.pos,
                ),
                None => other("invalid caller".into(), hint.into(), node.pos),
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Semantics

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
        let mut seen = 0;
        for i in 0.. {
            let p = format!("{list}[{i}]");
            if self.decoded.masks.contains(&p) {
                continue;
            }
            if seen == k {
                return p;
            }
            seen += 1;
        }
        unreachable!("an unbounded range ends only by returning")
    }

    /// The list at `path` is empty in the file (not merely after setting elements aside, nor
    /// set aside itself).
    fn empty_in_file(&self, path: &str) -> bool {
        !self.decoded.masks.contains(path) && !self.index.nodes.contains_key(&format!("{path}[0]"))
    }

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

    fn sensitive(&mut self, s: &super::schema::SensitiveFields) {
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

    fn egress(&mut self, e: &super::schema::Egress) {
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

    fn quarantine(&mut self, q: &super::schema::Quarantine) {
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

    fn baselines(&mut self, b: &super::schema::Baselines) {
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

/// What is wrong with a catalog path or prefix, with a hint; `None` when it is fine.
/// `subtree`: a trailing `/**` is allowed.
fn path_problem(p: &str, subtree: bool) -> Option<(String, String)> {
    if p.is_empty() {
        return Some((
            "is empty".into(),
            "write an absolute path such as `/internal/health`".into(),
        ));
    }
    if !p.starts_with('/') {
        return Some((
            format!("`{p}` does not start with `/`"),
            format!("write `/{p}`"),
        ));
    }
    if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some((
            format!(
                "`{}` contains whitespace or control characters",
                p.escape_debug()
            ),
            "request paths never contain them; remove them".into(),
        ));
    }
    if let Some(i) = p.find(['?', '#']) {
        return Some((
            format!("`{p}` contains a query or fragment (`{}`)", &p[i..i + 1]),
            format!(
                "endpoints are matched on the path alone: write `{}`",
                &p[..i]
            ),
        ));
    }
    if p.contains('\\') {
        return Some((
            format!("`{p}` contains `\\`"),
            format!(
                "requests' `\\` are read as `/` before matching: write `{}`",
                p.replace('\\', "/")
            ),
        ));
    }
    if p.contains(';') {
        return Some((
            format!("`{p}` contains `;`"),
            "path parameters (`;...`) are dropped from requests before matching, so this \
             would never match: remove them"
                .into(),
        ));
    }
    if p.contains('%') {
        return Some((
            format!("`{p}` contains `%`"),
            "requests are percent-decoded before matching: write the decoded characters".into(),
        ));
    }
    let body = if subtree {
        p.strip_suffix("/**").unwrap_or(p)
    } else {
        p
    };
    if body.contains('*') {
        return Some((
            format!("`{p}` contains `*`"),
            "only a trailing `/**` (the whole subtree) is supported, e.g. `/internal/debug/**`"
                .into(),
        ));
    }
    let fixed = normalised(body);
    let fixed = if body.len() < p.len() {
        format!("{fixed}/**")
    } else if p.ends_with('/') && !fixed.ends_with('/') {
        format!("{fixed}/")
    } else {
        fixed
    };
    if body.contains("//") {
        return Some((
            format!("`{p}` contains `//`"),
            format!("requests' `//` are collapsed before matching: write `{fixed}`"),
        ));
    }
    if body.split('/').any(|s| s == "." || s == "..") {
        return Some((
            format!("`{p}` contains a `.` or `..` segment"),
            format!("requests' dot segments are resolved before matching: write `{fixed}`"),
        ));
    }
    if p.chars().any(char::is_uppercase) {
        return Some((
            format!("`{p}` contains uppercase letters"),
            format!(
                "paths under protected prefixes are matched case-insensitively, so the case is \
                 ambiguous: write `{fixed}`"
            ),
        ));
    }
    None
}

/// A path as requests are matched: lowercase, `//` collapsed, dot segments resolved.
fn normalised(p: &str) -> String {
    let mut segs: Vec<&str> = Vec::new();
    for s in p.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    format!("/{}", segs.join("/")).to_lowercase()
}

/// The path an endpoint covers: itself, or for `/a/b/**` the subtree root `/a/b`.
fn subtree_root(p: &str) -> &str {
    p.strip_suffix("/**").unwrap_or(p)
}

/// The key duplicates are compared on: normalised, trailing `/` ignored, subtree marked.
fn subtree_key(p: &str) -> String {
    let sub = p.ends_with("/**");
    let n = normalised(subtree_root(p));
    if sub { format!("{n}/**") } else { n }
}

fn overlap(a: &[String], b: &[String]) -> bool {
    a.iter().any(|s| s == "*" || b.contains(s)) || b.iter().any(|s| s == "*")
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn glob_problem(n: &str) -> Option<(String, String)> {
    if n.is_empty() {
        return Some(("empty pattern".into(), "remove it".into()));
    }
    if n.chars().all(|c| c == '*' || c == '?') {
        return Some((
            format!("`{n}` matches every query key"),
            "name the fields: `ssn*`, `email`, `address_*`".into(),
        ));
    }
    if n.chars().any(|c| c.is_ascii_uppercase()) {
        return Some((
            format!("`{n}` contains uppercase letters"),
            format!(
                "names are matched case-insensitively: write `{}`",
                n.to_ascii_lowercase()
            ),
        ));
    }
    if let Some(c) = n
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "_-*?".contains(*c)))
    {
        return Some((
            format!("`{n}` contains `{c}`"),
            "patterns use letters, digits, `_`, `-`, and the wildcards `*` (any run) and `?` (one \
             character)"
                .into(),
        ));
    }
    None
}

/// `name` or `namespace/name`: a DNS-1123 label and a DNS-1123 subdomain.
fn pod_name_problem(p: &str) -> Option<String> {
    let (ns, name) = match p.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, p),
    };
    if let Some(ns) = ns
        && !is_dns_label(ns)
    {
        return Some(format!("`{ns}` is not a namespace name (DNS-1123 label)"));
    }
    if name.contains('/') {
        return Some(format!("`{p}` has more than one `/`"));
    }
    let subdomain = name.len() <= 253 && !name.is_empty() && name.split('.').all(is_dns_label);
    (!subdomain).then(|| format!("`{name}` is not a pod name (DNS-1123 subdomain)"))
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Checks `addr` or `addr/len`; the error and a hint (with the corrected network for host bits).
fn check_cidr(c: &str) -> Result<(), (String, String)> {
    let (addr, len) = match c.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (c, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| {
        (
            format!("`{c}`: `{addr}` is not an IPv4 or IPv6 address"),
            "write a CIDR such as `203.0.113.0/24` or `2001:db8::/32`, or a single address".into(),
        )
    })?;
    let max: u8 = if ip.is_ipv4() { 32 } else { 128 };
    let Some(len) = len else { return Ok(()) };
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= max && !len.starts_with('+'))
        .ok_or_else(|| {
            (
                format!("`{c}`: prefix length `{len}` is out of range"),
                format!(
                    "an {} prefix length is 0 to {max}",
                    if max == 32 { "IPv4" } else { "IPv6" }
                ),
            )
        })?;
    let network = network(ip, len);
    if network != ip {
        return Err((
            format!("`{c}` has host bits set"),
            format!(
                "the network is `{network}/{len}`; or write `{ip}/{max}` for the single address"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VANTAGE: &str = include_str!("../../../../deploy/examples/vantage/policy.yaml");

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
        let (spec, lines) =
            check(VANTAGE, Path::new("policy.yaml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.version, 1);
        assert_eq!(spec.endpoints.len(), 3);
        assert_eq!(spec.endpoints[2].path, "/internal/admin/cache/flush");
        assert_eq!(spec.endpoints[2].services, ["svc-product-catalog"]);
        assert_eq!(
            spec.endpoints[2].callers,
            [Caller::Keyword(
                super::super::schema::CallerKeyword::SelfService
            )]
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
        let text = format!(
            "{HEAD}endpoints:\n  - path: /internal/x\n    servics: [a]\n    callers: [self]\n"
        );
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
    fn summary_and_lint_files_output() {
        let (spec, _) = check(VANTAGE, Path::new("p")).unwrap();
        let s = summary(&spec);
        assert!(s.contains("3 endpoints"), "{s}");
        assert!(s.contains("1 external"), "{s}");
        let dir = std::env::temp_dir().join(format!("monitor-lint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.yaml");
        let bad = dir.join("bad.yaml");
        std::fs::write(&good, VANTAGE).unwrap();
        std::fs::write(&bad, "version: 3\n").unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let clean = lint_files(&[good.clone(), bad.clone()], &mut out, &mut err).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!clean);
        let out = String::from_utf8(out).unwrap();
        let err = String::from_utf8(err).unwrap();
        assert_eq!(out, format!("{}: ok ({s})\n", good.display()));
        assert!(
            err.contains(&format!(
                "{}:1:10: error: version: unsupported policy version 3",
                bad.display()
            )),
            "{err}"
        );
        assert!(
            err.ends_with(&format!("{}: 1 error\n", bad.display())),
            "{err}"
        );
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
}
