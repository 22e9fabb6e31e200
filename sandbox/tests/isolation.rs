//! The isolation suite under real protection keys. Every test here needs
//! PKU: on machines without it each prints `skipped: <name>: no PKU: …`;
//! the MPK VM runner (`scripts/vm-test`) sets `PKBPF_REQUIRE_PKU=1`, which
//! turns a skip into a failure.
// In the disabled backend `ProtectionKey` is uninhabited, so everything after
// a key allocation is unreachable (and the tests skip at run time).
#![cfg_attr(
    pkbpf_force_disabled_mpk,
    allow(unreachable_code, unused_variables, unused_imports, dead_code)
)]

#[macro_use]
mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use common::{in_child, map_code, map_page, term_signal, LOAD_THROUGH_ARG, STORE_THROUGH_ARG};
use pkbpf_sandbox::fault::{register_code_range, SEGV_PKUERR};
use pkbpf_sandbox::{
    copy_from_user, current_pkru, protect, Domain, DomainGuard, GateStub, Keys, ProtectionKey,
};

/// Extension keys for this binary. Keys are never freed and x86 has only
/// 15, so the tests share a pool instead of each allocating its own.
const POOL: usize = 6;

fn pool_key(i: usize) -> ProtectionKey {
    static KEYS: OnceLock<Vec<ProtectionKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        (0..POOL)
            .map(|_| Keys::alloc_extension().expect("extension key"))
            .collect()
    })[i % POOL]
}

/// A fresh page tagged with pool key `i`, holding `fill`.
fn extension_page(i: usize, fill: u8) -> (ProtectionKey, *mut u8) {
    let key = pool_key(i);
    let p = map_page();
    // SAFETY: our own page, still untagged (key 0).
    unsafe { std::ptr::write_bytes(p, fill, 4096) };
    // SAFETY: our own page; accessed below only from domains allowing `key`
    // or through the guarded copy.
    unsafe { protect(p as usize, 4096, key) }.expect("pkey_mprotect");
    (key, p)
}

static CHILD_PIPE: AtomicU32 = AtomicU32::new(0);

/// A raw SIGSEGV handler for forked children: writes si_code and si_pkey
/// to the pipe in `CHILD_PIPE`, then exits 0.
extern "C" fn report_fault(_sig: i32, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: valid siginfo from the kernel; si_pkey sits at offset 32 on
    // x86-64 (si_addr at 16, then a pointer-aligned pad before the key);
    // write and _exit are async-signal-safe.
    unsafe {
        let code = (*info).si_code as u32;
        let pkey = std::ptr::read_unaligned((info as *const u8).add(32) as *const u32);
        let msg = [code, pkey];
        libc::write(
            CHILD_PIPE.load(Ordering::Relaxed) as i32,
            msg.as_ptr().cast(),
            8,
        );
        libc::_exit(0);
    }
}

/// Runs `f` in a child whose SIGSEGV handler reports (si_code, si_pkey).
fn fault_report(f: impl FnOnce()) -> Option<(u32, u32)> {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid two-int array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let status = in_child(|| {
        CHILD_PIPE.store(fds[1] as u32, Ordering::Relaxed);
        // SAFETY: zeroed sigaction is valid; the handler has the SA_SIGINFO
        // signature.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = report_fault as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut());
        }
        f();
    });
    // SAFETY: closing our write end.
    unsafe { libc::close(fds[1]) };
    let mut msg = [0u32; 2];
    // SAFETY: reading into an 8-byte buffer.
    let n = unsafe { libc::read(fds[0], msg.as_mut_ptr().cast(), 8) };
    // SAFETY: closing our read end.
    unsafe { libc::close(fds[0]) };
    assert!(libc::WIFEXITED(status), "child status {status:#x}");
    (n == 8).then_some((msg[0], msg[1]))
}

