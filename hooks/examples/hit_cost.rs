//! Per-hit cost of the trampolines with a trivial handler: a micro-benchmark
//! of the hooks layer alone (the benchmark harness measures whole probes).
//! Run: `cargo run -p pkbpf-hooks --release --example hit_cost`.

use std::ffi::c_void;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use pkbpf_hooks::{attach, AttachOptions, Handler, HookFrame, ProbeKind};

std::arch::global_asm!(
    ".text",
    ".globl pk_cost_target",
    ".type pk_cost_target,@function",
    "pk_cost_target:",
    "lea rax, [rdi + 0x12345678]",
    "sub rax, 0x12345677",
    "ret",
    ".size pk_cost_target, .-pk_cost_target",
);

extern "C" {
    fn pk_cost_target(x: u64) -> u64;
}

static HITS: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" fn trivial(_data: *mut c_void, _frame: *mut HookFrame) {
    // Single-threaded benchmark: a plain increment, no `lock` prefix.
    HITS.store(HITS.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

fn ns_per_call(n: u64) -> f64 {
    let f = black_box(pk_cost_target as unsafe extern "C" fn(u64) -> u64);
    let start = Instant::now();
    let mut acc = 0u64;
    for i in 0..n {
        // SAFETY: pure arithmetic asm.
        acc = acc.wrapping_add(unsafe { f(i) });
    }
    black_box(acc);
    start.elapsed().as_nanos() as f64 / n as f64
}

/// Median of `v` (sorted in place).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    const N: u64 = 1_000_000;
    // Rounds of (attach, measure, detach); the median of each difference
    // is printed, and the minimum, since a shared machine only adds time.
    const ROUNDS: usize = 7;
    let addr = pk_cost_target as *const () as usize;
    // SAFETY: `trivial` only touches an atomic; safe from any thread.
    let handler = || unsafe { Handler::from_raw(trivial, std::ptr::null_mut()) };
    let opts = AttachOptions::default();
    let (mut bases, mut entries, mut rets, mut boths) = (vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        let base = ns_per_call(N);
        // SAFETY: pk_cost_target is a function entry of this process.
        let e =
            unsafe { attach(addr, Some((addr, 15)), ProbeKind::Entry, handler(), &opts) }.unwrap();
        let entry = ns_per_call(N);
        // SAFETY: as above.
        let r =
            unsafe { attach(addr, Some((addr, 15)), ProbeKind::Return, handler(), &opts) }.unwrap();
        let both = ns_per_call(N);
        drop(e);
        let ret_only = ns_per_call(N);
        drop(r);
        bases.push(base);
        entries.push(entry - base);
        rets.push(ret_only - base);
        boths.push(both - base);
    }
    assert_eq!(
        HITS.load(Ordering::Relaxed),
        4 * N * ROUNDS as u64,
        "every call must be seen"
    );
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "median of {ROUNDS} rounds (min): plain call {:.1} ns; uprobe hit +{:.1} ns ({:.1}); \
         uretprobe +{:.1} ns ({:.1}); both +{:.1} ns ({:.1})",
        median(&mut bases),
        median(&mut entries.clone()),
        min(&entries),
        median(&mut rets.clone()),
        min(&rets),
        median(&mut boths.clone()),
        min(&boths),
    );
}
