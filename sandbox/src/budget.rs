//! Per-call time budgets: a host bounds the wall time of one call into an
//! extension; when it runs out the call is aborted like a faulting one.
//!
//! A verified program terminates, but may still run for a long time (a
//! million instructions, more with `bpf_loop`). [`arm`] starts this thread's
//! POSIX timer (`timer_create` with `SIGEV_THREAD_ID`, `CLOCK_MONOTONIC`,
//! created on the thread's first budgeted call and deleted when the thread
//! exits) for the budget; the [`BudgetGuard`] it returns stops it. When the
//! timer fires, its signal ([`signal`], `SIGRTMAX - 1`) lands on the calling
//! thread, and the handler:
//!
//! - when the interrupted instruction lies in registered JIT code and the
//!   thread is inside an entry gate, unwinds to that gate's landing pad
//!   exactly as [`crate::fault`] does for a faulting extension: the gate
//!   switches back to the caller's domain the checked way (PKRU restored) and
//!   the call returns a [`crate::Fault`] for which `is_timeout()` holds;
//! - otherwise (a helper is running: it may hold a map's lock or be halfway
//!   through an update; or the gate itself, or host code) it does nothing to
//!   the thread and re-arms the timer for a short retry ([`RETRY`]), so the
//!   abort happens at the first tick that finds the thread back in JIT code.
//!   Helpers return, so an over-budget call ends within a retry of the
//!   helper's return.
//!
//! Maps stay consistent because JIT code is only ever stopped between its
//! own instructions: its stores are single plain stores or atomics, and
//! every multi-step update happens inside a helper, which is never
//! interrupted this way. That is an invariant for the JIT to keep: map code
//! it inlines may read optimistically (a sequence-lock read that an abort
//! simply abandons) but must never hold a lock across its own
//! instructions, since an abort can stop JIT code at any of them. A call without a budget costs nothing: no timer, no
//! system call. A budgeted call costs two `timer_settime` calls (plus one
//! `timer_create` per thread, once).
//!
//! The reference interpreter is not JIT code: an interpreted call is not
//! aborted, it runs to its end (the runtime documents this).
//!
//! Once the budget is spent, the retries interrupt whatever the thread does
//! every [`RETRY`] until the call ends: a host helper blocked in a system
//! call sees it restarted (`SA_RESTART`) or, for calls the kernel never
//! restarts (`poll`, `epoll_wait`, …), fail with `EINTR`.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{compiler_fence, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use crate::fault::{abort_to_gate, FaultRecord};
use crate::SandboxError;

/// How long the handler waits before looking again when the budget ran out
/// while the thread was not in JIT code.
pub const RETRY: Duration = Duration::from_micros(200);

const IDLE: u8 = 0;
const ARMED: u8 = 1;
const EXPIRED: u8 = 2;

thread_local! {
    /// This thread's budget state (read by the signal handler).
    static STATE: Cell<u8> = const { Cell::new(IDLE) };
    /// This thread's timer id plus one (0 until created; the kernel's
    /// first id is 0), for the handler's re-arm.
    static TIMER_ID: Cell<usize> = const { Cell::new(0) };
    /// Owns the timer: deleted when the thread exits.
    static TIMER: ThreadTimer = const { ThreadTimer(Cell::new(None)) };
}

struct ThreadTimer(Cell<Option<usize>>);

impl Drop for ThreadTimer {
    fn drop(&mut self) {
        if let Some(id) = self.0.take() {
            TIMER_ID.with(|t| t.set(0));
            // SAFETY: deletes the timer this thread created; nothing uses it
            // after the thread's locals are destroyed.
            unsafe { libc::timer_delete(id as libc::timer_t) };
        }
    }
}

/// The real-time signal the budget timer sends (`SIGRTMAX - 1`).
pub fn signal() -> i32 {
    libc::SIGRTMAX() - 1
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn install() -> Result<(), SandboxError> {
    static DONE: OnceLock<Result<(), SandboxError>> = OnceLock::new();
    DONE.get_or_init(|| {
        crate::fault::install()?;
        // SAFETY: a zeroed sigaction is valid; the fields are then set, and
        // the handler has the SA_SIGINFO signature.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(signal(), &sa, std::ptr::null_mut()) != 0 {
                return Err(SandboxError::Syscall {
                    call: "sigaction",
                    errno: errno(),
                });
            }
        }
        Ok(())
    })
    .clone()
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// Sets the thread's timer to fire once after `d` (zero: stop it).
///
/// # Safety
///
/// `id` is this thread's live timer.
unsafe fn set_timer(id: usize, d: Duration) -> i32 {
    let spec = libc::itimerspec {
        it_interval: timespec(Duration::ZERO),
        it_value: timespec(d),
    };
    // SAFETY: a valid timer id and itimerspec; async-signal-safe.
    unsafe { libc::timer_settime(id as libc::timer_t, 0, &spec, std::ptr::null_mut()) }
}

