//! Problems and positions: a [`Problem`] is a diagnostic before it is tied to a file, at a
//! 1-based [`Pos`], about the node at a path made of [`Seg`]s (`endpoints[0].path`).

use std::path::Path;

use saphyr_parser::Span;

use crate::Diagnostic;

/// A 1-based position in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(super) struct Pos {
    /// 1-based line.
    pub(super) line: usize,
    /// 1-based column.
    pub(super) column: usize,
}

impl Pos {
    /// Where `span` starts.
    pub(super) fn of(span: &Span) -> Self {
        Self {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

/// A diagnostic before it is tied to a file.
#[derive(Debug, Clone)]
pub(super) struct Problem {
    /// Where it is.
    pub(super) pos: Pos,
    /// The node's path (`endpoints[0].path`), empty for the file as a whole.
    pub(super) path: String,
    /// What is wrong.
    pub(super) message: String,
    /// How to fix it.
    pub(super) hint: Option<String>,
}

impl Problem {
    /// A problem at `pos` with the node at `path` (rendered; empty for the whole file).
    pub(super) fn new(
        pos: Pos,
        path: &str,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Self {
        Self {
            pos,
            path: path.to_owned(),
            message: message.into(),
            hint,
        }
    }

    /// The diagnostic in `file`: the message is prefixed with the node's path.
    pub(super) fn into_diagnostic(self, file: &Path) -> Diagnostic {
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
pub(super) enum Seg {
    /// A mapping entry, by key.
    Key(String),
    /// A list element, by 0-based index.
    Index(usize),
}

/// `endpoints[0].path`.
pub(super) fn render(path: &[Seg]) -> String {
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

/// `path` with `seg` appended.
pub(super) fn child(path: &[Seg], seg: Seg) -> Vec<Seg> {
    let mut p = path.to_vec();
    p.push(seg);
    p
}
