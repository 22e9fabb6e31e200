//! Syscall interception: every system call of the process's traced threads
//! goes through one handler, before (enter) and after (exit) the kernel runs
//! it, as the kernel's `syscalls/sys_enter_*` / `sys_exit_*` tracepoints and
//! the `sys_enter` / `sys_exit` raw tracepoints see them.
//!
//! # Mechanism: Syscall User Dispatch
//!
//! [`install`] turns on Syscall User Dispatch (SUD, Linux 5.11+,
//! `prctl(PR_SET_SYSCALL_USER_DISPATCH)`, see the kernel's
//! `Documentation/admin-guide/syscall-user-dispatch.rst`) for the calling
//! thread. SUD is a per-thread setting read at every system call entry:
//! a call made from outside one *allowed* address range while the thread's
//! *selector* byte says `BLOCK` is not executed; the kernel sends the thread
//! a SIGSYS instead, with the call's number and the registers in the signal
//! context. This module's SIGSYS handler
//!
//! 1. sets the selector to `ALLOW`, so everything pkbpf does from here on
//!    (running programs, helpers, maps, streaming output) is never traced;
//! 2. calls the handler with [`SyscallPhase::Enter`] and a [`SyscallFrame`];
//! 3. re-issues the call from the allowed range (a few instructions in the
//!    section `.text.pkbpf_sud` of this crate, see `asm.rs`) with the
//!    application's arguments;
//! 4. calls the handler with [`SyscallPhase::Exit`], puts the result in the
//!    context's `rax`, sets the selector back to `BLOCK` as its very last
//!    store, and returns through its own `rt_sigreturn` restorer, which lies
//!    in the allowed range (so the handler's return is not dispatched).
//!
//! The selector is a thread-local byte. Code of pkbpf that runs on an
//! application thread outside the handler (uprobe programs, the agent's
//! exit and fork handlers) wraps itself in [`Untraced`].
//!
//! # Special calls
//!
//! - `rt_sigreturn` of the application's own signal handlers (their glibc
//!   restorer is outside the allowed range): emulated. The handler copies
//!   the application's signal frame (the kernel `ucontext` at the caller's
//!   `rsp`: flags, link, stack, machine context with its FPU state pointer,
//!   signal mask) over its own, so its own `rt_sigreturn` resumes the
//!   context the application's signal interrupted.
//! - Threads: SUD is *not* inherited by `clone`/`fork` (the kernel clears it
//!   in the child; checked on this kernel) and not kept across `execve`. A
//!   `clone`/`clone3` with a new stack and `CLONE_SETTLS` (every
//!   `pthread_create`) is re-issued by `pkbpf_sud_clone`: the parent writes
//!   the application's registers below the child's stack top, and the child
//!   enables SUD for itself before it returns to the application's code. A
//!   child that shares its parent's TLS (a new stack without `CLONE_SETTLS`,
//!   as `posix_spawn`'s short-lived child) is left untraced.
//! - `fork`, and `clone` without a new stack: re-issued in the handler; the
//!   child (a copy of the handler's stack) enables SUD before returning.
//! - `vfork`, and `clone(CLONE_VM | CLONE_VFORK)` without a new stack: the
//!   child would run on the parent's stack and overwrite the parent's signal
//!   frame, so `CLONE_VM` is dropped: the child is a copy-on-write copy and
//!   the parent still waits for its `execve` or exit. Only a child that
//!   writes its parent's memory (undefined behaviour for `vfork`) sees a
//!   difference.
//! - Syscalls after `execve` are traced when the new image loads the agent
//!   again (`LD_PRELOAD` is inherited).
//!
//! # Signals of the application
//!
//! SIGSYS belongs to this module while it is installed. The application's
//! `rt_sigaction(SIGSYS, ...)` is emulated: its action is recorded and
//! reported back, never installed; a SIGSYS that is not a dispatch (a
//! `kill`, a seccomp `SECCOMP_RET_TRAP`) is passed to the recorded action
//! (`SIG_DFL` terminates as SIGSYS would, `SIG_IGN` drops it; `sa_mask`,
//! `SA_RESETHAND` and `SA_NODEFER` of the recorded action are not applied).
//! `rt_sigprocmask` never blocks SIGSYS (the bit is cleared from the set
//! before the call is re-issued). Other signals are untouched, but they never
//! interrupt a program: the SIGSYS handler runs with every signal except
//! the synchronous faults blocked, and gives the application its own mask
//! back (and the selector `BLOCK`) only while the kernel runs the re-issued
//! call. A signal that arrives meanwhile is delivered when the call returns
//! or is interrupted (a `raise`, a timer cutting a blocking `read` short),
//! as without pkbpf, and its handler's system calls are traced. The cost is
//! two `rt_sigprocmask` calls per intercepted call.
//!
//! # Limits
//!
//! Threads that existed before [`install`] (other than the caller) are not
//! traced. An application that calls `prctl(PR_SET_SYSCALL_USER_DISPATCH)`
//! itself replaces pkbpf's setting on that thread. Handlers run inside a
//! signal handler at the system call: one that allocates can deadlock when
//! the intercepted call was made by `malloc` with its arena lock held (`brk`,
//! `mmap`), so the dispatch path itself allocates nothing.
#![allow(clippy::missing_safety_doc)]

