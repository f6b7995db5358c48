//! Where the pipeline's input comes from: the kernel programs on a live node
//! ([`crate::capture::Capture`]), or their emulation over a packet capture
//! ([`monitor::analyze::flowtable::FlowTable`]). Both give the same records (flow open, HTTP
//! chunk, flow close), the same flow table entries and cumulative loss counters, so everything
//! after them is one code path.
//!
//! Control of the kernel (the quarantine drop set, the local peers) is a separate port,
//! [`Enforcer`], that only the live kernel source implements: a capture file has nothing to
//! enforce, and its errors never talk about BPF.

use std::{collections::HashMap, net::IpAddr};

use monitor_common::{
    flow::FlowState,
    quarantine::QuarantineStats,
    record::user::{DecodeError, Record as Raw},
};

/// Why a source or an enforcer could not answer.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Reading or writing one of the source's tables failed.
    #[error("cannot {op}: {message}")]
    Table {
        /// What was being done (`read the loss counters`, `update the quarantine set`).
        op: &'static str,
        /// Why (the underlying error, with the table's name).
        message: String,
    },
}

/// A loss counter: (stage, reason, count since the source started).
pub type LossCount = (&'static str, &'static str, u64);

/// The kernel side, as the pipeline sees it.
pub trait Source {
    /// Passes every record waiting, in order, to `f`.
    fn drain(&mut self, f: &mut dyn for<'a> FnMut(Result<Raw<'a>, DecodeError>));
    /// The flow table entry of `cookie`.
    fn flow(&self, cookie: u64) -> Option<FlowState>;
    /// Every flow table entry.
    fn flows(&self) -> Vec<(u64, FlowState)>;
    /// Deletes a flow table entry (the pipeline closed it as idle).
    fn remove_flow(&mut self, cookie: u64);
    /// Cumulative loss counters (only those that count losses), by stage and reason.
    fn losses(&self) -> Result<Vec<LossCount>, SourceError>;
}

/// Control of the kernel side: only a live source has one.
pub trait Enforcer {
    /// Makes the set of enforced quarantines equal to `entries` (cgroup id, since ns).
    fn set_quarantine(&mut self, entries: &[(u64, u64)]) -> Result<(), SourceError>;
    /// What was dropped per quarantined cgroup since it entered the set.
    fn quarantine_stats(&self) -> Result<HashMap<u64, QuarantineStats>, SourceError>;
    /// Makes the set of local monitored pod addresses equal to `ips`.
    fn set_local_peers(&mut self, ips: &[IpAddr]) -> Result<(), SourceError>;
}
