//! `pkbpf demo`: pkbpf's main job on a built-in default.
//!
//! Two eBPF programs, assembled from text compiled into the binary, are
//! verified, JIT-compiled and attached to a function of the `pkbpf` binary
//! itself (`pkbpf_demo_request`): a uprobe builds a log2 histogram of the
//! function's first argument in an array map, and a uretprobe sums its return
//! values. The demo then calls the function, prints the histogram the way
//! bpftrace does, checks the maps against what the calls really did, and
//! reports what a probe hit cost.
//!
//! `pkbpf demo --below N` instead runs a compute program (primes below N) on
//! the reference interpreter.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use pkbpf::maps::{MapDef, MapType};
use pkbpf::runtime::{AttachPoint, CtxLayout, Engine, LoadedObject, Runtime, Sandbox};
use pkbpf::verifier::{asm, isa};
use pkbpf_hooks::{ProbeKind, PtRegs};
use pkbpf_jit::interp::{Interpreter, Memory, NoHelpers, RegionKind};

/// Arguments of `pkbpf demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// How many times the workload calls the probed function.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub calls: u64,

    /// Run the programs on the reference interpreter instead of the JIT.
    #[arg(long)]
    pub interpreter: bool,

    /// Instead of the uprobe demo, count the primes below this number on
    /// the reference interpreter.
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=1_000_000))]
    pub below: Option<u32>,
}

/// The uprobe program: `hist[log2(PARM1)] += 1`. Its context is the
/// kernel's x86-64 `struct pt_regs` (`di`, the first argument, at 112).
pub const HIST_ASM: &str = "\
r6 = *(u64 *)(r1 + 112)
r7 = 0
log2:
if r6 < 2 goto found
r6 >>= 1
r7 += 1
goto log2
found:
*(u32 *)(r10 - 4) = r7
r2 = r10
r2 += -4
r1 = map[idx:0]
call bpf_map_lookup_elem#1
if r0 == 0 goto out
r1 = 1
lock *(u64 *)(r0 + 0) += r1
out:
r0 = 0
exit
";

/// The uretprobe program: `total[0] += return value` (`ax`, at 80).
pub const SUM_ASM: &str = "\
r6 = *(u64 *)(r1 + 80)
*(u32 *)(r10 - 4) = 0
r2 = r10
r2 += -4
r1 = map[idx:0]
call bpf_map_lookup_elem#1
if r0 == 0 goto out
lock *(u64 *)(r0 + 0) += r6
out:
r0 = 0
exit
";

/// Histogram buckets: log2 of a u64 is at most 63.
const BUCKETS: u32 = 64;

/// The probed function: a stand-in for request handling whose cost and
/// result depend on the request size.
#[inline(never)]
#[no_mangle]
pub extern "C" fn pkbpf_demo_request(size: u64) -> u64 {
    let mut h = size;
    for _ in 0..(size % 7) {
        h = std::hint::black_box(h.rotate_left(5) ^ 0x9e37_79b9);
    }
    h % 1000
}

/// Request sizes: a deterministic, skewed mix (mostly small, a long tail).
fn request_size(i: u64) -> u64 {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5851_f42d;
    x ^= x >> 29;
    let shift = (x % 20) as u32;
    1 + ((x >> 8) & ((1u64 << shift) - 1))
}

fn workload(calls: u64) -> (u64, Vec<u64>) {
    let mut sum = 0u64;
    let mut hist = vec![0u64; BUCKETS as usize];
    for i in 0..calls {
        let size = request_size(i);
        hist[63 - size.leading_zeros() as usize] += 1;
        sum = sum.wrapping_add(pkbpf_demo_request(std::hint::black_box(size)));
    }
    (sum, hist)
}

fn load(rt: &Runtime, name: &str, text: &str, map: MapDef) -> Result<Arc<LoadedObject>> {
    let insns = asm::assemble(text).with_context(|| format!("assembling {name}"))?;
    let ctx = CtxLayout::read_only(std::mem::size_of::<PtRegs>() as u32);
    let obj = rt
        .load_insns(name, &insns, &[map], &ctx)
        .with_context(|| format!("loading {name}"))?;
    Ok(Arc::new(obj))
}

fn read_u64s(obj: &LoadedObject, map: &str, n: u32) -> Result<Vec<u64>> {
    let m = obj.map(map)?;
    (0..n)
        .map(|k| {
            let v = m
                .lookup(&k.to_le_bytes())?
                .with_context(|| format!("{map}[{k}] missing"))?;
            Ok(u64::from_le_bytes(v[..8].try_into()?))
        })
        .collect()
}

fn print_hist(hist: &[u64]) {
    let max = hist.iter().copied().max().unwrap_or(0).max(1);
    let label = |b: usize| -> String {
        let v = 1u128 << b;
        match v {
            v if v >= 1 << 30 => format!("{}G", v >> 30),
            v if v >= 1 << 20 => format!("{}M", v >> 20),
            v if v >= 1 << 10 => format!("{}K", v >> 10),
            v => v.to_string(),
        }
    };
    for (b, &count) in hist.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let bar = "@".repeat(((count * 40).div_ceil(max)) as usize);
        println!(
            "[{}, {}){:>pad$} {count:>8} |{bar:<40}|",
            label(b),
            label(b + 1),
            "",
            pad = 14usize.saturating_sub(label(b).len() + label(b + 1).len() + 4)
        );
    }
}

