//! The runtime under real protection keys (DESIGN.md, "The MPK domain
//! model"): the runtime-level attacks of the isolation suite.
//!
//! Tests that need PKU print `skipped: <name>: no PKU (...)` and return on
//! machines without it, and fail instead under `PKBPF_REQUIRE_PKU=1` (the
//! MPK VM, `scripts/vm-test`, which runs this binary). Programs are
//! assembled here, not compiled from C: the VM has no clang and no repo.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pkbpf::runtime::{CallError, CtxLayout, Harden, LoadedObject, Runtime, RuntimeError, Sandbox};
use pkbpf::verifier::asm::assemble;
use pkbpf_maps::{MapDef, MapType};
use pkbpf_sandbox::{Domain, DomainGuard, PkuStatus, SandboxError};

const EFAULT: u64 = (-14i64) as u64;

/// False (after printing the skip line) when PKU is missing here; panics
/// instead under `PKBPF_REQUIRE_PKU=1`.
fn pku(name: &str) -> bool {
    match pkbpf_sandbox::detect() {
        PkuStatus::Available => true,
        PkuStatus::Missing(m) => {
            assert!(
                std::env::var("PKBPF_REQUIRE_PKU").as_deref() != Ok("1"),
                "{name}: PKBPF_REQUIRE_PKU=1 but {m}"
            );
            println!("skipped: {name}: {m}");
            false
        }
    }
}

/// Adds 1 to value 0 of its array map (lookup through the helper gate).
const INC: &str = "
    r1 = 0
    *(u32 *)(r10 - 4) = r1
    r1 = map[idx:0]
    r2 = r10
    r2 += -4
    call 1
    if r0 == 0 goto out
    r1 = 1
    lock *(u64 *)(r0 + 0) += r1
out:
    r0 = 0
    exit
";

/// `bpf_probe_read(stack, 8, ctx[0])`; returns the helper's result.
const PROBE_READ: &str = "
    r3 = *(u64 *)(r1 + 0)
    r1 = r10
    r1 += -8
    r2 = 8
    call 4
    exit
";

/// `bpf_probe_write_user(ctx[0], &0x55, 8)`; returns the helper's result.
const PROBE_WRITE: &str = "
    r6 = r1
    r1 = 0x55
    *(u64 *)(r10 - 8) = r1
    r1 = *(u64 *)(r6 + 0)
    r2 = r10
    r2 += -8
    r3 = 8
    call 36
    exit
";

fn mpk_runtime() -> Runtime {
    Runtime::builder()
        .sandbox(Sandbox::Mpk)
        .build()
        .unwrap_or_else(|e| panic!("{e:?}"))
}

fn counter_object(rt: &Runtime, src: &str) -> LoadedObject {
    let insns = assemble(src).expect("assembles");
    let vals = MapDef::new("vals", MapType::Array, 4, 8, 4);
    rt.load_insns("prog", &insns, &[vals], &CtxLayout::writable(16))
        .unwrap_or_else(|e| panic!("{e:?}"))
}

fn value0(obj: &LoadedObject) -> u64 {
    let v = obj
        .map("vals")
        .unwrap()
        .lookup(&0u32.to_ne_bytes())
        .unwrap();
    u64::from_ne_bytes(v.unwrap().try_into().unwrap())
}

fn values_addr(obj: &LoadedObject) -> usize {
    obj.region().values_range(0).unwrap().addr
}

fn header_addr(obj: &LoadedObject) -> usize {
    obj.region().header_range().addr
}

/// Reads 8 bytes at `addr` from this thread's current domain with the
/// sandbox's guarded copy: the fault, if the domain may not read it.
fn host_read(addr: usize) -> Result<u64, pkbpf_sandbox::Fault> {
    let mut b = [0u8; 8];
    pkbpf_sandbox::copy_from_user(&mut b, addr).map(|()| u64::from_ne_bytes(b))
}

