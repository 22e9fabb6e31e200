//! Per-operation cost of the program-side map operations ([`RawMap`]), in
//! the shape of bpftime's map workload: 1,000 update / lookup / delete ops
//! with `u32` keys `i % 1024` on a 1,024-entry map with `u64` values.
//!
//! ```sh
//! cargo bench -p pkbpf-maps --bench map_ops -- [FILTER] [--rounds N]
//! ```
//!
//! Prints the median ns per operation of `N` rounds (default 20) of 100
//! batches each. Under `valgrind --tool=callgrind` use `--rounds 1` and read
//! the per-call instruction counts of `RawMap::lookup` and friends. This is
//! the map operations alone, without the helper call around them; the
//! program-level rows (JIT, helper, hook) are `pkbpf-bench`'s.

use std::hint::black_box;
use std::time::Instant;

use pkbpf_maps::{MapDef, MapType, RawMap, Region, RegionBuilder, BPF_ANY};

const OPS: u32 = 1000;
const ENTRIES: u32 = 1024;
const BATCHES: u32 = 100;

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Update,
    Lookup,
    Delete,
    /// Update of absent keys then delete: the insert path.
    Insert,
}

fn batch(m: &RawMap, op: Op) -> u64 {
    let mut sum = 0u64;
    for i in 0..OPS {
        let key = i % ENTRIES;
        let value = i as u64;
        let k = &key as *const u32 as *const u8;
        // SAFETY: `k` points to a u32 key (key_size 4) and `value` to a u64
        // (value_size 8) for the duration of each call.
        unsafe {
            match op {
                Op::Update => {
                    sum += m.update(k, &value as *const u64 as *const u8, BPF_ANY) as u64;
                }
                Op::Lookup => {
                    let p = m.lookup(k) as *const u64;
                    if !p.is_null() {
                        sum += p.read();
                    }
                }
                Op::Delete => sum += m.delete(k) as u64,
                Op::Insert => {
                    sum += m.update(k, &value as *const u64 as *const u8, BPF_ANY) as u64;
                    sum += m.delete(k) as u64;
                }
            }
        }
    }
    sum
}

fn fill(m: &RawMap) {
    for key in 0..ENTRIES {
        let value = key as u64;
        // SAFETY: as in `batch`.
        let r = unsafe {
            m.update(
                &key as *const u32 as *const u8,
                &value as *const u64 as *const u8,
                BPF_ANY,
            )
        };
        assert_eq!(r, 0, "fill failed");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut rounds = 20usize;
    let mut filter = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rounds" => rounds = it.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            "--bench" => {}
            s if s.starts_with("--") => {}
            s => filter = Some(s.to_string()),
        }
    }
    let types = [
        ("array", MapType::Array),
        ("hash", MapType::Hash),
        ("percpu_array", MapType::PerCpuArray),
        ("percpu_hash", MapType::PerCpuHash),
        ("lru_hash", MapType::LruHash),
    ];
    let mut b = RegionBuilder::new();
    for (name, ty) in types {
        b.add(MapDef::new(name, ty, 4, 8, ENTRIES)).expect("map");
    }
    let region: Region = b.build().expect("region");
    println!("{:<28} {:>10}", "row", "ns/op");
    for (i, (name, _)) in types.iter().enumerate() {
        let m = region.raw(i).expect("map");
        for (op_name, op) in [
            ("update", Op::Update),
            ("lookup", Op::Lookup),
            ("delete", Op::Delete),
            ("insert+delete", Op::Insert),
        ] {
            let row = format!("{name} {op_name}");
            if filter.as_ref().is_some_and(|f| !row.contains(f.as_str())) {
                continue;
            }
            let mut samples = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                if op != Op::Insert {
                    fill(m);
                }
                let start = Instant::now();
                for _ in 0..BATCHES {
                    black_box(batch(m, op));
                }
                let ns = start.elapsed().as_nanos() as f64;
                samples.push(ns / (BATCHES * OPS) as f64);
            }
            samples.sort_by(f64::total_cmp);
            println!("{row:<28} {:>10.2}", samples[samples.len() / 2]);
        }
    }
}
