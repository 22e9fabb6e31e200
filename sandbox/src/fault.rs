//! Fault recovery: a SIGSEGV/SIGBUS handler that turns faults in registered
//! JIT code ranges and in [`copy_from_user`] into errors, and forwards every
//! other fault to the handler that was installed before it.
//!
//! Recovery works by rewriting the interrupted context: for a guarded copy the
//! saved RIP is moved to the copy routine's failure exit; for JIT code it is
//! moved to the landing pad of the entry gate the thread is inside (see
//! `GateStub`), and RSP to the stack pointer that gate saved, so the whole
//! invocation unwinds to the gate, which switches back to the caller's domain
//! the checked way. The kernel runs the handler with the initial PKRU (key 0
//! only): everything it touches (statics, thread-locals, the range table) is
//! key-0 memory. `sigreturn` restores the interrupted PKRU, which is why the
//! gate's landing pad switches domains itself.
//!
//! Recovery does not unwind Rust frames between the gate and the fault: JIT
//! code must call back into Rust only through helpers that do not fault
//! (they use [`copy_from_user`] for untrusted pointers), and JIT code is
//! entered only through a gate, never called directly by a helper.
//!
//! Only x86-64 Linux (the JIT's target) has this module.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::SandboxError;

/// `si_code` of an access to an unmapped address (`SEGV_MAPERR`).
pub const SEGV_MAPERR: i32 = 1;
/// `si_code` of an access the page permissions forbid (`SEGV_ACCERR`).
pub const SEGV_ACCERR: i32 = 2;
/// `si_code` of a protection-key violation (`SEGV_PKUERR`).
pub const SEGV_PKUERR: i32 = 4;

/// Offset of `si_pkey` in the kernel's `siginfo_t` on x86-64: the fault
/// fields start at 16 with the 8-byte `si_addr`; the union after it (at 24)
/// puts the `u32` key behind a pad of pointer alignment (8), so at 32.
const SI_PKEY_OFFSET: usize = 32;

/// A memory fault that was caught and turned into an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The signal (`SIGSEGV` or `SIGBUS`).
    pub signal: i32,
    /// Its `si_code` (`SEGV_MAPERR` 1, `SEGV_ACCERR` 2, [`SEGV_PKUERR`] 4, …).
    pub code: i32,
    /// The faulting data address (`si_addr`).
    pub addr: usize,
    /// The protection key of the page, for `SEGV_PKUERR`.
    pub pkey: Option<u32>,
}

impl Fault {
    /// The errno a helper returns for it (`-EFAULT`, as a positive number).
    pub const ERRNO: i32 = libc::EFAULT;

    /// Whether this was a protection-key violation.
    pub fn is_pku(&self) -> bool {
        self.signal == libc::SIGSEGV && self.code == SEGV_PKUERR
    }

    /// Whether this is not a memory fault but a call aborted because its
    /// time budget ran out (`crate::budget`): the budget timer's signal with
    /// `SI_TIMER`; `addr` is then the interrupted instruction.
    pub fn is_timeout(&self) -> bool {
        self.signal == crate::budget::signal() && self.code == libc::SI_TIMER
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_timeout() {
            return write!(f, "time budget exhausted at {:#x}", self.addr);
        }
        let sig = if self.signal == libc::SIGBUS {
            "SIGBUS"
        } else {
            "SIGSEGV"
        };
        let code = match (self.signal, self.code) {
            (libc::SIGSEGV, SEGV_MAPERR) => "SEGV_MAPERR",
            (libc::SIGSEGV, SEGV_ACCERR) => "SEGV_ACCERR",
            (libc::SIGSEGV, SEGV_PKUERR) => "SEGV_PKUERR",
            _ => "code",
        };
        write!(f, "{sig} ({code} {}) at {:#x}", self.code, self.addr)?;
        if let Some(k) = self.pkey {
            write!(f, ", pkey {k}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Fault {}

/// What the handler records about a recovered fault (plain integers, written
/// from signal context).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FaultRecord {
    pub signal: i32,
    pub code: i32,
    pub addr: usize,
    /// `u32::MAX` when there is no key.
    pub pkey: u32,
}

impl FaultRecord {
    pub(crate) fn to_fault(self) -> Fault {
        Fault {
            signal: self.signal,
            code: self.code,
            addr: self.addr,
            pkey: (self.pkey != u32::MAX).then_some(self.pkey),
        }
    }
}

/// The per-invocation record an entry gate shares with the handler. The
/// gate stub writes `saved_rsp` and `landing` (offsets 0 and 8); the handler
/// writes `faulted` and `fault`. It lives on the caller's (key-0) stack.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct GateFrame {
    pub saved_rsp: usize,
    pub landing: usize,
    pub faulted: usize,
    pub fault: FaultRecord,
}

thread_local! {
    /// The innermost gate frame of this thread (null outside gates).
    static CURRENT_FRAME: Cell<*mut GateFrame> = const { Cell::new(std::ptr::null_mut()) };
    /// The last fault recovered inside this thread's guarded copy.
    static COPY_FAULT: Cell<FaultRecord> = const {
        Cell::new(FaultRecord { signal: 0, code: 0, addr: 0, pkey: u32::MAX })
    };
}

/// Makes `frame` the thread's innermost gate frame; returns the previous one
/// (to restore with [`set_frame`] after the gate returns).
pub(crate) fn set_frame(frame: *mut GateFrame) -> *mut GateFrame {
    CURRENT_FRAME.with(|c| c.replace(frame))
}

// ---- registered code ranges ---------------------------------------------------

/// Capacity of the range table.
pub const MAX_RANGES: usize = 256;

struct Slot {
    start: AtomicUsize,
    end: AtomicUsize,
    counter: AtomicPtr<AtomicU64>,
}

const RESERVED: usize = usize::MAX;

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_SLOT: Slot = Slot {
    start: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
    counter: AtomicPtr::new(std::ptr::null_mut()),
};

static RANGES: [Slot; MAX_RANGES] = [EMPTY_SLOT; MAX_RANGES];

/// A registered range of JIT code. A fault whose RIP is inside it, taken
/// while the thread is inside an entry gate, aborts that invocation and
/// counts one fault here. Dropping it unregisters the range.
#[derive(Debug)]
pub struct CodeRange {
    slot: usize,
    faults: Arc<AtomicU64>,
}

impl CodeRange {
    /// Faults recovered in this range so far (the per-program counter the CLI
    /// shows).
    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::Relaxed)
    }

