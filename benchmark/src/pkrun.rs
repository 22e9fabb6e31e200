//! pkbpf's engines as the benchmarks use them: verify once, then call the
//! interpreter or the JIT in a timed loop over one context buffer.

use std::path::Path;

use pkbpf::object::Object;
use pkbpf_jit::interp::{Interpreter, Memory, NoHelpers, Options, RegionKind};
use pkbpf_verifier::isa::Insn;
use pkbpf_verifier::{verify, CtxDesc, ProgramEnv, VerifiedProgram};

use crate::BenchError;

/// A verified program ready for pkbpf's engines.
#[derive(Clone, Debug)]
pub struct PkbpfProgram {
    /// Its name.
    pub name: String,
    /// The verifier's output.
    pub verified: VerifiedProgram,
    /// The context it was verified for.
    pub ctx: CtxDesc,
}

/// Reads `path` and parses it with pkbpf's object loader.
pub fn load_object(path: &Path) -> Result<Object, BenchError> {
    let bytes = std::fs::read(path).map_err(|source| BenchError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Object::parse(&bytes).map_err(|source| BenchError::Object {
        path: path.to_path_buf(),
        source,
    })
}

/// The instructions of program `name` in the object at `path`.
pub fn program_insns(path: &Path, name: &str) -> Result<Vec<Insn>, BenchError> {
    let obj = load_object(path)?;
    let prog = obj.program(name).ok_or_else(|| BenchError::NoProgram {
        path: path.to_path_buf(),
        name: name.to_string(),
    })?;
    Ok(prog.insns.clone())
}

impl PkbpfProgram {
    /// Verifies `insns` for context `ctx` (no maps, the built-in helpers).
    pub fn verify(name: &str, insns: &[Insn], ctx: CtxDesc) -> Result<PkbpfProgram, BenchError> {
        let env = ProgramEnv::new(ctx.clone());
        let verified = verify(insns, &env).map_err(|source| BenchError::Verify {
            program: name.to_string(),
            source,
        })?;
        Ok(PkbpfProgram {
            name: name.to_string(),
            verified,
            ctx,
        })
    }
}

/// pkbpf's interpreter bound to one context buffer: the memory model is built
/// once, then [`InterpSession::call`] runs the program as often as needed.
pub struct InterpSession<'p, 'a> {
    prog: &'p PkbpfProgram,
    interp: Interpreter<'p>,
    mem: Memory<'a>,
    addr: u64,
    len: u64,
}

impl<'p, 'a> InterpSession<'p, 'a> {
    /// A session over `ctx` (`r1` = its address, `r2` = its length). The
    /// interpreter checks every access itself; uninitialised-stack checks
    /// are off (the verifier already proved there are none).
    pub fn new(prog: &'p PkbpfProgram, ctx: &'a mut [u8]) -> Self {
        let interp = Interpreter::new(prog.verified.insns()).with_options(Options {
            budget: u64::MAX,
            check_uninit: false,
        });
        let len = ctx.len() as u64;
        let mut mem = Memory::new();
        let addr = mem.add_slice_mut(ctx, RegionKind::Ctx);
        InterpSession {
            prog,
            interp,
            mem,
            addr,
            len,
        }
    }

    /// Runs the program once; with `Some(chunk)`, first stores `chunk` in the
    /// context's first 8 bytes. Returns `r0`.
    pub fn call(&mut self, chunk: Option<u64>) -> Result<u64, BenchError> {
        let fail = |reason: String| BenchError::Run {
            program: self.prog.name.clone(),
            engine: "pkbpf-interp".into(),
            reason,
        };
        if let Some(c) = chunk {
            self.mem
                .store(self.addr, 8, c)
                .map_err(|e| fail(e.to_string()))?;
        }
        let out = self
            .interp
            .run(
                &mut self.mem,
                &mut NoHelpers,
                [self.addr, self.len, 0, 0, 0],
            )
            .map_err(|e| fail(e.to_string()))?;
        Ok(out.r0)
    }
}

/// pkbpf's JIT over a verified program (x86-64 only).
#[cfg(all(target_arch = "x86_64", unix))]
pub mod jit {
    use std::time::{Duration, Instant};

    use pkbpf_jit::x86::{JitEnv, JitProgram};

    use super::PkbpfProgram;
    use crate::BenchError;

    /// A compiled program and how long compiling took.
    #[derive(Debug)]
    pub struct Compiled {
        /// The machine code.
        pub program: JitProgram,
        /// Wall time of `JitProgram::compile`.
        pub compile_time: Duration,
    }

    /// Compiles `prog` with no helpers and no maps.
    pub fn compile(prog: &PkbpfProgram) -> Result<Compiled, BenchError> {
        let start = Instant::now();
        let program =
            JitProgram::compile(&prog.verified, &JitEnv::new()).map_err(|e| BenchError::Run {
                program: prog.name.clone(),
                engine: "pkbpf-jit".into(),
                reason: format!("compile: {e}"),
            })?;
        Ok(Compiled {
            program,
            compile_time: start.elapsed(),
        })
    }

    /// Calls the JIT code once with `r1` = `ctx`, `r2` = its length.
    ///
    /// The program was verified for a context of exactly `ctx.len()` bytes
    /// (checked here), so every access it makes is inside `ctx`.
    pub fn call(prog: &PkbpfProgram, jit: &JitProgram, ctx: &mut [u8]) -> Result<u64, BenchError> {
        if ctx.len() as u64 != prog.ctx.size() as u64 {
            return Err(BenchError::Run {
                program: prog.name.clone(),
                engine: "pkbpf-jit".into(),
                reason: format!(
                    "context of {} bytes, verified for {}",
                    ctx.len(),
                    prog.ctx.size()
                ),
            });
        }
        // SAFETY: the program was verified for a context of `ctx.len()`
        // bytes (checked above) and calls no helpers; `ctx` is a live,
        // exclusively borrowed buffer of that size for the whole call.
        let r0 = unsafe {
            jit.call_with_env(
                ctx.as_mut_ptr() as u64,
                ctx.len() as u64,
                std::ptr::null_mut(),
            )
        };
        r0.map_err(|e| BenchError::Run {
            program: prog.name.clone(),
            engine: "pkbpf-jit".into(),
            reason: e.to_string(),
        })
    }
}
