//! The verification benchmark (`pkbpf-bench verifier`): how long pkbpf's
//! verifier takes on each program of the object corpus (`tests/bpf/*.bpf.c`,
//! compiled with clang) and on a generated 4,096-instruction program of
//! nested bounded loops, with the exploration counts the kernel prints
//! (`processed N insns ... total_states T peak_states P`) and the number of
//! paths cut by state pruning.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use pkbpf::object::Object;
use pkbpf::verify_env::program_env;
use pkbpf_verifier::verifier::ctx::CtxDesc;
use pkbpf_verifier::{verify, ProgramEnv};
use serde::{Deserialize, Serialize};

use crate::stats::Summary;
use crate::tools::run_checked;
use crate::BenchError;

/// The embedded programs' context size (as the object tests use).
pub const EMBEDDED_CTX: u32 = 4096;

/// Instructions of the generated loop program.
pub const LOOP_PROGRAM_INSNS: usize = 4096;

/// Name of the generated loop program's row.
pub const LOOP_PROGRAM_ROW: &str = "generated/nested_loops_4096";

/// What to measure.
#[derive(Clone, Debug)]
pub struct VerifierOptions {
    /// Verifications per program (the median is reported).
    pub runs: usize,
    /// Directory of the `*.bpf.c` corpus.
    pub corpus: PathBuf,
    /// Where the compiled objects go.
    pub workdir: PathBuf,
}

/// The default corpus: the repository's `tests/bpf`.
pub fn default_corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/bpf")
}

/// One program's measurements.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerifierRow {
    /// `object/program`.
    pub program: String,
    /// Instruction slots.
    pub insns: usize,
    /// `accepted`, or `rejected: <reason>`.
    pub verdict: String,
    /// Instructions processed over all paths (the kernel's `processed N insns`).
    pub processed: u64,
    /// Paths cut because a kept state subsumed them.
    pub pruned: u64,
    /// States kept in all.
    pub total_states: usize,
    /// Most states kept at once.
    pub peak_states: usize,
    /// Most states kept at one instruction.
    pub max_states_per_insn: usize,
    /// Verification time in microseconds over the runs.
    pub time_us: Summary,
}

/// The whole benchmark's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerifierReport {
    /// Verifications per program.
    pub runs: usize,
    /// One row per program, corpus first, the generated program last.
    pub rows: Vec<VerifierRow>,
}

impl VerifierReport {
    /// The row of `program` (`object/program`).
    pub fn get(&self, program: &str) -> Option<&VerifierRow> {
        self.rows.iter().find(|r| r.program == program)
    }

    /// A fixed-width table, one line per program, then the kernel-style
    /// `processed` line of each.
    pub fn table(&self) -> String {
        let mut s = format!(
            "verification time, median of {} run(s)\n{:<40} {:>6} {:>10} {:>8} {:>8} {:>6} {:>12}  verdict\n",
            self.runs, "program", "insns", "processed", "pruned", "states", "peak", "median us"
        );
        for r in &self.rows {
            s += &format!(
                "{:<40} {:>6} {:>10} {:>8} {:>8} {:>6} {:>12.1}  {}\n",
                r.program,
                r.insns,
                r.processed,
                r.pruned,
                r.total_states,
                r.peak_states,
                r.time_us.median,
                r.verdict
            );
        }
        s += "\n";
        for r in &self.rows {
            s += &format!(
                "{}: processed {} insns (limit 1000000) max_states_per_insn {} total_states {} peak_states {} pruned {}\n",
                r.program, r.processed, r.max_states_per_insn, r.total_states, r.peak_states, r.pruned
            );
        }
        s
    }
}

/// Times `runs` verifications of `insns` in `env`.
pub fn measure(
    program: &str,
    insns: &[pkbpf_verifier::isa::Insn],
    env: &ProgramEnv,
    runs: usize,
) -> Result<VerifierRow, BenchError> {
    let mut samples = Vec::with_capacity(runs.max(1));
    let mut last = None;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let res = verify(insns, env);
        samples.push(t.elapsed().as_secs_f64() * 1e6);
        last = Some(res);
    }
    let (verdict, stats) = match last {
        Some(Ok(v)) => ("accepted".to_string(), v.stats()),
        Some(Err(e)) => (
            format!("rejected: {e}"),
            pkbpf_verifier::verifier::verified::Stats::default(),
        ),
        None => return Err(BenchError::NoSamples),
    };
    Ok(VerifierRow {
        program: program.to_string(),
        insns: insns.len(),
        verdict,
        processed: stats.processed,
        pruned: stats.pruned,
        total_states: stats.total_states,
        peak_states: stats.peak_states,
        max_states_per_insn: stats.max_states_per_insn,
        time_us: Summary::of(&samples)?,
    })
}