#[test]
fn host_write_to_extension_page_faults_with_its_key() {
    require_pku!("host_write_to_extension_page_faults_with_its_key");
    let (key, p) = extension_page(0, 1);
    let got = fault_report(|| {
        // SAFETY: a write from the host domain that the key must stop.
        unsafe { std::ptr::write_volatile(p, 9) };
    });
    assert_eq!(got, Some((SEGV_PKUERR as u32, key.as_u32())));
}

#[test]
fn host_read_of_runtime_page_faults_with_its_key() {
    require_pku!("host_read_of_runtime_page_faults_with_its_key");
    let key = Keys::alloc_runtime().expect("runtime key");
    assert_eq!(Keys::alloc_runtime(), Ok(key), "one runtime key");
    let p = map_page();
    // SAFETY: our own page.
    unsafe { protect(p as usize, 4096, key) }.unwrap();
    let got = fault_report(|| {
        // SAFETY: a read from the host domain that the key must stop.
        unsafe { std::ptr::read_volatile(p) };
    });
    assert_eq!(got, Some((SEGV_PKUERR as u32, key.as_u32())));
}

#[test]
fn extension_domain_reaches_its_own_page() {
    require_pku!("extension_domain_reaches_its_own_page");
    let (key, p) = extension_page(1, 5);
    let before = current_pkru().unwrap();
    {
        let g = DomainGuard::enter(Domain::extension(key));
        assert_eq!(g.saved(), Some(before));
        assert_eq!(current_pkru(), Some(Domain::extension(key).pkru()));
        // SAFETY: this domain allows `key`.
        unsafe {
            assert_eq!(std::ptr::read_volatile(p), 5);
            std::ptr::write_volatile(p, 6);
            assert_eq!(std::ptr::read_volatile(p), 6);
        }
    }
    assert_eq!(current_pkru(), Some(before), "guard restores PKRU");
}

#[test]
fn guarded_copy_returns_pku_fault_from_host_and_works_inside() {
    require_pku!("guarded_copy_returns_pku_fault_from_host_and_works_inside");
    let (key, p) = extension_page(2, 0x5a);
    let mut buf = [0u8; 32];
    let f = copy_from_user(&mut buf, p as usize).unwrap_err();
    assert!(f.is_pku(), "{f}");
    assert_eq!(f.pkey, Some(key.as_u32()));
    assert_eq!(f.addr, p as usize);
    let _g = DomainGuard::enter(Domain::extension(key));
    copy_from_user(&mut buf, p as usize).expect("allowed in the extension domain");
    assert_eq!(buf, [0x5a; 32]);
}

#[test]
fn domains_follow_the_design_table() {
    require_pku!("domains_follow_the_design_table");
    let (a, b) = (pool_key(0), pool_key(1));
    assert_ne!(a, b);
    let xa = Domain::extension(a);
    assert!(xa.allows(a));
    assert!(!xa.allows(b));
    assert!(!Domain::host().allows(a));
    assert!(Domain::trusted().allows(a) && Domain::trusted().allows(b));
    assert_eq!(xa.pkru() & 0b11, 0, "key 0 stays open");
}

#[test]
fn nested_guards_restore_in_order() {
    require_pku!("nested_guards_restore_in_order");
    let k = pool_key(2);
    let start = current_pkru().unwrap();
    {
        let _t = DomainGuard::enter(Domain::trusted());
        assert_eq!(current_pkru(), Some(0));
        {
            let _x = DomainGuard::enter(Domain::extension(k));
            assert_eq!(current_pkru(), Some(Domain::extension(k).pkru()));
        }
        assert_eq!(current_pkru(), Some(0));
    }
    assert_eq!(current_pkru(), Some(start));
}

static SEEN_PKRU: AtomicU32 = AtomicU32::new(0);

unsafe extern "C" fn record_pkru(x: usize) -> u64 {
    SEEN_PKRU.store(current_pkru().unwrap_or(u32::MAX), Ordering::SeqCst);
    x as u64 * 2
}

