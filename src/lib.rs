//! Workspace-level examples and integration tests of courier; see `examples/` and `tests/`.