mod asm;
mod fast;
mod names;

pub use fast::{rewrite_libc, rewritten_sites, RewriteStats};

use std::cell::Cell;
use std::ffi::c_void;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::frame::PtRegs;
use crate::{HookError, Result};

const PR_SET_SYSCALL_USER_DISPATCH: libc::c_int = 59;
const PR_SYS_DISPATCH_OFF: libc::c_ulong = 0;
const PR_SYS_DISPATCH_ON: libc::c_ulong = 1;
/// Selector value: system calls go through.
const ALLOW: u8 = 0;
/// Selector value: system calls outside the allowed range raise SIGSYS.
const BLOCK: u8 = 1;
/// `si_code` of a dispatch SIGSYS.
const SYS_USER_DISPATCH: libc::c_int = 2;
const SA_RESTORER: u64 = 0x0400_0000;
const SIGSYS_BIT: u64 = 1 << (libc::SIGSYS - 1);

const NR_RT_SIGACTION: u64 = libc::SYS_rt_sigaction as u64;
const NR_RT_SIGPROCMASK: u64 = libc::SYS_rt_sigprocmask as u64;
const NR_RT_SIGRETURN: u64 = libc::SYS_rt_sigreturn as u64;
const NR_CLONE: u64 = libc::SYS_clone as u64;
const NR_CLONE3: u64 = libc::SYS_clone3 as u64;
const NR_FORK: u64 = libc::SYS_fork as u64;
const NR_VFORK: u64 = libc::SYS_vfork as u64;

/// Byte size of the kernel's `struct ucontext` up to and including its
/// 8-byte signal mask: what `rt_sigreturn` reads.
const KERNEL_UCONTEXT: usize = 8 + 8 + 24 + 256 + 8;

/// Which side of the system call a handler call is on.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyscallPhase {
    /// Before the kernel runs the call (`sys_enter`).
    Enter = 0,
    /// After it returned (`sys_exit`); [`SyscallFrame::ret`] holds the result.
    Exit = 1,
}

/// One system call as a handler sees it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SyscallFrame {
    /// The registers as the kernel's `struct pt_regs` at the call: `orig_ax`
    /// is the number, `ax` is `-ENOSYS` on entry and the result on exit, `ip`
    /// is the address after the `syscall` instruction. What a raw tracepoint
    /// program's `args[0]` points at.
    pub regs: PtRegs,
    /// The system call number.
    pub nr: u64,
    /// Its six arguments (`rdi, rsi, rdx, r10, r8, r9`).
    pub args: [u64; 6],
    /// The result (exit phase only).
    pub ret: i64,
}

/// The raw handler ABI: called at every traced system call.
pub type RawSyscallHandlerFn =
    unsafe extern "C" fn(data: *mut c_void, frame: *mut SyscallFrame, phase: SyscallPhase);

/// A syscall handler: a function and its data pointer.
#[derive(Debug, Clone, Copy)]
pub struct SyscallHandler {
    func: RawSyscallHandlerFn,
    data: *mut c_void,
}

// SAFETY: `from_raw`'s contract makes the pair callable from any thread;
// `from_fn` requires `Send + Sync` closures.
unsafe impl Send for SyscallHandler {}
// SAFETY: as above; the handler is only called.
unsafe impl Sync for SyscallHandler {}

unsafe extern "C" fn call_boxed<F: Fn(&mut SyscallFrame, SyscallPhase) + Send + Sync + 'static>(
    data: *mut c_void,
    frame: *mut SyscallFrame,
    phase: SyscallPhase,
) {
    // SAFETY: `data` is the leaked `Box<F>` of `from_fn`; `frame` is live.
    unsafe { (*data.cast::<F>())(&mut *frame, phase) }
}

impl SyscallHandler {
    /// A handler from a raw function and its data pointer.
    ///
    /// # Safety
    /// `func(data, frame, phase)` must be callable from any thread inside a
    /// SIGSYS handler for the life of the process, must not unwind, and
    /// should not allocate (see the module's limits).
    pub unsafe fn from_raw(func: RawSyscallHandlerFn, data: *mut c_void) -> Self {
        SyscallHandler { func, data }
    }