#[test]
fn entry_gate_switches_and_restores_pkru() {
    require_pku!("entry_gate_switches_and_restores_pkru");
    let k = pool_key(2);
    let gate = GateStub::new(Domain::extension(k), Domain::host()).unwrap();
    assert_eq!(gate.code().wrpkru_offsets.len(), 2);
    let _h = DomainGuard::enter(Domain::host());
    // SAFETY: record_pkru touches only key-0 statics.
    assert_eq!(unsafe { gate.call(record_pkru, 21) }, Ok(42));
    assert_eq!(
        SEEN_PKRU.load(Ordering::SeqCst),
        Domain::extension(k).pkru()
    );
    assert_eq!(current_pkru(), Some(Domain::host().pkru()));
    // Nested: called from T, the gate leaves through H and T is restored.
    {
        let _t = DomainGuard::enter(Domain::trusted());
        // SAFETY: as above.
        assert_eq!(unsafe { gate.call(record_pkru, 1) }, Ok(2));
        assert_eq!(
            SEEN_PKRU.load(Ordering::SeqCst),
            Domain::extension(k).pkru()
        );
        assert_eq!(current_pkru(), Some(0));
    }
    assert_eq!(current_pkru(), Some(Domain::host().pkru()));
}

#[test]
fn extension_code_writes_its_own_map_value_through_the_gate() {
    require_pku!("extension_code_writes_its_own_map_value_through_the_gate");
    let (key, p) = extension_page(3, 0);
    let code = map_code(&STORE_THROUGH_ARG);
    // SAFETY: the code page holds a C-ABI function of one argument.
    let jit: unsafe extern "C" fn(usize) -> u64 = unsafe { std::mem::transmute(code) };
    let gate = GateStub::new(Domain::extension(key), Domain::host()).unwrap();
    // SAFETY: stores to the extension's own page inside its domain.
    assert_eq!(unsafe { gate.call(jit, p as usize + 8) }, Ok(7));
    let _x = DomainGuard::enter(Domain::extension(key));
    // SAFETY: reading the page inside the domain that allows it.
    let got = unsafe { std::ptr::read_volatile(p.add(8) as *const u64) };
    assert_eq!(got, 0x2a);
}

#[test]
fn forged_pointer_to_other_extension_aborts_invocation() {
    require_pku!("forged_pointer_to_other_extension_aborts_invocation");
    let (own, _own_page) = extension_page(4, 0);
    let (other, other_page) = extension_page(5, 0x77);
    let runtime = Keys::alloc_runtime().unwrap();
    let rt_page = map_page();
    // SAFETY: our own page.
    unsafe { protect(rt_page as usize, 4096, runtime) }.unwrap();
    let code = map_code(&LOAD_THROUGH_ARG);
    // SAFETY: the page stays mapped and idle once the range is dropped.
    let range = unsafe { register_code_range(code as usize, 4096) }.unwrap();
    // SAFETY: the page holds a C-ABI function of one argument.
    let jit: unsafe extern "C" fn(usize) -> u64 = unsafe { std::mem::transmute(code) };
    let gate = GateStub::new(Domain::extension(own), Domain::host()).unwrap();
    let _h = DomainGuard::enter(Domain::host());
    for (target, key, n) in [(other_page, other, 1), (rt_page, runtime, 2)] {
        // SAFETY: the forged load faults inside the registered range.
        let f = unsafe { gate.call(jit, target as usize) }.unwrap_err();
        assert!(f.is_pku(), "{f}");
        assert_eq!(f.pkey, Some(key.as_u32()));
        assert_eq!(range.faults(), n);
        assert_eq!(current_pkru(), Some(Domain::host().pkru()), "back in H");
    }
    // The other extension's value is intact and the host goes on.
    let _t = DomainGuard::enter(Domain::trusted());
    // SAFETY: T allows every key.
    assert_eq!(unsafe { std::ptr::read_volatile(other_page) }, 0x77);
}

