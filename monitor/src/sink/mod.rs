//! SIEM sinks (placeholder: being written).
