//! The wire between the monitor's parts: the gRPC contract ([`proto`]), mTLS ([`tls`]:
//! certificates, server and client configurations) and the Prometheus endpoint
//! ([`exporter`]). No command-line types: the binary converts its arguments into these.

pub mod exporter;
pub mod proto;
pub mod tls;

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let c_s = c.to_string();
        if !s.contains(&c_s) {
            s.push_str(": ");
            s.push_str(&c_s);
        }
        cur = c.source();
    }
    s
}
