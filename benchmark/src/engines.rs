//! The engine benchmark (issue 5): compute programs in C, one body compiled
//! both for BPF (`clang -O2 -target bpf`) and natively (`cc -O2 -shared`),
//! run on pkbpf's interpreter and JIT, rbpf's interpreter and JIT, and
//! native code. Every engine's result (r0 and the whole context buffer after
//! the workload) must equal native's: the benchmark is also a correctness
//! check. Times are reported as ratios to native (medians of runs) with their
//! geometric mean, plus the JIT's compile time for a 1,000-instruction
//! program.

use std::collections::BTreeMap;
use std::ffi::{c_void, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use pkbpf_verifier::isa::{encode_program, Insn};
use pkbpf_verifier::CtxDesc;
use serde::{Deserialize, Serialize};

use crate::pkrun::{program_insns, InterpSession, PkbpfProgram};
use crate::stats::{geomean, Summary};
use crate::tools::{compile_bpf_with, run_checked, write_source};
use crate::BenchError;

/// The shared header of the programs.
pub const ENGINE_H: &str = include_str!("../engines/engine.h");

/// Bytes one call of a chunked program handles.
pub const CHUNK: usize = 4096;
/// Chunks in 1 MiB.
pub const CHUNKS: u64 = 256;
const MIB: usize = CHUNK * CHUNKS as usize;

/// How one workload calls its program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Calls {
    /// One call.
    Once,
    /// One call per chunk `0..n`, the index stored in the context's first
    /// 8 bytes; results summed (wrapping, as u32).
    AllChunks(u64),
    /// As `AllChunks` but stops at the first non-zero result, which is the
    /// workload's result (strcmp).
    UntilNonZero(u64),
}

/// One benchmark program with its input.
#[derive(Clone, Copy, Debug)]
pub struct EngineProgram {
    /// Row name.
    pub name: &'static str,
    /// C file stem in `benchmark/engines/` (several rows may share one).
    pub source_name: &'static str,
    /// Its C source.
    pub source: &'static str,
    /// Builds the context buffer.
    pub input: fn() -> Vec<u8>,
    /// How a workload calls it.
    pub calls: Calls,
}

fn le_u32s(vals: impl Iterator<Item = u32>) -> Vec<u8> {
    vals.flat_map(|v| v.to_le_bytes()).collect()
}

