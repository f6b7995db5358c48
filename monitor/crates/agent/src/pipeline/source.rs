//! Where the pipeline's input comes from: the kernel programs on a live node
//! ([`crate::capture::Capture`]), or their emulation over a packet capture
//! ([`monitor::analyze::flowtable::FlowTable`]). Both give the same records (flow open, HTTP
//! chunk, flow close), the same flow table entries and cumulative loss counters, so everything
//! after them is one code path.

use std::{collections::HashMap, net::IpAddr};

use monitor_common::{
    flow::FlowState,
    quarantine::QuarantineStats,
    record::user::{DecodeError, Record as Raw},
};

use crate::capture::CaptureError;

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
    fn losses(&self) -> Result<Vec<LossCount>, CaptureError>;
    /// Makes the set of enforced quarantines equal to `entries` (cgroup id, since ns).
    fn set_quarantine(&mut self, entries: &[(u64, u64)]) -> Result<(), CaptureError>;
    /// What was dropped per quarantined cgroup since it entered the set.
    fn quarantine_stats(&self) -> Result<HashMap<u64, QuarantineStats>, CaptureError>;
    /// Makes the set of local monitored pod addresses equal to `ips` (live only).
    fn set_local_peers(&mut self, ips: &[IpAddr]) -> Result<(), CaptureError>;
}