#[test]
fn mpk_fails_closed_without_pku_and_auto_says_unprotected() {
    let mpk = Runtime::builder().sandbox(Sandbox::Mpk).build();
    // The interpreter: with PKU it runs in the object's domain too.
    let auto = Runtime::builder()
        .sandbox(Sandbox::Auto)
        .engine(pkbpf::runtime::Engine::Interpreter)
        .build()
        .unwrap();
    let obj = counter_object(&auto, INC);
    assert_eq!(obj.program("prog").unwrap().call(&mut [0; 16]).unwrap(), 0);
    assert_eq!(value0(&obj), 1);
    match pkbpf_sandbox::detect() {
        PkuStatus::Available => {
            assert!(mpk.unwrap().isolation().protected);
            assert!(auto.isolation().protected);
            assert!(obj.key().is_some());
            assert_eq!(pkbpf_sandbox::current_pkru(), Some(Domain::host().pkru()));
            assert!(
                host_read(values_addr(&obj)).is_err(),
                "values carry the key"
            );
        }
        PkuStatus::Missing(missing) => {
            match mpk.unwrap_err() {
                RuntimeError::Sandbox {
                    source: SandboxError::MpkUnavailable { missing: m },
                } => assert_eq!(m, missing),
                e => panic!("{e:?}"),
            }
            let iso = auto.isolation();
            assert!(!iso.protected && iso.runtime_key.is_none());
            assert!(iso.extension_keys.is_empty());
            assert_eq!(obj.key(), None);
        }
    }
}

#[test]
fn each_object_gets_its_own_key_and_isolation_reports_them() {
    if !pku("each_object_gets_its_own_key_and_isolation_reports_them") {
        return;
    }
    let rt = mpk_runtime();
    let a = counter_object(&rt, INC);
    let b = counter_object(&rt, INC);
    let iso = rt.isolation();
    assert!(iso.protected);
    let r = iso.runtime_key.expect("runtime key");
    let (ka, kb) = (a.key().unwrap(), b.key().unwrap());
    assert!(ka != kb && ka != r && kb != r && ka != 0 && kb != 0);
    assert_eq!(iso.extension_keys, vec![ka, kb]);
    for _ in 0..3 {
        a.program("prog").unwrap().call(&mut [0; 16]).unwrap();
    }
    b.program("prog").unwrap().call(&mut [0; 16]).unwrap();
    assert_eq!((value0(&a), value0(&b)), (3, 1));
    // Calls leave the thread in the host domain.
    assert_eq!(pkbpf_sandbox::current_pkru(), Some(Domain::host().pkru()));
}

#[test]
fn host_access_outside_a_gate_faults_with_the_right_key() {
    if !pku("host_access_outside_a_gate_faults_with_the_right_key") {
        return;
    }
    let rt = mpk_runtime();
    let obj = counter_object(&rt, INC);
    obj.program("prog").unwrap().call(&mut [0; 16]).unwrap();
    let key = obj.key().unwrap();
    let r = rt.isolation().runtime_key.unwrap();
    // Reads from the host domain: SEGV_PKUERR carrying the page's key.
    let f = host_read(values_addr(&obj)).unwrap_err();
    assert!(f.is_pku(), "{f}");
    assert_eq!(f.pkey, Some(key));
    let f = host_read(header_addr(&obj)).unwrap_err();
    assert!(f.is_pku(), "{f}");
    assert_eq!(f.pkey, Some(r));
    // The map API enters T, and so may a scoped trusted gate.
    assert_eq!(value0(&obj), 1);
    {
        let _t = DomainGuard::enter(Domain::trusted());
        assert_eq!(host_read(values_addr(&obj)).unwrap(), 1);
    }
    assert!(host_read(values_addr(&obj)).is_err(), "back in H");
    // A write from the host domain kills a child with SIGSEGV.
    let addr = values_addr(&obj);
    // SAFETY: the child only writes (and faults) then exits; it calls no
    // function that takes locks.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: deliberately faulting write to a mapped, key-protected
        // page (the hardware refuses it).
        unsafe { std::ptr::write_volatile(addr as *mut u64, 7) };
        // SAFETY: not reached when the write faulted.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV,
        "status {status:#x}"
    );
    assert_eq!(value0(&obj), 1, "the write never landed");
}

/// Executable copy of `code`, registered for fault recovery.
struct Foreign {
    base: *mut libc::c_void,
    len: usize,
    _range: pkbpf_sandbox::CodeRange,
}