#[test]
fn jumping_into_a_gate_with_a_chosen_eax_fails_closed() {
    require_pku!("jumping_into_a_gate_with_a_chosen_eax_fails_closed");
    let k = pool_key(2);
    let gate = GateStub::new(Domain::extension(k), Domain::host()).unwrap();
    for &w in &gate.code().wrpkru_offsets {
        let target = gate.entry() + w;
        let status = in_child(|| {
            // SAFETY: deliberately jumps to the gate's WRPKRU with EAX = 0
            // (all keys open); the check after it must abort the child.
            unsafe {
                core::arch::asm!(
                    "xor eax, eax",
                    "xor ecx, ecx",
                    "xor edx, edx",
                    "jmp rsi",
                    in("rsi") target,
                    options(noreturn),
                )
            }
        });
        assert_eq!(
            term_signal(status),
            Some(libc::SIGILL),
            "status {status:#x}"
        );
    }
}

#[test]
fn isolation_holds_per_thread() {
    require_pku!("isolation_holds_per_thread");
    // Eight threads, each with its own page; keys come from the pool (six),
    // so each thread's neighbour always carries a different key.
    let pages: Vec<(ProtectionKey, usize)> = (0..8)
        .map(|i| {
            let (k, p) = extension_page(i, i as u8 + 1);
            (k, p as usize)
        })
        .collect();
    std::thread::scope(|s| {
        for i in 0..pages.len() {
            let pages = &pages;
            s.spawn(move || {
                let (key, own) = pages[i];
                let (other_key, other) = pages[(i + 1) % pages.len()];
                for round in 0..50u8 {
                    let _x = DomainGuard::enter(Domain::extension(key));
                    // SAFETY: the thread's own extension page, in its domain.
                    unsafe { std::ptr::write_volatile(own as *mut u8, round) };
                    let mut b = [0u8; 1];
                    let f = copy_from_user(&mut b, other).unwrap_err();
                    assert_eq!(f.pkey, Some(other_key.as_u32()));
                }
            });
        }
    });
    let _t = DomainGuard::enter(Domain::trusted());
    for (i, (_, p)) in pages.iter().enumerate() {
        // SAFETY: T allows every key.
        let v = unsafe { std::ptr::read_volatile(*p as *const u8) };
        assert_eq!(v, 49, "page {i}");
        // Only byte 0 changed: the rest still holds the fill value.
        // SAFETY: as above.
        let got = unsafe { std::ptr::read_volatile((*p as *const u8).add(1)) };
        assert_eq!(got, i as u8 + 1);
    }
}

static ALARMS: AtomicU32 = AtomicU32::new(0);
static ALARM_BAD_PKRU: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_alarm(_sig: i32) {
    ALARMS.fetch_add(1, Ordering::Relaxed);
    if current_pkru() != Some(Domain::host().pkru()) {
        ALARM_BAD_PKRU.store(current_pkru().unwrap_or(u32::MAX), Ordering::Relaxed);
    }
}

struct StormArgs {
    page: *mut u64,
    expect_pkru: u32,
    iterations: u64,
}

/// Runs in the extension domain: keeps writing its own page and checking
/// that PKRU is still the extension's after every interruption.
unsafe extern "C" fn storm_target(arg: usize) -> u64 {
    // SAFETY: the caller passes a live StormArgs.
    let a = unsafe { &*(arg as *const StormArgs) };
    let mut wrong = 0;
    for i in 0..a.iterations {
        // SAFETY: the page belongs to this domain's key.
        unsafe { std::ptr::write_volatile(a.page, i) };
        if current_pkru() != Some(a.expect_pkru) {
            wrong += 1;
        }
    }
    wrong
}

