//! Running bpf_conformance `.data` tests on pkbpf's engines.
//!
//! A `.data` file has sections introduced by `-- NAME` lines:
//!
//! - `-- asm`: the program as assembly text, or `-- raw`: the program as
//!   64-bit words (`0x5566778800000018`, one instruction each, as the
//!   little-endian value of its 8 bytes) or as a list of hex bytes;
//! - `-- mem`: the input memory as hex bytes (`r1` points at it, `r2` holds
//!   its length; both are 0 without it);
//! - `-- result`: the expected `r0` (hex with `0x`, else decimal), or
//!   `-- error`: the program is expected to fail;
//! - `-- c`, `-- no register offset`: ignored.
//!
//! Helper 5 is bpf_conformance's "unwind" helper: it returns `r1`, and when
//! `r1` is 0 the program ends at once with result 0.
//!
//! Every engine implements [`Engine`]; [`run_file`] runs one test on several
//! engines and reports a disagreement between them as a failure.

use std::fmt;
use std::path::{Path, PathBuf};

use pkbpf_jit::interp::{HelperTable, Interpreter, Memory, RegionKind};
use pkbpf_verifier::disasm::insn_to_string;
use pkbpf_verifier::isa::{decode_program, encode_program, DecodeError, Insn};

/// A parsed `.data` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestFile {
    /// The program's source.
    pub program: ProgramSource,
    /// Input memory (empty when the file has no `-- mem`).
    pub mem: Vec<u8>,
    /// Expected `r0`, from `-- result`.
    pub result: Option<u64>,
    /// Expected error text, from `-- error` (may be empty).
    pub error: Option<String>,
}

/// Where a test's program comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProgramSource {
    /// `-- asm` text.
    Asm(String),
    /// `-- raw` bytes.
    Raw(Vec<u8>),
}

/// Why a `.data` file could not be turned into a runnable test.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line of the file is malformed.
    #[error("line {line}: {reason}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The file has neither `-- asm` nor `-- raw`.
    #[error("no program (`-- asm` or `-- raw` section)")]
    NoProgram,
    /// The file has neither `-- result` nor `-- error`.
    #[error("no `-- result` or `-- error` section")]
    NoExpectation,
    /// The assembler rejected the program.
    #[error("assembly failed: {reason}")]
    Asm {
        /// The assembler's message (`line N: ...`).
        reason: String,
    },
    /// The program bytes do not decode.
    #[error("invalid program")]
    Decode(#[from] DecodeError),
}

impl TestFile {
    /// Parses the text of a `.data` file.
    pub fn parse(text: &str) -> Result<TestFile, TestError> {
        #[derive(PartialEq)]
        enum Sec {
            None,
            Asm,
            Raw,
            Mem,
            Result,
            Error,
            Ignore,
        }
        let mut sec = Sec::None;
        let mut asm = None::<String>;
        let mut raw = None::<Vec<u8>>;
        let mut mem = Vec::new();
        let mut result = None;
        let mut error = None::<String>;
        for (i, line) in text.lines().enumerate() {
            let lineno = i + 1;
            let syntax = |reason: String| TestError::Syntax {
                line: lineno,
                reason,
            };
            let line = line.trim_end_matches('\r');
            if let Some(name) = line.strip_prefix("-- ") {
                sec = match name.trim() {
                    "asm" => {
                        asm.get_or_insert_with(String::new);
                        Sec::Asm
                    }
                    "raw" => {
                        raw.get_or_insert_with(Vec::new);
                        Sec::Raw
                    }
                    "mem" => Sec::Mem,
                    "result" => Sec::Result,
                    "error" => {
                        error.get_or_insert_with(String::new);
                        Sec::Error
                    }
                    "c" | "no register offset" => Sec::Ignore,
                    other => return Err(syntax(format!("unknown section `-- {other}`"))),
                };
                continue;
            }
            let content = line.trim();
            if sec != Sec::Asm && (content.is_empty() || content.starts_with('#')) {
                continue;
            }
            match sec {
                Sec::None | Sec::Ignore => {}
                Sec::Asm => {
                    let a = asm.get_or_insert_with(String::new);
                    a.push_str(line);
                    a.push('\n');
                }
                Sec::Raw => {
                    let r = raw.get_or_insert_with(Vec::new);
                    for tok in content.split_whitespace() {
                        if let Some(hex) = tok.strip_prefix("0x") {
                            let w = u64::from_str_radix(hex, 16)
                                .map_err(|e| syntax(format!("bad raw word `{tok}`: {e}")))?;
                            r.extend_from_slice(&w.to_le_bytes());
                        } else {
                            r.push(parse_byte(tok).map_err(syntax)?);
                        }
                    }
                }
                Sec::Mem => {
                    for tok in content.split_whitespace() {
                        mem.push(parse_byte(tok).map_err(syntax)?);
                    }
                }
                Sec::Result => {
                    if result.is_some() {
                        return Err(syntax("second value in `-- result`".into()));
                    }
                    result = Some(parse_u64(content).map_err(syntax)?);
                }
                Sec::Error => {
                    error = Some(content.to_string());
                }
            }
        }
        let program = match (asm, raw) {
            (_, Some(r)) => ProgramSource::Raw(r),
            (Some(a), None) => ProgramSource::Asm(a),
            (None, None) => return Err(TestError::NoProgram),
        };
        if result.is_none() && error.is_none() {
            return Err(TestError::NoExpectation);
        }
        Ok(TestFile {
            program,
            mem,
            result,
            error,
        })
    }

