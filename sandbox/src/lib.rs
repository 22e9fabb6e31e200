//! pkbpf's sandbox: protection keys, PKRU, domain gates, fault recovery.
//!
//! pkbpf runs each extension inside an Intel MPK (memory protection keys,
//! "PKU") domain; see `DESIGN.md`'s "MPK domain model". This crate is the only
//! place that touches the hardware:
//!
//! - [`detect`] decides whether protection keys work here (CPUID PKU + OSPKE
//!   and a successful `pkey_alloc`), and [`select`] turns the user's
//!   `--sandbox=auto|mpk|none` into a [`SandboxMode`], failing closed.
//! - [`Keys`] hands out the runtime key R and one key Eᵢ per extension as
//!   [`ProtectionKey`]s; [`protect`] tags pages with them.
//! - [`Domain`] is a PKRU value (host H, extension Xᵢ, trusted T);
//!   [`DomainGuard`] is the Rust-level scoped gate and [`GateStub`] the
//!   assembly entry gate in ERIM form (see [`GateCode`]).
//! - `bench` (x86-64 Linux) measures gate costs on real PKU hardware and
//!   says "unavailable" (with the reason) elsewhere, TCG included.
//! - `gadgets` (x86-64 Linux) finds `WRPKRU`/`XRSTOR` bytes in executable
//!   memory and tells checked (ERIM) from unchecked ones.
//! - `harden` (x86-64 Linux) installs the seccomp filter that closes the
//!   known PKU escapes once initialisation is over.
//! - `landlock` (x86-64 Linux) refuses writes under `/proc` (the
//!   `/proc/self/mem` bypass of protection keys) on every thread.
//! - `budget` (x86-64 Linux) bounds one call's wall time: a per-thread timer
//!   whose signal aborts JIT code the way a fault does.
//! - [`regions`] validates helpers' pointer arguments against the calling
//!   extension's regions (in T the hardware no longer does).
//! - [`fault`] holds the SIGSEGV/SIGBUS handler that turns faults in JIT code
//!   and in [`copy_from_user`] into errors instead of crashes.
//!
//! The backend is chosen in one place (`mpk/mod.rs`): the hardware backend on
//! x86-64 Linux, a disabled backend with the same names everywhere else or
//! when built with `--cfg pkbpf_force_disabled_mpk`.
#![deny(missing_docs)]

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod bench;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod budget;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod fault;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod gadgets;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod harden;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod landlock;
mod mpk;
pub mod regions;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub use fault::{copy_from_user, copy_to_user, CodeRange, Fault};
pub use mpk::*;
