//! Words for an exchange that records carry: which end observed it, and how it ended.

/// Which end of the connection the local socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Observer {
    /// The local socket sent the requests.
    Client,
    /// The local socket received the requests.
    Server,
}

/// How an exchange's end was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Completion {
    /// The response's last byte was seen (by length, next message, or flow end).
    Complete,
    /// The flow ended before a response arrived.
    NoResponse,
    /// The response body was still arriving when the agent gave up waiting (idle or stop);
    /// its size is what had arrived.
    Partial,
}
