//! Every program of the object corpus (`tests/bpf/*.bpf.c`, compiled with
//! clang) verifies in the environment its section name implies, except the
//! ones listed with the reason pkbpf rejects them.

mod common;

use pkbpf::object::Object;
use pkbpf::runtime::{CtxLayout, Engine, LoadedObject, Runtime};
use pkbpf::verifier::Verifier;
use pkbpf::verify_env::program_env;

/// (object, program, reason variant): rejected on purpose (none now).
const EXPECTED_REJECTIONS: &[(&str, &str, &str)] = &[];

#[test]
fn object_corpus_programs_verify() {
    let mut failures = Vec::new();
    let mut verified = 0;
    for name in common::ALL {
        let Some(path) = common::compile("object_corpus_programs_verify", name) else {
            return;
        };
        let obj = Object::parse(&common::read(&path)).unwrap_or_else(|e| panic!("{name}: {e}"));
        for p in obj.programs() {
            let env = program_env(&obj, p, 4096).unwrap_or_else(|e| panic!("{e}"));
            let (res, log) = Verifier::new(&env).log_level(1).verify(&p.insns);
            let expected = EXPECTED_REJECTIONS
                .iter()
                .find(|(o, prog, _)| *o == name && *prog == p.name);
            match (res, expected) {
                (Ok(v), None) => {
                    verified += 1;
                    println!("{name}/{}: {} insns processed", p.name, v.stats().processed);
                }
                (Ok(_), Some(_)) => {
                    failures.push(format!("{name}/{}: accepted, listed as rejected", p.name))
                }
                (Err(e), Some((_, _, want))) if format!("{:?}", e.reason).starts_with(want) => {}
                (Err(e), _) => failures.push(format!("{name}/{}: {e}\n{log}", p.name)),
            }
        }
    }
    println!("{verified} programs verified");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Loads `loop_callbacks` on one engine.
fn load_loops(engine: Engine, bytes: &[u8]) -> LoadedObject {
    let rt = Runtime::builder()
        .engine(engine)
        .printk(|_| {})
        .build()
        .unwrap();
    rt.load_with_ctx(bytes, &CtxLayout::writable(24)).unwrap()
}

/// Calls `prog` with `io = {n, arg, out = 0}`; returns r0 and `out`.
fn call_loop(obj: &LoadedObject, prog: &str, n: u64, arg: u64) -> (u64, u64) {
    let mut io = Vec::new();
    for v in [n, arg, 0] {
        io.extend_from_slice(&v.to_ne_bytes());
    }
    let r0 = obj.program(prog).unwrap().call(&mut io).unwrap();
    (r0, u64::from_ne_bytes(io[16..24].try_into().unwrap()))
}

/// The clang-compiled bpf_loop programs verify (callbacks in their own
/// frames) and run with the same results on the JIT and the interpreter,
/// results the kernel helper's semantics give.
#[test]
fn bpf_loop_programs_run_alike_on_both_engines() {
    let Some(path) = common::compile(
        "bpf_loop_programs_run_alike_on_both_engines",
        "loop_callbacks",
    ) else {
        return;
    };
    let bytes = common::read(&path);
    let objs = [Engine::Jit, Engine::Interpreter].map(|e| load_loops(e, &bytes));
    let both = |prog: &str, n: u64, arg: u64| {
        let [j, i] = objs.each_ref().map(|o| call_loop(o, prog, n, arg));
        assert_eq!(j, i, "{prog}({n}, {arg}): JIT vs interpreter");
        (j.0 as i32 as i64 as u64, j.1)
    };
    // The programs return `int`: compare r0's low 32 bits, sign-extended.
    const E2BIG: u64 = -7i64 as u64;
    const EINVAL: u64 = -22i64 as u64;
    for n in [0u64, 1, 7, 100, 1 << 23, (1 << 23) + 1, (1 << 32) + 5] {
        // sum_loop: r0 = iterations, out = sum * 1000003 + sum of squares
        let eff = n & 0xffff_ffff;
        if eff > 1 << 23 {
            assert_eq!(both("sum_loop", n, 0), (E2BIG, 0));
            assert_eq!(both("null_ctx", n, 0).0, E2BIG);
            continue;
        }
        if eff <= 1000 {
            let sum: u64 = (0..eff).sum();
            let sq: u64 = (0..eff).map(|i| i * i).sum();
            assert_eq!(both("sum_loop", n, 0), (eff, sum * 1000003 + sq));
        }
        // null_ctx stops at index 5: six iterations
        assert_eq!(both("null_ctx", n, 0).0, eff.min(6));
        // first_square: first i with i * i >= arg
        for arg in [0u64, 1, 50, 10_000] {
            let first = (0..eff).find(|i| i * i >= arg);
            let (r0, out) = both("first_square", n, arg);
            match first {
                Some(i) => assert_eq!((r0, out), (i + 1, i)),
                None => assert_eq!((r0, out), (eff, u64::MAX)),
            }
        }
    }
    // map_ctx: the map value counts every iteration of every call
    let mut total = [0u64; 2];
    for n in [3u64, 0, 9] {
        for (k, o) in objs.iter().enumerate() {
            let (r0, out) = call_loop(o, "map_ctx", n, 0);
            total[k] += n;
            assert_eq!((r0 as i32 as i64 as u64, out), (n, total[k]));
        }
    }
    // fill_buffer and nested_loops: compare with a model
    for (n, arg) in [(0u64, 1u64), (5, 77), (40, 0xdead_beef)] {
        let mut slots: [u64; 8] = std::array::from_fn(|i| i as u64);
        let mut seed = arg;
        for i in 0..n {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            slots[(i & 7) as usize] ^= seed;
        }
        let acc = slots
            .iter()
            .fold(0u64, |a, &s| a.wrapping_mul(31).wrapping_add(s));
        assert_eq!(both("fill_buffer", n, arg), (0, acc));
        let inner = arg & 15;
        let mut total = 0u64;
        for _ in 0..(n & 15) {
            total += (1..=inner).sum::<u64>();
            total *= 3;
        }
        assert_eq!(both("nested_loops", n, arg), (n & 15, total));
    }
    // flags other than 0 only known at run time
    assert_eq!(both("bad_flags", 5, 1), (EINVAL, 0));
    assert_eq!(both("bad_flags", 5, 0).0, 5);
}