/// The generated program: 16 blocks, each an outer loop of 4 iterations
/// around an inner loop of 8 whose body is 240 arithmetic instructions,
/// padded with straight-line code to exactly [`LOOP_PROGRAM_INSNS`] slots.
/// Assembler text, so the loops read as they run.
pub fn nested_loop_source() -> String {
    const BLOCKS: usize = 16;
    const BODY: usize = 240;
    const PER_BLOCK: usize = BODY + 6; // r6 = 0, r7 = 0, body, r7 += 1, jlt, r6 += 1, jlt
    let fixed = BLOCKS * PER_BLOCK + 2; // + `r0 = 0` and `exit`
    let pad = LOOP_PROGRAM_INSNS - fixed;
    let body = ["r0 += r7", "r0 ^= 0x5a", "r1 = r0", "r1 >>= 3", "r0 += r1"];
    let mut s = String::from("r0 = 0\n");
    for i in 0..pad {
        s += if i % 2 == 0 { "r0 += 1\n" } else { "r0 *= 3\n" };
    }
    for b in 0..BLOCKS {
        s += &format!("r6 = 0\nouter{b}:\nr7 = 0\ninner{b}:\n");
        for i in 0..BODY {
            s += body[i % body.len()];
            s += "\n";
        }
        s += &format!("r7 += 1\nif r7 < 8 goto inner{b}\nr6 += 1\nif r6 < 4 goto outer{b}\n");
    }
    s += "exit\n";
    s
}

/// Compiles `src` (a `.bpf.c` file) into `dir` the way the object tests do.
fn compile(src: &Path, corpus: &Path, dir: &Path) -> Result<PathBuf, BenchError> {
    let stem = src
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("prog.bpf.c")
        .trim_end_matches(".c");
    let out = dir.join(format!("{stem}.o"));
    let mut cmd = Command::new("clang");
    cmd.args([
        "-O2",
        "-g",
        "-target",
        "bpf",
        "-D__TARGET_ARCH_x86",
        "-I/usr/include/x86_64-linux-gnu",
    ])
    .arg("-I")
    .arg(corpus.join("include"))
    .arg("-c")
    .arg(src)
    .arg("-o")
    .arg(&out);
    run_checked(&mut cmd)?;
    Ok(out)
}

