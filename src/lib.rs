//! pkbpf: a userspace eBPF runtime whose extensions run inside MPK domains.
#![deny(missing_docs)]

/// Maps in shared memory: the program-side `RawMap` and the userspace `Map` API.
pub use pkbpf_maps as maps;
/// The ISA, its text forms, and the verifier.
pub use pkbpf_verifier as verifier;

pub mod btf;
pub mod conformance;
pub mod helpers;
pub mod kernel;
pub mod object;
pub mod runtime;
pub mod session;
pub mod verify_env;

pub use runtime::{Engine, LoadedObject, Program, Runtime};
