//! Probes on C functions compiled with `cc -O2` into a shared library that is
//! `dlopen`ed at test time, and `longjmp` over probed frames.

mod common;

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use common::{build_and_load, code_bytes, dlsym, resolve};
use pkbpf_hooks::uretprobe::shadow_depth;
use pkbpf_hooks::{
    attach_target, AttachOptions, Handler, ProbeKind, ProbeLink, ProbeTarget, PtRegs,
};

const SOURCE: &str = r#"
#include <setjmp.h>
#include <string.h>

long c_add6(long a, long b, long c, long d, long e, long f) {
    return a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f;
}

int c_clamp(int x) {
    if (x < 0) return 0;
    if (x > 100) return 100;
    return x;
}

static long table[16];
long c_global(long x) {
    table[x & 15] += x;
    return table[x & 15];
}

long c_sum(const long *p, int n) {
    long s = 0;
    for (int i = 0; i < n; i++) s += p[i] * (i + 1);
    return s;
}

int c_zero(void) { return 0; }

unsigned long c_strlen(const char *s) { return strlen(s) + 1; }

static jmp_buf jb;
long lj_inner(long depth);
static long (*volatile lj_self)(long) = lj_inner;
__attribute__((noinline)) long lj_inner(long depth) {
    if (depth == 0) longjmp(jb, 1);
    return lj_self(depth - 1) + 1;
}
long lj_after(long a, long b, long c, long d, long e, long f) {
    return a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f;
}
long lj_outer(long depth) {
    if (setjmp(jb)) return -1;
    return lj_self(depth);
}
"#;

fn lib() -> &'static PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| build_and_load("ctargets", SOURCE, &[]))
}

fn target(sym: &str) -> String {
    format!("{}:{sym}", lib().display())
}

fn probe(sym: &str, kind: ProbeKind, h: Handler) -> ProbeLink {
    let t = ProbeTarget::parse(&target(sym)).unwrap();
    // SAFETY: every symbol here is a function entry in the dlopened library.
    unsafe { attach_target(&t, kind, h, &AttachOptions::default()) }
        .unwrap_or_else(|e| panic!("attach {sym}: {e}"))
}

fn recorder() -> (Arc<Mutex<Vec<PtRegs>>>, Handler) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    (
        seen,
        Handler::from_fn(move |f| s.lock().unwrap().push(f.regs)),
    )
}

fn func<T: Copy>(sym: &str) -> T {
    lib();
    let p = dlsym(sym);
    assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<usize>());
    // SAFETY: T is the function pointer type matching the C prototype of `sym`.
    unsafe { std::mem::transmute_copy::<usize, T>(&p) }
}

