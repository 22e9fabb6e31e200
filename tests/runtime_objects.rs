//! The runtime with the clang-compiled objects of `tests/bpf/`: embedded
//! calls, bpf-to-bpf calls with globals, map contents left by the bench
//! programs, ringbuf events, printk lines, tail calls; every program run on
//! both engines with the results compared.

mod common;

use std::sync::{Arc, Mutex};

use pkbpf::object::Object;
use pkbpf::runtime::{CtxLayout, Engine, LoadedObject, Runtime, Sandbox};
use pkbpf_maps::typed::{Array, HashMap};
use pkbpf_maps::RingBufConsumer;

const ENGINES: [Engine; 2] = [Engine::Jit, Engine::Interpreter];

/// Offsets in x86-64 `struct pt_regs`.
const PT_RSI: usize = 104;
const PT_RDI: usize = 112;

fn runtime(engine: Engine) -> Runtime {
    Runtime::builder()
        .sandbox(Sandbox::Auto)
        .engine(engine)
        .build()
        .expect("runtime builds")
}

fn bytes_of(test: &str, name: &str) -> Option<Vec<u8>> {
    Some(common::read(&common::compile(test, name)?))
}

fn pt_regs(a: u64, b: u64) -> [u8; 168] {
    let mut r = [0u8; 168];
    r[PT_RDI..PT_RDI + 8].copy_from_slice(&a.to_ne_bytes());
    r[PT_RSI..PT_RSI + 8].copy_from_slice(&b.to_ne_bytes());
    r
}

fn input(a: u64, b: u64) -> [u8; 16] {
    let mut r = [0u8; 16];
    r[..8].copy_from_slice(&a.to_ne_bytes());
    r[8..].copy_from_slice(&b.to_ne_bytes());
    r
}

#[test]
fn embedded_programs_run_on_both_engines() {
    let Some(bytes) = bytes_of("embedded_programs_run_on_both_engines", "embedded") else {
        return;
    };
    let mut results = Vec::new();
    for engine in ENGINES {
        let rt = runtime(engine);
        let obj = rt.load_with_ctx(&bytes, &CtxLayout::writable(16)).unwrap();
        let add = obj.program("add_inputs").unwrap();
        let mul = obj.program("mul_inputs").unwrap();
        assert_eq!(add.ctx_size(), 16);
        let mut r = Vec::new();
        for (a, b) in [(1u64, 2u64), (40, 2), (1000, 7)] {
            let sum = add.call(&mut input(a, b)).unwrap();
            let prod = mul.call(&mut input(a, b)).unwrap();
            assert_eq!(sum as u32 as u64, a + b, "{engine:?}");
            assert_eq!(prod as u32 as u64, a * b, "{engine:?}");
            r.push((sum as u32, prod as u32));
        }
        // add_inputs bumps legacy_counts[0] once per call.
        let counts = obj.map("legacy_counts").unwrap();
        let counts = Array::<u64>::try_from(&counts).unwrap();
        assert_eq!(counts.get(0).unwrap(), 3, "{engine:?}");
        assert_eq!(counts.get(1).unwrap(), 0, "{engine:?}");
        assert_eq!(
            obj.program("custom")
                .unwrap()
                .call(&mut input(0, 0))
                .unwrap(),
            7
        );
        results.push(r);
    }
    assert_eq!(results[0], results[1], "engines agree");
}

#[test]
fn wrong_ctx_size_is_a_typed_error() {
    let Some(bytes) = bytes_of("wrong_ctx_size_is_a_typed_error", "embedded") else {
        return;
    };
    let rt = runtime(Engine::Jit);
    let obj = rt.load_with_ctx(&bytes, &CtxLayout::writable(16)).unwrap();
    let err = obj
        .program("add_inputs")
        .unwrap()
        .call(&mut [0u8; 8])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "program add_inputs: context is 8 bytes, expected 16"
    );
    assert!(obj.program("nope").is_err());
    assert!(obj.map("nope").is_err());
}