    /// A shared handle on the counter, for a program table to keep.
    pub fn fault_counter(&self) -> Arc<AtomicU64> {
        self.faults.clone()
    }
}

impl Drop for CodeRange {
    fn drop(&mut self) {
        let s = &RANGES[self.slot];
        s.start.store(RESERVED, Ordering::SeqCst);
        let p = s.counter.swap(std::ptr::null_mut(), Ordering::SeqCst);
        s.end.store(0, Ordering::SeqCst);
        s.start.store(0, Ordering::SeqCst);
        if !p.is_null() {
            // SAFETY: `p` came from Arc::into_raw in register_code_range and
            // the slot no longer publishes it.
            drop(unsafe { Arc::from_raw(p) });
        }
    }
}

/// Registers `start..start+len` as JIT code whose faults are recovered (and
/// installs the handler if needed).
///
/// # Safety
///
/// No thread may be executing inside the range when the returned
/// [`CodeRange`] is dropped (the handler reads the slot without a lock).
pub unsafe fn register_code_range(start: usize, len: usize) -> Result<CodeRange, SandboxError> {
    install()?;
    let end = start
        .checked_add(len)
        .ok_or(SandboxError::Unaligned { addr: start, len })?;
    for (i, s) in RANGES.iter().enumerate() {
        if s.start
            .compare_exchange(0, RESERVED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            let faults = Arc::new(AtomicU64::new(0));
            s.counter.store(
                Arc::into_raw(faults.clone()) as *mut AtomicU64,
                Ordering::SeqCst,
            );
            s.end.store(end, Ordering::SeqCst);
            s.start.store(start, Ordering::SeqCst);
            return Ok(CodeRange { slot: i, faults });
        }
    }
    Err(SandboxError::RangeTableFull {
        capacity: MAX_RANGES,
    })
}

fn lookup(rip: usize) -> Option<*const AtomicU64> {
    for s in RANGES.iter() {
        let start = s.start.load(Ordering::Acquire);
        if start == 0 || start == RESERVED || rip < start {
            continue;
        }
        if rip < s.end.load(Ordering::Acquire) {
            return Some(s.counter.load(Ordering::Acquire));
        }
    }
    None
}

// ---- the guarded copy -----------------------------------------------------------