    /// Reads and parses a `.data` file.
    pub fn load(path: &Path) -> Result<TestFile, TestError> {
        let text = std::fs::read_to_string(path).map_err(|source| TestError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        TestFile::parse(&text)
    }

    /// The program, one [`Insn`] per slot, with the structural checks of
    /// [`decode_program`] (assembled programs are re-encoded and decoded, so
    /// both sources get the same checks).
    pub fn insns(&self) -> Result<Vec<Insn>, TestError> {
        let bytes = match &self.program {
            ProgramSource::Raw(b) => b.clone(),
            ProgramSource::Asm(src) => encode_program(&assemble(src)?),
        };
        if bytes.is_empty() {
            return Err(TestError::NoProgram);
        }
        Ok(decode_program(&bytes)?)
    }
}

fn parse_byte(tok: &str) -> Result<u8, String> {
    let hex = tok.strip_prefix("0x").unwrap_or(tok);
    if hex.len() > 2 {
        return Err(format!("`{tok}` is not a byte"));
    }
    u8::from_str_radix(hex, 16).map_err(|e| format!("bad hex byte `{tok}`: {e}"))
}

fn parse_u64(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse::<u64>(),
    };
    r.map_err(|e| format!("bad number `{s}`: {e}"))
}

/// Assembles conformance-test assembly with pkbpf's assembler.
pub fn assemble(src: &str) -> Result<Vec<Insn>, TestError> {
    pkbpf_verifier::asm::assemble(src).map_err(|e| TestError::Asm {
        reason: e.to_string(),
    })
}

/// Why an engine did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine does not exist in this build (yet).
    #[error("the {engine} engine is not available: {reason}")]
    Unavailable {
        /// The engine's name.
        engine: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// The interpreter stopped with an error.
    #[error(transparent)]
    Interp(#[from] pkbpf_jit::interp::ExecError),
    /// Another engine's failure.
    #[error("{engine}: {message}")]
    Failed {
        /// The engine's name.
        engine: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// Something that runs a program on input memory, with bpf_conformance's
/// helpers (helper 5 = unwind), `r1` = the memory's address (0 when empty),
/// `r2` = its length.
pub trait Engine {
    /// Short name (`interp`, `jit`), used in reports.
    fn name(&self) -> &'static str;
    /// Runs `prog` (one [`Insn`] per slot) and returns `r0`.
    fn run(&mut self, prog: &[Insn], mem: &mut [u8]) -> Result<u64, EngineError>;
}

/// The reference interpreter as an [`Engine`].
#[derive(Debug, Default)]
pub struct InterpEngine {
    /// Instructions executed by the last successful run.
    pub last_insns: u64,
}

impl Engine for InterpEngine {
    fn name(&self) -> &'static str {
        "interp"
    }

    fn run(&mut self, prog: &[Insn], mem: &mut [u8]) -> Result<u64, EngineError> {
        let len = mem.len() as u64;
        let mut memory = Memory::new();
        let addr = if mem.is_empty() {
            0
        } else {
            memory.add_slice_mut(mem, RegionKind::Input)
        };
        let mut helpers = HelperTable::conformance();
        let out = Interpreter::new(prog).run(&mut memory, &mut helpers, [addr, len, 0, 0, 0])?;
        self.last_insns = out.stats.insns;
        Ok(out.r0)
    }
}

/// Which engines to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineChoice {
    /// The reference interpreter.
    Interp,
    /// The x86-64 JIT.
    Jit,
    /// Every available engine, compared with each other.
    All,
}

/// The x86-64 JIT as an [`Engine`]: the program is verified against the
/// input size (the JIT compiles only verified programs), then compiled and
/// run.
#[derive(Debug, Default)]
pub struct JitEngine;

impl Engine for JitEngine {
    fn name(&self) -> &'static str {
        "jit"
    }

    fn run(&mut self, prog: &[Insn], mem: &mut [u8]) -> Result<u64, EngineError> {
        use pkbpf_jit::x86::{JitEnv, JitProgram};
        let fail = |message: String| EngineError::Failed {
            engine: "jit",
            message,
        };
        let size = u32::try_from(mem.len()).map_err(|_| fail("input too large".into()))?;
        let verified = pkbpf_verifier::verify(prog, &pkbpf_verifier::ProgramEnv::conformance(size))
            .map_err(|e| fail(format!("verifier: {e}")))?;
        let jit = JitProgram::compile(&verified, &JitEnv::conformance())
            .map_err(|e| fail(e.to_string()))?;
        let addr = if mem.is_empty() {
            0
        } else {
            mem.as_mut_ptr() as u64
        };
        // SAFETY: the program was verified for r1 = `size` bytes of memory
        // and r2 = their size; `mem` is exactly that and stays valid for the
        // whole call; the only helper (unwind) ignores the null env.
        unsafe { jit.call_with_env(addr, mem.len() as u64, std::ptr::null_mut()) }
            .map_err(|e| fail(e.to_string()))
    }
}