impl Foreign {
    fn new(code: &[u8]) -> Foreign {
        let len = 4096;
        // SAFETY: a fresh anonymous mapping.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        // SAFETY: `base` is `len` writable bytes; `code` is shorter.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), base.cast(), code.len()) };
        // SAFETY: our own mapping; W^X: no longer writable once executable.
        let rx = unsafe { libc::mprotect(base, len, libc::PROT_READ | libc::PROT_EXEC) };
        assert_eq!(rx, 0);
        // SAFETY: the range is our mapping; the registration is dropped
        // (field order) only when `Foreign` is, before the unmap in Drop.
        let range = unsafe { pkbpf_sandbox::fault::register_code_range(base as usize, len) }
            .expect("register");
        Foreign {
            base,
            len,
            _range: range,
        }
    }

    fn entry(&self) -> pkbpf_jit::x86::Entry {
        // SAFETY: the code follows the entry ABI (two u64 arguments and a
        // RunCtx pointer it ignores) and calls nothing.
        unsafe { std::mem::transmute::<*mut libc::c_void, pkbpf_jit::x86::Entry>(self.base) }
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        // SAFETY: our mapping, no longer called.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// `mov rax, [rdi]; ret`: a forged load of r1.
const LOAD_R1: [u8; 4] = [0x48, 0x8b, 0x07, 0xc3];
/// `mov [rdi], rsi; xor eax, eax; ret`: a forged store of r2 at r1.
const STORE_R2_AT_R1: [u8; 6] = [0x48, 0x89, 0x37, 0x31, 0xc0, 0xc3];

fn expect_pku_fault(r: Result<u64, CallError>, key: u32) {
    match r {
        Err(CallError::Fault { fault, .. }) => {
            assert!(fault.is_pku(), "{fault}");
            assert_eq!(fault.pkey, Some(key), "{fault}");
        }
        other => panic!("expected a PKU fault, got {other:?}"),
    }
}

#[test]
fn forged_pointers_into_another_extension_or_the_runtime_fault_and_abort_one_call() {
    if !pku("forged_pointers_into_another_extension_or_the_runtime_fault_and_abort_one_call") {
        return;
    }
    let rt = mpk_runtime();
    let a = counter_object(&rt, INC);
    let b = counter_object(&rt, INC);
    b.program("prog").unwrap().call(&mut [0; 16]).unwrap();
    a.program("prog").unwrap().call(&mut [0; 16]).unwrap();
    let load = Foreign::new(&LOAD_R1);
    let store = Foreign::new(&STORE_R2_AT_R1);
    let r = rt.isolation().runtime_key.unwrap();
    // SAFETY: the code follows the entry ABI, calls no helper, and its
    // only possible fault is in its registered range (all calls below).
    unsafe {
        // A's own values are reachable from Xₐ: the domain really is Xₐ.
        assert_eq!(
            a.call_foreign_code_for_tests(load.entry(), values_addr(&a) as u64, 0)
                .unwrap(),
            1
        );
        // B's values and the runtime's header are not.
        expect_pku_fault(
            a.call_foreign_code_for_tests(load.entry(), values_addr(&b) as u64, 0),
            b.key().unwrap(),
        );
        expect_pku_fault(
            a.call_foreign_code_for_tests(store.entry(), values_addr(&b) as u64, 99),
            b.key().unwrap(),
        );
        expect_pku_fault(
            a.call_foreign_code_for_tests(store.entry(), header_addr(&a) as u64, 99),
            r,
        );
        expect_pku_fault(
            a.call_foreign_code_for_tests(load.entry(), header_addr(&b) as u64, 0),
            r,
        );
    }
    // Host alive, back in H, nothing changed, next calls work.
    assert_eq!(pkbpf_sandbox::current_pkru(), Some(Domain::host().pkru()));
    assert_eq!(value0(&b), 1);
    a.program("prog").unwrap().call(&mut [0; 16]).unwrap();
    b.program("prog").unwrap().call(&mut [0; 16]).unwrap();
    assert_eq!((value0(&a), value0(&b)), (2, 2));
}

#[test]
fn helpers_refuse_pointers_into_the_runtime_or_another_extension() {
    if !pku("helpers_refuse_pointers_into_the_runtime_or_another_extension") {
        return;
    }
    let rt = mpk_runtime();
    let victim = counter_object(&rt, INC);
    victim.program("prog").unwrap().call(&mut [0; 16]).unwrap();
    let reader = counter_object(&rt, PROBE_READ);
    let writer = counter_object(&rt, PROBE_WRITE);
    let ctx = |addr: usize| {
        let mut c = [0u8; 16];
        c[..8].copy_from_slice(&(addr as u64).to_ne_bytes());
        c
    };
    let read = reader.program("prog").unwrap();
    let write = writer.program("prog").unwrap();
    let key0 = Box::new(0u64);
    let key0_addr = &*key0 as *const u64 as usize;
    // Control: ordinary key-0 memory works through both helpers.
    assert_eq!(read.call(&mut ctx(key0_addr)).unwrap(), 0);
    for target in [
        values_addr(&victim),
        header_addr(&victim),
        header_addr(&reader),
    ] {
        assert_eq!(
            read.call(&mut ctx(target)).unwrap(),
            EFAULT,
            "read {target:#x}"
        );
    }
    for target in [
        values_addr(&victim),
        header_addr(&victim),
        values_addr(&writer),
        header_addr(&writer),
    ] {
        assert_eq!(
            write.call(&mut ctx(target)).unwrap(),
            EFAULT,
            "write {target:#x}"
        );
    }
    assert_eq!(value0(&victim), 1, "the victim's value is unchanged");
    assert_eq!(value0(&writer), 0);
}

#[test]
fn eight_threads_run_different_extensions_concurrently() {
    if !pku("eight_threads_run_different_extensions_concurrently") {
        return;
    }
    const CALLS: u64 = 200;
    let rt = mpk_runtime();
    let objs: Vec<LoadedObject> = (0..3).map(|_| counter_object(&rt, INC)).collect();
    let denied = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..8 {
            let (objs, denied) = (&objs, &denied);
            s.spawn(move || {
                let mine = &objs[t % 3];
                let other = &objs[(t + 1) % 3];
                let p = mine.program("prog").unwrap();
                for i in 0..CALLS {
                    p.call(&mut [0; 16]).unwrap();
                    if i % 50 == 0 {
                        assert_eq!(pkbpf_sandbox::current_pkru(), Some(Domain::host().pkru()));
                        let f = host_read(values_addr(other)).unwrap_err();
                        assert_eq!(f.pkey, other.key());
                        denied.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let per_obj = |k: usize| (0..8).filter(|t| t % 3 == k).count() as u64 * CALLS;
    for (k, o) in objs.iter().enumerate() {
        assert_eq!(value0(o), per_obj(k), "object {k}");
    }
    assert_eq!(denied.load(Ordering::Relaxed), 8 * CALLS.div_ceil(50));
}

#[test]
fn twenty_objects_exhaust_the_keys_with_a_typed_error_never_sharing() {
    if !pku("twenty_objects_exhaust_the_keys_with_a_typed_error_never_sharing") {
        return;
    }
    // In a child: the keys it takes are never freed, and the other tests of
    // this process need theirs.
    // SAFETY: the child runs this test's code only and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let outcome = std::panic::catch_unwind(|| {
            let rt = mpk_runtime();
            let mut objs = Vec::new();
            let err = loop {
                match Runtime::load_insns(
                    &rt,
                    "prog",
                    &assemble(INC).unwrap(),
                    &[MapDef::new("vals", MapType::Array, 4, 8, 4)],
                    &CtxLayout::writable(16),
                ) {
                    Ok(o) => objs.push(o),
                    Err(e) => break e,
                }
                assert!(objs.len() <= 20, "more objects than keys");
            };
            assert!(
                matches!(
                    err,
                    RuntimeError::Keys {
                        source: SandboxError::KeysExhausted { .. },
                        ..
                    }
                ),
                "{err:?}"
            );
            let mut keys: Vec<u32> = objs.iter().map(|o| o.key().unwrap()).collect();
            keys.push(rt.isolation().runtime_key.unwrap());
            let n = keys.len();
            keys.sort_unstable();
            keys.dedup();
            assert_eq!(keys.len(), n, "no key shared");
            assert!(n >= 2);
            // The objects loaded before exhaustion still work.
            for o in &objs {
                o.program("prog").unwrap().call(&mut [0; 16]).unwrap();
                assert_eq!(value0(o), 1);
            }
        });
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(if outcome.is_ok() { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status:#x}"
    );
}

/// Runs `f` in a forked child (hardening is process-wide and
/// irreversible); a panic ends the child with status 1.
fn in_child(f: impl FnOnce()) {
    // SAFETY: the child runs `f` only and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(if outcome.is_ok() { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status:#x}"
    );
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Attacks 5 and 6 through the public runtime: after `build()` hardened the
/// process, nothing can re-map, re-protect, zap, re-tag or remotely write an
/// object's map region, JIT code or gate, while the runtime itself still
/// loads, calls and drops objects. Needs no PKU (`Harden::Always`); under
/// PKU (the VM) the keys keep holding after every attempt.
#[test]
fn hardened_runtime_refuses_the_escapes_and_keeps_working() {
    in_child(|| {
        let rt = match Runtime::builder().harden(Harden::Always).build() {
            Ok(rt) => rt,
            // A sandbox without seccomp (some containers): nothing to test.
            Err(e @ RuntimeError::Harden { .. })
                if std::env::var("PKBPF_REQUIRE_PKU").as_deref() != Ok("1") =>
            {
                println!("skipped: hardened_runtime_refuses_the_escapes_and_keeps_working: {e:?}");
                return;
            }
            Err(e) => panic!("{e:?}"),
        };
        let report = rt.hardening().expect("hardened");
        assert!(report.seccomp);
        // (In the VM the parent process is hardened already and its objects
        // count too: compare before and after.)
        let before = rt.hardening().unwrap();
        let first = counter_object(&rt, INC);
        first.program("prog").unwrap().call(&mut [0; 16]).unwrap();
        // Its region, JIT code and gate: one stacked filter, three seals
        // (mseal exists from Linux 6.10).
        let after = rt.hardening().unwrap();
        assert_eq!(after.range_filters, before.range_filters + 1);
        if after.sealed == before.sealed {
            println!("skipped: mseal part: kernel without mseal");
        } else {
            assert_eq!(after.sealed, before.sealed + 3);
        }
        let region = first.region().as_range();
        let values = values_addr(&first);
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: (all below) system calls over the runtime's own mappings
        // that the filter must refuse; none of them succeeds.
        unsafe {
            let eperm = |r: i64| r == -1 && errno() == libc::EPERM;
            let failed = |p: *mut libc::c_void| p == libc::MAP_FAILED && errno() == libc::EPERM;
            assert!(
                eperm(libc::mprotect(values as _, 4096, rw) as i64),
                "mprotect"
            );
            assert!(
                eperm(libc::munmap(region.addr as _, region.len) as i64),
                "munmap"
            );
            assert!(
                eperm(libc::madvise(values as _, 4096, libc::MADV_DONTNEED) as i64),
                "madvise"
            );
            assert!(
                failed(libc::mremap(values as _, 4096, 8192, libc::MREMAP_MAYMOVE)),
                "mremap"
            );
            assert!(
                failed(libc::mmap(
                    values as _,
                    4096,
                    rw,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0
                )),
                "mmap MAP_FIXED"
            );
            assert!(
                eperm(libc::syscall(libc::SYS_pkey_mprotect, values, 4096, rw, 0)),
                "pkey_mprotect"
            );
            let mut byte = 0x99u8;
            let local = libc::iovec {
                iov_base: (&mut byte as *mut u8).cast(),
                iov_len: 1,
            };
            let remote = libc::iovec {
                iov_base: values as _,
                iov_len: 1,
            };
            assert!(
                eperm(libc::process_vm_writev(libc::getpid(), &local, 1, &remote, 1, 0) as i64),
                "process_vm_writev"
            );
        }
        if report.proc_writes.is_denied() {
            let err = std::fs::OpenOptions::new()
                .write(true)
                .open("/proc/self/mem")
                .expect_err("/proc/self/mem opened for writing");
            assert_eq!(err.raw_os_error(), Some(libc::EACCES));
        } else {
            println!("skipped: /proc/self/mem part: {:?}", report.proc_writes);
        }
        // The runtime goes on: a second object (new key, new JIT code, new
        // region) after hardening, calls on both, a dropped object, a third.
        let second = counter_object(&rt, INC);
        second.program("prog").unwrap().call(&mut [0; 16]).unwrap();
        first.program("prog").unwrap().call(&mut [0; 16]).unwrap();
        assert_eq!((value0(&first), value0(&second)), (2, 1));
        assert_eq!(
            rt.hardening().unwrap().range_filters,
            before.range_filters + 2
        );
        drop(first);
        let third = counter_object(&rt, INC);
        third.program("prog").unwrap().call(&mut [0; 16]).unwrap();
        assert_eq!(value0(&third), 1);
        if rt.isolation().protected {
            // Protection still holds: the host cannot read the values.
            let f = host_read(values_addr(&second)).expect_err("host read values");
            assert!(f.is_pku(), "{f}");
        }
    });
}

/// `bpf_loop(8M, cb)` where each callback spins 1000 times and counts its
/// iterations in value 0 of its map: minutes of work for a verified program.
const LONG: &str = "
    r1 = 8000000
    r2 = func cb
    r3 = 0
    r4 = 0
    call bpf_loop#181
    r0 = 7
    exit
cb:
    r1 = 0
    *(u32 *)(r10 - 4) = r1
    r1 = map[idx:0]
    r2 = r10
    r2 += -4
    call 1
    if r0 == 0 goto done
    r1 = 1
    lock *(u64 *)(r0 + 0) += r1
    r3 = 0
spin:
    r3 += 1
    if r3 < 1000 goto spin
done:
    r0 = 0
    exit
";

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

/// A per-call time budget aborts a long-running extension: the call returns
/// `CallError::Timeout`, the host thread continues in its own domain, the
/// object's maps stay usable from the host and from the next call.
///
/// In a child, like the other tests that load several objects: keys are
/// never freed and this process's other tests need theirs.
#[test]
fn budget_aborts_a_long_running_extension_and_the_host_continues() {
    in_child(budget_aborts);
}

fn budget_aborts() {
    let rt = Runtime::builder()
        .build()
        .unwrap_or_else(|e| panic!("{e:?}"));
    let obj = counter_object(&rt, LONG);
    let prog = obj.program("prog").unwrap();
    let before = pkbpf_sandbox::current_pkru();
    for round in 1..=3u64 {
        let err = prog
            .call_with_budget(&mut [0; 16], Duration::from_millis(30))
            .expect_err("minutes of work cannot fit 30 ms");
        match &err {
            CallError::Timeout { program, budget } => {
                assert_eq!(program, "prog");
                assert_eq!(*budget, Duration::from_millis(30));
            }
            other => panic!("round {round}: {other:?}"),
        }
        assert!(err.to_string().contains("time budget"), "{err}");
        assert_eq!(pkbpf_sandbox::current_pkru(), before);
        // The map is consistent: the host reads and updates it (no lock
        // left held), and the count is below a whole run.
        let n = value0(&obj);
        assert!(n > 0 && n < 8_000_000 * round, "round {round}: {n}");
        let map = obj.map("vals").unwrap();
        map.update(&0u32.to_ne_bytes(), &0u64.to_ne_bytes(), 0)
            .unwrap();
        assert_eq!(value0(&obj), 0);
    }
    // Aborts are not faults of the program.
    assert_eq!(obj.fault_counts(), vec![("prog", 0)]);
    // The thread and the object work on.
    let inc = counter_object(&rt, INC);
    inc.program("prog").unwrap().call(&mut [0; 16]).unwrap();
    assert_eq!(value0(&inc), 1);
}

/// A fast program with a budget returns its result; many budgeted calls
/// and calls from exiting threads leave no timer behind.
#[test]
fn budgeted_fast_calls_return_normally_and_leak_no_timers() {
    in_child(budgeted_fast_calls);
}

fn budgeted_fast_calls() {
    let rt = Runtime::builder()
        .build()
        .unwrap_or_else(|e| panic!("{e:?}"));
    let obj = counter_object(&rt, INC);
    let prog = obj.program("prog").unwrap();
    let budget = Duration::from_secs(10);
    assert_eq!(prog.call_with_budget(&mut [0; 16], budget).unwrap(), 0);
    assert_eq!(timers_of(gettid()), 1, "one timer per thread");
    for _ in 0..1000 {
        assert_eq!(prog.call_with_budget(&mut [0; 16], budget).unwrap(), 0);
    }
    assert_eq!(value0(&obj), 1001);
    assert_eq!(timers_of(gettid()), 1, "budgeted calls leaked timers");
    let tids: Vec<i32> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    for _ in 0..10 {
                        prog.call_with_budget(&mut [0; 16], budget).unwrap();
                    }
                    gettid()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(value0(&obj), 1041);
    for tid in tids {
        assert_eq!(timers_of(tid), 0, "exited thread {tid} left its timer");
    }
}
