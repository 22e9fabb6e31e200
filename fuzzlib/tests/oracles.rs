//! The fuzz oracles as property tests: the same generators and oracles the
//! cargo-fuzz targets use, driven by proptest's random bytes (moderate case
//! counts; `PKBPF_FUZZ_CASES` raises them), plus every conformance program
//! through every program oracle.

use std::path::PathBuf;

use arbitrary::{Arbitrary, Unstructured};
use pkbpf_fuzzlib::gen::{Case, GenProgram, MEM_LEN, REGS_OFF, TAG_STRUCTURED};
use pkbpf_fuzzlib::oracles::{
    isolation, jit_diff, maps_model, object, soundness, verifier, MapOp, MapSel, MapsInput, Verdict,
};
use pkbpf_fuzzlib::seeds::conformance_cases;
use pkbpf_verifier::asm::assemble;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

fn cases(default: u32) -> u32 {
    std::env::var("PKBPF_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bytes(min: usize, max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), min..max)
}

fn structured(data: &[u8]) -> Case {
    Case::structured(&mut Unstructured::new(data))
}

fn conformance_dir() -> PathBuf {
    std::env::var_os("PKBPF_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/bpf_conformance")
        })
}

#[test]
fn structured_programs_are_mostly_accepted_and_sound() {
    // The generator's point: most of what it makes passes the verifier, so
    // the JIT diff and soundness oracles run real code.
    let mut runner = TestRunner::new(Config::with_cases(1));
    let strat = proptest::collection::vec(bytes(64, 768), 300);
    let inputs = strat.new_tree(&mut runner).expect("strategy").current();
    let mut accepted = 0;
    let mut ran_to_exit = 0;
    for data in &inputs {
        match soundness(&structured(data)) {
            Ok(Verdict::Accepted { r0 }) => {
                accepted += 1;
                ran_to_exit += usize::from(r0.is_ok());
            }
            Ok(Verdict::Rejected) => {}
            Err(f) => panic!("{f}"),
        }
    }
    println!(
        "structured: {accepted} of {} verified, {ran_to_exit} ran to exit",
        inputs.len()
    );
    assert!(
        accepted * 2 >= inputs.len(),
        "only {accepted} of {} structured programs verified",
        inputs.len()
    );
    assert!(
        ran_to_exit * 2 >= accepted,
        "{ran_to_exit} of {accepted} ran to exit"
    );
}

#[test]
fn structured_program_copies_registers_into_memory() {
    // An empty body: the epilogue stores the start values, r0 first.
    let mut prog = GenProgram {
        init: [0; 9],
        ops: vec![],
    };
    prog.init[0] = 0x1122_3344_5566_7788;
    prog.init[8] = 9;
    let case = Case {
        insns: prog.lower(),
        mem: vec![0; MEM_LEN],
    };
    assert_eq!(
        soundness(&case).unwrap(),
        Verdict::Accepted {
            r0: Ok(0x1122_3344_5566_7788)
        }
    );
    let mut raw = vec![TAG_STRUCTURED];
    raw.extend_from_slice(&[0; 8]);
    assert!(Case::from_bytes(&raw).is_some());
    assert_eq!(REGS_OFF, 64);
}

#[test]
fn soundness_rejects_out_of_bounds_and_runs_the_rest() {
    let oob = Case {
        insns: assemble("ldxdw %r0, [%r1+60]\nexit").unwrap(),
        mem: vec![0; 64],
    };
    assert_eq!(soundness(&oob).unwrap(), Verdict::Rejected);
    let ok = Case {
        insns: assemble("ldxw %r0, [%r1+60]\nexit").unwrap(),
        mem: [vec![0; 60], vec![1, 2, 3, 4]].concat(),
    };
    assert_eq!(
        soundness(&ok).unwrap(),
        Verdict::Accepted {
            r0: Ok(0x0403_0201)
        }
    );
    assert_eq!(
        jit_diff(&ok).unwrap(),
        Verdict::Accepted {
            r0: Ok(0x0403_0201)
        }
    );
}

#[test]
fn isolation_blocks_stores_through_forged_pointers() {
    // r2..r5 point into B's buffer, B's map values, the region internals
    // and header; the stores must fault, and nothing may change.
    for reg in 2..=5 {
        let case = Case {
            insns: assemble(&format!("stdw [%r{reg}+0], 0x77\nmov %r0, 0\nexit")).unwrap(),
            mem: vec![0; 16],
        };
        isolation(&case.to_raw_bytes()).unwrap_or_else(|f| panic!("{f}"));
    }
    // A forged lddw (top bit set) to each target, then a store.
    for sel in 0u64..4 {
        let imm = (1u64 << 63) | (sel << 8) | 8;
        let case = Case {
            insns: assemble(&format!(
                "lddw %r3, {imm:#x}\nstxdw [%r3+0], %r1\nmov %r0, 1\nexit"
            ))
            .unwrap(),
            mem: vec![0; 16],
        };
        isolation(&case.to_raw_bytes()).unwrap_or_else(|f| panic!("{f}"));
    }
}

