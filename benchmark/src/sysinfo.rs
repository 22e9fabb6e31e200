//! The environment line: CPU model, cores, kernel, PKU.

use serde::{Deserialize, Serialize};

use crate::env::mpk_unavailable_reason;

/// The machine a report was made on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemInfo {
    /// `model name` from `/proc/cpuinfo` (or `unknown`).
    pub cpu: String,
    /// Logical CPUs available to this process.
    pub cores: usize,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// Whether protection keys work here (`pkbpf_sandbox::detect`).
    pub pku: bool,
    /// Why not, when they do not.
    pub pku_reason: Option<String>,
}

impl SystemInfo {
    /// Collects the facts of this machine.
    pub fn collect() -> SystemInfo {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let pku_reason = mpk_unavailable_reason();
        SystemInfo {
            cpu,
            cores,
            kernel,
            pku: pku_reason.is_none(),
            pku_reason,
        }
    }

    /// `cpu: …, cores: N, kernel: …, PKU: yes|no (why)`.
    pub fn line(&self) -> String {
        let pku = match &self.pku_reason {
            None => "yes".to_string(),
            Some(r) => format!("no ({r})"),
        };
        format!(
            "cpu: {}, cores: {}, kernel: {}, PKU: {}",
            self.cpu, self.cores, self.kernel, pku
        )
    }
}