/// A deterministic pseudo-random sequence (xorshift64*), so inputs are the
/// same on every run and engine.
fn pseudo_random(seed: u64) -> impl Iterator<Item = u64> {
    let mut x = seed | 1;
    std::iter::repeat_with(move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

fn input_small() -> Vec<u8> {
    vec![0; 8]
}

fn input_add() -> Vec<u8> {
    let mut v = 40u64.to_le_bytes().to_vec();
    v.extend_from_slice(&2u64.to_le_bytes());
    v
}

/// An 8-byte chunk-index slot followed by `body`.
fn with_chunk_slot(body: Vec<u8>) -> Vec<u8> {
    let mut v = vec![0u8; 8];
    v.extend(body);
    v
}

fn input_log2() -> Vec<u8> {
    with_chunk_slot(le_u32s(
        pseudo_random(7).take(8192).map(|x| (x >> (x % 32)) as u32),
    ))
}

fn input_memcpy() -> Vec<u8> {
    let mut v = vec![0u8; 8 + 2 * MIB];
    for (b, r) in v[8..8 + MIB].iter_mut().zip(pseudo_random(11)) {
        *b = r as u8;
    }
    v
}

fn strings(differ_at: Option<usize>) -> Vec<u8> {
    let mut v = vec![0u8; 8 + 2 * MIB];
    for i in 0..MIB - 1 {
        let c = b'a' + (i % 26) as u8;
        v[8 + i] = c;
        v[8 + MIB + i] = c;
    }
    if let Some(at) = differ_at {
        v[8 + MIB + at] = b'#';
    }
    v
}

fn input_strcmp_equal() -> Vec<u8> {
    strings(None)
}

fn input_strcmp_differ() -> Vec<u8> {
    strings(Some(MIB * 3 / 4 + 123))
}

fn input_switch() -> Vec<u8> {
    with_chunk_slot(le_u32s(pseudo_random(13).take(1024).map(|x| x as u32)))
}

/// The programs, in report order.
pub fn programs() -> Vec<EngineProgram> {
    macro_rules! src {
        ($f:literal) => {
            include_str!(concat!("../engines/", $f, ".c"))
        };
    }
    vec![
        EngineProgram {
            name: "return_const",
            source_name: "return_const",
            source: src!("return_const"),
            input: input_small,
            calls: Calls::Once,
        },
        EngineProgram {
            name: "add",
            source_name: "add",
            source: src!("add"),
            input: input_add,
            calls: Calls::Once,
        },
        EngineProgram {
            name: "log2_8k",
            source_name: "log2_8k",
            source: src!("log2_8k"),
            input: input_log2,
            calls: Calls::AllChunks(128),
        },
        EngineProgram {
            name: "primes_10k",
            source_name: "primes",
            source: src!("primes"),
            input: input_small,
            calls: Calls::AllChunks(1000),
        },
        EngineProgram {
            name: "memcpy_1m",
            source_name: "memcpy_1m",
            source: src!("memcpy_1m"),
            input: input_memcpy,
            calls: Calls::AllChunks(CHUNKS),
        },
        EngineProgram {
            name: "strcmp_1m_equal",
            source_name: "strcmp_1m",
            source: src!("strcmp_1m"),
            input: input_strcmp_equal,
            calls: Calls::UntilNonZero(CHUNKS),
        },
        EngineProgram {
            name: "strcmp_1m_differ",
            source_name: "strcmp_1m",
            source: src!("strcmp_1m"),
            input: input_strcmp_differ,
            calls: Calls::UntilNonZero(CHUNKS),
        },
        EngineProgram {
            name: "switch_large",
            source_name: "switch_large",
            source: src!("switch_large"),
            input: input_switch,
            calls: Calls::AllChunks(64),
        },
    ]
}

/// Runs one workload: `call(chunk)` per call, results combined per `calls`.
/// `chunk` is `None` for [`Calls::Once`]; the callee stores it in the context.
pub fn drive(
    calls: Calls,
    mut call: impl FnMut(Option<u64>) -> Result<u64, BenchError>,
) -> Result<u32, BenchError> {
    match calls {
        Calls::Once => Ok(call(None)? as u32),
        Calls::AllChunks(n) => {
            let mut acc = 0u32;
            for c in 0..n {
                acc = acc.wrapping_add(call(Some(c))? as u32);
            }
            Ok(acc)
        }
        Calls::UntilNonZero(n) => {
            for c in 0..n {
                let r = call(Some(c))? as u32;
                if r != 0 {
                    return Ok(r);
                }
            }
            Ok(0)
        }
    }
}

fn set_chunk(ctx: &mut [u8], chunk: Option<u64>) {
    if let Some(c) = chunk {
        ctx[..8].copy_from_slice(&c.to_le_bytes());
    }
}

/// One engine's outcome for one program.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum EngineCell {
    /// It ran and matched native.
    Ok {
        /// ns per workload, one per run.
        samples_ns: Vec<f64>,
        /// Their summary.
        summary: Summary,
        /// The workload's result.
        result: u32,
    },
    /// The engine's verifier (or loader) refused the program.
    Rejected {
        /// Why.
        reason: String,
    },
    /// It ran but failed or disagreed with native.
    Failed {
        /// What happened.
        reason: String,
    },
    /// The engine does not exist on this build (e.g. no JIT).
    Absent {
        /// Why.
        reason: String,
    },
}

/// Engine names, in column order.
pub const ENGINES: [&str; 5] = [
    "native",
    "pkbpf-interp",
    "pkbpf-jit",
    "rbpf-interp",
    "rbpf-jit",
];

/// The whole engine benchmark's results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EngineReport {
    /// Runs per cell.
    pub runs: usize,
    /// Workloads per run (timed together, divided out).
    pub reps: u64,
    /// Cells by program, then engine.
    pub cells: BTreeMap<String, BTreeMap<String, EngineCell>>,
    /// Program order.
    pub order: Vec<String>,
    /// JIT compile time of a 1,000-instruction program (µs, median), or why
    /// it was not measured.
    pub jit_compile_us: Result<f64, String>,
}

/// The native shared library of all programs.
pub struct NativeLib {
    handle: *mut c_void,
}

