//! Forensic report figures (placeholder: being written).