#[test]
fn signal_storm_runs_handlers_in_host_domain_and_resumes_extension() {
    require_pku!("signal_storm_runs_handlers_in_host_domain_and_resumes_extension");
    let (key, p) = extension_page(0, 0);
    let gate = GateStub::new(Domain::extension(key), Domain::host()).unwrap();
    let _h = DomainGuard::enter(Domain::host());
    // SAFETY: installing a plain handler that touches only atomics.
    unsafe { libc::signal(libc::SIGALRM, on_alarm as *const () as usize) };
    let every = libc::timeval {
        tv_sec: 0,
        tv_usec: 200,
    };
    let timer = libc::itimerval {
        it_interval: every,
        it_value: every,
    };
    let args = StormArgs {
        page: p.cast(),
        expect_pkru: Domain::extension(key).pkru(),
        iterations: 0,
    };
    let mut args = args;
    let start = std::time::Instant::now();
    // SAFETY: a valid itimerval; the handler is in place.
    unsafe { libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) };
    let mut wrong = 0;
    while ALARMS.load(Ordering::Relaxed) < 50 && start.elapsed().as_secs() < 20 {
        args.iterations = 20_000;
        // SAFETY: storm_target touches its args (key 0) and the page of the
        // gate's domain.
        wrong += unsafe { gate.call(storm_target, &args as *const StormArgs as usize) }.unwrap();
    }
    let off = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_value: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
    };
    // SAFETY: disarms the timer.
    unsafe { libc::setitimer(libc::ITIMER_REAL, &off, std::ptr::null_mut()) };
    assert!(ALARMS.load(Ordering::Relaxed) >= 50, "too few signals");
    assert_eq!(wrong, 0, "the extension lost its domain after a signal");
    assert_eq!(
        ALARM_BAD_PKRU.load(Ordering::Relaxed),
        0,
        "a handler ran with a PKRU other than the host's"
    );
    assert_eq!(current_pkru(), Some(Domain::host().pkru()));
}

struct NestedArgs {
    inner: &'static GateStub,
    jit: unsafe extern "C" fn(usize) -> u64,
    own_page: *const u64,
}

/// Runs in X_a; calls a gate into X_b whose code reads X_a's page (a fault),
/// then reads that page itself, which X_a allows.
unsafe extern "C" fn nested_target(arg: usize) -> u64 {
    // SAFETY: the caller passes a live NestedArgs.
    let a = unsafe { &*(arg as *const NestedArgs) };
    let before = current_pkru();
    // SAFETY: the inner code is registered; its fault is recovered.
    let inner = unsafe { a.inner.call(a.jit, a.own_page as usize) };
    let Err(f) = inner else { return 1 };
    if !f.is_pku() || current_pkru() != before {
        return 2;
    }
    // SAFETY: the page belongs to this (outer) domain's key.
    unsafe { std::ptr::read_volatile(a.own_page) }
}

#[test]
fn nested_gates_recover_inner_fault_and_restore_outer_domain() {
    require_pku!("nested_gates_recover_inner_fault_and_restore_outer_domain");
    let (a, page_a) = extension_page(1, 0);
    let b = pool_key(2);
    {
        let _x = DomainGuard::enter(Domain::extension(a));
        // SAFETY: the page belongs to key a.
        unsafe { std::ptr::write_volatile(page_a as *mut u64, 0xfeed) };
    }
    let code = map_code(&LOAD_THROUGH_ARG);
    // SAFETY: the page stays mapped and idle once the range is dropped.
    let range = unsafe { register_code_range(code as usize, 4096) }.unwrap();
    let inner: &'static GateStub = Box::leak(Box::new(
        GateStub::new(Domain::extension(b), Domain::host()).unwrap(),
    ));
    let outer = GateStub::new(Domain::extension(a), Domain::host()).unwrap();
    let args = NestedArgs {
        inner,
        // SAFETY: the page holds a C-ABI function of one argument.
        jit: unsafe { std::mem::transmute::<*mut u8, unsafe extern "C" fn(usize) -> u64>(code) },
        own_page: page_a as *const u64,
    };
    let _h = DomainGuard::enter(Domain::host());
    // SAFETY: nested_target only touches its args and key a's page.
    let got = unsafe { outer.call(nested_target, &args as *const NestedArgs as usize) };
    assert_eq!(got, Ok(0xfeed));
    assert_eq!(range.faults(), 1);
    assert_eq!(inner.faulted_calls(), 1);
    assert_eq!(outer.faulted_calls(), 0);
    assert_eq!(current_pkru(), Some(Domain::host().pkru()));
}

