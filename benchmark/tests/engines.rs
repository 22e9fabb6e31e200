//! The engine benchmark as a correctness check: every engine that accepts a
//! program must give native's result and leave the same memory.

use pkbpf_bench::embedded::{load_embed_object, time_calls, EMBED_ENGINES};
use pkbpf_bench::engines::{
    drive, programs, run_engines, straight_line_program, Calls, EngineCell, EngineOptions, CHUNKS,
    ENGINES,
};

const MIB: usize = 1 << 20;

/// Results the C programs must produce (computed independently here).
fn expected(name: &str) -> Option<u32> {
    match name {
        "return_const" | "add" => Some(42),
        // pi(10^4).
        "primes_10k" => Some(1229),
        "strcmp_1m_equal" => Some(256),
        "strcmp_1m_differ" => {
            let at = MIB * 3 / 4 + 123;
            Some((b'a' + (at % 26) as u8) as u32 - b'#' as u32)
        }
        _ => None,
    }
}

#[test]
fn every_engine_agrees_with_native() {
    let dir = tempfile::tempdir().unwrap();
    let rep = run_engines(
        dir.path(),
        EngineOptions {
            runs: 1,
            reps: 1,
            only: None,
        },
    )
    .unwrap();
    println!("{}", rep.table());
    assert_eq!(rep.order.len(), programs().len());
    assert!(rep.failures().is_empty(), "{:?}", rep.failures());
    let mut pkbpf_ran = 0;
    for p in &rep.order {
        let row = &rep.cells[p];
        for e in ENGINES {
            assert!(row.contains_key(e), "{p}: no {e} cell");
        }
        let native = match &row["native"] {
            EngineCell::Ok { result, .. } => *result,
            other => panic!("{p}: native did not run: {other:?}"),
        };
        if let Some(want) = expected(p) {
            assert_eq!(native, want, "{p}: native result");
        }
        for e in ENGINES {
            if let EngineCell::Ok { result, .. } = &row[e] {
                assert_eq!(*result, native, "{p} on {e}");
                if e.starts_with("pkbpf") {
                    pkbpf_ran += 1;
                }
            }
        }
        // rbpf has no verifier of substance: it runs everything.
        assert!(
            matches!(row["rbpf-interp"], EngineCell::Ok { .. }),
            "{p}: {:?}",
            row["rbpf-interp"]
        );
    }
    // The comparison must actually have exercised pkbpf's engines.
    assert!(pkbpf_ran >= 2, "pkbpf ran only {pkbpf_ran} cells");
    let s = rep.table();
    assert!(s.contains("geomean"));
}

#[test]
fn drive_combines_chunks() {
    let mut seen = Vec::new();
    let r = drive(Calls::AllChunks(4), |c| {
        seen.push(c);
        Ok(c.unwrap_or(99) * 10)
    })
    .unwrap();
    assert_eq!(r, 60);
    assert_eq!(seen, vec![Some(0), Some(1), Some(2), Some(3)]);
    let r = drive(Calls::UntilNonZero(CHUNKS), |c| {
        Ok(if c == Some(5) { 7 } else { 0 })
    })
    .unwrap();
    assert_eq!(r, 7);
    assert_eq!(drive(Calls::UntilNonZero(3), |_| Ok(0)).unwrap(), 0);
    assert_eq!(
        drive(Calls::Once, |c| Ok(if c.is_none() { 3 } else { 4 })).unwrap(),
        3
    );
}

#[test]
fn straight_line_program_has_1000_instructions() {
    assert_eq!(straight_line_program(1000).unwrap().len(), 1000);
    assert_eq!(straight_line_program(3).unwrap().len(), 3);
}

#[test]
fn embedded_call_returns_the_programs_result() {
    let dir = tempfile::tempdir().unwrap();
    for cfg in EMBED_ENGINES {
        if cfg.mpk && pkbpf_bench::env::mpk_unavailable_reason().is_some() {
            println!(
                "skipped: embedded_call_returns_the_programs_result ({}): no PKU",
                cfg.name
            );
            continue;
        }
        let obj = load_embed_object(dir.path(), &cfg).unwrap();
        // bench_uprobe returns `a == 42` for its first argument, through
        // the embedding API's Program::call on each engine.
        assert_eq!(time_calls(&obj, 10).unwrap().r0, 1, "{}", cfg.name);
    }
}
