//! The embedded-call row: `tests/bpf/bench_uprobe.bpf.c`'s uprobe program
//! called directly by a host (bpftime's "embed" row), on pkbpf's interpreter
//! and JIT.

use std::path::Path;
use std::time::Instant;

use pkbpf_verifier::CtxDesc;

use crate::pkrun::{program_insns, InterpSession, PkbpfProgram};
use crate::tools::{compile_bpf, BENCH_UPROBE_BPF_C};
use crate::BenchError;

/// The program the row calls.
pub const EMBED_PROGRAM: &str = "bench_uprobe";

/// One measurement of the embedded call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EmbedTiming {
    /// ns per call.
    pub ns: f64,
    /// The program's result for the last call (the harness checks it).
    pub r0: u64,
}

/// The uprobe program, compiled with clang into `dir`, loaded with pkbpf's
/// object loader and verified for a `pt_regs` context.
pub fn load_embed_program(dir: &Path) -> Result<PkbpfProgram, BenchError> {
    let obj = compile_bpf(dir, "bench_uprobe.bpf.c", BENCH_UPROBE_BPF_C)?;
    let insns = program_insns(&obj, EMBED_PROGRAM)?;
    PkbpfProgram::verify(EMBED_PROGRAM, &insns, CtxDesc::PtRegs)
}

/// A `pt_regs` whose first argument (`rdi`, offset 112) is `arg`.
pub fn pt_regs_with_arg(arg: u64) -> Vec<u8> {
    let mut regs = vec![0u8; pkbpf_verifier::verifier::ctx::PT_REGS_SIZE as usize];
    regs[112..120].copy_from_slice(&arg.to_le_bytes());
    regs
}

/// Times `calls` interpreter calls.
pub fn time_interp(prog: &PkbpfProgram, calls: u64) -> Result<EmbedTiming, BenchError> {
    let mut regs = pt_regs_with_arg(42);
    let mut session = InterpSession::new(prog, &mut regs);
    let mut r0 = 0;
    let start = Instant::now();
    for _ in 0..calls {
        r0 = session.call(None)?;
    }
    Ok(EmbedTiming {
        ns: start.elapsed().as_nanos() as f64 / calls.max(1) as f64,
        r0,
    })
}

/// Times `calls` JIT calls.
#[cfg(all(target_arch = "x86_64", unix))]
pub fn time_jit(prog: &PkbpfProgram, calls: u64) -> Result<EmbedTiming, BenchError> {
    let compiled = crate::pkrun::jit::compile(prog)?;
    let mut regs = pt_regs_with_arg(42);
    let mut r0 = 0;
    let start = Instant::now();
    for _ in 0..calls {
        r0 = crate::pkrun::jit::call(prog, &compiled.program, &mut regs)?;
    }
    Ok(EmbedTiming {
        ns: start.elapsed().as_nanos() as f64 / calls.max(1) as f64,
        r0,
    })
}