/// The engines for a choice; an error when a named engine is missing.
pub fn engines(choice: EngineChoice) -> Result<Vec<Box<dyn Engine>>, EngineError> {
    match choice {
        EngineChoice::Interp => Ok(vec![Box::new(InterpEngine::default())]),
        EngineChoice::Jit => Ok(vec![Box::new(JitEngine)]),
        EngineChoice::All => Ok(vec![Box::new(InterpEngine::default()), Box::new(JitEngine)]),
    }
}

/// How one test went.
#[derive(Debug)]
pub enum Verdict {
    /// Every engine did what the file expects.
    Pass,
    /// Something else happened.
    Fail(FailReason),
}

/// Why a test failed.
#[derive(Debug)]
pub enum FailReason {
    /// The file could not be parsed, assembled or decoded.
    Setup(TestError),
    /// An engine returned the wrong value.
    WrongResult {
        /// The engine.
        engine: &'static str,
        /// Expected `r0` (`None` when an error was expected).
        expected: Option<u64>,
        /// What it returned.
        got: u64,
    },
    /// An engine failed where a result was expected.
    UnexpectedError {
        /// The engine.
        engine: &'static str,
        /// Expected `r0`.
        expected: u64,
        /// The failure.
        error: EngineError,
        /// The failing instruction, disassembled, when the engine names it.
        insn: Option<String>,
    },
    /// Engines disagree with each other.
    Disagreement {
        /// Each engine and what it gave.
        outcomes: Vec<(&'static str, String)>,
    },
}

/// An error and its sources, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::Setup(e) => {
                write!(f, "{}", chain(e))
            }
            FailReason::WrongResult {
                engine,
                expected: Some(x),
                got,
            } => write!(f, "{engine}: expected {x:#x}, got {got:#x}"),
            FailReason::WrongResult {
                engine,
                expected: None,
                got,
            } => write!(f, "{engine}: expected an error, got {got:#x}"),
            FailReason::UnexpectedError {
                engine,
                expected,
                error,
                insn,
            } => {
                write!(
                    f,
                    "{engine}: expected {expected:#x}, got error: {}",
                    chain(error)
                )?;
                match insn {
                    Some(i) => write!(f, " (`{i}`)"),
                    None => Ok(()),
                }
            }
            FailReason::Disagreement { outcomes } => {
                write!(f, "engines disagree:")?;
                for (e, o) in outcomes {
                    write!(f, " {e}={o}")?;
                }
                Ok(())
            }
        }
    }
}