#[test]
fn embedded_ctx_smaller_than_accessed_is_rejected_with_log() {
    let Some(bytes) = bytes_of(
        "embedded_ctx_smaller_than_accessed_is_rejected_with_log",
        "embedded",
    ) else {
        return;
    };
    let rt = runtime(Engine::Jit);
    // add_inputs reads 16 bytes of its context; 8 declared is not enough.
    let err = rt
        .load_with_ctx(&bytes, &CtxLayout::writable(8))
        .unwrap_err();
    match err {
        pkbpf::runtime::RuntimeError::Verify { program, log, .. } => {
            assert_eq!(program, "add_inputs");
            assert!(!log.0.is_empty(), "the verifier log is carried");
        }
        other => panic!("expected a verifier rejection, got {other:?}"),
    }
}

fn u64_at(v: &[u8], off: u32) -> u64 {
    u64::from_ne_bytes(v[off as usize..off as usize + 8].try_into().unwrap())
}

#[test]
fn calls_and_globals_read_through_the_map_api() {
    let Some(bytes) = bytes_of(
        "calls_and_globals_read_through_the_map_api",
        "calls_globals",
    ) else {
        return;
    };
    let parsed = Object::parse(&bytes).unwrap();
    let var = |map: &str, name: &str| {
        let m = parsed.map(map).unwrap();
        parsed
            .globals(m)
            .into_iter()
            .find(|g| g.name == name)
            .unwrap_or_else(|| panic!("{name} in {map}"))
            .offset
    };
    let mut outcomes = Vec::new();
    for engine in ENGINES {
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        let rt = Runtime::builder()
            .engine(engine)
            .printk(move |l| sink.lock().unwrap().push(l.to_string()))
            .build()
            .unwrap();
        let obj = rt.load(&bytes).unwrap();
        let main = obj.program("calls_main").unwrap();
        assert_eq!(main.ctx_size(), 168);
        assert_eq!(main.kind().name(), "uprobe");
        assert_eq!(main.section(), "uprobe/benchmark/test:__bench_calls");
        // r = a * multiplier (3) + b
        assert_eq!(main.call(&mut pt_regs(5, 4)).unwrap(), 19);
        assert_eq!(main.call(&mut pt_regs(100, 1)).unwrap(), 301 & 0xff);
        let second = obj.program("calls_second").unwrap();
        assert_eq!(second.call(&mut pt_regs(7, 0)).unwrap(), 21);

        let data = obj
            .map(".data")
            .unwrap()
            .lookup(&0u32.to_ne_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(u64_at(&data, var(".data", "hits")), 9, "7 + two calls");
        let bss = obj
            .map(".bss")
            .unwrap()
            .lookup(&0u32.to_ne_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(u64_at(&bss, var(".bss", "last_value")), 301);
        let scratch = var(".bss", "scratch") as usize;
        assert_eq!(
            u32::from_ne_bytes(bss[scratch + 4..scratch + 8].try_into().unwrap()),
            301
        );
        let rodata = obj.map(".rodata").unwrap();
        let ro = rodata.lookup(&0u32.to_ne_bytes()).unwrap().unwrap();
        assert_eq!(u64_at(&ro, var(".rodata", "multiplier")), 3);
        assert!(rodata.is_frozen());
        assert!(rodata.update(&0u32.to_ne_bytes(), &ro, 0).is_err());

        let lines = lines.lock().unwrap().clone();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].ends_with(": bpf_trace_printk: r=19"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].ends_with(": bpf_trace_printk: r=301"),
            "{}",
            lines[1]
        );
        check_trace_line(&lines[0]);
        outcomes.push((data, bss));
    }
    assert_eq!(outcomes[0], outcomes[1], "engines leave the same globals");
}

