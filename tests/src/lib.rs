//! Lab tests live in tests/tests/.
