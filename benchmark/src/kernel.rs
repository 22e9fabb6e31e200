//! The kernel baseline: the same workloads under real kernel uprobes and the
//! `sys_exit_write` tracepoint, loaded with libbpf by `kload`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use crate::env::{target_rows, Cell, Environment, Readiness, Setup};
use crate::target::parse_target_output;
use crate::tools::{build_kernel_objects, build_kload, tail};
use crate::workload::kernel_programs;
use crate::BenchError;

/// What `kload` reported besides the victim's rows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KloadReport {
    /// Run counts by program name.
    pub run_counts: BTreeMap<String, u64>,
    /// Programs the kernel refused to load, with the reason.
    pub unsupported: BTreeMap<String, String>,
    /// Programs that could not be attached, with the reason.
    pub unattached: BTreeMap<String, String>,
    /// A `skipped: kernel rows: …` reason.
    pub skipped: Option<String>,
}

/// Parses `kload`'s own lines (`probe`, `unsupported`, `unattached`,
/// `skipped:`).
pub fn parse_kload_lines(lines: &[String]) -> Result<KloadReport, BenchError> {
    let mut rep = KloadReport::default();
    for (i, line) in lines.iter().enumerate() {
        let bad = |reason| BenchError::BadOutput {
            tool: "kload",
            line: i + 1,
            text: line.clone(),
            reason,
        };
        if let Some(why) = line.strip_prefix("skipped: kernel rows: ") {
            rep.skipped = Some(why.to_string());
            continue;
        }
        let mut parts = line.splitn(3, ' ');
        let (Some(kind), Some(name)) = (parts.next(), parts.next()) else {
            return Err(bad("unknown line"));
        };
        let rest = parts.next().unwrap_or("").to_string();
        match kind {
            "probe" => {
                let n = rest
                    .parse()
                    .map_err(|_| bad("run count is not an integer"))?;
                rep.run_counts.insert(name.to_string(), n);
            }
            "unsupported" => {
                rep.unsupported.insert(name.to_string(), rest);
            }
            "unattached" => {
                rep.unattached.insert(name.to_string(), rest);
            }
            _ => return Err(bad("unknown line")),
        }
    }
    Ok(rep)
}

/// The kernel environment.
#[derive(Clone, Debug, Default)]
pub struct Kernel {
    kload: Option<PathBuf>,
    objects: Vec<PathBuf>,
}

impl Kernel {
    /// A kernel environment (built in [`Environment::prepare`]).
    pub fn new() -> Self {
        Self::default()
    }
}

impl Environment for Kernel {
    fn name(&self) -> &'static str {
        "kernel"
    }

    fn rows(&self) -> Vec<String> {
        target_rows()
    }

    fn prepare(&mut self, setup: &Setup) -> Readiness {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Readiness::Skipped("kernel rows: not root".into());
        }
        let kload = match build_kload(&setup.workdir) {
            Ok(k) => k,
            Err(e) => {
                return Readiness::Skipped(format!(
                    "kernel rows: cannot build kload with libbpf: {e}"
                ))
            }
        };
        match build_kernel_objects(&setup.workdir) {
            Ok(objs) => self.objects = objs,
            Err(e) => {
                return Readiness::Skipped(format!("kernel rows: cannot compile BPF objects: {e}"))
            }
        }
        self.kload = Some(kload);
        Readiness::Ready
    }

    fn run_once(&mut self, setup: &Setup) -> Result<BTreeMap<String, Cell>, BenchError> {
        let kload = self.kload.as_ref().ok_or(BenchError::MissingRow {
            tool: "kload",
            row: "prepare() was not called".into(),
        })?;
        let mut cmd = Command::new(kload);
        cmd.arg("--min-runs").arg(setup.iterations.to_string());
        for o in &self.objects {
            cmd.arg("-o").arg(o);
        }
        cmd.arg("--")
            .arg(&setup.target)
            .arg(setup.iterations.to_string());
        let tool = format!("{cmd:?}");
        let out = cmd.output().map_err(|source| BenchError::Spawn {
            tool: tool.clone(),
            source,
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.code() == Some(2) {
            let rep = parse_kload_lines(&stdout.lines().map(String::from).collect::<Vec<_>>())?;
            let why = rep
                .skipped
                .unwrap_or_else(|| "kload could not use bpf()".into());
            return Ok(target_rows()
                .into_iter()
                .map(|r| (r, Cell::NotRun(why.clone())))
                .collect());
        }
        if !out.status.success() {
            return Err(BenchError::ToolFailed {
                tool,
                status: out.status.to_string(),
                stderr: tail(&String::from_utf8_lossy(&out.stderr), 2000),
            });
        }
        let (run, other) = parse_target_output(&stdout)?;
        let rep = parse_kload_lines(&other)?;
        let mut cells = BTreeMap::new();
        for (row, ns) in run.rows {
            let progs = kernel_programs(&row);
            let not_run = progs.iter().find_map(|p| {
                if let Some(why) = rep.unsupported.get(p) {
                    Some(format!("kernel refused {p}: {why}"))
                } else if let Some(why) = rep.unattached.get(p) {
                    Some(format!("cannot attach {p}: {why}"))
                } else if !rep.run_counts.contains_key(p) {
                    Some(format!("{p} was not loaded"))
                } else {
                    None
                }
            });
            let cell = match not_run {
                Some(why) => Cell::NotRun(why),
                None if progs.is_empty() => {
                    Cell::NotRun("no kernel program probes this row".into())
                }
                None => Cell::Ns(ns),
            };
            cells.insert(row, cell);
        }
        Ok(cells)
    }
}
