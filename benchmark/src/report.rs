//! The suite's results: one record per (row, environment), the table in
//! bpftime's layout, and the JSON form.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::stats::Summary;
use crate::sysinfo::SystemInfo;
use crate::workload::{EMBED_ROW, SYSCALL_ROW, TARGET_FUNCTIONS};
use crate::BenchError;

/// The JSON schema identifier.
pub const SCHEMA: &str = "pkbpf-bench/1";

/// One row in one environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The row (`__bench_uprobe`, …, `syscall_write`, `embedded_call`).
    pub row: String,
    /// The environment (`native`, `kernel`, `pkbpf-none`, `pkbpf-mpk`,
    /// `pkbpf-interp`, `pkbpf-jit`).
    pub env: String,
    /// `ok`, `skipped`, `unavailable`, `pending`, `not_run` or `failed`.
    pub status: String,
    /// Why it is not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// ns per call, one per run.
    #[serde(default)]
    pub samples_ns: Vec<f64>,
    /// Summary of the samples (when there are any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
}

/// A whole suite run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// The machine.
    pub system: SystemInfo,
    /// Calls per target function per run.
    pub iterations: u64,
    /// Runs.
    pub runs: usize,
    /// The records.
    pub records: Vec<Record>,
}

impl Report {
    /// The record of `row` in `env`.
    pub fn get(&self, row: &str, env: &str) -> Option<&Record> {
        self.records.iter().find(|r| r.row == row && r.env == env)
    }

    /// Median ns of `row` in `env`, when it ran.
    pub fn median(&self, row: &str, env: &str) -> Option<f64> {
        self.get(row, env)?.summary.map(|s| s.median)
    }

    /// Writes the JSON form.
    pub fn write_json(&self, path: &Path) -> Result<(), BenchError> {
        let text = serde_json::to_string_pretty(self).map_err(|source| BenchError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        std::fs::write(path, text + "\n").map_err(|source| BenchError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads a JSON report back (checking the schema id).
    pub fn read_json(path: &Path) -> Result<Report, BenchError> {
        let text = std::fs::read_to_string(path).map_err(|source| BenchError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let rep: Report = serde_json::from_str(&text).map_err(|source| BenchError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        if rep.schema != SCHEMA {
            return Err(BenchError::BadOutput {
                tool: "report JSON",
                line: 1,
                text: rep.schema,
                reason: "unknown schema",
            });
        }
        Ok(rep)
    }

    /// The text report: the environment line, the per-run statistics of every
    /// measured record, then the summary table in bpftime's layout (median
    /// ns per call per environment, speedup of pkbpf over the kernel, and
    /// the kernel's and pkbpf's overhead over native), with the embedded and
    /// syscall rows, and what did not run and why.
    pub fn text(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!("{}\n", self.system.line()));
        s.push_str(&format!(
            "{} runs x {} calls per function; ns per call\n\n",
            self.runs, self.iterations
        ));
        s.push_str(&format!(
            "{:<34} {:<13} {:>11} {:>11} {:>11} {:>9} {:>11}\n",
            "row", "env", "min", "max", "avg", "stddev", "median"
        ));
        for r in &self.records {
            if let Some(m) = &r.summary {
                s.push_str(&format!(
                    "{:<34} {:<13} {:>11.1} {:>11.1} {:>11.1} {:>9.1} {:>11.1}\n",
                    r.row, r.env, m.min, m.max, m.avg, m.stddev, m.median
                ));
            }
        }
        s.push('\n');
        let envs = ["native", "kernel", "pkbpf-none", "pkbpf-mpk"];
        s.push_str(&format!(
            "{:<34} {:>11} {:>11} {:>11} {:>11} {:>14}\n",
            "probe/tracepoint (median ns)",
            "native",
            "kernel",
            "pkbpf none",
            "pkbpf mpk",
            "kernel/pkbpf"
        ));
        let rows: Vec<&str> = TARGET_FUNCTIONS
            .iter()
            .copied()
            .chain(std::iter::once(SYSCALL_ROW))
            .collect();
        for row in rows {
            s.push_str(&format!("{row:<34}"));
            for env in envs {
                let cell = match self.get(row, env) {
                    Some(r) if r.summary.is_some() => {
                        format!("{:.1}", r.summary.map_or(0.0, |m| m.median))
                    }
                    Some(r) => r.status.clone(),
                    None => "-".into(),
                };
                s.push_str(&format!(" {cell:>11}"));
            }
            let speedup = match (self.median(row, "kernel"), self.median(row, "pkbpf-none")) {
                (Some(k), Some(p)) if p > 0.0 => format!("{:.1}x", k / p),
                _ => "-".into(),
            };
            s.push_str(&format!(" {speedup:>14}\n"));
        }
        for env in crate::embedded::EMBED_ENGINES.map(|e| e.name) {
            let label = format!("{EMBED_ROW} ({env})");
            let cell = match self.get(EMBED_ROW, env) {
                Some(r) if r.summary.is_some() => {
                    format!("{:.1} ns", r.summary.map_or(0.0, |m| m.median))
                }
                Some(r) => format!("{}: {}", r.status, r.reason.clone().unwrap_or_default()),
                None => "-".into(),
            };
            s.push_str(&format!("{label:<34} {cell}\n"));
        }
        let mut reasons: Vec<String> = Vec::new();
        for r in &self.records {
            if r.summary.is_none() {
                let line = format!(
                    "{}: {}: {}",
                    r.env,
                    r.status,
                    r.reason.clone().unwrap_or_default()
                );
                let line = if r.reason.as_deref().is_some_and(|x| x.contains(&r.row))
                    || self.same_for_all_rows(r)
                {
                    line
                } else {
                    format!("{} ({})", line, r.row)
                };
                if !reasons.contains(&line) {
                    reasons.push(line);
                }
            }
        }
        if !reasons.is_empty() {
            s.push_str("\nnot measured:\n");
            for r in reasons {
                s.push_str(&format!("  {r}\n"));
            }
        }
        s
    }

    fn same_for_all_rows(&self, rec: &Record) -> bool {
        self.records
            .iter()
            .filter(|r| r.env == rec.env)
            .all(|r| r.status == rec.status && r.reason == rec.reason)
    }
}