#[test]
fn conformance_programs_pass_every_program_oracle() {
    let dir = conformance_dir();
    if !dir.is_dir() {
        println!(
            "skipped: conformance_programs_pass_every_program_oracle: no corpus at {}",
            dir.display()
        );
        return;
    }
    let (cases, _skipped) = conformance_cases(&dir).expect("corpus readable");
    assert!(cases.len() > 300, "{} conformance cases", cases.len());
    let mut accepted = 0;
    for (name, case) in &cases {
        let v = jit_diff(case).unwrap_or_else(|f| panic!("{name}: {f}"));
        accepted += usize::from(v.accepted());
        isolation(&case.to_raw_bytes()).unwrap_or_else(|f| panic!("{name}: isolation: {f}"));
        let mut sel0 = vec![0u8];
        sel0.extend_from_slice(&pkbpf_verifier::isa::encode_program(&case.insns));
        verifier(&sel0).unwrap_or_else(|f| panic!("{name}: verifier: {f}"));
    }
    assert!(
        accepted > 200,
        "only {accepted} conformance programs verified"
    );
}

#[test]
fn maps_model_runs_every_map_type() {
    // A fixed sequence on each type: fill past capacity, read, delete, walk.
    let mut ops = Vec::new();
    for k in 0..24u8 {
        ops.push(MapOp::Update {
            key: k,
            value: k,
            flags: k % 3,
        });
        ops.push(MapOp::Push {
            value: k,
            flags: k % 3,
        });
        ops.push(MapOp::Lookup { key: k / 2 });
    }
    for k in 0..12u8 {
        ops.push(MapOp::Delete { key: k });
        ops.push(MapOp::Pop);
        ops.push(MapOp::Peek);
    }
    ops.push(MapOp::Keys);
    for map in [
        MapSel::Hash,
        MapSel::PerCpuHash,
        MapSel::LruHash,
        MapSel::LruPerCpuHash,
        MapSel::Array,
        MapSel::PerCpuArray,
        MapSel::Queue,
        MapSel::Stack,
    ] {
        let input = MapsInput {
            map,
            key_extra: 3,
            value_size: 11,
            max_entries: 7,
            ops: ops.clone(),
        };
        maps_model(&input).unwrap_or_else(|f| panic!("{f}"));
    }
}

#[test]
fn ringbuf_model_fills_wraps_and_consumes() {
    // Reserve/submit/discard out of order, fill past capacity, consume
    // repeatedly so positions wrap around the 4096-byte ring.
    let mut ops = Vec::new();
    for round in 0..12u8 {
        for i in 0..4u8 {
            ops.push(MapOp::RbReserve {
                len: 100 + u16::from(i) * 97 + u16::from(round),
                byte: i,
            });
            ops.push(MapOp::RbOutput {
                len: 50 + u16::from(round) * 31,
                byte: 0x80 | i,
            });
        }
        ops.push(MapOp::RbCommit {
            which: 2,
            discard: false,
        });
        ops.push(MapOp::RbConsume);
        ops.push(MapOp::RbCommit {
            which: round,
            discard: round % 2 == 0,
        });
        while ops.len() % 3 != 0 {
            ops.push(MapOp::RbCommit {
                which: 0,
                discard: false,
            });
        }
        for _ in 0..4 {
            ops.push(MapOp::RbCommit {
                which: 0,
                discard: false,
            });
        }
        ops.push(MapOp::RbConsume);
    }
    let input = MapsInput {
        map: MapSel::RingBuf,
        key_extra: 0,
        value_size: 0,
        max_entries: 0,
        ops,
    };
    maps_model(&input).unwrap_or_else(|f| panic!("{f}"));
}

proptest! {
    #![proptest_config(Config::with_cases(cases(256)))]

    #[test]
    fn jit_and_interpreter_agree(data in bytes(32, 1024)) {
        if let Err(f) = jit_diff(&structured(&data)) {
            panic!("{f}");
        }
    }

    #[test]
    fn verified_programs_are_sound(data in bytes(1, 1024)) {
        // Both forms: raw programs and structured ones.
        if let Some(case) = Case::from_bytes(&data) {
            if let Err(f) = soundness(&case) {
                panic!("{f}");
            }
        }
    }

    #[test]
    fn verifier_survives_any_bytes(data in bytes(1, 512)) {
        if let Err(f) = verifier(&data) {
            panic!("{f}");
        }
    }

    #[test]
    fn maps_match_their_model(data in bytes(8, 512)) {
        let mut u = Unstructured::new(&data);
        if let Ok(input) = MapsInput::arbitrary(&mut u) {
            if let Err(f) = maps_model(&input) {
                panic!("{f}");
            }
        }
    }

    #[test]
    fn ringbuf_matches_its_model(ops in proptest::collection::vec(bytes(6, 7), 1..200)) {
        let ops: Vec<MapOp> = ops
            .iter()
            .filter_map(|b| MapOp::arbitrary(&mut Unstructured::new(b)).ok())
            .collect();
        let input = MapsInput {
            map: MapSel::RingBuf,
            key_extra: 0,
            value_size: 0,
            max_entries: 0,
            ops,
        };
        if let Err(f) = maps_model(&input) {
            panic!("{f}");
        }
    }

    #[test]
    fn unverified_programs_stay_isolated(data in bytes(1, 1024)) {
        if let Err(f) = isolation(&data) {
            panic!("{f}");
        }
    }

    #[test]
    fn object_parser_survives_corrupted_headers(tail in bytes(0, 512), cut in 0usize..64) {
        // A 64-bit little-endian ELF ident in front, so parsing goes past it.
        let mut data = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
        data.extend_from_slice(&tail);
        data.truncate(data.len().max(cut));
        object(&data);
    }
}
