//! HTTP/2 (placeholder)
