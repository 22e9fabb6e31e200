//! Hardening after initialisation: a seccomp filter (raw classic BPF, since
//! the range checks need 64-bit arithmetic on arguments and a check of the
//! calling instruction's address, which seccompiler's rule language cannot
//! express) that closes the known PKU escapes ("PKU Pitfalls", Connor et
//! al., USENIX Security 2020):
//!
//! - `pkey_free` is denied outright (keys are never freed: a recycled key
//!   would open pages that still carry it);
//! - `pkey_alloc` and `pkey_mprotect` are allowed only from the sandbox's
//!   own system-call site ([`trusted_syscall`], checked through
//!   `seccomp_data.instruction_pointer`), which the runtime uses to give a
//!   newly loaded object its key; `pkey_mprotect` is refused even there over
//!   a protected range, so nothing can re-tag a page once it is protected;
//! - `process_vm_writev`, `process_vm_readv`, `process_madvise` and `ptrace`
//!   are denied (the kernel's remote accesses to the process's memory do not
//!   honour PKRU; the filter is inherited by children, so a forked helper
//!   cannot attach either), and so is `io_uring_setup` (its workers would
//!   issue `madvise` and memory copies outside this filter);
//! - `mprotect`, `munmap`, `madvise`, `mremap` (old range, and the new one
//!   with `MREMAP_FIXED`), `remap_file_pages` and `mmap` with `MAP_FIXED` are
//!   denied when their range overlaps a protected range, so a page cannot be
//!   re-mapped, re-protected with key 0 or zapped; `shmat` with
//!   `SHM_REMAP` is denied outright;
//! - other architectures' system call ABIs (x32, i386) are refused.
//!
//! Denied calls fail with `EPERM`; the filter is installed on every thread
//! (`SECCOMP_FILTER_FLAG_TSYNC`) and cannot be removed.
//!
//! # Process-wide hardening ([`harden_process`], [`protect_ranges`])
//!
//! The runtime hardens the process once, after its initialisation, with a
//! *base* filter (the rules above, no ranges yet); every object it loads
//! afterwards adds a *ranges-only* filter over its mappings (map region, JIT
//! code, entry gate), stacked on the base one, and seals them with `mseal`
//! where the kernel has it. Filters only ever add restrictions, so a range
//! once protected stays protected for the life of the process, including
//! against the runtime itself. That is a choice, not an accident: releasing a
//! protected range would hand its addresses back to the kernel, the next
//! `mmap` of the host could land there, and the host could then no longer
//! `munmap` or `mprotect` its own memory (the stale filter would refuse it);
//! an allowed release path would also be a path an attacker could take. So
//! after hardening, dropping an object keeps its mappings reserved instead of
//! unmapping them (their `munmap` fails with `EPERM` and is ignored). The
//! cost is bounded: every object in mpk mode holds one of the 15 protection
//! keys, which are never freed, so at most 15 objects' mappings can ever be
//! retained.
//!
//! `/proc/self/mem` writes cannot be told apart by a seccomp filter (it sees
//! no paths); [`crate::landlock`] closes them.
//!
//! # Residual risks (what this filter does not stop)
//!
//! - The trusted site is an address, not a proof: code that can already
//!   jump anywhere (a control-flow hijack) can jump to its `syscall` with
//!   chosen registers. It then gets only `pkey_alloc` and `pkey_mprotect`
//!   over ranges that are not protected, which cannot reach what the
//!   runtime protects.
//! - New executable memory stays allowed (`mmap`/`mprotect` with
//!   `PROT_EXEC` outside protected ranges): the host's `dlopen`, the JIT
//!   and the hooks need it. An attacker who can issue arbitrary system
//!   calls *and* then run the code it wrote could place an unchecked
//!   `WRPKRU` there; ERIM closes this with binary inspection, which pkbpf
//!   does not do.
//! - A map region is a memfd whose descriptor the process holds: `write`,
//!   `fallocate` or a second `mmap` of that descriptor reach the maps'
//!   pages without their keys. The filter cannot tell descriptors apart;
//!   sealing the memfd (`F_SEAL_FUTURE_WRITE`) would close it but needs the
//!   region created with `MFD_ALLOW_SEALING` and every legitimate writable
//!   mapping made first.
//! - With Syscall User Dispatch active, a system call the dispatcher
//!   re-issues from its own handler no longer comes from the trusted site:
//!   loading an object while dispatch intercepts the runtime's own calls
//!   fails (`EPERM` from `pkey_mprotect`), closed rather than open.

