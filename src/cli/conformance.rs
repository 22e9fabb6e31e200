//! `pkbpf conformance` and `pkbpf conformance-plugin`.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::path::PathBuf;

use pkbpf::conformance::{self, EngineChoice};
use pkbpf::verifier::isa::decode_program;

/// Which engine(s) `pkbpf conformance` runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineArg {
    /// The reference interpreter.
    Interp,
    /// The x86-64 JIT.
    Jit,
    /// Every available engine; a disagreement between them is a failure.
    All,
}

/// Arguments of `pkbpf conformance`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory of `.data` files (or one file).
    pub dir: PathBuf,
    /// Engine(s) to run the tests on.
    #[arg(long, value_enum, default_value_t = EngineArg::Interp)]
    pub engine: EngineArg,
    /// Every test is expected to fail (bpf_conformance's `negative/`
    /// directory; chosen automatically for a directory named `negative`).
    #[arg(long)]
    pub negative: bool,
}

/// Arguments of `pkbpf conformance-plugin`.
#[derive(clap::Args, Debug)]
pub struct PluginArgs {
    /// Input memory as hex bytes (whitespace between bytes allowed).
    #[arg(allow_hyphen_values = true)]
    pub memory: Option<String>,
    /// Plugin options passed by the bpf_conformance runner (ignored).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub options: Vec<String>,
}

/// Runs the conformance suite; exit code 1 when any test failed.
pub fn run(args: Args) -> Result<i32> {
    let choice = match args.engine {
        EngineArg::Interp => EngineChoice::Interp,
        EngineArg::Jit => EngineChoice::Jit,
        EngineArg::All => EngineChoice::All,
    };
    let mut engines = conformance::engines(choice)?;
    if choice == EngineChoice::All {
        let names: Vec<_> = engines.iter().map(|e| e.name()).collect();
        eprintln!("engines: {}", names.join(", "));
    }
    let files = conformance::data_files(&args.dir)
        .with_context(|| format!("cannot list {}", args.dir.display()))?;
    if files.is_empty() {
        bail!("no .data files in {}", args.dir.display());
    }
    let negative = args.negative || conformance::is_negative_dir(&args.dir);
    let report = conformance::run_suite(&files, &mut engines, negative);
    println!("{report}");
    Ok(if report.failed() == 0 { 0 } else { 1 })
}

/// Parses hex bytes, ignoring whitespace (`"b7 00 00 00"`, `"b7000000"`).
fn parse_hex(text: &str, what: &str) -> Result<Vec<u8>> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        bail!("{what}: odd number of hex digits");
    }
    digits
        .chunks(2)
        .enumerate()
        .map(|(i, pair)| {
            let s = std::str::from_utf8(pair).unwrap_or("??");
            u8::from_str_radix(s, 16).with_context(|| format!("{what}: byte {i}: `{s}` is not hex"))
        })
        .collect()
}

/// Speaks bpf_conformance's plugin protocol: the program's bytes as hex on
/// stdin, the input memory as hex in the first argument; prints `r0` in
/// lowercase hex (no `0x`), or prints the error and exits with 1.
pub fn run_plugin(args: PluginArgs) -> Result<i32> {
    let mut out = std::io::stdout().lock();
    match plugin(&args) {
        Ok(r0) => {
            writeln!(out, "{r0:x}")?;
            Ok(0)
        }
        Err(e) => {
            // The runner compares stdout with the test's `-- error` text.
            writeln!(out, "{e:#}")?;
            Ok(1)
        }
    }
}

fn plugin(args: &PluginArgs) -> Result<u64> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading the program from stdin")?;
    let bytes = parse_hex(&text, "program")?;
    let mut mem = match &args.memory {
        Some(m) => parse_hex(m, "memory")?,
        None => Vec::new(),
    };
    let prog = decode_program(&bytes)?;
    let mut engine = conformance::InterpEngine::default();
    Ok(conformance::Engine::run(&mut engine, &prog, &mut mem)?)
}