    /// A handler from a closure (leaked: never freed).
    pub fn from_fn<F: Fn(&mut SyscallFrame, SyscallPhase) + Send + Sync + 'static>(f: F) -> Self {
        SyscallHandler {
            func: call_boxed::<F>,
            data: Box::into_raw(Box::new(f)).cast(),
        }
    }
}

/// The system call number of `name` (`openat`, `getdents64`, ...) on x86-64.
pub fn syscall_nr(name: &str) -> Option<u32> {
    names::SYSCALLS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, nr)| nr)
}

/// The name of system call `nr`, when known.
pub fn syscall_name(nr: u64) -> Option<&'static str> {
    names::SYSCALLS
        .iter()
        .find(|&&(_, n)| u64::from(n) == nr)
        .map(|&(name, _)| name)
}

// ---- per-thread state -------------------------------------------------------

thread_local! {
    /// The SUD selector of this thread (its address is given to the kernel).
    static SELECTOR: Cell<u8> = const { Cell::new(ALLOW) };
    /// Whether SUD is on for this thread.
    static ENABLED: Cell<bool> = const { Cell::new(false) };
    /// This thread's id, once asked (0: not yet).
    static TID: Cell<i32> = const { Cell::new(0) };
}

/// The calling thread's id (`gettid`), cached per thread; a child this
/// module sets up (fork, clone) asks the kernel again.
pub fn current_tid() -> i32 {
    TID.with(|t| {
        if t.get() == 0 {
            t.set(raw(libc::SYS_gettid as u64, [0; 6]) as i32);
        }
        t.get()
    })
}

fn set_selector(v: u8) {
    SELECTOR.with(|s| {
        // SAFETY: the byte is this thread's own; a volatile store keeps it
        // from being reordered past the calls around it.
        unsafe { std::ptr::write_volatile(s.as_ptr(), v) }
    });
}

fn selector() -> u8 {
    // SAFETY: as above.
    SELECTOR.with(|s| unsafe { std::ptr::read_volatile(s.as_ptr()) })
}

/// While alive, the current thread's system calls are not traced (its
/// selector is `ALLOW`); dropping it restores the previous state. pkbpf
/// code that runs on an application thread outside the SIGSYS handler
/// (uprobe programs, the agent's atexit and fork handlers) holds one.
#[derive(Debug)]
pub struct Untraced {
    /// The selector to restore; `None` when interception was never
    /// installed (the guard then costs one relaxed load).
    prev: Option<u8>,
}

impl Untraced {
    /// Stops tracing this thread until the guard drops.
    pub fn new() -> Self {
        if !IN_USE.load(Ordering::Relaxed) {
            return Untraced { prev: None };
        }
        let prev = selector();
        set_selector(ALLOW);
        Untraced { prev: Some(prev) }
    }
}

