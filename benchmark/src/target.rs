//! The victim binary: running it and parsing its `name avg_ns` lines.

use std::path::Path;
use std::process::Command;

use crate::tools::run_checked;
use crate::workload::{SYSCALL_ROW, TARGET_FUNCTIONS};
use crate::BenchError;

/// One run of the victim: average ns per call of each row, in output order.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetRun {
    /// `(row, ns per call)`: the 17 functions, then [`SYSCALL_ROW`].
    pub rows: Vec<(String, f64)>,
    /// The checksum the victim printed.
    pub checksum: u64,
}

impl TargetRun {
    /// ns per call of `row`.
    pub fn get(&self, row: &str) -> Option<f64> {
        self.rows.iter().find(|(r, _)| r == row).map(|(_, v)| *v)
    }
}

/// Lines of a victim's output that are not its own (the kernel loader's
/// `probe`/`unsupported`/`unattached`/`skipped:` lines) are returned apart.
pub fn parse_target_output(text: &str) -> Result<(TargetRun, Vec<String>), BenchError> {
    let mut rows = Vec::new();
    let mut checksum = None;
    let mut other = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let bad = |reason| BenchError::BadOutput {
            tool: "bench_target",
            line: i + 1,
            text: line.to_string(),
            reason,
        };
        let mut it = line.split_whitespace();
        let Some(name) = it.next() else { continue };
        let is_row = name.starts_with("__bench_") || name == SYSCALL_ROW;
        if name == "checksum" {
            let v = it.next().ok_or_else(|| bad("checksum without a value"))?;
            checksum = Some(
                v.parse::<u64>()
                    .map_err(|_| bad("checksum is not an integer"))?,
            );
        } else if is_row {
            let v = it.next().ok_or_else(|| bad("row without a value"))?;
            let ns: f64 = v.parse().map_err(|_| bad("value is not a number"))?;
            if !ns.is_finite() || ns < 0.0 {
                return Err(bad("value is not a non-negative number"));
            }
            if it.next().is_some() {
                return Err(bad("trailing fields"));
            }
            rows.push((name.to_string(), ns));
        } else {
            other.push(line.to_string());
        }
    }
    let checksum = checksum.ok_or(BenchError::MissingRow {
        tool: "bench_target",
        row: "checksum".into(),
    })?;
    for f in TARGET_FUNCTIONS.iter().chain(std::iter::once(&SYSCALL_ROW)) {
        if !rows.iter().any(|(r, _)| r == f) {
            return Err(BenchError::MissingRow {
                tool: "bench_target",
                row: f.to_string(),
            });
        }
    }
    Ok((TargetRun { rows, checksum }, other))
}

/// Runs the victim natively (no probes) with `iterations` calls per function.
pub fn run_native(bin: &Path, iterations: u64) -> Result<TargetRun, BenchError> {
    let out = run_checked(Command::new(bin).arg(iterations.to_string()))?;
    let (run, _) = parse_target_output(&String::from_utf8_lossy(&out.stdout))?;
    Ok(run)
}