/// `<comm>-<pid> [<cpu>] .... <secs>.<usecs>: bpf_trace_printk: <msg>`.
fn check_trace_line(line: &str) {
    let (head, _) = line.split_once(": bpf_trace_printk: ").expect("marker");
    let mut parts = head.split_whitespace();
    let task = parts.next().unwrap();
    let (_, pid) = task.rsplit_once('-').unwrap();
    assert_eq!(pid.parse::<u32>().unwrap(), std::process::id());
    let cpu = parts.next().unwrap();
    assert!(
        cpu.starts_with('[') && cpu.ends_with(']') && cpu.len() == 5,
        "{cpu}"
    );
    assert_eq!(parts.next(), Some("...."));
    let ts = parts.next().unwrap();
    let (s, us) = ts.split_once('.').unwrap();
    assert!(s.parse::<u64>().is_ok() && us.len() == 6 && us.parse::<u32>().is_ok());
}

#[test]
fn bench_maps_leave_the_right_contents() {
    let Some(bytes) = bytes_of("bench_maps_leave_the_right_contents", "bench_maps") else {
        return;
    };
    for engine in ENGINES {
        let rt = runtime(engine);
        let obj = rt.load(&bytes).unwrap();
        for p in [
            "bench_array_map",
            "bench_hash_map",
            "bench_percpu_array_map",
            "bench_percpu_hash_map",
        ] {
            assert_eq!(obj.program(p).unwrap().call(&mut pt_regs(0, 0)).unwrap(), 0);
        }
        let arr = obj.map("bench_array").unwrap();
        let arr = Array::<u64>::try_from(&arr).unwrap();
        for i in 0..1024u32 {
            let want = if i < 1000 { i as u64 } else { 0 };
            assert_eq!(arr.get(i).unwrap(), want, "{engine:?} array[{i}]");
        }
        let hash = obj.map("bench_hash").unwrap();
        let hash = HashMap::<u32, u64>::try_from(&hash).unwrap();
        assert_eq!(hash.keys().count(), 0, "every key deleted again");
        assert_eq!(hash.get(&5).unwrap(), None);
        let pca = obj.map("bench_percpu_array").unwrap();
        for i in [0u32, 1, 500, 999, 1000, 1023] {
            let vals = pca.lookup_percpu(&i.to_ne_bytes()).unwrap().unwrap();
            let max = vals
                .iter()
                .map(|v| u64::from_ne_bytes(v[..8].try_into().unwrap()))
                .max()
                .unwrap();
            let want = if i < 1000 { i as u64 } else { 0 };
            assert_eq!(max, want, "{engine:?} percpu_array[{i}]");
        }
        let pch = obj.map("bench_percpu_hash").unwrap();
        assert_eq!(pch.keys().count(), 0);
        // Running again leaves the same state.
        obj.program("bench_hash_map")
            .unwrap()
            .call(&mut pt_regs(0, 0))
            .unwrap();
        assert_eq!(hash.keys().count(), 0);
    }
}

#[test]
fn ringbuf_events_reach_the_consumer() {
    let Some(bytes) = bytes_of("ringbuf_events_reach_the_consumer", "ringbuf_opensnoop") else {
        return;
    };
    for engine in ENGINES {
        let rt = runtime(engine);
        let obj = rt.load(&bytes).unwrap();
        let enter = obj.program("trace_openat_enter").unwrap();
        let exit = obj.program("trace_openat_exit").unwrap();
        let path = b"/etc/hostname\0";
        let mut ctx = [0u8; 64];
        ctx[24..32].copy_from_slice(&(path.as_ptr() as u64).to_ne_bytes());
        assert_eq!(enter.call(&mut ctx).unwrap(), 0);
        let mut ctx = [0u8; 24];
        ctx[16..24].copy_from_slice(&(-2i64).to_ne_bytes());
        assert_eq!(exit.call(&mut ctx).unwrap(), 0);

        let map = obj.map("events").unwrap();
        let mut cons = RingBufConsumer::new(&map).unwrap();
        let first = cons.next_record().expect("enter event");
        assert_eq!(first.len(), 152);
        let pid = u32::from_ne_bytes(first[0..4].try_into().unwrap());
        assert_eq!(pid, std::process::id());
        assert_eq!(i32::from_ne_bytes(first[4..8].try_into().unwrap()), 0);
        let comm = pkbpf::helpers::current_comm();
        assert_eq!(&first[8..24], &comm[..]);
        assert_eq!(&first[24..24 + path.len()], path);
        let second = cons.next_record().expect("exit event");
        assert_eq!(i32::from_ne_bytes(second[4..8].try_into().unwrap()), -2);
        assert_eq!(second[8], 0);
        assert_eq!(second[24], 0);
        assert!(
            cons.next_record().is_none(),
            "{engine:?}: exactly two events"
        );
    }
}