impl Drop for NativeLib {
    fn drop(&mut self) {
        // SAFETY: `handle` came from a successful dlopen and is closed once;
        // no function pointer from it outlives `self` (they are only used
        // while the library is borrowed).
        unsafe { libc::dlclose(self.handle) };
    }
}

/// A native entry: `int engine_<name>(void *ctx)`.
type NativeFn = unsafe extern "C" fn(*mut u8) -> i32;

impl NativeLib {
    /// Compiles every program's C with `cc -O2 -shared -fPIC` into
    /// `dir/libengines.so` and opens it.
    pub fn build(dir: &Path) -> Result<NativeLib, BenchError> {
        write_source(dir, "engine.h", ENGINE_H)?;
        let mut srcs: Vec<PathBuf> = Vec::new();
        for p in programs() {
            let file = format!("{}.c", p.source_name);
            let path = write_source(dir, &file, p.source)?;
            if !srcs.contains(&path) {
                srcs.push(path);
            }
        }
        let lib = dir.join("libengines.so");
        run_checked(
            Command::new("cc")
                .args(["-O2", "-shared", "-fPIC", "-o"])
                .arg(&lib)
                .args(&srcs),
        )?;
        let c = CString::new(lib.to_string_lossy().as_bytes()).map_err(|_| BenchError::Chart {
            path: lib.clone(),
            reason: "path contains NUL".into(),
        })?;
        // SAFETY: `c` is a valid NUL-terminated path; dlopen has no other
        // preconditions. The library's constructors are those of plain C
        // files we just compiled (none).
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(BenchError::ToolFailed {
                tool: format!("dlopen {}", lib.display()),
                status: "null handle".into(),
                stderr: String::new(),
            });
        }
        Ok(NativeLib { handle })
    }

    fn entry(&self, source_name: &str) -> Result<NativeFn, BenchError> {
        let sym =
            CString::new(format!("engine_{source_name}")).map_err(|_| BenchError::MissingRow {
                tool: "libengines.so",
                row: source_name.to_string(),
            })?;
        // SAFETY: `handle` is open; `sym` is NUL-terminated.
        let f = unsafe { libc::dlsym(self.handle, sym.as_ptr()) };
        if f.is_null() {
            return Err(BenchError::MissingRow {
                tool: "libengines.so",
                row: format!("engine_{source_name}"),
            });
        }
        // SAFETY: every `engine_*` symbol is `int engine_x(struct ctx *)`
        // compiled from the ENTRY macro, i.e. this signature.
        Ok(unsafe { std::mem::transmute::<*mut c_void, NativeFn>(f) })
    }
}

/// Options of [`run_engines`].
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Runs per cell (samples).
    pub runs: usize,
    /// Workloads per sample.
    pub reps: u64,
    /// Only the programs whose name contains this.
    pub only: Option<String>,
}

/// What a timing closure returns: the workload result and the context after
/// the first workload (for the correctness check).
struct Measured {
    result: u32,
    ctx_after: Vec<u8>,
    samples: Vec<f64>,
}

fn measure(
    prog: &EngineProgram,
    opts: &EngineOptions,
    mut one: impl FnMut(&mut [u8]) -> Result<u32, BenchError>,
) -> Result<Measured, BenchError> {
    let mut ctx = (prog.input)();
    let result = one(&mut ctx)?;
    let ctx_after = ctx.clone();
    let mut samples = Vec::with_capacity(opts.runs);
    for _ in 0..opts.runs {
        let start = Instant::now();
        for _ in 0..opts.reps {
            one(&mut ctx)?;
        }
        samples.push(start.elapsed().as_nanos() as f64 / opts.reps.max(1) as f64);
    }
    Ok(Measured {
        result,
        ctx_after,
        samples,
    })
}

