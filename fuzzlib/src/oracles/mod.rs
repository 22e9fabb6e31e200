//! Oracles: each takes one input, runs the parts under test and returns
//! `Err(Finding)` when it caught a bug. They never panic on their own; a
//! panic inside them is a panic of the code under test (which libFuzzer and
//! proptest report as a crash too).
//!
//! | oracle | property |
//! | --- | --- |
//! | [`object()`] | any bytes parse to an [`Object`](pkbpf::object::Object) or a typed error; every parsed program verifies or is rejected, without panic |
//! | [`verifier()`] | any instruction bytes decode and verify (or are rejected) without panic, at every log level |
//! | [`soundness()`] | every program the verifier accepts runs in the checked interpreter without an out-of-region access, an uninitialised read or any other run-time fault |
//! | [`jit_diff()`] | the JIT and the interpreter agree on `r0` (or both fail) and on the final memory of every verified program |
//! | [`maps_model()`] | operation sequences on each map type give the results a plain Rust model gives |
//! | [`isolation()`] | unverified programs with forged pointers leave another extension's memory and the runtime's map internals unchanged |

mod isolation;
mod maps_model;
mod programs;

pub use isolation::{isolation, IsolationMode, ISOLATION_BUDGET};
pub use maps_model::{maps_model, MapOp, MapSel, MapsInput};
pub use programs::{case_env, env_for, jit_diff, object, soundness, verifier, Verdict, RUN_BUDGET};

use pkbpf_jit::interp::ExecErrorKind;
use pkbpf_maps::MapType;

/// A bug an oracle caught.
#[derive(Debug, thiserror::Error)]
pub enum Finding {
    /// A verified program made an out-of-region access or read
    /// uninitialised stack in the checked interpreter.
    #[error("verifier unsound: accepted program faults at instruction {pc}: {kind}\n{listing}")]
    Unsound {
        /// Slot index of the faulting instruction.
        pc: usize,
        /// The fault.
        kind: ExecErrorKind,
        /// The program, disassembled.
        listing: String,
    },
    /// A verified program failed at run time in a way the verifier should
    /// rule out (left the program, jumped into an `lddw`, wrote `r10`, too
    /// many frames, an invalid field).
    #[error("verified program fails at instruction {pc}: {kind}\n{listing}")]
    VerifiedFault {
        /// Slot index.
        pc: usize,
        /// The failure.
        kind: ExecErrorKind,
        /// The program, disassembled.
        listing: String,
    },
    /// The JIT refused a program the verifier accepted.
    #[error("JIT rejected a verified program: {reason}\n{listing}")]
    JitRejected {
        /// The JIT's error.
        reason: String,
        /// The program, disassembled.
        listing: String,
    },
    /// Interpreter and JIT disagree.
    #[error("engines disagree: interpreter {interp}, JIT {jit}; first memory difference at {mem_diff:?}\n{listing}")]
    EngineMismatch {
        /// The interpreter's result.
        interp: String,
        /// The JIT's result.
        jit: String,
        /// First differing memory offset, if any.
        mem_diff: Option<usize>,
        /// The program, disassembled.
        listing: String,
    },
    /// A map answered differently from the model.
    #[error(
        "{map_type} map, operation {index} ({op}): map gave {actual}, model expects {expected}"
    )]
    MapMismatch {
        /// The map type.
        map_type: MapType,
        /// Index of the operation in the sequence.
        index: usize,
        /// The operation.
        op: String,
        /// What the map returned.
        actual: String,
        /// What the model expected.
        expected: String,
    },
    /// Memory outside the program's own regions changed.
    #[error(
        "isolation broken: {what} changed at byte {offset} (run ended with {outcome})\n{listing}"
    )]
    IsolationBreach {
        /// Which memory.
        what: &'static str,
        /// First changed byte.
        offset: usize,
        /// How the run ended.
        outcome: String,
        /// The program, disassembled.
        listing: String,
    },
}

/// Offset of the first byte where `a` and `b` differ (a length difference
/// counts at the shorter length).
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or_else(|| (a.len() != b.len()).then_some(a.len().min(b.len())))
}

#[cfg(test)]
mod tests {
    use super::first_difference;

    #[test]
    fn first_difference_finds_bytes_and_lengths() {
        assert_eq!(first_difference(b"abc", b"abc"), None);
        assert_eq!(first_difference(b"abc", b"abd"), Some(2));
        assert_eq!(first_difference(b"ab", b"abc"), Some(2));
    }
}
