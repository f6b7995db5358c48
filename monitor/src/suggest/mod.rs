//! `monitor policy suggest`: a draft policy from the traffic a collector store holds, and
//! optionally Kubernetes NetworkPolicies for the same graph.
//!
//! - [`collect`]: the store read into per-destination routes, review items, the egress graph
//!   and workload labels, classified by the policy engine on the base's catalog and egress;
//! - [`draft`]: the policy YAML (with comments for everything that needs a person);
//! - [`netpol`]: the NetworkPolicies (multi-document YAML, through `k8s-openapi`'s types);
//! - [`yaml`]: quoting and comments that recorded strings cannot break out of.
//!
//! The draft never documents a request under a protected prefix that the base does not already
//! document: those are **"seen, not documented: review"** comments, so that replaying the same
//! history under the draft (`monitor policy dry-run`) fires on the review items only.

pub mod collect;
pub mod draft;
pub mod netpol;
pub mod yaml;

use std::path::Path;

use monitor_collector::store::StoreError;
use monitor_policy::Policy;

use crate::dry_run::Range;

pub use collect::Observed;
pub use draft::Header;

/// Why a suggestion failed.
#[derive(Debug, thiserror::Error)]
pub enum SuggestError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A NetworkPolicy could not be written as YAML.
    #[error("cannot write a NetworkPolicy as YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
}

/// A draft and what it was made from.
#[derive(Debug)]
pub struct Suggestion {
    /// What the store held.
    pub observed: Observed,
    /// The draft policy (YAML).
    pub policy: String,
    /// The NetworkPolicies (multi-document YAML), when asked for.
    pub network_policies: Option<String>,
}

/// Reads `range` of `store` and drafts a policy on top of `base` (if any); with
/// `network_policies`, NetworkPolicies too. `progress` is called every few thousand records
/// with the count read and the time of the last one.
pub fn suggest(
    store: &Path,
    range: &Range,
    base: Option<&Policy>,
    header: &Header<'_>,
    network_policies: bool,
    progress: &mut dyn FnMut(u64, i64),
) -> Result<Suggestion, SuggestError> {
    let observed = collect::observe(store, range, base, progress)?;
    let policy = draft::render(&observed, base, header);
    let network_policies = network_policies
        .then(|| netpol::render(&observed))
        .transpose()?;
    Ok(Suggestion {
        observed,
        policy,
        network_policies,
    })
}
