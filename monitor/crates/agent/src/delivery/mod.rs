//! Agent → collector delivery: the on-disk spool of everything not yet acknowledged, and the
//! gRPC sender that streams it.
//!
//! - [`spool`]: checksummed segment files with a size cap; resend after reconnect and restart.
//! - [`sender`]: the agent's record output into the spool, and the gRPC stream to the collector.

pub mod sender;
pub mod spool;
