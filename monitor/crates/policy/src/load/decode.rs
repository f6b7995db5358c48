//! Recovery: reads the typed [`PolicyFile`] from the tree again and again, each time setting
//! aside the node the last error was about, so that every structural error is reported once and
//! the rest of the file is still read.
//!
//! After an error the node is set aside and the file is read again: an optional field takes its
//! default, a list element is skipped, a mapping that lacks a required field is set aside in
//! turn. So every bad endpoint, edge, caller... is reported, not just the first, and the rest of
//! each section is still checked. What was set aside is returned with the value ([`Decoded`]),
//! so that the semantic checks neither check a default nor report a second, false error.

use std::collections::{BTreeSet, HashSet};

use serde::Deserialize as _;

use super::{
    de::{Ctx, De},
    error::ErrKind,
    problem::{Problem, Seg, child, render},
    tree::Node,
};
use crate::schema::PolicyFile;

/// What was read: the typed policy (partial when something was set aside) and what was set aside.
#[derive(Debug)]
pub(super) struct Decoded {
    /// The policy as read (defaults in place of what was set aside).
    pub(super) spec: PolicyFile,
    /// Paths set aside (rendered): list elements and unknown keys are absent from `spec`.
    pub(super) masks: HashSet<String>,
    /// Top-level sections replaced by their default (or `version` read as 1): not checked.
    pub(super) dirty: BTreeSet<String>,
    /// Top-level sections with anything set aside: not used by checks across sections.
    pub(super) partial: BTreeSet<String>,
}

/// Reads the typed policy, setting aside what fails and reading again, until it reads or nothing
/// more can be set aside.
pub(super) fn decode(root: &Node, problems: &mut Vec<Problem>) -> Option<Decoded> {
    let mut ctx = Ctx::default();
    // Unknown keys set aside, per mapping, with the field they probably meant.
    let mut typos: HashSet<(Vec<Seg>, &'static str)> = HashSet::new();
    for _ in 0..1000 {
        let e = match PolicyFile::deserialize(De::root(root, &ctx)) {
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
