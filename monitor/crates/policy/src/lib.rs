//! The policy: what traffic is documented and allowed, and what is a violation.
//!
//! - [`schema`]: the YAML file's types (documented in `docs/policy.md`);
//! - [`load`]: reading a file with positions, recovering from errors, and every semantic check,
//!   as [`Diagnostic`]s;
//! - [`path`]: request-target normalisation (the evasion-resistant view of a path);
//! - [`pattern`]: field-name globs and address ranges;
//! - [`engine`]: evaluation of one HTTP exchange or flow against a loaded [`Policy`];
//! - [`aggregate`]: aggregation of repeated violations per window.
//!
//! Depends only on the vocabulary (`monitor-record`): the violation record itself, query
//! redaction and identities live there.

pub mod aggregate;
pub mod engine;
pub mod load;
pub mod path;
pub mod pattern;
pub mod schema;

use std::{
    fmt,
    path::{Path, PathBuf},
};

/// One problem in a policy file, with its position and, when there is one, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// Every problem found in a policy file (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors(pub Vec<Diagnostic>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// A checked policy, ready to evaluate.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Where it was read from (used in violations' policy references).
    pub file: PathBuf,
    /// The checked file contents.
    pub spec: schema::PolicyFile,
    /// Where each rule is in the file, for policy references: `"endpoints[2]"` → line.
    pub lines: std::collections::BTreeMap<String, usize>,
}

impl Policy {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, PolicyErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            PolicyErrors(vec![Diagnostic {
                file: path.to_owned(),
                line: 0,
                column: 0,
                message: format!("cannot read the policy file: {e}"),
                hint: Some("check the path and its permissions".into()),
            }])
        })?;
        Self::parse(&text, path)
    }

    /// Checks policy text; `path` is used in messages and references.
    pub fn parse(text: &str, path: &Path) -> Result<Self, PolicyErrors> {
        let (spec, lines) = load::check(text, path)?;
        Ok(Self {
            file: path.to_owned(),
            spec,
            lines,
        })
    }
}
