//! The verifier: abstract interpretation in the style of the Linux verifier.
//!
//! Parts, one small type per file:
//! - domains: [`tnum`] (known bits), [`bounds`] (four interval views),
//!   [`scalar`] (their reduced product), all behind [`lattice::Lattice`];
//! - values: [`reg`] (register types), [`stack`] (a frame's slots),
//!   [`state`] (frames and references, subsumption);
//! - surroundings: [`ctx`], [`helpers`], [`env`];
//! - [`cfg`] (static control-flow checks, register liveness), [`liveness`]
//!   (read marks for pruning), [`check`] (what must hold),
//!   [`transfer`] (what instructions do), [`explore`] (paths, pruning, loops);
//! - output: [`error`], [`log`], [`verified`].

pub mod bounds;
pub mod cfg;
pub mod check;
pub mod ctx;
pub mod env;
pub mod error;
pub mod explore;
pub mod helpers;
pub mod lattice;
pub mod liveness;
pub mod log;
pub mod reg;
pub mod scalar;
pub mod stack;
pub mod state;
pub mod tnum;
pub mod transfer;
pub mod verified;

pub use ctx::CtxDesc;
pub use env::{MapDesc, ProgramEnv};
pub use error::{Category, Reason, VerifyError};
pub use explore::{verify, Verifier};
pub use helpers::{ArgType, HelperProto, HelperTable, RetType};
pub use verified::{Stats, Subprog, VerifiedProgram};