fn tail_input(index: u32, value: u32) -> [u8; 8] {
    let mut r = [0u8; 8];
    r[..4].copy_from_slice(&index.to_ne_bytes());
    r[4..].copy_from_slice(&value.to_ne_bytes());
    r
}

fn tail_obj(engine: Engine, bytes: &[u8]) -> LoadedObject {
    runtime(engine)
        .load_with_ctx(bytes, &CtxLayout::read_only(8))
        .unwrap()
}

#[test]
fn tail_calls_follow_the_prog_array() {
    let Some(bytes) = bytes_of("tail_calls_follow_the_prog_array", "tail_calls") else {
        return;
    };
    let mut all = Vec::new();
    for engine in ENGINES {
        let obj = tail_obj(engine, &bytes);
        let entry = obj.program("tail_entry").unwrap();
        let mut r = Vec::new();
        for (index, value, want) in [
            (1, 7, 14),
            (3, 7, 49),
            (0, 7, 0),
            (2, 9, 0),
            (4, 9, 0),
            (99, 1, 0),
        ] {
            let got = entry.call(&mut tail_input(index, value)).unwrap();
            assert_eq!(got as u32, want, "{engine:?} slot {index}");
            r.push(got as u32);
        }
        // The host rewires the table through the map API: slot 0 → tail_square.
        let table = obj.map("jump_table").unwrap();
        let square = obj
            .programs()
            .position(|p| p.name() == "tail_square")
            .unwrap() as u32;
        table
            .update(&0u32.to_ne_bytes(), &square.to_ne_bytes(), 0)
            .unwrap();
        assert_eq!(entry.call(&mut tail_input(0, 5)).unwrap() as u32, 25);
        // A slot pointing at the entry itself loops until the 33-call limit,
        // then the failed tail call falls through to `return 0`.
        let me = obj
            .programs()
            .position(|p| p.name() == "tail_entry")
            .unwrap() as u32;
        table
            .update(&2u32.to_ne_bytes(), &me.to_ne_bytes(), 0)
            .unwrap();
        assert_eq!(entry.call(&mut tail_input(2, 5)).unwrap(), 0);
        all.push(r);
    }
    assert_eq!(all[0], all[1]);
}