/// The corpus sources, sorted by name.
fn corpus_sources(corpus: &Path) -> Result<Vec<PathBuf>, BenchError> {
    let io = |source| BenchError::Io {
        path: corpus.to_path_buf(),
        source,
    };
    let mut v = Vec::new();
    for e in std::fs::read_dir(corpus).map_err(io)? {
        let p = e.map_err(io)?.path();
        if p.to_str().is_some_and(|s| s.ends_with(".bpf.c")) {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

/// The engine benchmark's programs (`benchmark/engines/*.c`) with the size
/// of the input each gets (`struct ctx`), verified as the engine benchmark
/// does: `r1` = that many bytes of memory, `r2` = their size.
pub const ENGINE_PROGRAMS: &[(&str, u32)] = &[
    ("return_const", 8),
    ("add", 16),
    ("log2_8k", 8 + 4 * 8192),
    ("primes", 8),
    ("memcpy_1m", 8 + 2 * (1 << 20)),
    ("strcmp_1m", 8 + 2 * (1 << 20)),
    ("switch_large", 8 + 4 * 8192),
];

/// The engine programs' directory.
fn engines_dir(corpus: &Path) -> PathBuf {
    corpus.join("../../benchmark/engines")
}

/// One row per engine program (`engines/<name>`); none when the sources
/// are not beside the corpus.
fn engine_rows(opts: &VerifierOptions) -> Result<Vec<VerifierRow>, BenchError> {
    let dir = engines_dir(&opts.corpus);
    let mut rows = Vec::new();
    for &(name, size) in ENGINE_PROGRAMS {
        let src = dir.join(format!("{name}.c"));
        if !src.exists() {
            continue;
        }
        let out = opts.workdir.join(format!("engine_{name}.o"));
        let mut cmd = Command::new("clang");
        cmd.args(["-O2", "-g", "-target", "bpf", "-I"])
            .arg(&dir)
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&out);
        run_checked(&mut cmd)?;
        let bytes = std::fs::read(&out).map_err(|source| BenchError::Io {
            path: out.clone(),
            source,
        })?;
        let obj = Object::parse(&bytes).map_err(|source| BenchError::Object {
            path: out.clone(),
            source,
        })?;
        let env = ProgramEnv::new(CtxDesc::MemWithLen { size });
        for p in obj.programs() {
            rows.push(measure(
                &format!("engines/{name}"),
                &p.insns,
                &env,
                opts.runs,
            )?);
        }
    }
    Ok(rows)
}

/// Runs the benchmark: every corpus program, the engine benchmark's
/// programs, then the generated program.
pub fn run_verifier_bench(opts: &VerifierOptions) -> Result<VerifierReport, BenchError> {
    let mut rows = Vec::new();
    for src in corpus_sources(&opts.corpus)? {
        let path = compile(&src, &opts.corpus, &opts.workdir)?;
        let bytes = std::fs::read(&path).map_err(|source| BenchError::Io {
            path: path.clone(),
            source,
        })?;
        let obj = Object::parse(&bytes).map_err(|source| BenchError::Object {
            path: path.clone(),
            source,
        })?;
        let object = src
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .trim_end_matches(".bpf.c")
            .to_string();
        for p in obj.programs() {
            let name = format!("{object}/{}", p.name);
            let row = match program_env(&obj, p, EMBEDDED_CTX) {
                Ok(env) => measure(&name, &p.insns, &env, opts.runs)?,
                Err(e) => VerifierRow {
                    program: name,
                    insns: p.insns.len(),
                    verdict: format!("not verified: {e}"),
                    processed: 0,
                    pruned: 0,
                    total_states: 0,
                    peak_states: 0,
                    max_states_per_insn: 0,
                    time_us: Summary::of(&[0.0])?,
                },
            };
            rows.push(row);
        }
    }
    rows.extend(engine_rows(opts)?);
    let insns =
        pkbpf_verifier::asm::assemble(&nested_loop_source()).map_err(|e| BenchError::Run {
            program: LOOP_PROGRAM_ROW.into(),
            engine: "assembler".into(),
            reason: e.to_string(),
        })?;
    let env = ProgramEnv::new(CtxDesc::PtRegs);
    rows.push(measure(LOOP_PROGRAM_ROW, &insns, &env, opts.runs)?);
    Ok(VerifierReport {
        runs: opts.runs.max(1),
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_program_has_4096_insns_and_verifies_through_every_iteration() {
        let insns = pkbpf_verifier::asm::assemble(&nested_loop_source()).unwrap();
        assert_eq!(insns.len(), LOOP_PROGRAM_INSNS);
        let env = ProgramEnv::new(CtxDesc::PtRegs);
        let row = measure(LOOP_PROGRAM_ROW, &insns, &env, 1).unwrap();
        assert_eq!(row.verdict, "accepted");
        // 16 blocks x 4 x 8 iterations of a 240-instruction body: the loops
        // are explored, not just walked once.
        assert!(row.processed >= 16 * 4 * 8 * 240, "{row:?}");
        assert!(row.processed < 1_000_000, "{row:?}");
    }

    /// The engine benchmark's branchy loops (log2, primes, switch) verify
    /// within the kernel's budget now that imprecise scalars do not stop
    /// pruning.
    #[test]
    fn engine_programs_verify_within_the_budget() {
        if Command::new("clang").arg("--version").output().is_err() {
            println!("skipped: engine_programs_verify_within_the_budget: clang not found");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let opts = VerifierOptions {
            runs: 1,
            corpus: default_corpus(),
            workdir: dir.path().to_path_buf(),
        };
        let rows = engine_rows(&opts).unwrap();
        assert_eq!(rows.len(), ENGINE_PROGRAMS.len());
        for row in &rows {
            assert_eq!(row.verdict, "accepted", "{row:?}");
            assert!(row.processed < 200_000, "{row:?}");
        }
    }
}
