//! Hardening after initialisation: a seccomp filter (raw classic BPF, since
//! the range checks need 64-bit arithmetic on arguments that seccompiler's
//! rule language cannot express) that closes the known PKU escapes
//! ("PKU Pitfalls", Connor et al., USENIX Security 2020):
//!
//! - `pkey_mprotect` and `pkey_free` are denied outright: after
//!   initialisation nobody may re-tag pages or recycle a key;
//! - `process_vm_writev` and `ptrace` are denied (the kernel's remote
//!   accesses to the process's memory do not honour PKRU; the filter is
//!   inherited by children, so a forked helper cannot attach either);
//! - `mprotect`, `munmap`, `madvise`, `mremap` (old range, and the new one
//!   with `MREMAP_FIXED`) and `mmap` with `MAP_FIXED` are denied when their
//!   range overlaps a protected range, so a page cannot be re-mapped,
//!   re-protected with key 0 or zapped;
//! - other architectures' system call ABIs (x32, i386) are refused.
//!
//! Denied calls fail with `EPERM`; the filter is installed on every thread
//! (`SECCOMP_FILTER_FLAG_TSYNC`) and cannot be removed. Writes through
//! `/proc/self/mem` cannot be told apart by a seccomp filter (it sees no
//! paths); they are not covered here.

#[cfg(doc)]
use crate::copy_from_user;
use crate::SandboxError;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const MAP_FIXED: u32 = 0x10;
const MREMAP_FIXED: u32 = 0x2;

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
const LD_W_ABS: u16 = 0x20;
const LD_MEM: u16 = 0x60;
const ST: u16 = 0x02;
const TAX: u16 = 0x07;
const ADD_X: u16 = 0x0c;
const ADD_K: u16 = 0x04;
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
const JGE_X: u16 = 0x3d;
const RET_K: u16 = 0x06;
const JA: u16 = 0x05;

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_EPERM: u32 = 0x0005_0000 | libc::EPERM as u32;

// seccomp_data offsets.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
fn arg_lo(i: u32) -> u32 {
    16 + 8 * i
}
fn arg_hi(i: u32) -> u32 {
    16 + 8 * i + 4
}

// Scratch slots.
const M_A_LO: u32 = 0;
const M_A_HI: u32 = 1;
const M_END_LO: u32 = 2;
const M_END_HI: u32 = 3;

/// The most protected ranges one filter checks (each costs ~14
/// instructions per range-checked system call).
pub const MAX_PROTECTED_RANGES: usize = 32;

/// The filter's builder: the ranges to protect, then [`Hardening::apply`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hardening {
    ranges: Vec<(u64, u64)>,
}

#[derive(Clone, Copy)]
enum Item {
    Stmt(u16, u32),
    /// Conditional jump to two labels.
    Jump(u16, u32, usize, usize),
    /// Unconditional jump (32-bit offset) to a label.
    Ja(usize),
    Label(usize),
}