fn uprobe_demo(args: &Args, sandbox: Sandbox) -> Result<i32> {
    let engine = if args.interpreter {
        Engine::Interpreter
    } else {
        Engine::Jit
    };
    let rt = Runtime::builder()
        .sandbox(sandbox)
        .engine(engine)
        .build()
        .context("starting the runtime")?;
    let iso = rt.isolation();
    println!(
        "pkbpf demo: {} engine, {}",
        if args.interpreter {
            "interpreter"
        } else {
            "JIT"
        },
        iso.mode
    );

    let hist_obj = load(
        &rt,
        "request_size_hist",
        HIST_ASM,
        MapDef::new("hist", MapType::Array, 4, 8, BUCKETS),
    )?;
    let sum_obj = load(
        &rt,
        "result_sum",
        SUM_ASM,
        MapDef::new("total", MapType::Array, 4, 8, 1),
    )?;
    let target = pkbpf_demo_request as *const () as usize;

    // The same work without probes first, for the cost per hit.
    let t0 = Instant::now();
    let (native_sum, native_hist) = workload(args.calls);
    let unprobed = t0.elapsed();

    let entry = hist_obj
        .attach_as(
            "request_size_hist",
            AttachPoint::Address(target),
            ProbeKind::Entry,
        )
        .context("attaching the uprobe")?;
    let ret = sum_obj
        .attach_as(
            "result_sum",
            AttachPoint::Address(target),
            ProbeKind::Return,
        )
        .context("attaching the uretprobe")?;
    println!(
        "attached uprobe + uretprobe to pkbpf_demo_request at {:#x}; calling it {} times",
        entry.address(),
        args.calls
    );
    let t0 = Instant::now();
    let (probed_sum, _) = workload(args.calls);
    let probed = t0.elapsed();
    let (entry_hits, entry_errors) = (entry.hits(), entry.errors());
    let (ret_hits, ret_errors) = (ret.hits(), ret.errors());
    entry.detach().context("detaching the uprobe")?;
    ret.detach().context("detaching the uretprobe")?;

    let hist = read_u64s(&hist_obj, "hist", BUCKETS)?;
    let total = read_u64s(&sum_obj, "total", 1)?[0];
    println!();
    println!("@request_size (log2 histogram, from the uprobe's array map):");
    print_hist(&hist);
    println!();
    println!("@result_sum (from the uretprobe's array map): {total}");

    let per_hit = (probed.as_nanos() as f64 - unprobed.as_nanos() as f64) / args.calls as f64;
    println!(
        "probe cost: {:.1} ns per call with uprobe + uretprobe ({:.1} ns unprobed)",
        per_hit.max(0.0),
        unprobed.as_nanos() as f64 / args.calls as f64
    );

    // The maps must say exactly what the calls did.
    let mut problems = Vec::new();
    if entry_hits != args.calls || entry_errors != 0 {
        problems.push(format!(
            "uprobe ran {entry_hits} times ({entry_errors} errors) for {} calls",
            args.calls
        ));
    }
    if ret_hits != args.calls || ret_errors != 0 {
        problems.push(format!(
            "uretprobe ran {ret_hits} times ({ret_errors} errors) for {} calls",
            args.calls
        ));
    }
    if hist != native_hist {
        problems.push("the histogram differs from the request sizes".to_string());
    }
    if total != native_sum || probed_sum != native_sum {
        problems.push(format!(
            "return-value sum {total} (probed run {probed_sum}), expected {native_sum}"
        ));
    }
    if !problems.is_empty() {
        bail!("demo check failed: {}", problems.join("; "));
    }
    println!(
        "check: {} uprobe and {} uretprobe hits, histogram and sum match the calls",
        entry_hits, ret_hits
    );
    Ok(0)
}

/// The built-in program: `r1` points at a little-endian `u32` bound; returns
/// the number of primes below it.
pub const PRIMES_ASM: &str = "\
# r1 = &bound (u32). Counts primes n in [2, bound).
ldxw %r6, [%r1]
stdw [%r10-8], 0          # count
mov %r7, 2                # n
outer:
jge %r7, %r6, done
mov %r1, %r7
call local is_prime
jeq %r0, 0, next
ldxdw %r2, [%r10-8]
add %r2, 1
stxdw [%r10-8], %r2
next:
add %r7, 1
ja outer
done:
ldxdw %r0, [%r10-8]
exit
# is_prime(r1 = n >= 2) -> r0 = 1 if prime
is_prime:
mov %r0, 1
mov %r2, 2
loop:
mov %r3, %r2
mul %r3, %r2
jgt %r3, %r1, prime
mov %r4, %r1
mod %r4, %r2
jeq %r4, 0, composite
add %r2, 1
ja loop
composite:
mov %r0, 0
prime:
exit
";

/// Assembles and runs the demo program; returns (primes, instructions).
pub fn count_primes(below: u32) -> Result<(u64, u64)> {
    let insns = asm::assemble(PRIMES_ASM).context("assembling the built-in program")?;
    let prog = isa::decode_program(&isa::encode_program(&insns))
        .context("decoding the built-in program")?;
    let bound = below.to_le_bytes();
    let mut mem = Memory::new();
    let addr = mem.add_slice(&bound, RegionKind::Ctx);
    let out = Interpreter::new(&prog)
        .run(&mut mem, &mut NoHelpers, [addr, 0, 0, 0, 0])
        .context("running the built-in program")?;
    Ok((out.r0, out.stats.insns))
}

/// Runs the demo.
pub fn run(args: Args, sandbox: Sandbox) -> Result<i32> {
    if let Some(below) = args.below {
        let (primes, insns) = count_primes(below)?;
        println!("primes below {below}: {primes} (interpreter, {insns} instructions executed)");
        return Ok(0);
    }
    uprobe_demo(&args, sandbox)
}