fn to_cell(m: Result<Measured, BenchError>, native: Option<&Measured>) -> EngineCell {
    match m {
        Err(e) => EngineCell::Failed {
            reason: error_chain(&e),
        },
        Ok(m) => {
            if let Some(n) = native {
                if m.result != n.result {
                    return EngineCell::Failed {
                        reason: format!("result {} differs from native's {}", m.result, n.result),
                    };
                }
                if let Some(i) = m
                    .ctx_after
                    .iter()
                    .zip(&n.ctx_after)
                    .position(|(a, b)| a != b)
                {
                    return EngineCell::Failed {
                        reason: format!("memory differs from native's at byte {i}"),
                    };
                }
            }
            match Summary::of(&m.samples) {
                Ok(summary) => EngineCell::Ok {
                    samples_ns: m.samples,
                    summary,
                    result: m.result,
                },
                Err(e) => EngineCell::Failed {
                    reason: e.to_string(),
                },
            }
        }
    }
}

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Compiles and runs every program on every engine.
pub fn run_engines(dir: &Path, opts: EngineOptions) -> Result<EngineReport, BenchError> {
    let native = NativeLib::build(dir)?;
    let mut cells = BTreeMap::new();
    let mut order = Vec::new();
    for prog in programs() {
        if opts.only.as_deref().is_some_and(|o| !prog.name.contains(o)) {
            continue;
        }
        let row = run_program(dir, &native, &prog, &opts)?;
        order.push(prog.name.to_string());
        cells.insert(prog.name.to_string(), row);
    }
    Ok(EngineReport {
        runs: opts.runs,
        reps: opts.reps,
        cells,
        order,
        jit_compile_us: jit_compile_time_us(opts.runs.max(5)),
    })
}

/// Runs one program on every engine.
pub fn run_program(
    dir: &Path,
    native: &NativeLib,
    prog: &EngineProgram,
    opts: &EngineOptions,
) -> Result<BTreeMap<String, EngineCell>, BenchError> {
    let mut row = BTreeMap::new();
    // Native.
    let f = native.entry(prog.source_name)?;
    let native_m = measure(prog, opts, |ctx| {
        drive(prog.calls, |chunk| {
            set_chunk(ctx, chunk);
            // SAFETY: `f` is `int engine_x(struct ctx *)` and `ctx` is the
            // input buffer built for exactly that struct.
            Ok(unsafe { f(ctx.as_mut_ptr()) } as u32 as u64)
        })
    });
    let native_ok = native_m.as_ref().ok().map(|m| Measured {
        result: m.result,
        ctx_after: m.ctx_after.clone(),
        samples: Vec::new(),
    });
    row.insert("native".to_string(), to_cell(native_m, None));

    // The BPF object.
    write_source(dir, "engine.h", ENGINE_H)?;
    let obj = compile_bpf_with(dir, &format!("{}.c", prog.source_name), prog.source, &[dir])?;
    let insns = program_insns(&obj, "prog")?;
    let ctx_size = (prog.input)().len() as u32;

    // pkbpf.
    // `r1` = the buffer, `r2` = its size, as memory (not a kernel-style
    // context: programs index it with variable offsets).
    let desc = CtxDesc::MemWithLen { size: ctx_size };
    match PkbpfProgram::verify(prog.name, &insns, desc) {
        Err(e) => {
            let reason = error_chain(&e);
            row.insert(
                "pkbpf-interp".into(),
                EngineCell::Rejected {
                    reason: reason.clone(),
                },
            );
            row.insert("pkbpf-jit".into(), EngineCell::Rejected { reason });
        }
        Ok(p) => {
            let m = measure_interp(prog, &p, opts);
            row.insert("pkbpf-interp".into(), to_cell(m, native_ok.as_ref()));
            row.insert(
                "pkbpf-jit".into(),
                pkbpf_jit_cell(prog, &p, opts, native_ok.as_ref()),
            );
        }
    }

    // rbpf.
    let bytes = encode_program(&insns);
    row.insert(
        "rbpf-interp".into(),
        rbpf_cell(prog, &bytes, opts, false, native_ok.as_ref()),
    );
    row.insert(
        "rbpf-jit".into(),
        rbpf_cell(prog, &bytes, opts, true, native_ok.as_ref()),
    );
    Ok(row)
}

/// As [`measure`] on pkbpf's interpreter: one [`InterpSession`] per phase,
/// so the memory model is built once, not per call.
fn measure_interp(
    prog: &EngineProgram,
    p: &PkbpfProgram,
    opts: &EngineOptions,
) -> Result<Measured, BenchError> {
    let mut ctx = (prog.input)();
    let result = {
        let mut s = InterpSession::new(p, &mut ctx);
        drive(prog.calls, |c| s.call(c))?
    };
    let ctx_after = ctx.clone();
    let mut s = InterpSession::new(p, &mut ctx);
    let mut samples = Vec::with_capacity(opts.runs);
    for _ in 0..opts.runs {
        let start = Instant::now();
        for _ in 0..opts.reps {
            drive(prog.calls, |c| s.call(c))?;
        }
        samples.push(start.elapsed().as_nanos() as f64 / opts.reps.max(1) as f64);
    }
    Ok(Measured {
        result,
        ctx_after,
        samples,
    })
}

