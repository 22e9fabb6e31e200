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

fn main() {
    const N: u64 = 2_000_000;
    let addr = pk_cost_target as *const () as usize;
    let base = ns_per_call(N);
    // SAFETY: `trivial` only touches an atomic; safe from any thread.
    let handler = || unsafe { Handler::from_raw(trivial, std::ptr::null_mut()) };
    let opts = AttachOptions::default();
    // SAFETY: pk_cost_target is a function entry of this process.
    let e = unsafe { attach(addr, Some((addr, 15)), ProbeKind::Entry, handler(), &opts) }.unwrap();
    let entry = ns_per_call(N);
    // SAFETY: as above.
    let r = unsafe { attach(addr, Some((addr, 15)), ProbeKind::Return, handler(), &opts) }.unwrap();
    let both = ns_per_call(N);
    drop(e);
    let ret_only = ns_per_call(N);
    drop(r);
    assert_eq!(
        HITS.load(Ordering::Relaxed),
        4 * N,
        "every call must be seen"
    );
    println!(
        "plain call {base:.1} ns; uprobe hit +{:.1} ns; uretprobe +{:.1} ns; both +{:.1} ns",
        entry - base,
        ret_only - base,
        both - base
    );
}