impl Default for Untraced {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Untraced {
    fn drop(&mut self) {
        if let Some(prev) = self.prev {
            set_selector(prev);
        }
    }
}

/// Starts (or stops) tracing the calling thread: after [`install`], the
/// thread that installed stays untraced until it calls this with `true`
/// (the agent does at the end of its constructor). No effect on a thread
/// where SUD is off.
pub fn trace_current_thread(on: bool) {
    if ENABLED.with(Cell::get) {
        set_selector(if on { BLOCK } else { ALLOW });
    }
}

/// Whether the calling thread has Syscall User Dispatch on.
pub fn current_thread_enabled() -> bool {
    ENABLED.with(Cell::get)
}

fn allowed_range() -> (usize, usize) {
    let (start, end) = (
        std::ptr::addr_of!(asm::pkbpf_sud_start) as usize,
        std::ptr::addr_of!(asm::pkbpf_sud_end) as usize,
    );
    (start, end - start)
}

/// Turns SUD on for the calling thread with its selector at `ALLOW`.
fn enable_current_thread() -> io::Result<()> {
    if ENABLED.with(Cell::get) {
        return Ok(());
    }
    let (off, len) = allowed_range();
    let sel = SELECTOR.with(|s| s.as_ptr());
    set_selector(ALLOW);
    // SAFETY: `sel` is this thread's selector byte, valid for the thread's
    // life; the range is this crate's stub section.
    let rc = unsafe {
        libc::prctl(
            PR_SET_SYSCALL_USER_DISPATCH,
            PR_SYS_DISPATCH_ON,
            off as libc::c_ulong,
            len as libc::c_ulong,
            sel,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    ENABLED.with(|e| e.set(true));
    Ok(())
}

/// Whether this kernel has Syscall User Dispatch (asks it with a harmless
/// `PR_SYS_DISPATCH_OFF` on a thread where it is off).
pub fn is_supported() -> bool {
    if ENABLED.with(Cell::get) {
        return true;
    }
    // SAFETY: turning SUD off on a thread where it is off changes nothing.
    unsafe { libc::prctl(PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_OFF, 0, 0, 0) == 0 }
}

// ---- global state -----------------------------------------------------------

static HANDLER: AtomicPtr<SyscallHandler> = AtomicPtr::new(std::ptr::null_mut());
/// Set by the first [`install`]: until then no thread is traced and
/// [`Untraced`] does nothing.
static IN_USE: AtomicBool = AtomicBool::new(false);
static INSTALLED: Mutex<bool> = Mutex::new(false);
/// Set once the SIGSYS action is ours.
static SIGSYS_OURS: AtomicBool = AtomicBool::new(false);

/// The kernel's `struct sigaction` (what `rt_sigaction` reads and writes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct KSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// The application's SIGSYS action (recorded, never installed), as four
/// words so a signal handler can read it without a lock.
static APP_SIGSYS: [std::sync::atomic::AtomicU64; 4] =
    [const { std::sync::atomic::AtomicU64::new(0) }; 4];

fn app_sigsys() -> KSigaction {
    KSigaction {
        handler: APP_SIGSYS[0].load(Ordering::Acquire) as usize,
        flags: APP_SIGSYS[1].load(Ordering::Acquire),
        restorer: APP_SIGSYS[2].load(Ordering::Acquire) as usize,
        mask: APP_SIGSYS[3].load(Ordering::Acquire),
    }
}

fn set_app_sigsys(a: &KSigaction) {
    APP_SIGSYS[1].store(a.flags, Ordering::Release);
    APP_SIGSYS[2].store(a.restorer as u64, Ordering::Release);
    APP_SIGSYS[3].store(a.mask, Ordering::Release);
    APP_SIGSYS[0].store(a.handler as u64, Ordering::Release);
}

fn raw(nr: u64, a: [u64; 6]) -> i64 {
    // SAFETY: issuing a system call with the application's own arguments
    // (or ours, built here); the kernel checks them.
    unsafe { asm::pkbpf_sud_raw(nr, a[0], a[1], a[2], a[3], a[4], a[5]) }
}

/// The signals kept blocked while pkbpf's own code runs in the handler:
/// every signal but the synchronous faults (the sandbox's fault recovery
/// needs SIGSEGV/SIGBUS inside programs, and the kernel kills a thread whose
/// faulting signal is blocked), SIGSYS itself, and SIGKILL/SIGSTOP.
const fn deferred_mask() -> u64 {
    let keep = [
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
        libc::SIGTRAP,
        libc::SIGSYS,
        libc::SIGKILL,
        libc::SIGSTOP,
    ];
    let mut m = !0u64;
    let mut i = 0;
    while i < keep.len() {
        m &= !(1u64 << (keep[i] - 1));
        i += 1;
    }
    m
}

/// The kernel's 8-byte signal mask inside a `ucontext_t`.
fn uc_mask(uc: &mut libc::ucontext_t) -> &mut u64 {
    // SAFETY: glibc's `sigset_t` starts with the kernel's 64-bit mask, which
    // is what `rt_sigreturn` restores.
    unsafe { &mut *(&mut uc.uc_sigmask as *mut libc::sigset_t).cast::<u64>() }
}

/// Runs `f` (the re-issue of the application's call) in the application's
/// signal state: its own signal mask (the handler runs with
/// [`deferred_mask`] blocked, so no handler of the application interrupts a
/// program) and the selector at `BLOCK` (the `syscall` instructions of the
/// stubs are in the allowed range, so that does not dispatch them). A
/// signal delivered when the call returns or is interrupted thus runs the
/// application's handler traced, as it would run without pkbpf, and never
/// in the middle of a program. The mask the call leaves (an
/// `rt_sigprocmask`, a `clone` child's) becomes the one `rt_sigreturn`
/// restores.
fn in_app_window<R>(uc: &mut libc::ucontext_t, f: impl FnOnce() -> R) -> R {
    let app = *uc_mask(uc) & !SIGSYS_BIT;
    let deferred = deferred_mask();
    set_selector(BLOCK);
    let set = libc::SIG_SETMASK as u64;
    raw(
        NR_RT_SIGPROCMASK,
        [set, &app as *const u64 as u64, 0, 8, 0, 0],
    );
    let r = f();
    let mut after: u64 = app;
    raw(
        NR_RT_SIGPROCMASK,
        [
            set,
            &deferred as *const u64 as u64,
            &mut after as *mut u64 as u64,
            8,
            0,
            0,
        ],
    );
    set_selector(ALLOW);
    *uc_mask(uc) = after & !SIGSYS_BIT;
    r
}

/// Installs `handler` as the process's syscall handler, makes SIGSYS ours,
/// and turns SUD on for the calling thread (untraced until
/// [`trace_current_thread`]`(true)`). Threads it creates later while traced
/// are traced too. A second call replaces the handler.
pub fn install(handler: SyscallHandler) -> Result<()> {
    let mut done = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    IN_USE.store(true, Ordering::Relaxed);
    let boxed = Box::into_raw(Box::new(handler));
    // The old handler is leaked: a thread may still be running it.
    HANDLER.store(boxed, Ordering::Release);
    if !*done {
        let act = KSigaction {
            handler: on_sigsys as *const () as usize,
            // SA_NODEFER: an application handler that runs inside this one
            // (a signal delivered when a re-issued call returns) is traced,
            // and the kernel kills a thread whose dispatch SIGSYS is blocked.
            flags: (libc::SA_SIGINFO | libc::SA_NODEFER) as u64 | SA_RESTORER,
            restorer: asm::pkbpf_sud_restorer as *const () as usize,
            mask: deferred_mask(),
        };
        let mut old = KSigaction::default();
        let rc = raw(
            NR_RT_SIGACTION,
            [
                libc::SIGSYS as u64,
                &act as *const KSigaction as u64,
                &mut old as *mut KSigaction as u64,
                8,
                0,
                0,
            ],
        );
        if rc != 0 {
            return Err(HookError::Sys {
                op: "rt_sigaction(SIGSYS)",
                addr: 0,
                source: io::Error::from_raw_os_error(-rc as i32),
            });
        }
        set_app_sigsys(&old);
        SIGSYS_OURS.store(true, Ordering::Release);
        *done = true;
    }
    enable_current_thread().map_err(|source| HookError::Sys {
        op: "prctl(PR_SET_SYSCALL_USER_DISPATCH)",
        addr: allowed_range().0,
        source,
    })
}

/// Stops calling the handler (SUD stays on; intercepted calls are only
/// re-issued). For the agent's exit path.
pub fn uninstall() {
    HANDLER.store(std::ptr::null_mut(), Ordering::Release);
}

// ---- the SIGSYS handler -------------------------------------------------------

fn greg(uc: &libc::ucontext_t, r: libc::c_int) -> u64 {
    uc.uc_mcontext.gregs[r as usize] as u64
}

fn regs_of(uc: &libc::ucontext_t) -> PtRegs {
    use libc::*;
    PtRegs {
        r15: greg(uc, REG_R15),
        r14: greg(uc, REG_R14),
        r13: greg(uc, REG_R13),
        r12: greg(uc, REG_R12),
        bp: greg(uc, REG_RBP),
        bx: greg(uc, REG_RBX),
        r11: greg(uc, REG_R11),
        r10: greg(uc, REG_R10),
        r9: greg(uc, REG_R9),
        r8: greg(uc, REG_R8),
        ax: (-(libc::ENOSYS as i64)) as u64,
        cx: greg(uc, REG_RCX),
        dx: greg(uc, REG_RDX),
        si: greg(uc, REG_RSI),
        di: greg(uc, REG_RDI),
        orig_ax: greg(uc, REG_RAX),
        ip: greg(uc, REG_RIP),
        cs: 0x33,
        flags: greg(uc, REG_EFL),
        sp: greg(uc, REG_RSP),
        ss: 0x2b,
    }
}

/// Which system calls the handler wants to see in one phase: every call,
/// or those whose numbers are in a 512-bit set. Given with
/// [`set_interest`]; calls nobody wants skip the handler (and, on the fast
/// path, everything else but the call itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interest {
    /// Every call.
    pub all: bool,
    /// Bit `nr` set: call `nr` (numbers below 512).
    pub nrs: [u64; 8],
}

impl Interest {
    /// Nothing.
    pub const NONE: Interest = Interest {
        all: false,
        nrs: [0; 8],
    };
    /// Every call.
    pub const ALL: Interest = Interest {
        all: true,
        nrs: [0; 8],
    };

    /// Adds call `nr` (`None`: every call).
    pub fn add(&mut self, nr: Option<u64>) {
        match nr {
            Some(n) if n < 512 => self.nrs[(n / 64) as usize] |= 1 << (n % 64),
            _ => self.all = true,
        }
    }

    /// Whether call `nr` is in.
    pub fn wants(&self, nr: u64) -> bool {
        self.all || (nr < 512 && self.nrs[(nr / 64) as usize] & (1 << (nr % 64)) != 0)
    }
}

/// The published interest: per phase, an "all" flag and 8 words.
static WANT_ALL: [AtomicBool; 2] = [AtomicBool::new(true), AtomicBool::new(true)];
static WANT_NRS: [[AtomicU64; 8]; 2] = [
    [const { AtomicU64::new(0) }; 8],
    [const { AtomicU64::new(0) }; 8],
];

/// Tells the dispatcher which calls the handler wants, per phase (until
/// the first call, it wants every call). Threads see the change at their
/// next system call; a call in flight may still reach the handler once.
pub fn set_interest(enter: &Interest, exit: &Interest) {
    for (i, want) in [enter, exit].into_iter().enumerate() {
        for (w, v) in WANT_NRS[i].iter().zip(want.nrs) {
            w.store(v, Ordering::Relaxed);
        }
        WANT_ALL[i].store(want.all, Ordering::Release);
    }
}

fn wanted(phase: SyscallPhase, nr: u64) -> bool {
    let i = phase as usize;
    WANT_ALL[i].load(Ordering::Acquire)
        || (nr < 512
            && WANT_NRS[i][(nr / 64) as usize].load(Ordering::Relaxed) & (1 << (nr % 64)) != 0)
}

fn call_handler(frame: &mut SyscallFrame, phase: SyscallPhase) {
    if !wanted(phase, frame.nr) {
        return;
    }
    let h = HANDLER.load(Ordering::Acquire);
    if !h.is_null() {
        // SAFETY: handlers are leaked boxes, never freed; `from_raw`'s
        // contract makes the call valid on any thread.
        unsafe { ((*h).func)((*h).data, frame, phase) }
    }
}

/// Runs one intercepted system call as the kernel would, with the handler
/// on both sides. `uc` is the dispatch signal's context (or, for the fast
/// path, a context built by its trampoline).
fn dispatch(uc: &mut libc::ucontext_t) {
    let nr = greg(uc, libc::REG_RAX);
    let args = [
        greg(uc, libc::REG_RDI),
        greg(uc, libc::REG_RSI),
        greg(uc, libc::REG_RDX),
        greg(uc, libc::REG_R10),
        greg(uc, libc::REG_R8),
        greg(uc, libc::REG_R9),
    ];
    let mut frame = SyscallFrame {
        regs: regs_of(uc),
        nr,
        args,
        ret: 0,
    };
    call_handler(&mut frame, SyscallPhase::Enter);
    let ret = match nr {
        NR_RT_SIGRETURN => {
            sigreturn_in_place(uc);
            return;
        }
        NR_RT_SIGACTION if args[0] == libc::SIGSYS as u64 => app_sigaction(args),
        NR_CLONE | NR_CLONE3 | NR_FORK | NR_VFORK => {
            let mut regs = *uc;
            in_app_window(uc, || clone_family(&mut regs, nr, args))
        }
        _ => in_app_window(uc, || app_call(nr, args)),
    };
    frame.ret = ret;
    frame.regs.ax = ret as u64;
    call_handler(&mut frame, SyscallPhase::Exit);
    uc.uc_mcontext.gregs[libc::REG_RAX as usize] = ret;
}

extern "C" fn on_sigsys(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: the kernel hands an SA_SIGINFO handler a valid siginfo.
    let code = unsafe { (*info).si_code };
    if code != SYS_USER_DISPATCH {
        let _untraced = Untraced::new();
        chain_app_sigsys(sig, info, ctx);
        return;
    }
    set_selector(ALLOW);
    // SAFETY: the kernel hands an SA_SIGINFO handler a valid ucontext, ours
    // alone until the handler returns.
    let uc = unsafe { &mut *ctx.cast::<libc::ucontext_t>() };
    dispatch(uc);
    // Last store before the restorer (inside the allowed range) returns.
    set_selector(BLOCK);
}

/// `rt_sigreturn` from the application's handler: resume the context its
/// signal frame holds by making it ours.
fn sigreturn_in_place(uc: &mut libc::ucontext_t) {
    let app = greg(uc, libc::REG_RSP) as *const u8;
    // SAFETY: at `rt_sigreturn` the caller's rsp points at the kernel's
    // ucontext of the signal it returns from (the frame the kernel built,
    // still on its stack above ours); both ranges are KERNEL_UCONTEXT bytes
    // of the same layout.
    unsafe {
        std::ptr::copy_nonoverlapping(
            app,
            (uc as *mut libc::ucontext_t).cast::<u8>(),
            KERNEL_UCONTEXT,
        )
    };
}

/// The application's call `nr` as the kernel should see it: `rt_sigaction`
/// of SIGSYS emulated, other `rt_sigaction`s noted (the fast path masks
/// signals once the application has handlers), `rt_sigprocmask` without
/// SIGSYS, everything else as it is. Not for `rt_sigreturn` and the clone
/// family.
pub(crate) fn app_call(nr: u64, args: [u64; 6]) -> i64 {
    match nr {
        NR_RT_SIGACTION if args[0] == libc::SIGSYS as u64 => app_sigaction(args),
        NR_RT_SIGACTION => {
            if args[1] != 0 {
                // SAFETY: the application's `struct sigaction *`; its first
                // word is the handler. A bad pointer faults here rather
                // than giving EFAULT (documented difference).
                let handler = unsafe { std::ptr::read_unaligned(args[1] as *const usize) };
                if handler != libc::SIG_DFL && handler != libc::SIG_IGN {
                    fast::APP_HANDLERS.store(true, Ordering::Relaxed);
                }
            }
            raw(nr, args)
        }
        NR_RT_SIGPROCMASK => sigprocmask(args),
        _ => raw(nr, args),
    }
}

/// `rt_sigaction(SIGSYS, act, oldact, size)` of the application: recorded.
fn app_sigaction(a: [u64; 6]) -> i64 {
    if a[3] != 8 {
        return -(libc::EINVAL as i64);
    }
    let old = app_sigsys();
    if a[1] != 0 {
        // SAFETY: the application passed a `struct sigaction *`; a bad
        // pointer faults in the application, as the kernel's copy would
        // have returned EFAULT (documented difference).
        let new = unsafe { std::ptr::read_unaligned(a[1] as *const KSigaction) };
        set_app_sigsys(&new);
    }
    if a[2] != 0 {
        // SAFETY: as above, for the output pointer.
        unsafe { std::ptr::write_unaligned(a[2] as *mut KSigaction, old) };
    }
    0
}

/// `rt_sigprocmask` with SIGSYS removed from the set to block or set.
fn sigprocmask(mut a: [u64; 6]) -> i64 {
    let how = a[0] as libc::c_int;
    let mut copy: u64 = 0;
    if a[1] != 0 && (how == libc::SIG_BLOCK || how == libc::SIG_SETMASK) && a[3] == 8 {
        // SAFETY: the application's `sigset_t *` of `a[3]` == 8 bytes.
        copy = unsafe { std::ptr::read_unaligned(a[1] as *const u64) } & !SIGSYS_BIT;
        a[1] = &mut copy as *mut u64 as u64;
    }
    let r = raw(NR_RT_SIGPROCMASK, a);
    let _ = copy;
    r
}

/// A SIGSYS that is not a dispatch: to the application's recorded action.
fn chain_app_sigsys(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    let act = app_sigsys();
    match act.handler {
        h if h == libc::SIG_IGN => {}
        h if h == libc::SIG_DFL => {
            // Terminate as SIGSYS's default action would.
            let dfl = KSigaction::default();
            raw(
                NR_RT_SIGACTION,
                [
                    libc::SIGSYS as u64,
                    &dfl as *const KSigaction as u64,
                    0,
                    8,
                    0,
                    0,
                ],
            );
            let unblock: u64 = SIGSYS_BIT;
            raw(
                NR_RT_SIGPROCMASK,
                [
                    libc::SIG_UNBLOCK as u64,
                    &unblock as *const u64 as u64,
                    0,
                    8,
                    0,
                    0,
                ],
            );
            // SAFETY: getpid/gettid have no preconditions.
            let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
            raw(
                libc::SYS_tgkill as u64,
                [pid as u64, tid as u64, libc::SIGSYS as u64, 0, 0, 0],
            );
        }
        h if act.flags & libc::SA_SIGINFO as u64 != 0 => {
            // SAFETY: the application installed this function as an
            // SA_SIGINFO handler for SIGSYS.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void) =
                unsafe { std::mem::transmute(h) };
            // Its own system calls are traced like the rest of its code.
            let prev = selector();
            set_selector(if ENABLED.with(Cell::get) {
                BLOCK
            } else {
                ALLOW
            });
            f(sig, info, ctx);
            set_selector(prev);
        }
        h => {
            // SAFETY: the application installed this function as a plain
            // SIGSYS handler.
            let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
            let prev = selector();
            set_selector(if ENABLED.with(Cell::get) {
                BLOCK
            } else {
                ALLOW
            });
            f(sig);
            set_selector(prev);
        }
    }
}

// ---- clone, fork, vfork ------------------------------------------------------------

/// How a new child should set itself up (the `mode` word of the child block).
const CHILD_OWN_TLS: u64 = 1;
const CHILD_SHARED_TLS: u64 = 0;

/// Called by a clone child on its new stack, before it returns to the
/// application (from `pkbpf_sud_clone`).
pub(crate) extern "C" fn clone_child_setup(mode: u64) {
    if mode != CHILD_OWN_TLS {
        return;
    }
    child_enable();
}

/// In a new child that has its own TLS: SIGSYS unblocked (the parent was
/// inside the SIGSYS handler, which blocks it), SUD on, traced.
fn child_enable() {
    // The thread-local flags are the parent's values (a fork copy) or the
    // initial ones (a new TLS block): SUD is off either way, and the cached
    // thread id is stale.
    ENABLED.with(|e| e.set(false));
    TID.with(|t| t.set(0));
    let unblock: u64 = SIGSYS_BIT;
    raw(
        NR_RT_SIGPROCMASK,
        [
            libc::SIG_UNBLOCK as u64,
            &unblock as *const u64 as u64,
            0,
            8,
            0,
            0,
        ],
    );
    if enable_current_thread().is_ok() {
        set_selector(BLOCK);
    }
}

/// `struct clone_args` of clone3 (the fields this module reads).
#[repr(C)]
#[derive(Clone, Copy)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

fn clone_family(uc: &mut libc::ucontext_t, nr: u64, mut a: [u64; 6]) -> i64 {
    let vm_vfork = (libc::CLONE_VM | libc::CLONE_VFORK) as u64;
    match nr {
        NR_FORK => fork_like(NR_FORK, a),
        NR_VFORK => fork_like(
            NR_CLONE,
            [(libc::CLONE_VFORK | libc::SIGCHLD) as u64, 0, 0, 0, 0, 0],
        ),
        NR_CLONE => {
            let (flags, stack) = (a[0], a[1]);
            if stack == 0 {
                if flags & vm_vfork == vm_vfork {
                    a[0] &= !(libc::CLONE_VM as u64);
                }
                return fork_like(NR_CLONE, a);
            }
            clone_with_stack(uc, nr, a, stack, own_tls(flags))
        }
        _ => {
            // clone3(args, size)
            if a[0] == 0 || (a[1] as usize) < std::mem::size_of::<CloneArgs>() {
                return raw(nr, a);
            }
            // SAFETY: the application's `struct clone_args *` of at least
            // the size read (checked above).
            let mut ca = unsafe { std::ptr::read_unaligned(a[0] as *const CloneArgs) };
            if ca.stack == 0 {
                if ca.flags & vm_vfork == vm_vfork {
                    // Same struct with CLONE_VM dropped, in our own copy (the
                    // rest of the application's struct follows unchanged).
                    let size = a[1] as usize;
                    let mut buf = [0u64; 16];
                    if size > std::mem::size_of_val(&buf) {
                        return raw(nr, a);
                    }
                    // SAFETY: copying the application's `size` bytes.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            a[0] as *const u8,
                            buf.as_mut_ptr().cast::<u8>(),
                            size,
                        )
                    };
                    ca.flags &= !(libc::CLONE_VM as u64);
                    buf[0] = ca.flags;
                    a[0] = buf.as_mut_ptr() as u64;
                    return fork_like(nr, a);
                }
                return fork_like(nr, a);
            }
            let top = ca.stack.wrapping_add(ca.stack_size);
            clone_with_stack(uc, nr, a, top, own_tls(ca.flags))
        }
    }
}