struct Asm {
    items: Vec<Item>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }
    fn stmt(&mut self, code: u16, k: u32) {
        self.items.push(Item::Stmt(code, k));
    }
    fn jump(&mut self, code: u16, k: u32, t: usize, f: usize) {
        self.items.push(Item::Jump(code, k, t, f));
    }
    fn ja(&mut self, l: usize) {
        self.items.push(Item::Ja(l));
    }
    /// `if A == k` continue, else jump (any distance) to `other`.
    fn if_eq_else(&mut self, k: u32, other: usize) {
        let (yes, no) = (self.label(), self.label());
        self.jump(JEQ_K, k, yes, no);
        self.bind(no);
        self.ja(other);
        self.bind(yes);
    }
    fn bind(&mut self, l: usize) {
        self.items.push(Item::Label(l));
    }
    fn finish(self) -> Result<Vec<libc::sock_filter>, SandboxError> {
        let mut at = vec![usize::MAX; self.labels];
        let mut pc = 0;
        for it in &self.items {
            match it {
                Item::Label(l) => at[*l] = pc,
                _ => pc += 1,
            }
        }
        let mut out = Vec::with_capacity(pc);
        for it in &self.items {
            match *it {
                Item::Label(_) => {}
                Item::Stmt(code, k) => out.push(libc::sock_filter {
                    code,
                    jt: 0,
                    jf: 0,
                    k,
                }),
                Item::Ja(l) => {
                    let here = out.len() + 1;
                    let d = at[l]
                        .checked_sub(here)
                        .ok_or(SandboxError::FilterTooLarge { insns: pc })?;
                    out.push(libc::sock_filter {
                        code: JA,
                        jt: 0,
                        jf: 0,
                        k: d as u32,
                    });
                }
                Item::Jump(code, k, t, f) => {
                    let here = out.len() + 1;
                    let rel = |l: usize| -> Result<u8, SandboxError> {
                        at[l]
                            .checked_sub(here)
                            .and_then(|d| u8::try_from(d).ok())
                            .ok_or(SandboxError::FilterTooLarge { insns: pc })
                    };
                    out.push(libc::sock_filter {
                        code,
                        jt: rel(t)?,
                        jf: rel(f)?,
                        k,
                    });
                }
            }
        }
        if out.len() > 4096 {
            return Err(SandboxError::FilterTooLarge { insns: out.len() });
        }
        Ok(out)
    }

    /// Stores `args[a]` and `args[a] + args[l]` (64-bit) in the scratch slots.
    fn range_end(&mut self, a: u32, l: u32) {
        self.stmt(LD_W_ABS, arg_lo(a));
        self.stmt(ST, M_A_LO);
        self.stmt(LD_W_ABS, arg_hi(a));
        self.stmt(ST, M_A_HI);
        self.stmt(LD_W_ABS, arg_hi(l));
        self.stmt(ST, M_END_HI);
        self.stmt(LD_W_ABS, arg_lo(l));
        self.stmt(TAX, 0);
        self.stmt(LD_MEM, M_A_LO);
        self.stmt(ADD_X, 0);
        self.stmt(ST, M_END_LO);
        let (carry, no_carry) = (self.label(), self.label());
        // The low sum wrapped iff it is below an addend.
        self.jump(JGE_X, 0, no_carry, carry);
        self.bind(carry);
        self.stmt(LD_MEM, M_END_HI);
        self.stmt(ADD_K, 1);
        self.stmt(ST, M_END_HI);
        self.bind(no_carry);
        self.stmt(LD_MEM, M_A_HI);
        self.stmt(TAX, 0);
        self.stmt(LD_MEM, M_END_HI);
        self.stmt(ADD_X, 0);
        self.stmt(ST, M_END_HI);
    }

    /// Denies when `[a, end)` (in the scratch slots) overlaps `[s, e)`;
    /// otherwise falls through.
    fn deny_if_overlaps(&mut self, s: u64, e: u64) {
        let (next, a_lt_e, a_lo, end_lo, deny) = (
            self.label(),
            self.label(),
            self.label(),
            self.label(),
            self.label(),
        );
        let (s_hi, s_lo) = ((s >> 32) as u32, s as u32);
        let (e_hi, e_lo) = ((e >> 32) as u32, e as u32);
        // a < e ?
        self.stmt(LD_MEM, M_A_HI);
        let hi_eq = self.label();
        self.jump(JGT_K, e_hi, next, hi_eq);
        self.bind(hi_eq);
        self.jump(JEQ_K, e_hi, a_lo, a_lt_e);
        self.bind(a_lo);
        self.stmt(LD_MEM, M_A_LO);
        self.jump(JGE_K, e_lo, next, a_lt_e);
        // end > s ?
        self.bind(a_lt_e);
        self.stmt(LD_MEM, M_END_HI);
        let end_hi_eq = self.label();
        self.jump(JGT_K, s_hi, deny, end_hi_eq);
        self.bind(end_hi_eq);
        self.jump(JEQ_K, s_hi, end_lo, next);
        self.bind(end_lo);
        self.stmt(LD_MEM, M_END_LO);
        self.jump(JGT_K, s_lo, deny, next);
        self.bind(deny);
        self.stmt(RET_K, RET_EPERM);
        self.bind(next);
    }
}

/// A range-checked system call: which arguments hold the range, and an
/// optional flag argument and mask that must be set for the check to apply.
struct RangeCall {
    nr: i64,
    addr: u32,
    len: u32,
    only_if: Option<(u32, u32)>,
}

impl Hardening {
    /// No protected ranges yet.
    pub fn new() -> Hardening {
        Hardening::default()
    }

    /// Adds `start..start+len` (widened to whole pages) to the protected
    /// ranges.
    pub fn protect_range(mut self, start: usize, len: usize) -> Result<Hardening, SandboxError> {
        if len == 0 {
            return Ok(self);
        }
        if self.ranges.len() >= MAX_PROTECTED_RANGES {
            return Err(SandboxError::TooManyRanges {
                max: MAX_PROTECTED_RANGES,
            });
        }
        let page = 4096u64;
        let s = start as u64 & !(page - 1);
        let e = (start as u64)
            .checked_add(len as u64)
            .and_then(|e| e.checked_add(page - 1))
            .ok_or(SandboxError::Unaligned { addr: start, len })?
            & !(page - 1);
        self.ranges.push((s, e));
        Ok(self)
    }