#[cfg(all(target_arch = "x86_64", unix))]
fn pkbpf_jit_cell(
    prog: &EngineProgram,
    p: &PkbpfProgram,
    opts: &EngineOptions,
    native: Option<&Measured>,
) -> EngineCell {
    let compiled = match crate::pkrun::jit::compile(p) {
        Ok(c) => c,
        Err(e) => {
            return EngineCell::Rejected {
                reason: error_chain(&e),
            }
        }
    };
    let m = measure(prog, opts, |ctx| {
        drive(prog.calls, |chunk| {
            set_chunk(ctx, chunk);
            crate::pkrun::jit::call(p, &compiled.program, ctx)
        })
    });
    to_cell(m, native)
}

#[cfg(not(all(target_arch = "x86_64", unix)))]
fn pkbpf_jit_cell(
    _: &EngineProgram,
    _: &PkbpfProgram,
    _: &EngineOptions,
    _: Option<&Measured>,
) -> EngineCell {
    EngineCell::Absent {
        reason: "pkbpf's JIT is x86-64 only".into(),
    }
}

fn rbpf_cell(
    prog: &EngineProgram,
    bytes: &[u8],
    opts: &EngineOptions,
    jit: bool,
    native: Option<&Measured>,
) -> EngineCell {
    let mut vm = match rbpf::EbpfVmRaw::new(Some(bytes)) {
        Ok(vm) => vm,
        Err(e) => {
            return EngineCell::Rejected {
                reason: e.to_string(),
            }
        }
    };
    if jit {
        if let Err(e) = vm.jit_compile() {
            return EngineCell::Rejected {
                reason: e.to_string(),
            };
        }
    }
    let engine = if jit { "rbpf-jit" } else { "rbpf-interp" };
    let m = measure(prog, opts, |ctx| {
        drive(prog.calls, |chunk| {
            set_chunk(ctx, chunk);
            let (ptr, len) = (ctx.as_mut_ptr(), ctx.len());
            // SAFETY: rbpf ties the memory's borrow to the VM's lifetime, so a
            // fresh slice over the same buffer is made per call; `ctx` is
            // exclusively borrowed here and not touched while rbpf runs.
            let mem = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
            let r = if jit {
                // SAFETY: the program reads and writes only inside `mem` on
                // its native run (same C, checked against native), and calls
                // no helpers.
                unsafe { vm.execute_program_jit(mem) }
            } else {
                vm.execute_program(mem)
            };
            r.map_err(|e| BenchError::Run {
                program: prog.name.into(),
                engine: engine.into(),
                reason: e.to_string(),
            })
        })
    });
    to_cell(m, native)
}

/// A straight-line program of `n` (at least 3) instructions: two moves, ALU
/// work accumulating in `r0`, `exit` (what compile time is measured on).
pub fn straight_line_program(n: usize) -> Result<Vec<Insn>, String> {
    let text: String = (0..n.saturating_sub(3))
        .map(|i| match i % 4 {
            0 => format!("r0 += {}\n", i + 1),
            1 => "r0 ^= r1\n".to_string(),
            2 => format!("r0 *= {}\n", (i % 7) + 1),
            _ => "r1 = r0\n".to_string(),
        })
        .collect();
    let src = format!("r0 = 0\nr1 = 0\n{text}exit\n");
    pkbpf_verifier::asm::assemble(&src).map_err(|e| e.to_string())
}

