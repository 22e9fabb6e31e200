//! Memory protection keys (MPK / PKU) and the domains built on them.
//!
//! # What MPK is
//!
//! On x86-64 CPUs with PKU, every user page-table entry carries a 4-bit
//! protection key (0..=15), set with `pkey_mprotect(2)`. A per-thread register,
//! PKRU, holds two bits per key — access-disable and write-disable — and every
//! data access is checked against it. Changing PKRU (`WRPKRU`) is an
//! unprivileged, ~20-cycle instruction, so switching what a thread may touch is
//! far cheaper than `mprotect`. Instruction fetches are not checked, which is
//! why a gate's `WRPKRU` must be followed by a check of the value it loaded
//! (ERIM, USENIX Security 2019): otherwise a jump straight to the instruction
//! with a chosen `EAX` would grant any access. See the kernel's
//! `Documentation/core-api/protection-keys.rst`, `pkeys(7)` and Intel SDM
//! vol. 3A §4.6.2.
//!
//! # pkbpf's use of it (DESIGN.md, "The MPK domain model")
//!
//! | domain | key 0 | own Eᵢ | other Eⱼ | R |
//! |---|---|---|---|---|
//! | host (H) | RW | — | — | — |
//! | extension i (Xᵢ) | RW | RW | — | — |
//! | trusted (T) | RW | RW | RW | RW |
//!
//! # The parts
//!
//! - [`detect`] / [`PkuStatus`]: one detection function for CLI, API and VM.
//! - [`Sandbox`], [`SandboxMode`], [`select`]: the `--sandbox` tri-state,
//!   failing closed when `mpk` is asked for and cannot be had.
//! - [`Keys`], [`ProtectionKey`], [`protect`]: allocation and tagging.
//! - [`Domain`], [`DomainGuard`]: PKRU values and the scoped Rust gate.
//! - `GateCode` / `GateStub` (x86-64 Linux): the assembly entry gate.
//!
//! # Backends
//!
//! `enabled.rs` drives the hardware and is built on x86-64 Linux;
//! `disabled.rs` mirrors it name for name with the hardware-only type
//! ([`ProtectionKey`]) uninhabited, and is built elsewhere or when
//! `--cfg pkbpf_force_disabled_mpk` is set (CI builds both on x86-64 Linux).
//! Even the enabled backend runs without `WRPKRU` when [`detect`] finds no
//! PKU: gates then only call through, and no [`ProtectionKey`] can exist.

use std::fmt;
use std::str::FromStr;

#[cfg(all(
    target_arch = "x86_64",
    target_os = "linux",
    not(pkbpf_force_disabled_mpk)
))]
#[path = "enabled.rs"]
mod imp;

#[cfg(not(all(
    target_arch = "x86_64",
    target_os = "linux",
    not(pkbpf_force_disabled_mpk)
)))]
#[path = "disabled.rs"]
mod imp;

#[cfg(target_arch = "x86_64")]
#[cfg_attr(pkbpf_force_disabled_mpk, allow(dead_code))]
pub(crate) mod pkru;
#[cfg(all(
    target_arch = "x86_64",
    target_os = "linux",
    not(pkbpf_force_disabled_mpk)
))]
mod sys;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod gate;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub use gate::{GateCode, GateStub, GateTarget, GateTarget2};
pub use imp::{current_pkru, detect, is_active, protect, Domain, DomainGuard, Keys, ProtectionKey};

/// Number of protection keys x86-64 defines (key 0 is everyone's default).
pub const KEY_COUNT: u32 = 16;

/// Errors of the sandbox crate.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SandboxError {
    /// `--sandbox=mpk` (or an operation that needs keys) on a machine without
    /// usable protection keys.
    #[error("sandbox: mpk requested but unavailable: {missing}")]
    MpkUnavailable {
        /// What detection found missing.
        missing: PkuMissing,
    },
    /// Every hardware key is taken; the load that asked must fail (pkbpf never
    /// shares a key between extensions silently).
    #[error("protection keys exhausted: {in_use} keys allocated by pkbpf, the kernel has no more")]
    KeysExhausted {
        /// Keys pkbpf holds (the runtime key included).
        in_use: u32,
    },
    /// A pkey system call failed for another reason.
    #[error("{call} failed: errno {errno}")]
    Syscall {
        /// The system call (`pkey_alloc`, `pkey_mprotect`, `mmap`, …).
        call: &'static str,
        /// Its `errno`.
        errno: i32,
    },
    /// A range handed to [`protect`] is not page-aligned.
    #[error("range {addr:#x}+{len:#x} is not page-aligned")]
    Unaligned {
        /// Start address.
        addr: usize,
        /// Length in bytes.
        len: usize,
    },
    /// The fault-recovery table has no free slot.
    #[error("fault-recovery table full ({capacity} ranges)")]
    RangeTableFull {
        /// Its capacity.
        capacity: usize,
    },
    /// The seccomp program would not fit classic BPF's limits (4096
    /// instructions, 255-instruction conditional jumps).
    #[error("seccomp filter too large ({insns} instructions)")]
    FilterTooLarge {
        /// Its size.
        insns: usize,
    },
    /// More protected ranges than one seccomp filter checks.
    #[error("too many protected ranges for the seccomp filter (at most {max})")]
    TooManyRanges {
        /// The limit.
        max: usize,
    },
    /// A `--sandbox` value that is not `auto`, `mpk` or `none`.
    #[error("unknown sandbox mode {given:?} (expected auto, mpk or none)")]
    UnknownMode {
        /// What was given.
        given: String,
    },
}

