//! The harness's error type.

use std::path::PathBuf;

/// Everything that can go wrong while building, running or reporting.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A tool (`cc`, `clang`, a built binary) could not be started.
    #[error("cannot run {tool}")]
    Spawn {
        /// The command.
        tool: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A tool ran and failed.
    #[error("{tool} failed (status {status}): {stderr}")]
    ToolFailed {
        /// The command.
        tool: String,
        /// Its exit status, as printed.
        status: String,
        /// The end of its stderr.
        stderr: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line of a tool's output did not parse.
    #[error("{tool} output line {line}: {reason}: {text:?}")]
    BadOutput {
        /// Which tool printed it.
        tool: &'static str,
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A tool's output lacks an expected row.
    #[error("{tool} output has no row {row}")]
    MissingRow {
        /// Which tool.
        tool: &'static str,
        /// The row.
        row: String,
    },
    /// Statistics over no samples.
    #[error("no samples to summarise")]
    NoSamples,
    /// A sample is NaN or infinite.
    #[error("sample {index} is not a finite number ({value})")]
    NonFiniteSample {
        /// Its index.
        index: usize,
        /// Its value.
        value: f64,
    },
    /// The object loader refused a BPF object.
    #[error("object {path}")]
    Object {
        /// The object file.
        path: PathBuf,
        /// Why.
        #[source]
        source: pkbpf::object::ObjectError,
    },
    /// A program is missing from an object.
    #[error("object {path} has no program {name}")]
    NoProgram {
        /// The object file.
        path: PathBuf,
        /// The program name.
        name: String,
    },
    /// pkbpf's verifier rejected a program.
    #[error("pkbpf verifier rejected {program}")]
    Verify {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: pkbpf_verifier::VerifyError,
    },
    /// A program failed at run time on an engine.
    #[error("{program} on {engine}: {reason}")]
    Run {
        /// The program.
        program: String,
        /// The engine.
        engine: String,
        /// What happened.
        reason: String,
    },
    /// JSON (de)serialisation failed.
    #[error("JSON {path}")]
    Json {
        /// The file (or `-`).
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// Drawing a chart failed.
    #[error("chart {path}: {reason}")]
    Chart {
        /// The output file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}
