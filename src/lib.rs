//! pkbpf: a userspace eBPF runtime whose extensions run inside MPK domains.
#![deny(missing_docs)]

pub use pkbpf_verifier as verifier;

pub mod btf;
pub mod conformance;
pub mod object;