/// Runs one parsed test on every engine (each on its own copy of the input
/// memory) and judges the outcome: with `-- result`, every engine must return
/// exactly that value; with `-- error`, the program must fail to decode or
/// every engine must stop with an error (the text is not compared: pkbpf's
/// messages are its own). Engines must also agree with each other on the
/// result and on the final input memory.
pub fn run_test(test: &TestFile, engines: &mut [Box<dyn Engine>]) -> Verdict {
    let prog = match test.insns() {
        Ok(p) => p,
        // A program every engine must refuse counts as the expected error.
        Err(TestError::Decode(_)) if test.error.is_some() => return Verdict::Pass,
        Err(e) => return Verdict::Fail(FailReason::Setup(e)),
    };
    let mut outcomes = Vec::new();
    for engine in engines.iter_mut() {
        let mut mem = test.mem.clone();
        outcomes.push((engine.name(), engine.run(&prog, &mut mem), mem));
    }
    // Engines must agree on r0 (or on failing) and on the final memory.
    if outcomes.len() > 1 {
        let key = |o: &(&str, Result<u64, EngineError>, Vec<u8>)| match &o.1 {
            Ok(v) => (Some(*v), o.2.clone()),
            Err(_) => (None, o.2.clone()),
        };
        let first = key(&outcomes[0]);
        if outcomes.iter().any(|o| key(o) != first) {
            return Verdict::Fail(FailReason::Disagreement {
                outcomes: outcomes
                    .iter()
                    .map(|(n, r, _)| {
                        let s = match r {
                            Ok(v) => format!("{v:#x}"),
                            Err(e) => format!("error({})", chain(e)),
                        };
                        (*n, s)
                    })
                    .collect(),
            });
        }
    }
    for (engine, r, _) in outcomes {
        match (r, test.result, &test.error) {
            (Ok(v), Some(x), _) if v == x => {}
            (Ok(got), expected, _) => {
                return Verdict::Fail(FailReason::WrongResult {
                    engine,
                    expected,
                    got,
                })
            }
            (Err(_), _, Some(_)) => {}
            (Err(error), Some(expected), None) => {
                let insn = match &error {
                    EngineError::Interp(e) => prog.get(e.pc).map(|i| insn_to_string(i, e.pc)),
                    _ => None,
                };
                return Verdict::Fail(FailReason::UnexpectedError {
                    engine,
                    expected,
                    error,
                    insn,
                });
            }
            (Err(_), None, None) => {
                return Verdict::Fail(FailReason::Setup(TestError::NoExpectation))
            }
        }
    }
    Verdict::Pass
}

/// Loads and runs one `.data` file.
pub fn run_file(path: &Path, engines: &mut [Box<dyn Engine>]) -> Verdict {
    match TestFile::load(path) {
        Ok(t) => run_test(&t, engines),
        Err(e) => Verdict::Fail(FailReason::Setup(e)),
    }
}

/// The `.data` files of a directory (not recursive), sorted; or the path
/// itself when it is a file.
pub fn data_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let p = entry?.path();
        if p.is_file() && p.extension().is_some_and(|e| e == "data") {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// A suite's results.
#[derive(Debug, Default)]
pub struct Report {
    /// Tests that passed (in negative mode: that failed as expected).
    pub passed: usize,
    /// One line per failed test: file name and reason.
    pub failures: Vec<String>,
}

impl Report {
    /// Number of failed tests.
    pub fn failed(&self) -> usize {
        self.failures.len()
    }
}

impl fmt::Display for Report {
    /// The failure lines, then `N passed, N failed`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.failures {
            writeln!(f, "{l}")?;
        }
        write!(f, "{} passed, {} failed", self.passed, self.failed())
    }
}

/// Runs one `.data` file that is expected to fail: `Ok(how)` when it did
/// (it does not parse, assemble or decode, an engine stops with an error, or
/// an engine returns something other than the `-- result`), `Err(reason)`
/// when every engine gave exactly the expected result.
pub fn run_file_negative(path: &Path, engines: &mut [Box<dyn Engine>]) -> Result<String, String> {
    let test = match TestFile::load(path) {
        Ok(t) => t,
        Err(e) => return Ok(FailReason::Setup(e).to_string()),
    };
    let prog = match test.insns() {
        Ok(p) => p,
        Err(e) => return Ok(FailReason::Setup(e).to_string()),
    };
    for engine in engines.iter_mut() {
        let mut mem = test.mem.clone();
        match engine.run(&prog, &mut mem) {
            Err(e) => return Ok(format!("{}: {}", engine.name(), chain(&e))),
            Ok(v) if Some(v) != test.result => {
                return Ok(format!("{}: returned {v:#x}", engine.name()))
            }
            Ok(_) => {}
        }
    }
    Err("negative test passed (expected it to fail)".into())
}

/// Runs every file. In `negative` mode each test is expected to fail (see
/// [`run_file_negative`]), and one that passes is reported as a failure.
pub fn run_suite(files: &[PathBuf], engines: &mut [Box<dyn Engine>], negative: bool) -> Report {
    let mut report = Report::default();
    for path in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let failure = if negative {
            run_file_negative(path, engines).err()
        } else {
            match run_file(path, engines) {
                Verdict::Pass => None,
                Verdict::Fail(reason) => Some(reason.to_string()),
            }
        };
        match failure {
            None => report.passed += 1,
            Some(reason) => report.failures.push(format!("FAIL {name}: {reason}")),
        }
    }
    report
}

/// Whether a directory looks like bpf_conformance's `negative/` folder.
pub fn is_negative_dir(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "negative")
}
