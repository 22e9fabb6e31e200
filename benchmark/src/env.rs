//! Environments: one way of running the suite's rows (native, kernel, pkbpf
//! in each sandbox mode, the embedded engines).
//!
//! The harness asks each environment once whether it can run here
//! ([`Environment::prepare`]), then for N runs ([`Environment::run_once`]).
//! An environment that cannot run says why ([`Readiness`]), and the report
//! prints that reason instead of numbers: no environment ever reports
//! emulated or borrowed timings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::target::run_native;
use crate::workload::{SYSCALL_ROW, TARGET_FUNCTIONS};
use crate::BenchError;

/// What every environment gets: where to build, the victim, the call count.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Scratch directory for built files.
    pub workdir: PathBuf,
    /// The compiled victim binary.
    pub target: PathBuf,
    /// Calls per target function per run.
    pub iterations: u64,
}

/// Whether an environment can run here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// It can.
    Ready,
    /// It could on another machine or with other privileges (e.g. kernel rows
    /// without root): printed as `skipped: <reason>`.
    Skipped(String),
    /// The hardware lacks what it needs (MPK without PKU): printed as
    /// `unavailable: <reason>`.
    Unavailable(String),
    /// pkbpf has not integrated what it needs yet: printed as
    /// `pending: <reason>`.
    Pending(String),
}

impl Readiness {
    /// The status word of the report (`ok`, `skipped`, `unavailable`,
    /// `pending`).
    pub fn status(&self) -> &'static str {
        match self {
            Readiness::Ready => "ok",
            Readiness::Skipped(_) => "skipped",
            Readiness::Unavailable(_) => "unavailable",
            Readiness::Pending(_) => "pending",
        }
    }

    /// The reason, for every state but [`Readiness::Ready`].
    pub fn reason(&self) -> Option<&str> {
        match self {
            Readiness::Ready => None,
            Readiness::Skipped(r) | Readiness::Unavailable(r) | Readiness::Pending(r) => Some(r),
        }
    }
}

/// One row's result of one run.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    /// Average ns per call.
    Ns(f64),
    /// This row did not run in this environment (e.g. the kernel refused the
    /// program); the reason is reported.
    NotRun(String),
}

/// One way of running the suite.
pub trait Environment {
    /// Short name used in the JSON and the table (`native`, `kernel`,
    /// `pkbpf-none`, …).
    fn name(&self) -> &'static str;

    /// The rows this environment measures.
    fn rows(&self) -> Vec<String>;

    /// Builds what it needs and says whether it can run here.
    fn prepare(&mut self, setup: &Setup) -> Readiness;

    /// One run: a cell per row of [`Environment::rows`].
    fn run_once(&mut self, setup: &Setup) -> Result<BTreeMap<String, Cell>, BenchError>;

    /// Called once after the environment's runs: undoes what `prepare`
    /// installed (probes, traced syscalls) so the next environment measures
    /// the victim alone.
    fn finish(&mut self) {}
}

/// The victim's rows: the 17 functions and the syscall loop.
pub fn target_rows() -> Vec<String> {
    TARGET_FUNCTIONS
        .iter()
        .map(|s| s.to_string())
        .chain(std::iter::once(SYSCALL_ROW.to_string()))
        .collect()
}

/// The victim without any probe.
#[derive(Clone, Copy, Debug, Default)]
pub struct Native;

impl Environment for Native {
    fn name(&self) -> &'static str {
        "native"
    }

    fn rows(&self) -> Vec<String> {
        target_rows()
    }

    fn prepare(&mut self, _: &Setup) -> Readiness {
        Readiness::Ready
    }

    fn run_once(&mut self, setup: &Setup) -> Result<BTreeMap<String, Cell>, BenchError> {
        let run = run_native(&setup.target, setup.iterations)?;
        Ok(run
            .rows
            .into_iter()
            .map(|(r, v)| (r, Cell::Ns(v)))
            .collect())
    }
}

/// The sandbox mode pkbpf's in-process environment runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PkbpfSandbox {
    /// `--sandbox=none`.
    None,
    /// `--sandbox=mpk`.
    Mpk,
}

/// `unavailable` reason for MPK on this machine, or `None` where PKU works
/// (from `pkbpf_sandbox::detect`, the one detection function).
pub fn mpk_unavailable_reason() -> Option<String> {
    match pkbpf_sandbox::detect() {
        pkbpf_sandbox::PkuStatus::Available => None,
        pkbpf_sandbox::PkuStatus::Missing(m) => {
            let text = m.to_string();
            let detail = text.strip_prefix("no PKU: ").unwrap_or(&text);
            Some(format!("no PKU ({detail})"))
        }
    }
}

/// Where the repository's sources are (for tests; the harness embeds what it
/// compiles).
pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}