#[test]
fn hardened_process_cannot_retag_or_remap_protected_pages() {
    require_pku!("hardened_process_cannot_retag_or_remap_protected_pages");
    let (key, p) = extension_page(3, 0x11);
    let got = fault_report(|| {
        let h = pkbpf_sandbox::harden::Hardening::new()
            .protect_range(p as usize, 4096)
            .unwrap();
        h.apply().expect("seccomp");
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let eperm = |r: i64| r == -1 && common_errno() == libc::EPERM;
        // SAFETY: each call targets our own page and must be refused; on
        // any success the child exits with a distinct code.
        unsafe {
            if !eperm(libc::syscall(
                libc::SYS_pkey_mprotect,
                p as usize,
                4096,
                rw,
                0,
            )) {
                libc::_exit(11);
            }
            if !eperm(libc::mprotect(p.cast(), 4096, rw) as i64) {
                libc::_exit(12);
            }
            if !eperm(libc::munmap(p.cast(), 4096) as i64) {
                libc::_exit(13);
            }
            if !eperm(libc::syscall(libc::SYS_pkey_free, key.as_u32())) {
                libc::_exit(14);
            }
            let mut byte = 0x99u8;
            let local = libc::iovec {
                iov_base: (&mut byte as *mut u8).cast(),
                iov_len: 1,
            };
            let remote = libc::iovec {
                iov_base: p.cast(),
                iov_len: 1,
            };
            if !eperm(libc::process_vm_writev(libc::getpid(), &local, 1, &remote, 1, 0) as i64) {
                libc::_exit(15);
            }
            // Protection still holds: the host's write faults on the key.
            std::ptr::write_volatile(p, 0x22);
            libc::_exit(16);
        }
    });
    assert_eq!(got, Some((SEGV_PKUERR as u32, key.as_u32())));
}

fn common_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

// Attack 6, second half. /proc/self/mem uses access_remote_vm, whose
// FOLL_REMOTE GUP does not apply pkey checks (verified in the MPK VM, 6.12:
// without hardening the write goes through), and a seccomp filter sees no
// paths. Hardening's Landlock layer refuses opening anything under /proc
// for writing, on every thread, so the write never happens. Residual: reads
// through /proc/self/mem are not refused (see `pkbpf_sandbox::landlock`).
#[test]
fn proc_self_mem_cannot_write_an_extension_page_from_the_host() {
    require_pku!("proc_self_mem_cannot_write_an_extension_page_from_the_host");
    let (key, p) = extension_page(4, 0x33);
    let status = in_child(|| {
        // A panic must end the child, never return into the harness.
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| attack_proc_mem(key, p)));
        // SAFETY: ends the forked child.
        unsafe { libc::_exit(if ok.is_ok() { 0 } else { 1 }) };
    });
    assert_eq!(common::exit_code(status), Some(0), "status {status:#x}");
}

fn attack_proc_mem(key: ProtectionKey, p: *mut u8) {
    {
        let report = pkbpf_sandbox::harden::harden_process(Default::default()).expect("harden");
        assert!(report.proc_writes.is_denied(), "{:?}", report.proc_writes);
        let _h = DomainGuard::enter(Domain::host());
        // Every way of opening it for writing is refused.
        for path in ["/proc/self/mem", "/proc/thread-self/mem"] {
            let err = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .expect_err("opened for writing");
            assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{path}");
        }
        let pid = std::process::id();
        let err = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .expect_err("opened for writing");
        assert_eq!(err.raw_os_error(), Some(libc::EACCES));
        // The extension's page is untouched.
        let _x = DomainGuard::enter(Domain::extension(key));
        // SAFETY: the page belongs to this domain's key.
        assert_eq!(unsafe { std::ptr::read_volatile(p) }, 0x33);
    }
}

