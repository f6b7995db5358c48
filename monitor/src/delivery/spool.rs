//! The on-disk spool (placeholder: being written).
