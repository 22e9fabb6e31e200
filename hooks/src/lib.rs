//! pkbpf's hooks: uprobes and uretprobes inside the running process.
//!
//! The parts:
//!
//! - [`resolve`]: `BINARY:SYMBOL[+OFFSET]` / `BINARY:OFFSET` targets (libbpf's
//!   `uprobe//path:func` section syntax) to a runtime address, through the
//!   ELF symbol tables and the process's `/proc/self/maps`.
//! - [`uprobe`]: inline entry probes. The function entry is patched with a
//!   5-byte `jmp rel32` to a per-site trampoline within ±2 GiB; the displaced
//!   instructions are relocated with iced-x86. When that is not safe (a branch
//!   into the patched bytes, a function shorter than 5 bytes, an instruction
//!   that cannot be relocated) the site falls back to `int3`, whose SIGTRAP
//!   handler sends the thread into the same trampoline.
//! - [`uretprobe`]: return probes by return-address replacement with a
//!   per-thread shadow stack.
//! - `trampoline` / `patch` (private): the machine code and live patching.
//!
//! Every hit hands the handler a [`HookFrame`], whose first field is the
//! kernel's x86-64 `struct pt_regs` ([`PtRegs`]), so a pointer to the frame
//! is the context pointer an eBPF uprobe program expects (`PT_REGS_PARM1..6`,
//! `PT_REGS_RC`, `PT_REGS_IP`, `PT_REGS_SP`). A handler is a plain
//! `extern "C"` function plus a data pointer ([`Handler`]), so the runtime can
//! plug in a shim that enters the sandbox gate and runs JIT code.
//!
//! ```no_run
//! use pkbpf_hooks::{attach_target, AttachOptions, Handler, ProbeKind, ProbeTarget};
//!
//! let target = ProbeTarget::parse("libc.so.6:getpid")?;
//! let handler = Handler::from_fn(|frame| {
//!     println!("getpid called from {:#x}", frame.regs.sp);
//! });
//! // SAFETY: getpid's entry is an instruction boundary in mapped code.
//! let link = unsafe { attach_target(&target, ProbeKind::Entry, handler, &AttachOptions::default())? };
//! unsafe { libc::getpid() };
//! link.detach()?; // or drop it
//! # Ok::<(), pkbpf_hooks::HookError>(())
//! ```
//!
//! Plugging in a JIT-compiled program: build the handler with
//! [`Handler::from_raw`] from a shim `extern "C" fn(data, frame)` that enters
//! the extension's domain through the sandbox gate, calls the JIT entry with
//! `ctx = frame as *const u8` (the frame starts with `pt_regs`), and leaves
//! through the gate. A `bpf_override_return(ctx, rc)` helper recovers the
//! frame with [`HookFrame::from_ctx`] and calls
//! [`HookFrame::override_return`]; the entry trampoline then returns `rc` to
//! the caller without running the function.
//!
//! [`syscall`] catches the process's system calls for the
//! `syscalls/sys_enter_*` / `sys_exit_*` tracepoints and the
//! `sys_enter`/`sys_exit` raw tracepoints: Syscall User Dispatch (SIGSYS)
//! for every call, and libc's `mov eax, NR; syscall` sites rewritten to
//! call the dispatcher directly (the fast path).
#![deny(missing_docs)]

use std::path::PathBuf;

pub mod resolve;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod frame;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod patch;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod syscall;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod trampoline;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod uprobe;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod uretprobe;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub use frame::{Handler, HookFrame, PtRegs, RawHandlerFn};
pub use resolve::{resolve_target, ProbeTarget, ResolvedTarget, SymbolSpec};
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub use uprobe::{
    attach, attach_section, attach_target, AttachOptions, PatchMode, ProbeKind, ProbeLink,
};