#[cfg(doc)]
use crate::copy_from_user;
use crate::SandboxError;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const MAP_FIXED: u32 = 0x10;
const MREMAP_FIXED: u32 = 0x2;
const SHM_REMAP: u32 = 0x4000;
/// `process_madvise(2)` (libc 0.2 has no constant for it).
const SYS_PROCESS_MADVISE: i64 = 440;

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
const OFF_IP_LO: u32 = 8;
const OFF_IP_HI: u32 = 12;
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
///
/// [`Hardening::new`] is the base filter (every rule of the module docs);
/// [`Hardening::ranges_only`] the one stacked per loaded object, which only
/// adds range checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hardening {
    ranges: Vec<(u64, u64)>,
    base: bool,
    trusted_ip: u64,
}

impl Default for Hardening {
    fn default() -> Hardening {
        Hardening::new()
    }
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
    /// `if seccomp_data.instruction_pointer == ip` continue, else jump to
    /// `other`.
    fn if_ip_else(&mut self, ip: u64, other: usize) {
        self.stmt(LD_W_ABS, OFF_IP_LO);
        self.if_eq_else(ip as u32, other);
        self.stmt(LD_W_ABS, OFF_IP_HI);
        self.if_eq_else((ip >> 32) as u32, other);
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
    /// Only from `trusted_syscall` (base filter): elsewhere denied.
    trusted_only: bool,
}

impl Hardening {
    /// The base filter, no protected ranges yet.
    pub fn new() -> Hardening {
        Hardening {
            ranges: Vec::new(),
            base: true,
            trusted_ip: trusted_syscall_ip(),
        }
    }

    /// A filter that only adds range checks (for stacking on the base
    /// filter as objects are loaded).
    pub fn ranges_only() -> Hardening {
        Hardening {
            base: false,
            ..Hardening::new()
        }
    }

