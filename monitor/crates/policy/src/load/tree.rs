//! The YAML tree with positions: `saphyr-parser` events become a small tree of [`Node`]s, each
//! with its position (duplicate keys reported and dropped, aliases expanded within bounds), and
//! the [`Index`] from each node's path to its position, which is also each rule's line.
//!
//! A syntax error stops here; it is reported with the position and message of `serde_yaml_ng`'s
//! parser (the one the rest of the project uses), or `saphyr`'s when only that one rejects the
//! text.

use std::collections::{BTreeMap, HashMap};

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span, StrInput};

use super::problem::{Pos, Problem, Seg, child, render};

/// A YAML node with its position.
#[derive(Debug, Clone)]
pub(super) struct Node {
    /// What it is.
    pub(super) kind: Kind,
    /// Where it starts.
    pub(super) pos: Pos,
}

/// A node's contents.
#[derive(Debug, Clone)]
pub(super) enum Kind {
    /// A scalar's text; `plain`: unquoted (and untagged), so subject to type resolution (`1`,
    /// `true`, `~`).
    Scalar { text: String, plain: bool },
    /// Elements in file order.
    Seq(Vec<Node>),
    /// Entries in file order; duplicate keys are reported and dropped while building.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The text of a scalar key (`?` for a complex key, which no field has).
    pub(super) fn key_text(&self) -> String {
        match &self.kind {
            Kind::Scalar { text, .. } => text.clone(),
            _ => "?".into(),
        }
    }
}

/// `a scalar`, `a list`, `a mapping`: for messages.
pub(super) fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Scalar { .. } => "a scalar",
        Kind::Seq(_) => "a list",
        Kind::Map(_) => "a mapping",
    }
}

/// The document's root node, and problems found while building it (duplicate keys).
#[derive(Debug)]
pub(super) struct Tree {
    /// The root (an empty plain scalar for an empty file).
    pub(super) node: Node,
    /// Duplicate keys (each dropped from the tree).
    pub(super) problems: Vec<Problem>,
}

/// Why there is no tree.
#[derive(Debug)]
pub(super) enum TreeError {
    /// A YAML syntax error (see [`syntax_problem`]).
    Syntax(ScanError),
    /// A document the tree refuses: several documents, too deep, too many nodes...
    Other(Problem),
}

/// Deeper nesting than this is refused (a policy is 5 levels deep).
const MAX_DEPTH: usize = 64;
/// More nodes than this (after alias expansion) are refused: protects against alias bombs.
const MAX_NODES: usize = 200_000;

/// Builds the tree from the parser's events.
struct Builder<'a> {
    parser: Parser<'a, StrInput<'a>>,
    /// Anchored nodes and their sizes in nodes.
    anchors: HashMap<usize, (Node, usize)>,
    /// Nodes built so far, counting each alias's expansion.
    nodes: usize,
    problems: Vec<Problem>,
}

/// Builds the tree of the file's one document (an empty file is an empty plain scalar).
pub(super) fn build_tree(text: &str) -> Result<Tree, TreeError> {
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
pub(super) fn syntax_problem(text: &str, e: &ScanError) -> Problem {
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
pub(super) struct Index {
    /// Rendered path → (key position, value position).
    nodes: HashMap<String, (Option<Pos>, Pos)>,
}

impl Index {
    /// Indexes every node under `root`.
    pub(super) fn new(root: &Node) -> Self {
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
    pub(super) fn lines(&self) -> BTreeMap<String, usize> {
        self.nodes
            .iter()
            .map(|(p, (k, v))| (p.clone(), k.unwrap_or(*v).line))
            .collect()
    }

    /// The file has a node at `path`.
    pub(super) fn contains(&self, path: &str) -> bool {
        self.nodes.contains_key(path)
    }

    /// The position of `path`'s value, or (when it is absent: a default) of its nearest
    /// ancestor's key.
    pub(super) fn value(&self, path: &str) -> Pos {
        match self.nodes.get(path) {
            Some((_, v)) => *v,
            None => self.key(path),
        }
    }

    /// The position of `path`'s key (its value for a list element), or of its nearest ancestor.
    pub(super) fn key(&self, path: &str) -> Pos {
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