/// Everything that can go wrong resolving, attaching or detaching a probe.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The target string does not follow `BINARY:SYMBOL[+OFFSET]` or `BINARY:OFFSET`.
    #[error("invalid probe target `{target}`: {reason}")]
    InvalidTarget {
        /// The text given.
        target: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A bare library name was found neither in the process's mappings nor in the library directories.
    #[error("binary `{binary}` not found (not mapped and not in the library directories)")]
    BinaryNotFound {
        /// The name given.
        binary: String,
    },
    /// The binary could not be read.
    #[error("cannot read binary {binary}")]
    ReadBinary {
        /// The file.
        binary: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The binary is not a valid ELF file.
    #[error("cannot parse ELF file {binary}")]
    ParseElf {
        /// The file.
        binary: PathBuf,
        /// goblin's error.
        #[source]
        source: goblin::error::Error,
    },
    /// No defined function symbol of that name with a known size.
    #[error("function symbol `{symbol}` not found in {binary}")]
    SymbolNotFound {
        /// The file searched.
        binary: PathBuf,
        /// The symbol asked for.
        symbol: String,
    },
    /// The symbol is a GNU indirect function: its address is the resolver, which never runs again.
    #[error("symbol `{symbol}` in {binary} is an IFUNC resolver; probe the implementation it selects instead")]
    IfuncSymbol {
        /// The file.
        binary: PathBuf,
        /// The symbol.
        symbol: String,
    },
    /// `SYMBOL+OFFSET` points past the end of the function.
    #[error("offset {offset:#x} is outside `{symbol}` (size {size:#x}) in {binary}")]
    OffsetOutsideSymbol {
        /// The file.
        binary: PathBuf,
        /// The symbol.
        symbol: String,
        /// The offset asked for.
        offset: u64,
        /// The symbol's size.
        size: u64,
    },
    /// The address is in no `PT_LOAD` segment of the file.
    #[error("address {vaddr:#x} is in no loadable segment of {binary}")]
    NotInSegment {
        /// The file.
        binary: PathBuf,
        /// The ELF virtual address (or file offset) asked for.
        vaddr: u64,
    },
    /// The binary is not mapped (executable) in this process.
    #[error("{binary} is not mapped in this process (offset {file_offset:#x})")]
    NotMapped {
        /// The file.
        binary: PathBuf,
        /// The file offset that has no mapping.
        file_offset: u64,
    },
    /// `/proc/self/maps` could not be read.
    #[error("cannot read /proc/self/maps")]
    ProcMaps {
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes at the probe address do not decode as x86-64 instructions.
    #[error("cannot decode the instruction at {addr:#x}")]
    Decode {
        /// The address.
        addr: usize,
    },
    /// Neither the jump nor the int3 path can relocate the first instruction.
    #[error("cannot relocate the instructions at {addr:#x}: {reason}")]
    Relocate {
        /// The probe address.
        addr: usize,
        /// iced-x86's explanation.
        reason: String,
    },
    /// No free address range within ±2 GiB of the probe address for its trampoline.
    #[error("no free memory within 2 GiB of {addr:#x} for a trampoline")]
    NoNearMemory {
        /// The probe address.
        addr: usize,
    },
    /// The probe address is not inside an executable mapping of this process.
    #[error("address {addr:#x} is not in executable memory")]
    NotExecutable {
        /// The address.
        addr: usize,
    },
    /// A system call needed for patching failed.
    #[error("{op} failed at {addr:#x}")]
    Sys {
        /// Which call.
        op: &'static str,
        /// The address it was applied to.
        addr: usize,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A `sys_enter_NAME` / `sys_exit_NAME` tracepoint names no x86-64 system call.
    #[error("no system call named `{name}`")]
    UnknownSyscall {
        /// The name after `sys_enter_` / `sys_exit_`.
        name: String,
    },
    /// The kernel has no Syscall User Dispatch (Linux 5.11+,
    /// `CONFIG_SYSCALL_USER_DISPATCH`), so system calls cannot be traced.
    #[error("syscall tracing needs Syscall User Dispatch (Linux 5.11+), which this kernel lacks")]
    NoSyscallDispatch,
    /// The site already has the maximum number of handlers of that kind.
    #[error("probe site {addr:#x} already has {max} handlers of this kind")]
    TooManyHandlers {
        /// The probe address.
        addr: usize,
        /// The limit.
        max: usize,
    },
}

/// Result alias for this crate.
pub type Result<T, E = HookError> = std::result::Result<T, E>;