/// Median JIT compile time (µs) of a 1,000-instruction program over `runs`
/// compiles; `Err` says why it could not be measured.
pub fn jit_compile_time_us(runs: usize) -> Result<f64, String> {
    #[cfg(all(target_arch = "x86_64", unix))]
    {
        let insns = straight_line_program(1000)?;
        let p = PkbpfProgram::verify("straight_1000", &insns, CtxDesc::PtRegs)
            .map_err(|e| error_chain(&e))?;
        let mut samples = Vec::new();
        for _ in 0..runs.max(1) {
            let c = crate::pkrun::jit::compile(&p).map_err(|e| error_chain(&e))?;
            samples.push(c.compile_time.as_nanos() as f64 / 1000.0);
        }
        Summary::of(&samples)
            .map(|s| s.median)
            .map_err(|e| e.to_string())
    }
    #[cfg(not(all(target_arch = "x86_64", unix)))]
    {
        let _ = runs;
        Err("pkbpf's JIT is x86-64 only".into())
    }
}

impl EngineReport {
    /// Median ns of `engine` on `program`, when it ran.
    pub fn median(&self, program: &str, engine: &str) -> Option<f64> {
        match self.cells.get(program)?.get(engine)? {
            EngineCell::Ok { summary, .. } => Some(summary.median),
            _ => None,
        }
    }

    /// `engine`'s median divided by native's on `program`.
    pub fn ratio(&self, program: &str, engine: &str) -> Option<f64> {
        Some(self.median(program, engine)? / self.median(program, "native")?)
    }

    /// Geometric mean of `engine`'s ratios over the programs where it ran.
    pub fn geomean_ratio(&self, engine: &str) -> Option<f64> {
        let r: Vec<f64> = self
            .order
            .iter()
            .filter_map(|p| self.ratio(p, engine))
            .collect();
        geomean(&r)
    }

    /// Number of programs where every engine that ran agreed with native,
    /// and the failures (`program`, `engine`, reason).
    pub fn failures(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for p in &self.order {
            for (e, c) in &self.cells[p] {
                if let EngineCell::Failed { reason } = c {
                    out.push((p.clone(), e.clone(), reason.clone()));
                }
            }
        }
        out
    }

    /// The table: one row per program, each engine as `ratio×` to native
    /// (native in ns), then the geometric means and compile time; rejected
    /// and failed cells say so with a footnote.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let mut notes: Vec<String> = Vec::new();
        s.push_str(&format!("{:<18}", "program"));
        for e in ENGINES {
            s.push_str(&format!(" {e:>14}"));
        }
        s.push('\n');
        for p in &self.order {
            s.push_str(&format!("{p:<18}"));
            for e in ENGINES {
                let cell = self.cells.get(p).and_then(|r| r.get(e));
                let text = match cell {
                    Some(EngineCell::Ok { summary, .. }) if e == "native" => {
                        format!("{:.0} ns", summary.median)
                    }
                    Some(EngineCell::Ok { .. }) => match self.ratio(p, e) {
                        Some(r) => format!("{r:.2}x"),
                        None => "n/a".into(),
                    },
                    Some(EngineCell::Rejected { reason }) => {
                        notes.push(format!("{p} on {e}: rejected: {reason}"));
                        format!("rejected[{}]", notes.len())
                    }
                    Some(EngineCell::Failed { reason }) => {
                        notes.push(format!("{p} on {e}: FAILED: {reason}"));
                        format!("FAILED[{}]", notes.len())
                    }
                    Some(EngineCell::Absent { reason }) => {
                        notes.push(format!("{p} on {e}: {reason}"));
                        format!("absent[{}]", notes.len())
                    }
                    None => "-".into(),
                };
                s.push_str(&format!(" {text:>14}"));
            }
            s.push('\n');
        }
        s.push_str(&format!("{:<18}", "geomean"));
        for e in ENGINES {
            let text = if e == "native" {
                "1.00x".to_string()
            } else {
                self.geomean_ratio(e)
                    .map_or("n/a".into(), |g| format!("{g:.2}x"))
            };
            s.push_str(&format!(" {text:>14}"));
        }
        s.push('\n');
        match &self.jit_compile_us {
            Ok(us) => s.push_str(&format!(
                "pkbpf JIT compile time, 1,000-instruction program: {us:.1} µs (median)\n"
            )),
            Err(why) => s.push_str(&format!("pkbpf JIT compile time: not measured ({why})\n")),
        }
        s.push_str(&format!(
            "(ratios: engine median / native median over {} runs of {} workloads each; lower is faster)\n",
            self.runs, self.reps
        ));
        for (i, n) in notes.iter().enumerate() {
            s.push_str(&format!("[{}] {n}\n", i + 1));
        }
        s
    }
}