fn thread_timer() -> Result<usize, SandboxError> {
    TIMER.with(|t| {
        if let Some(id) = t.0.get() {
            return Ok(id);
        }
        // SAFETY: a zeroed sigevent is valid; the fields are then set.
        let mut ev: libc::sigevent = unsafe { std::mem::zeroed() };
        ev.sigev_notify = libc::SIGEV_THREAD_ID;
        ev.sigev_signo = signal();
        // SAFETY: gettid has no preconditions.
        ev.sigev_notify_thread_id = unsafe { libc::gettid() };
        let mut id: libc::timer_t = std::ptr::null_mut();
        // SAFETY: valid sigevent and out-pointer.
        if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut ev, &mut id) } != 0 {
            return Err(SandboxError::Syscall {
                call: "timer_create",
                errno: errno(),
            });
        }
        t.0.set(Some(id as usize));
        TIMER_ID.with(|c| c.set(id as usize + 1));
        Ok(id as usize)
    })
}

/// A running budget; dropping it stops the timer. `!Send`: the timer
/// belongs to the thread.
#[derive(Debug)]
#[must_use = "the budget ends when the guard is dropped"]
pub struct BudgetGuard {
    /// `None` for a nested budget, which the outer one governs.
    timer: Option<usize>,
    _not_send: PhantomData<*const ()>,
}

impl BudgetGuard {
    /// Whether the budget ran out (the call was, or is being, aborted).
    pub fn expired(&self) -> bool {
        STATE.with(|s| s.get()) == EXPIRED
    }
}

impl Drop for BudgetGuard {
    fn drop(&mut self) {
        if let Some(id) = self.timer {
            // The handler ignores the signal from here on, so one that is
            // already on its way changes nothing.
            STATE.with(|s| s.set(IDLE));
            compiler_fence(Ordering::SeqCst);
            // SAFETY: this thread's timer.
            unsafe { set_timer(id, Duration::ZERO) };
        }
    }
}

/// Starts a budget of `budget` for the calls this thread makes until the
/// guard is dropped. Inside another budget on the same thread (a host
/// helper making a budgeted call) the outer budget governs and this one is a
/// no-op guard.
pub fn arm(budget: Duration) -> Result<BudgetGuard, SandboxError> {
    if STATE.with(|s| s.get()) != IDLE {
        return Ok(BudgetGuard {
            timer: None,
            _not_send: PhantomData,
        });
    }
    install()?;
    let id = thread_timer()?;
    STATE.with(|s| s.set(ARMED));
    compiler_fence(Ordering::SeqCst);
    // A zero budget would disarm the timer: expire at once instead.
    // SAFETY: this thread's timer.
    if unsafe { set_timer(id, budget.max(Duration::from_nanos(1))) } != 0 {
        STATE.with(|s| s.set(IDLE));
        return Err(SandboxError::Syscall {
            call: "timer_settime",
            errno: errno(),
        });
    }
    Ok(BudgetGuard {
        timer: Some(id),
        _not_send: PhantomData,
    })
}

extern "C" fn handler(_sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let state = STATE.with(|s| s.get());
    if state == IDLE {
        return;
    }
    STATE.with(|s| s.set(EXPIRED));
    // SAFETY: the kernel passes valid siginfo and ucontext pointers to an
    // SA_SIGINFO handler; everything touched is this thread's key-0 state.
    unsafe {
        let uc = &mut *(ctx as *mut libc::ucontext_t);
        let rip = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize;
        let _ = info;
        let record = FaultRecord {
            signal: signal(),
            code: libc::SI_TIMER,
            addr: rip,
            pkey: u32::MAX,
        };
        abort_to_gate(uc, record, false);
        // Look again soon: the thread was in a helper, or an outer gate (a
        // hook that fired inside a helper) still runs extension code.
        let id = TIMER_ID.with(|t| t.get());
        if id != 0 {
            set_timer(id - 1, RETRY);
        }
    }
}