/// What is missing for protection keys to work (see [`PkuStatus`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PkuMissing {
    /// Not an x86-64 Linux build: no PKU backend exists.
    Platform,
    /// Built with `--cfg pkbpf_force_disabled_mpk`.
    ForcedOff,
    /// The CPU has no CPUID leaf 7.
    CpuidLeaf7,
    /// CPUID.(EAX=7,ECX=0):ECX bit 3 (PKU) is clear: the CPU (or hypervisor)
    /// does not offer protection keys.
    CpuidPku,
    /// CPUID.(EAX=7,ECX=0):ECX bit 4 (OSPKE) is clear: the OS did not enable
    /// them (CR4.PKE).
    CpuidOspke,
    /// `pkey_alloc` failed with this errno (ENOSPC, EINVAL or ENOSYS).
    PkeyAlloc {
        /// The errno.
        errno: i32,
    },
}

impl fmt::Display for PkuMissing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PkuMissing::Platform => write!(f, "no PKU: not an x86-64 Linux build"),
            PkuMissing::ForcedOff => {
                write!(f, "no PKU: built with --cfg pkbpf_force_disabled_mpk")
            }
            PkuMissing::CpuidLeaf7 => write!(f, "no PKU: CPUID leaf 7 absent"),
            PkuMissing::CpuidPku => write!(f, "no PKU: CPUID.7.0:ECX.PKU=0"),
            PkuMissing::CpuidOspke => write!(f, "no PKU: CPUID.7.0:ECX.OSPKE=0"),
            PkuMissing::PkeyAlloc { errno } => {
                let name = match *errno {
                    libc::ENOSPC => "ENOSPC",
                    libc::EINVAL => "EINVAL",
                    libc::ENOSYS => "ENOSYS",
                    _ => "errno",
                };
                write!(f, "no PKU: pkey_alloc failed ({name} {errno})")
            }
        }
    }
}

/// The result of [`detect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PkuStatus {
    /// Protection keys work: CPUID reports PKU and OSPKE and `pkey_alloc`
    /// succeeded.
    Available,
    /// They do not; the field says which check failed first.
    Missing(PkuMissing),
}

impl PkuStatus {
    /// True when protection keys can be used.
    pub fn is_available(&self) -> bool {
        matches!(self, PkuStatus::Available)
    }
}

impl fmt::Display for PkuStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PkuStatus::Available => write!(
                f,
                "PKU available (CPUID.7.0:ECX.PKU=1, OSPKE=1, pkey_alloc ok)"
            ),
            PkuStatus::Missing(m) => m.fmt(f),
        }
    }
}

/// The `--sandbox` tri-state (CLI flag, embedding API, `PKBPF_SANDBOX` for the
/// agent). It fails closed: `Mpk` never degrades to no protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sandbox {
    /// Use protection keys where they work, otherwise none; say which.
    #[default]
    Auto,
    /// Require protection keys; an error without them.
    Mpk,
    /// No protection keys, by explicit request.
    None,
}

impl Sandbox {
    /// The environment variable the preload agent reads the mode from.
    pub const ENV: &'static str = "PKBPF_SANDBOX";

    /// The mode from [`Sandbox::ENV`] (see [`Sandbox::from_env_value`]).
    pub fn from_env() -> Result<Sandbox, SandboxError> {
        Sandbox::from_env_value(std::env::var_os(Sandbox::ENV).as_deref())
    }

    /// The mode for a value of [`Sandbox::ENV`]: `auto` when unset or
    /// empty, an error for anything but `auto`, `mpk` or `none` (never a
    /// silent default).
    pub fn from_env_value(value: Option<&std::ffi::OsStr>) -> Result<Sandbox, SandboxError> {
        match value {
            None => Ok(Sandbox::Auto),
            Some(v) if v.is_empty() => Ok(Sandbox::Auto),
            Some(v) => match v.to_str() {
                Some(s) => s.parse(),
                None => Err(SandboxError::UnknownMode {
                    given: v.to_string_lossy().into_owned(),
                }),
            },
        }
    }
}

impl FromStr for Sandbox {
    type Err = SandboxError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Sandbox::Auto),
            "mpk" => Ok(Sandbox::Mpk),
            "none" => Ok(Sandbox::None),
            other => Err(SandboxError::UnknownMode {
                given: other.to_string(),
            }),
        }
    }
}

/// The mode [`select`] settled on. Its `Display` is the line `auto` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    /// Protection keys in use.
    Mpk,
    /// No protection keys.
    None {
        /// Why: `None` when explicitly requested, else what was missing.
        missing: Option<PkuMissing>,
    },
}

impl fmt::Display for SandboxMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SandboxMode::Mpk => write!(f, "sandbox: mpk (pkeys 1..{})", KEY_COUNT - 1),
            SandboxMode::None { missing: Some(m) } => write!(f, "sandbox: none ({m})"),
            SandboxMode::None { missing: None } => write!(f, "sandbox: none (requested)"),
        }
    }
}

/// Turns the requested [`Sandbox`] into the mode to run in, using [`detect`].
///
/// `Mpk` without working keys is [`SandboxError::MpkUnavailable`] naming what
/// is missing; `Auto` picks `Mpk` or `None` (print the result's `Display`, it
/// is the line that says which); `None` is `None` without probing.
pub fn select(mode: Sandbox) -> Result<SandboxMode, SandboxError> {
    match mode {
        Sandbox::None => Ok(SandboxMode::None { missing: None }),
        Sandbox::Mpk => match detect() {
            PkuStatus::Available => Ok(SandboxMode::Mpk),
            PkuStatus::Missing(missing) => Err(SandboxError::MpkUnavailable { missing }),
        },
        Sandbox::Auto => Ok(match detect() {
            PkuStatus::Available => SandboxMode::Mpk,
            PkuStatus::Missing(m) => SandboxMode::None { missing: Some(m) },
        }),
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub(crate) fn sys_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn imp_page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}
