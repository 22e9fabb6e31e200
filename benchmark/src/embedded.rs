//! The embedded-call row: `tests/bpf/bench_uprobe.bpf.c`'s uprobe program
//! called directly by a host (bpftime's "embed" row) through pkbpf's
//! embedding API — `Runtime::builder()…build()`, `load_file`, `program`,
//! `Program::call` — on the interpreter, on the JIT, and on the JIT inside
//! its MPK domain where the CPU has protection keys.

use std::path::Path;
use std::time::Instant;

use pkbpf::runtime::{Engine, LoadedObject, Runtime, Sandbox};

use crate::engines::error_chain;
use crate::tools::{compile_bpf, BENCH_UPROBE_BPF_C};
use crate::BenchError;

/// The program the row calls.
pub const EMBED_PROGRAM: &str = "bench_uprobe";

/// One configuration of the row: its column name, engine and sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmbedEngine {
    /// Column name in the report (`pkbpf-interp`, `pkbpf-jit`,
    /// `pkbpf-jit-mpk`).
    pub name: &'static str,
    /// The runtime's engine.
    pub engine: Engine,
    /// Whether the call enters the object's MPK domain.
    pub mpk: bool,
}

/// The row's configurations, in column order.
pub const EMBED_ENGINES: [EmbedEngine; 3] = [
    EmbedEngine {
        name: "pkbpf-interp",
        engine: Engine::Interpreter,
        mpk: false,
    },
    EmbedEngine {
        name: "pkbpf-jit",
        engine: Engine::Jit,
        mpk: false,
    },
    EmbedEngine {
        name: "pkbpf-jit-mpk",
        engine: Engine::Jit,
        mpk: true,
    },
];

/// One measurement of the embedded call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EmbedTiming {
    /// ns per call.
    pub ns: f64,
    /// The program's result for the last call (the harness checks it).
    pub r0: u64,
}

fn fail(engine: &str, why: impl Into<String>) -> BenchError {
    BenchError::Run {
        program: EMBED_PROGRAM.into(),
        engine: engine.into(),
        reason: why.into(),
    }
}

/// The object holding the uprobe program, compiled with clang into `dir`
/// and loaded (verified, compiled for `cfg.engine`) by a runtime of its
/// own. The caller checks MPK availability first.
pub fn load_embed_object(dir: &Path, cfg: &EmbedEngine) -> Result<LoadedObject, BenchError> {
    let path = compile_bpf(dir, "bench_uprobe.bpf.c", BENCH_UPROBE_BPF_C)?;
    let rt = Runtime::builder()
        .sandbox(if cfg.mpk { Sandbox::Mpk } else { Sandbox::None })
        .engine(cfg.engine)
        .build()
        .map_err(|e| fail(cfg.name, format!("runtime: {}", error_chain(&e))))?;
    rt.load_file(&path).map_err(|e| {
        fail(
            cfg.name,
            format!("load {}: {}", path.display(), error_chain(&e)),
        )
    })
}

/// A `pt_regs` whose first argument (`rdi`, offset 112) is `arg`.
pub fn pt_regs_with_arg(arg: u64) -> Vec<u8> {
    let mut regs = vec![0u8; pkbpf_verifier::verifier::ctx::PT_REGS_SIZE as usize];
    regs[112..120].copy_from_slice(&arg.to_le_bytes());
    regs
}

/// Times `calls` calls of [`EMBED_PROGRAM`] through `Program::call`.
pub fn time_calls(obj: &LoadedObject, calls: u64) -> Result<EmbedTiming, BenchError> {
    let prog = obj
        .program(EMBED_PROGRAM)
        .map_err(|e| fail("pkbpf", error_chain(&e)))?;
    let mut regs = pt_regs_with_arg(42);
    let mut r0 = 0;
    let start = Instant::now();
    for _ in 0..calls {
        r0 = prog
            .call(&mut regs)
            .map_err(|e| fail("pkbpf", error_chain(&e)))?;
    }
    Ok(EmbedTiming {
        ns: start.elapsed().as_nanos() as f64 / calls.max(1) as f64,
        r0,
    })
}
