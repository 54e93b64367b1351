//! Test support shared by the registry's integration tests.
#![allow(dead_code, unused_imports, unused_macros)]

#[macro_use]
pub mod discover_suite;
#[cfg(feature = "etcd")]
pub mod etcd_server;
#[cfg(feature = "etcd")]
pub mod gate;