    /// The instruction pointer the filter trusts for `pkey_alloc` and
    /// `pkey_mprotect` (the address after `trusted_syscall`'s `syscall`;
    /// for tests of the program).
    pub fn trusted_ip(&self) -> u64 {
        self.trusted_ip
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
        if self.base {
            for nr in [
                libc::SYS_pkey_free,
                libc::SYS_process_vm_writev,
                libc::SYS_process_vm_readv,
                SYS_PROCESS_MADVISE,
                libc::SYS_ptrace,
                libc::SYS_io_uring_setup,
            ] {
                let (hit, next) = (a.label(), a.label());
                a.jump(JEQ_K, nr as u32, hit, next);
                a.bind(hit);
                a.stmt(RET_K, RET_EPERM);
                a.bind(next);
            }
            // shmat(id, addr, SHM_REMAP) replaces whatever is mapped there.
            {
                let (next, flagged, unflagged) = (a.label(), a.label(), a.label());
                a.if_eq_else(libc::SYS_shmat as u32, next);
                a.stmt(LD_W_ABS, arg_lo(2));
                a.jump(JSET_K, SHM_REMAP, flagged, unflagged);
                a.bind(flagged);
                a.stmt(RET_K, RET_EPERM);
                a.bind(unflagged);
                a.stmt(RET_K, RET_ALLOW);
                a.bind(next);
                a.stmt(LD_W_ABS, OFF_NR);
            }
            // pkey_alloc only from the trusted site.
            {
                let (next, not_trusted) = (a.label(), a.label());
                a.if_eq_else(libc::SYS_pkey_alloc as u32, next);
                a.if_ip_else(self.trusted_ip, not_trusted);
                a.stmt(RET_K, RET_ALLOW);
                a.bind(not_trusted);
                a.stmt(RET_K, RET_EPERM);
                a.bind(next);
            }
        }
        let range = |nr: i64, addr, len| RangeCall {
            nr,
            addr,
            len,
            only_if: None,
            trusted_only: false,
        };
        let calls = [
            RangeCall {
                trusted_only: self.base,
                ..range(libc::SYS_pkey_mprotect, 0, 1)
            },
            range(libc::SYS_mprotect, 0, 1),
            range(libc::SYS_munmap, 0, 1),
            range(libc::SYS_madvise, 0, 1),
            range(libc::SYS_remap_file_pages, 0, 1),
            range(libc::SYS_mremap, 0, 1),
            RangeCall {
                only_if: Some((3, MREMAP_FIXED)),
                ..range(libc::SYS_mremap, 4, 2)
            },
            RangeCall {
                only_if: Some((3, MAP_FIXED)),
                ..range(libc::SYS_mmap, 0, 1)
            },
        ];
        for c in calls {
            let next = a.label();
            a.stmt(LD_W_ABS, OFF_NR);
            a.if_eq_else(c.nr as u32, next);
            if c.trusted_only {
                let (trusted, untrusted) = (a.label(), a.label());
                a.if_ip_else(self.trusted_ip, untrusted);
                a.ja(trusted);
                a.bind(untrusted);
                a.stmt(RET_K, RET_EPERM);
                a.bind(trusted);
            }
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

// ---- the trusted system-call site -------------------------------------------------

std::arch::global_asm!(
    ".pushsection .text.pkbpf_sandbox_trusted_syscall,\"ax\",@progbits",
    ".globl pkbpf_sandbox_trusted_syscall",
    ".globl pkbpf_sandbox_trusted_syscall_ret",
    ".p2align 4",
    // extern "C" fn(nr: rdi, a0: rsi, a1: rdx, a2: rcx, a3: r8, a4: r9) -> i64
    // (the raw result: negative errno on failure).
    "pkbpf_sandbox_trusted_syscall:",
    "    mov rax, rdi",
    "    mov rdi, rsi",
    "    mov rsi, rdx",
    "    mov rdx, rcx",
    "    mov r10, r8",
    "    mov r8, r9",
    "    syscall",
    // seccomp_data.instruction_pointer is the address after `syscall`.
    "pkbpf_sandbox_trusted_syscall_ret:",
    "    ret",
    ".popsection",
);

extern "C" {
    fn pkbpf_sandbox_trusted_syscall(nr: i64, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64) -> i64;
    static pkbpf_sandbox_trusted_syscall_ret: u8;
}

/// The address the base filter trusts for `pkey_alloc`/`pkey_mprotect`.
fn trusted_syscall_ip() -> u64 {
    // Only the label's address is taken, never its bytes.
    std::ptr::addr_of!(pkbpf_sandbox_trusted_syscall_ret) as u64
}

/// Issues system call `nr` from the one site the base filter trusts for
/// `pkey_alloc` and `pkey_mprotect` (the sandbox's key allocation and
/// tagging). Returns the result or the errno.
///
/// # Safety
///
/// As the system call itself with these arguments.
#[cfg_attr(pkbpf_force_disabled_mpk, allow(dead_code))]
pub(crate) unsafe fn trusted_syscall(nr: i64, args: [u64; 5]) -> Result<u64, i32> {
    // SAFETY: the stub is a plain C-ABI system-call wrapper; the call's
    // own contract is the caller's.
    let r =
        unsafe { pkbpf_sandbox_trusted_syscall(nr, args[0], args[1], args[2], args[3], args[4]) };
    if (-4095..0).contains(&r) {
        Err(-r as i32)
    } else {
        Ok(r as u64)
    }
}

// ---- process-wide hardening ----------------------------------------------------------

/// What [`harden_process`] should install besides the base seccomp filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HardenOptions {
    /// Also close `/proc/self/mem`-style writes with Landlock
    /// ([`crate::landlock`]); off for hosts that must write under `/proc`.
    pub proc_writes: bool,
}

impl Default for HardenOptions {
    fn default() -> HardenOptions {
        HardenOptions { proc_writes: true }
    }
}

/// What the process's hardening consists of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardenReport {
    /// The base seccomp filter is installed (on every thread).
    pub seccomp: bool,
    /// What became of writes under `/proc` (the `/proc/self/mem` channel).
    pub proc_writes: crate::landlock::ProcWrites,
    /// Ranges-only filters stacked so far (one or more per loaded object).
    pub range_filters: u32,
    /// Ranges sealed with `mseal` so far (zero on kernels without it).
    pub sealed: u32,
}

static REPORT: std::sync::Mutex<Option<HardenReport>> = std::sync::Mutex::new(None);

fn report_lock() -> std::sync::MutexGuard<'static, Option<HardenReport>> {
    REPORT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hardens the whole process, once (later calls return the first report):
/// the base [`Hardening`] filter on every thread, then, when
/// `opts.proc_writes`, the Landlock layer of [`crate::landlock`].
/// Irreversible. From then on, [`protect_ranges`] stacks a filter for each
/// new set of protected mappings.
pub fn harden_process(opts: HardenOptions) -> Result<HardenReport, SandboxError> {
    let mut st = report_lock();
    if let Some(r) = st.as_ref() {
        return Ok(r.clone());
    }
    Hardening::new().apply()?;
    let proc_writes = if opts.proc_writes {
        crate::landlock::deny_proc_writes()
    } else {
        crate::landlock::ProcWrites::Allowed
    };
    let r = HardenReport {
        seccomp: true,
        proc_writes,
        range_filters: 0,
        sealed: 0,
    };
    *st = Some(r.clone());
    Ok(r)
}

/// The process's hardening, when [`harden_process`] ran.
pub fn report() -> Option<HardenReport> {
    report_lock().clone()
}

/// Whether [`harden_process`] ran.
pub fn is_hardened() -> bool {
    report_lock().is_some()
}

/// After [`harden_process`]: protects `ranges` (`(start, len)`, widened to
/// pages) for the rest of the process's life: stacks ranges-only filters
/// over them (at most [`MAX_PROTECTED_RANGES`] per filter) and seals them
/// with `mseal` where the kernel has it. Returns whether anything was done
/// (`false` when the process is not hardened).
///
/// # Safety
///
/// The ranges must be mappings the caller owns and will never need to
/// unmap, re-protect or remap (see the module docs: the runtime keeps them
/// reserved after it drops their object).
pub unsafe fn protect_ranges(ranges: &[(usize, usize)]) -> Result<bool, SandboxError> {
    let mut st = report_lock();
    let Some(report) = st.as_mut() else {
        return Ok(false);
    };
    let ranges: Vec<(usize, usize)> = ranges.iter().copied().filter(|r| r.1 > 0).collect();
    for chunk in ranges.chunks(MAX_PROTECTED_RANGES) {
        let mut h = Hardening::ranges_only();
        for &(s, l) in chunk {
            h = h.protect_range(s, l)?;
        }
        h.apply()?;
        report.range_filters += 1;
    }
    for &(s, l) in &ranges {
        let page = 4096usize;
        let start = s & !(page - 1);
        let end = (s + l).div_ceil(page) * page;
        // SAFETY: the caller's contract: owned mappings kept for good.
        if unsafe { seal(start, end - start) }? {
            report.sealed += 1;
        }
    }
    Ok(true)
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