/// `mov dword [rdi + disp], imm` for each store, then `ret`.
fn store_program(stores: &[(u32, u32)]) -> Vec<u8> {
    let mut code = Vec::new();
    for &(disp, imm) in stores {
        code.extend_from_slice(&[0xc7, 0x87]);
        code.extend_from_slice(&disp.to_le_bytes());
        code.extend_from_slice(&imm.to_le_bytes());
    }
    code.push(0xc3);
    code
}

fn checksum(p: *const u8) -> u64 {
    let _t = DomainGuard::enter(Domain::trusted());
    (0..4096).fold(0u64, |h, i| {
        // SAFETY: a mapped page, read in T which allows every key.
        let b = unsafe { std::ptr::read_volatile(p.add(i)) };
        h.wrapping_mul(0x100_0000_01b3).wrapping_add(b as u64)
    })
}

/// Attack 11 at the machine level: unverified store sequences run in an
/// extension's domain either stay in its own page or fault; the other
/// extension's page and the runtime's page never change.
#[test]
fn random_stores_never_change_other_domains() {
    require_pku!("random_stores_never_change_other_domains");
    use proptest::test_runner::{Config, TestRunner};
    // Arena: own page (E_own), other extension (E_other), runtime (R),
    // then an inaccessible page (PROT_NONE, not unmapped: a later mmap, such
    // as a code page of this test, must not land in the hole).
    let arena = {
        // SAFETY: a fresh anonymous mapping.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4 * 4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        p as usize
    };
    let (own, other) = (pool_key(0), pool_key(5));
    let runtime = Keys::alloc_runtime().unwrap();
    // SAFETY: the arena's last page, which nothing refers to.
    let none = unsafe {
        libc::mprotect(
            (arena + 3 * 4096) as *mut libc::c_void,
            4096,
            libc::PROT_NONE,
        )
    };
    assert_eq!(none, 0);
    for (i, k) in [(0, own), (1, other), (2, runtime)] {
        // SAFETY: our own pages; fill first, then tag.
        unsafe { std::ptr::write_bytes((arena + i * 4096) as *mut u8, 0x5a, 4096) };
        // SAFETY: as above.
        unsafe { protect(arena + i * 4096, 4096, k) }.unwrap();
    }
    let gate = GateStub::new(Domain::extension(own), Domain::host()).unwrap();
    let before = [
        checksum((arena + 4096) as *const u8),
        checksum((arena + 8192) as *const u8),
    ];
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let stores = proptest::collection::vec((0u32..(4 * 4096 - 4), proptest::num::u32::ANY), 1..12);
    runner
        .run(&stores, |stores| {
            let code = store_program(&stores);
            let page = map_code(&code);
            // SAFETY: the page stays mapped until after the range is dropped.
            let range = unsafe { register_code_range(page as usize, 4096) }.unwrap();
            // SAFETY: the page holds a C-ABI function of one argument.
            let f: unsafe extern "C" fn(usize) -> u64 = unsafe { std::mem::transmute(page) };
            // SAFETY: the stores fault or land in memory the domain allows;
            // faults are in the registered range and recovered.
            let r = unsafe { gate.call(f, arena) };
            drop(range);
            // SAFETY: our own code page, no longer registered or running.
            unsafe { libc::munmap(page.cast(), 4096) };
            let all_own = stores.iter().all(|&(d, _)| (d as usize) + 4 <= 4096);
            match r {
                Ok(_) => proptest::prop_assert!(all_own, "a foreign store did not fault"),
                Err(f) => {
                    proptest::prop_assert!(!all_own, "own-page stores faulted: {}", f);
                    let guard = (arena + 3 * 4096..arena + 4 * 4096).contains(&f.addr);
                    let foreign = f.is_pku() || guard;
                    proptest::prop_assert!(foreign, "unexpected fault {}", f);
                }
            }
            proptest::prop_assert_eq!(current_pkru(), Some(Domain::host().pkru()));
            Ok(())
        })
        .unwrap();
    let after = [
        checksum((arena + 4096) as *const u8),
        checksum((arena + 8192) as *const u8),
    ];
    assert_eq!(before, after, "another domain's page changed");
}
