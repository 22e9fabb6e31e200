//! pkbpf's fuzzing logic, as a library: the generators ([`gen`]) and the
//! oracles ([`oracles`]) behind the thin cargo-fuzz targets in `fuzz/` and
//! the property tests in `fuzzlib/tests/`, plus the seed-corpus writer
//! ([`seeds`]).
//!
//! Every oracle takes the raw input of its fuzz target (or a value built
//! from it with [`arbitrary`]) and returns `Err(`[`oracles::Finding`]`)` for a
//! bug it caught; a panic or hang inside the code under test is a bug too.
//! Targets turn a finding into a panic; property tests assert `Ok`.
#![deny(missing_docs)]

pub mod gen;
pub mod oracles;
pub mod seeds;

pub use gen::{Case, GenProgram, Op};
pub use oracles::Finding;
