//! pkbpf's benchmark harness.
//!
//! Two benchmarks live here:
//!
//! - **bpftime's workloads** ([`suite`]): a victim binary with 17 probe
//!   targets ([`target`]), run natively, under real kernel uprobes
//!   ([`kernel`], via libbpf), and under pkbpf (one [`env::Environment`] per
//!   sandbox mode; pkbpf's own probes in process, [`inproc`]), plus the
//!   embedded-call row ([`embedded`]) and the
//!   `write()` syscall row; N runs summarised per row ([`stats`]), printed in
//!   bpftime's table layout, written as JSON and as SVG/PNG charts
//!   ([`report`], [`chart`]).
//! - **The engine benchmark** ([`engines`]): compute programs in C, compiled
//!   for BPF and natively, run on pkbpf's interpreter and JIT, rbpf's
//!   interpreter and JIT, and native code, each checked against native's
//!   result and reported as a ratio to native.
//!
//! C sources (the victim, the kernel loader, the BPF programs) are compiled at
//! run time with the system's `cc` and `clang` ([`tools`]).
#![deny(missing_docs)]

pub mod chart;
pub mod embedded;
pub mod engines;
pub mod env;
pub mod error;
pub mod inproc;
pub mod kernel;
pub mod pkrun;
pub mod report;
pub mod stats;
pub mod suite;
pub mod sysinfo;
pub mod target;
pub mod tools;
pub mod verifier_bench;
pub mod workload;

pub use error::BenchError;