#[test]
fn a_faulting_program_aborts_that_call_only() {
    let Some(bytes) = bytes_of("a_faulting_program_aborts_that_call_only", "embedded") else {
        return;
    };
    // The host below re-protects the map's pages itself, which a hardened
    // process refuses (tests/mpk_runtime.rs checks that): opt out.
    let rt = Runtime::builder()
        .engine(Engine::Jit)
        .harden(pkbpf::runtime::Harden::Off)
        .build()
        .expect("runtime builds");
    if rt.hardening().is_some() {
        // Hardening is process-wide: another test's runtime (mpk mode on PKU
        // hardware) already applied it.
        println!("skipped: a_faulting_program_aborts_that_call_only: process already hardened");
        return;
    }
    let obj = rt.load_with_ctx(&bytes, &CtxLayout::writable(16)).unwrap();
    let add = obj.program("add_inputs").unwrap();
    assert_eq!(add.call(&mut input(2, 3)).unwrap(), 5);
    // Hostile host action: take the counter array's value pages away, so the
    // program's `*v += 1` faults inside JIT code.
    let counts = obj.map("legacy_counts").unwrap();
    let values = counts.values_range();
    let protect = |prot| {
        // SAFETY: the range is the map's own page-aligned values pages; no
        // other thread uses this object.
        let r = unsafe { libc::mprotect(values.addr as *mut libc::c_void, values.len, prot) };
        assert_eq!(r, 0);
    };
    protect(libc::PROT_NONE);
    let err = add.call(&mut input(2, 3)).unwrap_err();
    protect(libc::PROT_READ | libc::PROT_WRITE);
    match err {
        pkbpf::runtime::CallError::Fault { program, fault } => {
            assert_eq!(program, "add_inputs");
            assert_eq!(fault.addr, values.addr, "{fault}");
        }
        other => panic!("expected a fault, got {other:?}"),
    }
    assert_eq!(
        obj.fault_counts()
            .iter()
            .find(|(n, _)| *n == "add_inputs")
            .unwrap()
            .1,
        1
    );
    // The next call works and the counter saw two increments.
    assert_eq!(add.call(&mut input(4, 5)).unwrap(), 9);
    let counts = Array::<u64>::try_from(&counts).unwrap();
    assert_eq!(counts.get(0).unwrap(), 2);
}

#[test]
fn objects_are_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<LoadedObject>();
    assert_send_sync::<Runtime>();
    let Some(bytes) = bytes_of("objects_are_shared_across_threads", "tail_calls") else {
        return;
    };
    for engine in ENGINES {
        let obj = tail_obj(engine, &bytes);
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let obj = &obj;
                s.spawn(move || {
                    let entry = obj.program("tail_entry").unwrap();
                    for v in 0..200u32 {
                        let (slot, want) = if (v + t) % 2 == 0 {
                            (1, v * 2)
                        } else {
                            (3, v * v)
                        };
                        let got = entry.call(&mut tail_input(slot, v)).unwrap();
                        assert_eq!(got as u32, want, "{engine:?} thread {t}");
                    }
                });
            }
        });
    }
}

#[test]
fn per_program_context_layouts_and_writable_ranges() {
    let Some(bytes) = bytes_of(
        "per_program_context_layouts_and_writable_ranges",
        "embedded",
    ) else {
        return;
    };
    let rt = runtime(Engine::Jit);
    let obj = rt
        .load_with(&bytes, |name| match name {
            "custom" => CtxLayout::read_only(4),
            _ => CtxLayout::read_only(16),
        })
        .unwrap();
    assert_eq!(obj.program("custom").unwrap().ctx_size(), 4);
    assert_eq!(obj.program("add_inputs").unwrap().ctx_size(), 16);
    assert_eq!(obj.program("custom").unwrap().call(&mut [0; 4]).unwrap(), 7);

    // A program writing ctx bytes the host declared read-only is rejected.
    let insns =
        pkbpf::verifier::asm::assemble("r2 = 1\n*(u64 *)(r1 + 8) = r2\nr0 = 0\nexit").unwrap();
    let layout = CtxLayout {
        size: 16,
        writable: vec![0..8, 12..16],
    };
    let err = rt.load_insns("w", &insns, &[], &layout).unwrap_err();
    assert!(
        matches!(err, pkbpf::runtime::RuntimeError::Verify { .. }),
        "{err:?}"
    );
    let insns =
        pkbpf::verifier::asm::assemble("r2 = 1\n*(u64 *)(r1 + 0) = r2\nr0 = 0\nexit").unwrap();
    let obj = rt.load_insns("w", &insns, &[], &layout).unwrap();
    let mut ctx = [0u8; 16];
    obj.program("w").unwrap().call(&mut ctx).unwrap();
    assert_eq!(ctx[0], 1);
}