std::arch::global_asm!(
    ".pushsection .text.pkbpf_sandbox_guarded_copy,\"ax\",@progbits",
    ".globl pkbpf_sandbox_guarded_copy",
    ".globl pkbpf_sandbox_guarded_copy_fault",
    ".globl pkbpf_sandbox_guarded_copy_end",
    ".p2align 4",
    // extern "C" fn(dst: rdi, src: rsi, len: rdx) -> u64: 0 ok, 1 faulted.
    // Eight bytes (a pointer or u64: most probe reads and writes) take one
    // load and one store; `rep movsb`'s start-up cost dominates so small a
    // copy. Either access may fault: both lie before the fault label.
    "pkbpf_sandbox_guarded_copy:",
    "    cmp rdx, 8",
    "    jne 2f",
    "    mov rax, qword ptr [rsi]",
    "    mov qword ptr [rdi], rax",
    "    xor eax, eax",
    "    ret",
    "2:",
    "    mov rcx, rdx",
    "    rep movsb",
    "    xor eax, eax",
    "    ret",
    // The handler moves RIP here when the copy faults; RSP is unchanged
    // (rep movsb pushes nothing), so a plain return unwinds.
    "pkbpf_sandbox_guarded_copy_fault:",
    "    mov eax, 1",
    "    ret",
    "pkbpf_sandbox_guarded_copy_end:",
    ".popsection",
);

extern "C" {
    fn pkbpf_sandbox_guarded_copy(dst: *mut u8, src: *const u8, len: usize) -> u64;
    static pkbpf_sandbox_guarded_copy_fault: u8;
    static pkbpf_sandbox_guarded_copy_end: u8;
}

fn copy_bounds() -> (usize, usize, usize) {
    (
        pkbpf_sandbox_guarded_copy as *const () as usize,
        // Only the labels' addresses are taken, never their bytes.
        std::ptr::addr_of!(pkbpf_sandbox_guarded_copy_fault) as usize,
        std::ptr::addr_of!(pkbpf_sandbox_guarded_copy_end) as usize,
    )
}

/// Copies `dst.len()` bytes from the address `src`, which may be anything: an
/// unmapped, inaccessible or protection-key-denied source yields the
/// [`Fault`] (`-EFAULT` for `bpf_probe_read*`) instead of a crash. On valid
/// memory it is a `rep movsb`. The first call installs the fault handler.
///
/// Bytes before the faulting one may already have been written to `dst`.
pub fn copy_from_user(dst: &mut [u8], src: usize) -> Result<(), Fault> {
    if dst.is_empty() {
        return Ok(());
    }
    if install().is_err() {
        // Without the handler a bad pointer would crash; refuse instead.
        return Err(Fault {
            signal: libc::SIGSEGV,
            code: 0,
            addr: src,
            pkey: None,
        });
    }
    // SAFETY: `dst` is a valid writable slice of the given length; `src` is
    // only read by the guarded routine, whose faults the installed handler
    // turns into a return value of 1.
    let r = unsafe { pkbpf_sandbox_guarded_copy(dst.as_mut_ptr(), src as *const u8, dst.len()) };
    if r == 0 {
        Ok(())
    } else {
        Err(COPY_FAULT.with(|c| c.get()).to_fault())
    }
}

/// Copies `src` to the address `dst`, which may be anything: an unmapped,
/// read-only, or protection-key-denied destination yields the [`Fault`]
/// (`-EFAULT` for `bpf_probe_write_user`) instead of a crash. Unlike
/// `process_vm_writev`, the store is made by this thread in its current
/// domain, so protection keys apply. The first call installs the handler.
///
/// Bytes before the faulting one may already have been written.
///
/// # Safety
///
/// Whatever `dst` points to may be overwritten: the caller decides that
/// this is allowed (e.g. the destination carries no pkbpf key and the
/// program was permitted to write user memory).
pub unsafe fn copy_to_user(dst: usize, src: &[u8]) -> Result<(), Fault> {
    if src.is_empty() {
        return Ok(());
    }
    let refused = Fault {
        signal: libc::SIGSEGV,
        code: 0,
        addr: dst,
        pkey: None,
    };
    if install().is_err() {
        return Err(refused);
    }
    // SAFETY: `src` is a valid readable slice; `dst` is only written by the
    // guarded routine, whose faults the handler turns into a return of 1;
    // the caller allows overwriting it.
    let r = unsafe { pkbpf_sandbox_guarded_copy(dst as *mut u8, src.as_ptr(), src.len()) };
    if r == 0 {
        Ok(())
    } else {
        Err(COPY_FAULT.with(|c| c.get()).to_fault())
    }
}

// ---- the handler ---------------------------------------------------------------

struct PrevAction(std::cell::UnsafeCell<std::mem::MaybeUninit<libc::sigaction>>);
// SAFETY: written once inside `install` (under a OnceLock) before the
// handler that reads it is in place, then only read.
unsafe impl Sync for PrevAction {}

static PREV_SEGV: PrevAction =
    PrevAction(std::cell::UnsafeCell::new(std::mem::MaybeUninit::zeroed()));
static PREV_BUS: PrevAction =
    PrevAction(std::cell::UnsafeCell::new(std::mem::MaybeUninit::zeroed()));

