//! pkbpf: a userspace eBPF runtime whose extensions run inside MPK domains.
//!
//! Load a clang-compiled object, call a program, read a map (the README's
//! embedding example):
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let mut request_bytes = vec![0u8; 64];
//! let rt = pkbpf::Runtime::builder().sandbox(pkbpf::runtime::Sandbox::Auto).build()?;
//! let obj = rt.load_file("filter.bpf.o")?; // parse, verify, JIT
//! let verdict = obj.program("filter")?.call(&mut request_bytes)?;
//! let hits = obj.map("hits")?.lookup(&0u32.to_le_bytes())?;
//! println!("{verdict} {hits:?} ({})", rt.isolation().mode);
//! # Ok(())
//! # }
//! ```
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