    /// The protected ranges, page-aligned, as `(start, end)`.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// The classic-BPF seccomp program (for inspection and tests).
    pub fn program(&self) -> Result<Vec<libc::sock_filter>, SandboxError> {
        let mut a = Asm {
            items: Vec::new(),
            labels: 0,
        };
        let (kill, deny) = (a.label(), a.label());
        let (arch_ok, native) = (a.label(), a.label());
        a.stmt(LD_W_ABS, OFF_ARCH);
        a.jump(JEQ_K, AUDIT_ARCH_X86_64, arch_ok, kill);
        a.bind(kill);
        a.stmt(RET_K, RET_KILL_PROCESS);
        a.bind(arch_ok);
        a.stmt(LD_W_ABS, OFF_NR);
        a.jump(JGE_K, X32_SYSCALL_BIT, deny, native);
        a.bind(deny);
        a.stmt(RET_K, RET_EPERM);
        a.bind(native);
        for nr in [
            libc::SYS_pkey_mprotect,
            libc::SYS_pkey_free,
            libc::SYS_process_vm_writev,
            libc::SYS_ptrace,
        ] {
            let (hit, next) = (a.label(), a.label());
            a.jump(JEQ_K, nr as u32, hit, next);
            a.bind(hit);
            a.stmt(RET_K, RET_EPERM);
            a.bind(next);
        }
        let calls = [
            RangeCall {
                nr: libc::SYS_mprotect,
                addr: 0,
                len: 1,
                only_if: None,
            },
            RangeCall {
                nr: libc::SYS_munmap,
                addr: 0,
                len: 1,
                only_if: None,
            },
            RangeCall {
                nr: libc::SYS_madvise,
                addr: 0,
                len: 1,
                only_if: None,
            },
            RangeCall {
                nr: libc::SYS_mremap,
                addr: 0,
                len: 1,
                only_if: None,
            },
            RangeCall {
                nr: libc::SYS_mremap,
                addr: 4,
                len: 2,
                only_if: Some((3, MREMAP_FIXED)),
            },
            RangeCall {
                nr: libc::SYS_mmap,
                addr: 0,
                len: 1,
                only_if: Some((3, MAP_FIXED)),
            },
        ];
        for c in calls {
            let next = a.label();
            a.stmt(LD_W_ABS, OFF_NR);
            a.if_eq_else(c.nr as u32, next);
            if let Some((arg, mask)) = c.only_if {
                let (flagged, unflagged) = (a.label(), a.label());
                a.stmt(LD_W_ABS, arg_lo(arg));
                a.jump(JSET_K, mask, flagged, unflagged);
                a.bind(unflagged);
                a.ja(next);
                a.bind(flagged);
            }
            a.range_end(c.addr, c.len);
            for &(s, e) in &self.ranges {
                a.deny_if_overlaps(s, e);
            }
            a.bind(next);
        }
        a.stmt(RET_K, RET_ALLOW);
        a.finish()
    }

    /// Installs the filter on every thread of the process (after
    /// `PR_SET_NO_NEW_PRIVS`). Irreversible.
    pub fn apply(&self) -> Result<(), SandboxError> {
        let prog = self.program()?;
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(SandboxError::Syscall {
                call: "prctl(PR_SET_NO_NEW_PRIVS)",
                errno: crate::mpk::sys_errno(),
            });
        }
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `fprog` points at `prog`, alive for the call; the kernel
        // copies the program.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_TSYNC,
                &fprog as *const libc::sock_fprog,
            )
        };
        if r != 0 {
            return Err(SandboxError::Syscall {
                call: "seccomp",
                errno: crate::mpk::sys_errno(),
            });
        }
        Ok(())
    }
}

/// Makes `addr..addr+len` execute-only where the CPU has PKU: the kernel
/// backs `PROT_EXEC` without `PROT_READ` with an access-disabled key, so data
/// reads of JIT code fault (in every domain but T). Without PKU the range is
/// still read+execute and not writable (W^X). Returns whether it is truly
/// execute-only.
///
/// # Safety
///
/// The range must be the caller's code mapping; nothing may read it as data
/// afterwards except through [`crate::copy_from_user`].
pub unsafe fn execute_only(addr: usize, len: usize) -> Result<bool, SandboxError> {
    // SAFETY: the caller owns the range.
    if unsafe { libc::mprotect(addr as *mut libc::c_void, len, libc::PROT_EXEC) } != 0 {
        return Err(SandboxError::Syscall {
            call: "mprotect(PROT_EXEC)",
            errno: crate::mpk::sys_errno(),
        });
    }
    Ok(crate::is_active())
}

/// Seals `addr..addr+len` with `mseal(2)` (Linux ≥ 6.10): its mapping and
/// protection can no longer change (no `mprotect`, `munmap`, `mremap`,
/// `MAP_FIXED` over it, no destructive `madvise`). Returns `Ok(false)` when
/// the kernel has no `mseal` (`ENOSYS`), so callers can log the gap.
///
/// # Safety
///
/// The range must be mappings the caller owns and will never need to unmap
/// or re-protect for the rest of the process's life.
pub unsafe fn seal(addr: usize, len: usize) -> Result<bool, SandboxError> {
    // SAFETY: integer arguments; the caller owns the range.
    let r = unsafe { libc::syscall(libc::SYS_mseal, addr, len, 0usize) };
    if r == 0 {
        return Ok(true);
    }
    match crate::mpk::sys_errno() {
        libc::ENOSYS => Ok(false),
        errno => Err(SandboxError::Syscall {
            call: "mseal",
            errno,
        }),
    }
}
