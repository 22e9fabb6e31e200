//! Per-call time budgets (`pkbpf_sandbox::budget`): a call still running in
//! registered JIT code when its budget is spent is aborted at the entry
//! gate; one inside a "helper" is aborted only once the helper returned;
//! fast calls are untouched; timers are per thread and do not leak. Runs
//! with and without PKU (under PKU the gate enters an extension domain and
//! the caller's PKRU must be back afterwards).
#![cfg_attr(
    pkbpf_force_disabled_mpk,
    allow(unreachable_code, unused_variables, unused_imports, dead_code)
)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pkbpf_sandbox::budget;
use pkbpf_sandbox::fault::{register_code_range, CodeRange};
use pkbpf_sandbox::{current_pkru, Domain, GateStub, Keys};

/// The gate the tests call through: into an extension domain under PKU.
fn gate() -> GateStub {
    let into = if pkbpf_sandbox::is_active() {
        Domain::extension(Keys::alloc_extension().expect("extension key"))
    } else {
        Domain::host()
    };
    GateStub::new(into, Domain::host()).expect("gate")
}

/// `code` in a fresh executable page registered for recovery.
fn jit_like(code: &[u8]) -> (CodeRange, unsafe extern "C" fn(usize) -> u64) {
    let p = common::map_code(code);
    // SAFETY: our own code page, never unmapped while the range lives
    // (the test leaks it).
    let range = unsafe { register_code_range(p as usize, 4096) }.expect("register");
    // SAFETY: the page holds a C-ABI function of one argument.
    let f = unsafe { std::mem::transmute::<*mut u8, unsafe extern "C" fn(usize) -> u64>(p) };
    (range, f)
}

/// `jmp $`: runs until something stops it.
const SPIN: [u8; 2] = [0xeb, 0xfe];
/// `mov eax, 5; ret`.
const FIVE: [u8; 6] = [0xb8, 5, 0, 0, 0, 0xc3];

/// POSIX timers of this process that signal thread `tid`
/// (`/proc/self/timers` lists `notify: signal/tid.N` for each).
fn timers_of(tid: i32) -> usize {
    let want = format!("notify: signal/tid.{tid}");
    std::fs::read_to_string("/proc/self/timers")
        .map(|t| t.lines().filter(|l| l.trim() == want).count())
        .unwrap_or(0)
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

#[test]
fn spinning_code_is_aborted_and_the_thread_continues() {
    let gate = gate();
    let (range, spin) = jit_like(&SPIN);
    let before = current_pkru();
    for _ in 0..3 {
        let guard = budget::arm(Duration::from_millis(20)).expect("arm");
        // SAFETY: the code touches no memory; its only way out is the abort.
        let r = unsafe { gate.call(spin, 0) };
        assert!(guard.expired());
        drop(guard);
        let fault = r.expect_err("an endless loop cannot return");
        assert!(fault.is_timeout(), "{fault}");
        assert!(!fault.is_pku());
        assert_eq!(
            fault.to_string(),
            format!("time budget exhausted at {:#x}", fault.addr)
        );
    }
    // Timeouts are not memory faults of the program.
    assert_eq!(range.faults(), 0);
    assert_eq!(current_pkru(), before);
}

#[test]
fn fast_calls_with_a_budget_return_normally_and_leak_no_timer() {
    let gate = gate();
    let (_range, five) = jit_like(&FIVE);
    // This thread's timer is created by the first budgeted call.
    {
        let _g = budget::arm(Duration::from_secs(5)).expect("arm");
        // SAFETY: the code touches no memory.
        assert_eq!(unsafe { gate.call(five, 0) }, Ok(5));
    }
    assert_eq!(timers_of(gettid()), 1, "one timer per thread");
    for _ in 0..2000 {
        let g = budget::arm(Duration::from_secs(5)).expect("arm");
        // SAFETY: as above.
        assert_eq!(unsafe { gate.call(five, 0) }, Ok(5));
        assert!(!g.expired());
    }
    assert_eq!(timers_of(gettid()), 1, "budgeted calls leaked timers");
    // Threads that made budgeted calls take their timers with them.
    let handles: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(|| {
                let gate = GateStub::new(Domain::host(), Domain::host()).expect("gate");
                let (_r, five) = jit_like(&FIVE);
                let _g = budget::arm(Duration::from_secs(5)).expect("arm");
                assert_eq!(timers_of(gettid()), 1);
                // SAFETY: the code touches no memory.
                (gettid(), unsafe { gate.call(five, 0) })
            })
        })
        .collect();
    for h in handles {
        let (tid, r) = h.join().expect("thread");
        assert_eq!(r, Ok(5));
        assert_eq!(timers_of(tid), 0, "exited thread {tid} left its timer");
    }
}

static HELPER_DONE: AtomicBool = AtomicBool::new(false);

/// A "helper" that outlives the budget (it must not be interrupted).
extern "C" fn slow_helper() {
    std::thread::sleep(Duration::from_millis(150));
    HELPER_DONE.store(true, Ordering::SeqCst);
}

#[test]
fn a_running_helper_finishes_before_the_abort() {
    let gate = gate();
    // sub rsp, 8; mov rax, slow_helper; call rax; add rsp, 8; jmp $
    let mut code = vec![0x48, 0x83, 0xec, 0x08, 0x48, 0xb8];
    code.extend_from_slice(&(slow_helper as *const () as u64).to_le_bytes());
    code.extend_from_slice(&[0xff, 0xd0, 0x48, 0x83, 0xc4, 0x08, 0xeb, 0xfe]);
    let (_range, f) = jit_like(&code);
    HELPER_DONE.store(false, Ordering::SeqCst);
    let before = current_pkru();
    let g = budget::arm(Duration::from_millis(10)).expect("arm");
    // SAFETY: the code calls a plain C-ABI function and spins; the stack is
    // aligned for the call (gate frame + sub 8).
    let r = unsafe { gate.call(f, 0) };
    drop(g);
    assert!(
        HELPER_DONE.load(Ordering::SeqCst),
        "the helper was cut short"
    );
    assert!(r.expect_err("spins after the helper").is_timeout());
    assert_eq!(current_pkru(), before);
}

#[test]
fn nested_budget_is_governed_by_the_outer_one() {
    let gate = gate();
    let (_range, spin) = jit_like(&SPIN);
    let outer = budget::arm(Duration::from_millis(20)).expect("arm");
    let inner = budget::arm(Duration::from_secs(3600)).expect("arm");
    // SAFETY: the code touches no memory.
    let r = unsafe { gate.call(spin, 0) };
    drop(inner);
    assert!(r.expect_err("aborted by the outer budget").is_timeout());
    assert!(outer.expired());
}