/// Installs the SIGSEGV/SIGBUS handler (`SA_SIGINFO | SA_ONSTACK |
/// SA_NODEFER`) once per process, remembering the previous handlers to
/// forward foreign faults to. Idempotent.
pub fn install() -> Result<(), SandboxError> {
    static DONE: OnceLock<Result<(), SandboxError>> = OnceLock::new();
    DONE.get_or_init(|| {
        for (sig, prev) in [(libc::SIGSEGV, &PREV_SEGV), (libc::SIGBUS, &PREV_BUS)] {
            // SAFETY: a zeroed sigaction is a valid "no flags, empty mask"
            // value; the fields are then set.
            let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
            sa.sa_sigaction = handler as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
            // SAFETY: sa_mask is a valid sigset_t to initialise.
            unsafe { libc::sigemptyset(&mut sa.sa_mask) };
            // SAFETY: both pointers are valid; `prev` is written only here,
            // once, before any fault can reach `handler`'s forwarding path
            // for this signal.
            let r = unsafe { libc::sigaction(sig, &sa, (*prev.0.get()).as_mut_ptr()) };
            if r != 0 {
                return Err(SandboxError::Syscall {
                    call: "sigaction",
                    errno: crate::mpk::sys_errno(),
                });
            }
        }
        Ok(())
    })
    .clone()
}

extern "C" fn handler(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes valid siginfo and ucontext pointers to an
    // SA_SIGINFO handler.
    unsafe {
        let uc = &mut *(ctx as *mut libc::ucontext_t);
        let gregs = &mut uc.uc_mcontext.gregs;
        let rip = gregs[libc::REG_RIP as usize] as usize;
        let code = (*info).si_code;
        let pkey = if sig == libc::SIGSEGV && code == SEGV_PKUERR {
            std::ptr::read_unaligned((info as *const u8).add(SI_PKEY_OFFSET) as *const u32)
        } else {
            u32::MAX
        };
        let record = FaultRecord {
            signal: sig,
            code,
            addr: (*info).si_addr() as usize,
            pkey,
        };

        let (copy_start, copy_fault, copy_end) = copy_bounds();
        if (copy_start..copy_end).contains(&rip) {
            COPY_FAULT.with(|c| c.set(record));
            gregs[libc::REG_RIP as usize] = copy_fault as i64;
            return;
        }

        if abort_to_gate(uc, record, true) {
            return;
        }

        forward(sig, info, ctx);
    }
}

/// When the interrupted RIP in `uc` lies in registered JIT code and the
/// thread is inside an entry gate: records `record` in the innermost gate
/// frame (counting it against the range when `count`), moves RIP/RSP to
/// that gate's landing pad, and returns true. Otherwise changes nothing.
///
/// # Safety
///
/// Signal context of the interrupted thread only, with the kernel's `uc`.
pub(crate) unsafe fn abort_to_gate(
    uc: &mut libc::ucontext_t,
    record: FaultRecord,
    count: bool,
) -> bool {
    let gregs = &mut uc.uc_mcontext.gregs;
    let rip = gregs[libc::REG_RIP as usize] as usize;
    let Some(counter) = lookup(rip) else {
        return false;
    };
    let frame = CURRENT_FRAME.with(|c| c.get());
    if frame.is_null() {
        return false;
    }
    // SAFETY: a registered range's counter stays alive while the range is
    // registered; `frame` is the live gate frame of this thread (set by
    // `GateStub::call` around the call that was interrupted).
    unsafe {
        if count && !counter.is_null() {
            (*counter).fetch_add(1, Ordering::Relaxed);
        }
        (*frame).faulted = 1;
        (*frame).fault = record;
        gregs[libc::REG_RSP as usize] = (*frame).saved_rsp as i64;
        gregs[libc::REG_RIP as usize] = (*frame).landing as i64;
    }
    true
}

/// Hands a fault that is not ours to the previous handler, or restores the
/// default action so that the re-executed instruction kills the process as
/// it would have without pkbpf.
///
/// # Safety
///
/// Signal context only, with the kernel's `info` and `ctx`.
unsafe fn forward(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let prev = if sig == libc::SIGBUS {
        &PREV_BUS
    } else {
        &PREV_SEGV
    };
    // SAFETY: written once by `install` before this handler was installed.
    let prev = unsafe { (*prev.0.get()).assume_init_ref() };
    let h = prev.sa_sigaction;
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        // SAFETY: resetting a signal's disposition is async-signal-safe.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
        return;
    }
    if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed with SA_SIGINFO, so it
        // has this signature and expects these arguments.
        let f: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(h) };
        f(sig, info, ctx);
    } else {
        // SAFETY: a plain handler takes the signal number only.
        let f: extern "C" fn(i32) = unsafe { std::mem::transmute(h) };
        f(sig);
    }
}
