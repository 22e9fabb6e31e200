//! pkbpf's execution engines: the reference interpreter (the definition of
//! pkbpf's semantics) and the x86-64 JIT.
#![deny(missing_docs)]

pub mod interp;
// Engines added later go below, one line each (e.g. `pub mod x86;`).
#[cfg(all(target_arch = "x86_64", unix))]
pub mod x86;
