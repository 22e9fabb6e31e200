//! What `r1` points to on entry, per program kind, and which of its bytes a
//! program may read and write.

use std::ops::Range;

/// Size of x86-64 `struct pt_regs` (21 eight-byte registers).
pub const PT_REGS_SIZE: u32 = 168;
/// Size of a `sys_enter` tracepoint record: 8-byte common header, `long id`,
/// `unsigned long args[6]`.
pub const SYSCALL_ENTER_SIZE: u32 = 8 + 8 + 6 * 8;
/// Size of a `sys_exit` tracepoint record: header, `long id`, `long ret`.
pub const SYSCALL_EXIT_SIZE: u32 = 8 + 8 + 8;
/// Size of a raw syscall tracepoint context (`u64 args[2]`).
pub const RAW_SYSCALL_SIZE: u32 = 16;

/// The context a program receives in `r1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CtxDesc {
    /// uprobe/uretprobe: x86-64 `struct pt_regs`, read-only.
    PtRegs,
    /// syscall entry tracepoint record, read-only.
    SyscallEnter,
    /// syscall exit tracepoint record, read-only.
    SyscallExit,
    /// raw syscall tracepoint: `u64 args[2]`, read-only.
    RawSyscall,
    /// Embedded use: `r1` points to `size` bytes from the host, writable in
    /// the given byte ranges only.
    Buffer {
        /// Size in bytes.
        size: u32,
        /// Writable byte ranges.
        writable: Vec<Range<u32>>,
    },
    /// The conformance runner's convention: `r1` points to `size` bytes of
    /// readable and writable memory (or is 0 when `size` is 0), `r2 = size`.
    MemWithLen {
        /// Size of the memory in bytes.
        size: u32,
    },
}

impl CtxDesc {
    /// Size of the context in bytes.
    pub fn size(&self) -> u32 {
        match self {
            CtxDesc::PtRegs => PT_REGS_SIZE,
            CtxDesc::SyscallEnter => SYSCALL_ENTER_SIZE,
            CtxDesc::SyscallExit => SYSCALL_EXIT_SIZE,
            CtxDesc::RawSyscall => RAW_SYSCALL_SIZE,
            CtxDesc::Buffer { size, .. } | CtxDesc::MemWithLen { size } => *size,
        }
    }

    /// Whether an access of `size` bytes at constant offset `off` is allowed.
    pub fn allows(&self, off: i64, size: u32, write: bool) -> bool {
        let end = off + size as i64;
        if off < 0 || end > self.size() as i64 {
            return false;
        }
        match self {
            CtxDesc::Buffer { writable, .. } if write => writable
                .iter()
                .any(|r| r.start as i64 <= off && end <= r.end as i64),
            CtxDesc::MemWithLen { .. } => true,
            _ if write => false,
            // Fixed layouts of 8-byte fields, read naturally aligned (as the
            // kernel's kprobe and tracepoint rules), so within one field.
            CtxDesc::PtRegs
            | CtxDesc::SyscallEnter
            | CtxDesc::SyscallExit
            | CtxDesc::RawSyscall => off % size as i64 == 0,
            CtxDesc::Buffer { .. } => true,
        }
    }
}