/// Whether a clone child may touch its own thread-locals: it has a TLS
/// block of its own, or a copy of the whole address space.
fn own_tls(flags: u64) -> bool {
    flags & libc::CLONE_SETTLS as u64 != 0 || flags & libc::CLONE_VM as u64 == 0
}

/// A child that continues on a copy of this stack: re-issued here; the
/// child enables SUD before the handler returns.
fn fork_like(nr: u64, a: [u64; 6]) -> i64 {
    let r = raw(nr, a);
    if r == 0 {
        child_enable();
        set_selector(ALLOW); // the handler sets BLOCK on its way out
    }
    r
}

fn clone_with_stack(
    uc: &mut libc::ucontext_t,
    nr: u64,
    a: [u64; 6],
    top: u64,
    own_tls: bool,
) -> i64 {
    use libc::*;
    let ret_addr = greg(uc, REG_RIP);
    let flags = greg(uc, REG_EFL);
    let block: [u64; 17] = [
        if own_tls {
            CHILD_OWN_TLS
        } else {
            CHILD_SHARED_TLS
        },
        greg(uc, REG_R15),
        greg(uc, REG_R14),
        greg(uc, REG_R13),
        greg(uc, REG_R12),
        greg(uc, REG_RBP),
        greg(uc, REG_RBX),
        flags, // r11 after syscall: rflags
        greg(uc, REG_R10),
        greg(uc, REG_R9),
        greg(uc, REG_R8),
        ret_addr, // rcx after syscall: the return address
        greg(uc, REG_RDX),
        greg(uc, REG_RSI),
        greg(uc, REG_RDI),
        flags,
        ret_addr,
    ];
    let dst = (top as usize).wrapping_sub(asm::CHILD_BLOCK) as *mut u64;
    // SAFETY: the block goes just below the child's stack top, memory the
    // application gave the kernel as the child's stack and that nobody uses
    // before the child runs.
    unsafe { std::ptr::copy_nonoverlapping(block.as_ptr(), dst, block.len()) };
    // SAFETY: the application's clone arguments; the child path of the stub
    // reads the block written above.
    unsafe { asm::pkbpf_sud_clone(nr, a[0], a[1], a[2], a[3], a[4], a[5]) }
}

#[cfg(test)]
mod tests;
