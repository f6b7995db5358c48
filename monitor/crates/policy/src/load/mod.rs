//! Loading a policy file: parsing with positions, reading the typed [`PolicyFile`] while
//! recovering from errors, and every semantic check, so that one run reports every problem as a
//! [`Diagnostic`](crate::Diagnostic) with its file, line and column. [`check`] is the entry point
//! ([`Policy::load`](crate::Policy::load) and [`Policy::parse`](crate::Policy::parse) call it);
//! printing the diagnostics is the caller's business (`monitor policy lint`).
//!
//! A file is checked in three steps, one or two files each:
//!
//! 1. **Syntax** (`tree`): `saphyr-parser` turns the text into events with positions, from which
//!    a small tree of YAML nodes is built, and an index from each node's path to its position. A
//!    syntax error stops here.
//! 2. **Structure** (`decode`, over `de`, `error` and `scalar`): the typed [`PolicyFile`] is read
//!    with serde from that tree, through a deserializer that knows where each node is, so every
//!    type error, unknown field and missing field points at its node, with a hint. After an
//!    error the node is set aside and the file is read again, so every bad endpoint, edge,
//!    caller... is reported, not just the first.
//! 3. **Semantics** (`checks`, with the value rules in `validate`): the checks run on the
//!    typed value and look positions up by path (`endpoints[2].callers[0]`). No set-aside node
//!    causes a second, false error.
//!
//! `problem` holds what the steps share: positions, paths and the problem not yet tied to a file.

mod checks;
mod de;
mod decode;
mod error;
mod problem;
mod scalar;
mod tree;
mod validate;

use std::{
    collections::{BTreeMap, HashSet},
    path::Path,
};

use self::{
    problem::Problem,
    tree::{Index, Kind, TreeError, build_tree, kind_name, syntax_problem},
};
use crate::{PolicyErrors, schema::PolicyFile};

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
        Kind::Map(_) => decode::decode(&root.node, &mut problems),
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
        problems.extend(checks::run(&index, decoded));
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

#[cfg(test)]
mod tests;