#[test]
fn resolution_in_a_dlopened_library_matches_dlsym() {
    let r = resolve(&target("c_add6"));
    assert_eq!(r.address, dlsym("c_add6"));
    assert_ne!(r.bias, 0, "a shared library is loaded with a bias");
    let err =
        pkbpf_hooks::resolve_target(&ProbeTarget::parse(&target("no_such_function")).unwrap())
            .unwrap_err();
    match err {
        pkbpf_hooks::HookError::SymbolNotFound { binary, symbol } => {
            assert_eq!(&binary, lib());
            assert_eq!(symbol, "no_such_function");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn o2_functions_keep_their_results_and_handlers_see_arguments() {
    type Add6 = unsafe extern "C" fn(i64, i64, i64, i64, i64, i64) -> i64;
    type IntFn = unsafe extern "C" fn(i32) -> i32;
    type LongFn = unsafe extern "C" fn(i64) -> i64;
    type SumFn = unsafe extern "C" fn(*const i64, i32) -> i64;
    type ZeroFn = unsafe extern "C" fn() -> i32;
    type StrlenFn = unsafe extern "C" fn(*const libc::c_char) -> u64;
    let add6: Add6 = func("c_add6");
    let clamp: IntFn = func("c_clamp");
    let global: LongFn = func("c_global");
    let sum: SumFn = func("c_sum");
    let zero: ZeroFn = func("c_zero");
    let strlen: StrlenFn = func("c_strlen");

    let names = [
        "c_add6", "c_clamp", "c_global", "c_sum", "c_zero", "c_strlen",
    ];
    let before: Vec<Vec<u8>> = names.iter().map(|n| code_bytes(dlsym(n), 8)).collect();
    let mut links = Vec::new();
    let mut entries = Vec::new();
    let mut returns = Vec::new();
    for n in names {
        let (e, eh) = recorder();
        let (r, rh) = recorder();
        links.push(probe(n, ProbeKind::Entry, eh));
        links.push(probe(n, ProbeKind::Return, rh));
        entries.push(e);
        returns.push(r);
    }
    let modes: Vec<_> = links.iter().map(|l| l.mode()).collect();
    eprintln!("modes: {modes:?}");

    let data = [3i64, -4, 5, 100];
    let s = std::ffi::CString::new("hello").unwrap();
    // SAFETY: the C functions match their Rust prototypes; pointers are valid.
    let results = unsafe {
        [
            black_box(add6)(1, 2, 3, 4, 5, 6),
            black_box(clamp)(-5) as i64,
            black_box(clamp)(50) as i64,
            black_box(clamp)(500) as i64,
            black_box(global)(3),
            black_box(global)(3),
            black_box(sum)(data.as_ptr(), 4),
            black_box(zero)() as i64,
            black_box(strlen)(s.as_ptr()) as i64,
        ]
    };
    assert_eq!(results, [91, 0, 50, 100, 3, 6, 3 - 8 + 15 + 400, 0, 6]);
    drop(links);
    for (n, b) in names.iter().zip(&before) {
        assert_eq!(&code_bytes(dlsym(n), 8), b, "{n} restored");
    }
    let args = |i: usize| -> Vec<u64> { entries[i].lock().unwrap().iter().map(|r| r.di).collect() };
    let rcs = |i: usize| -> Vec<u64> { returns[i].lock().unwrap().iter().map(|r| r.ax).collect() };
    let e0 = entries[0].lock().unwrap()[0];
    assert_eq!(
        [e0.di, e0.si, e0.dx, e0.cx, e0.r8, e0.r9],
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!(e0.ip as usize, dlsym("c_add6"));
    assert_eq!(rcs(0), [91]);
    assert_eq!(
        args(1).iter().map(|&d| d as u32 as i32).collect::<Vec<_>>(),
        [-5, 50, 500]
    );
    assert_eq!(
        rcs(1).iter().map(|&a| a as u32).collect::<Vec<_>>(),
        [0, 50, 100]
    );
    assert_eq!(args(2), [3, 3]);
    assert_eq!(rcs(2), [3, 6]);
    let e3 = entries[3].lock().unwrap()[0];
    assert_eq!((e3.di as usize, e3.si as u32), (data.as_ptr() as usize, 4));
    assert_eq!(rcs(4).iter().map(|&a| a as u32).collect::<Vec<_>>(), [0]);
    assert_eq!(args(5), [s.as_ptr() as u64]);
    assert_eq!(rcs(5), [6]);
    assert_eq!(shadow_depth(), 0);
}

#[test]
fn longjmp_over_probed_frames() {
    static E: AtomicU64 = AtomicU64::new(0);
    static R: AtomicU64 = AtomicU64::new(0);
    static A: AtomicU64 = AtomicU64::new(0);
    type LongFn = unsafe extern "C" fn(i64) -> i64;
    type Add6 = unsafe extern "C" fn(i64, i64, i64, i64, i64, i64) -> i64;
    let outer: LongFn = func("lj_outer");
    let add6: Add6 = func("lj_after");
    let cnt = |c: &'static AtomicU64| {
        Handler::from_fn(move |_| {
            c.fetch_add(1, Ordering::Relaxed);
        })
    };
    let _e = probe("lj_inner", ProbeKind::Entry, cnt(&E));
    let _r = probe("lj_inner", ProbeKind::Return, cnt(&R));
    let _a = probe("lj_after", ProbeKind::Return, cnt(&A));
    let depth0 = shadow_depth();
    // SAFETY: lj_outer catches its own longjmp.
    assert_eq!(unsafe { black_box(outer)(10) }, -1);
    assert_eq!(E.load(Ordering::Relaxed), 11);
    assert_eq!(
        R.load(Ordering::Relaxed),
        0,
        "frames skipped by longjmp never return"
    );
    assert_eq!(
        shadow_depth(),
        depth0 + 11,
        "their entries are stale until the next probe"
    );
    // SAFETY: pure arithmetic.
    assert_eq!(unsafe { black_box(add6)(1, 1, 1, 1, 1, 1) }, 21);
    assert_eq!(A.load(Ordering::Relaxed), 1);
    assert_eq!(
        shadow_depth(),
        depth0,
        "a new probed call discards the stale entries"
    );
    // SAFETY: as above.
    assert_eq!(unsafe { black_box(outer)(3) }, -1);
    assert_eq!(E.load(Ordering::Relaxed), 15);
    // SAFETY: as above.
    assert_eq!(unsafe { black_box(add6)(0, 0, 0, 0, 0, 1) }, 6);
    assert_eq!(A.load(Ordering::Relaxed), 2);
    assert_eq!(shadow_depth(), depth0);
}
