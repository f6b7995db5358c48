//! Structural errors: [`DeError`], serde's error type for the positioned deserializer, with a
//! hint for each kind of mistake (a quoted number, a missing field and an example of it, a
//! misspelt field or value and what was probably meant, an unknown caller and how to write one).

use std::fmt;

use serde::de;

use super::{
    problem::{Pos, Seg},
    tree::{Kind, Node, kind_name},
};

/// What a [`DeError`] is about, for recovery.
#[derive(Debug, Clone)]
pub(super) enum ErrKind {
    /// A bad value.
    Other,
    /// A missing required field.
    Missing(&'static str),
    /// An unknown field, and the field it probably is.
    Unknown { suggestion: Option<&'static str> },
}

/// A serde error with, once known, the position and path of the node it is about.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(super) struct DeError {
    /// What is wrong.
    pub(super) message: String,
    /// How to fix it.
    pub(super) hint: Option<String>,
    /// What it is about.
    pub(super) kind: ErrKind,
    /// The node it is about, once known: the innermost deserializer that sees it sets it.
    pub(super) at: Option<(Pos, Vec<Seg>)>,
}

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
    /// Sets the node the error is about, unless already set (by a node deeper down).
    pub(super) fn locate(mut self, pos: Pos, path: &[Seg]) -> Self {
        if self.at.is_none() {
            self.at = Some((pos, path.to_vec()));
        }
        self
    }
}

/// `` `a` ``, `` `a` or `b` ``, `` one of `a`, `b`, `c` ``: for messages.
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
pub(super) fn closest(word: &str, candidates: &[&'static str]) -> Option<&'static str> {
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

/// Levenshtein distance, in characters.
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

/// Locates an error raised after the node's own deserializer returned (by the type's
/// `Deserialize` impl), and replaces serde's message about an untagged
/// [`Caller`](crate::schema::Caller) with what is wrong with the caller.
pub(super) fn explain(e: DeError, node: &Node, path: &[Seg]) -> DeError {
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
