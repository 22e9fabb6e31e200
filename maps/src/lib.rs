//! pkbpf's maps: every map type's data plane in shared memory.
#![deny(missing_docs)]

pub mod types;
pub use types::MapType;
