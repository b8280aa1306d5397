//! Cross-crate and interop tests for nucleon; the tests live in `tests/`.
