//! pkbpf's verifier crate: what an eBPF program *is* (the ISA, its text forms)
//! and the proof, before anything runs, that a program is safe to run.
#![deny(missing_docs)]

pub mod asm;
pub mod disasm;
pub mod helpers_names;
pub mod isa;
#[cfg(feature = "strategies")]
pub mod strategies;
pub mod verifier;

pub use verifier::{
    verify, Category, CtxDesc, HelperTable, MapDesc, ProgramEnv, Reason, VerifiedProgram, Verifier,
    VerifyError,
};
