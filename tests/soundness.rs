//! Soundness of the verifier against the checked interpreter: for every
//! program the verifier accepts, running it never reports an access outside
//! its regions, a read of uninitialised stack, or any other fault a verified
//! program cannot have, and it finishes within the instruction budget.
//!
//! Programs come from two sources: a generator biased towards acceptance
//! (straight-line code with forward branches, stack, input-memory and pointer
//! arithmetic), and single-field mutations of the bpf_conformance programs.

use pkbpf_jit::interp::{ExecErrorKind, HelperTable, Interpreter, Memory, Options, RegionKind};
use pkbpf_verifier::asm::assemble;
use pkbpf_verifier::isa::{AluOp, AtomicOp, Insn, JmpCond, MemSize, Reg, Source, Width};
use pkbpf_verifier::{verify, ProgramEnv};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::path::PathBuf;

/// Cases per property (`PKBPF_SOUNDNESS_CASES` overrides, e.g. for long runs).
fn cases(default: u32) -> u32 {
    std::env::var("PKBPF_SOUNDNESS_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn reg(n: u8) -> Reg {
    Reg::new(n).expect("register number below 11")
}

/// Runs an accepted program on `mem` and fails on any fault.
fn run_checked(prog: &[Insn], mem: &[u8]) -> Result<(), String> {
    let mut data = mem.to_vec();
    let len = data.len() as u64;
    let mut memory = Memory::new();
    let addr = if data.is_empty() {
        0
    } else {
        memory.add_slice_mut(&mut data, RegionKind::Input)
    };
    let mut helpers = HelperTable::conformance();
    let opts = Options {
        budget: 4_000_000,
        check_uninit: true,
    };
    match Interpreter::new(prog).with_options(opts).run(
        &mut memory,
        &mut helpers,
        [addr, len, 0, 0, 0],
    ) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.kind, ExecErrorKind::Helper { .. }) => Ok(()),
        Err(e) => Err(format!(
            "{e} (memory violation: {})",
            e.kind.is_memory_violation()
        )),
    }
}

fn size() -> impl Strategy<Value = MemSize> {
    prop_oneof![
        Just(MemSize::B),
        Just(MemSize::H),
        Just(MemSize::W),
        Just(MemSize::DW)
    ]
}

fn alu_op() -> impl Strategy<Value = AluOp> {
    proptest::sample::select(AluOp::PLAIN.to_vec())
}

fn small_imm() -> impl Strategy<Value = i32> {
    prop_oneof![-20i32..40, any::<i32>()]
}

/// A base register with a plausible offset: the input pointer (r1, r4) with
/// small non-negative offsets, the stack (r10, r5) with offsets into the two
/// initialised slots, sometimes anything.
fn base_off() -> impl Strategy<Value = (Reg, i16)> {
    prop_oneof![
        3 => (prop_oneof![Just(reg(1)), Just(reg(4))], -2i16..20),
        3 => (prop_oneof![Just(reg(10)), Just(reg(5))], -18i16..1),
        1 => ((0u8..11).prop_map(reg), -24i16..24),
    ]
}

/// A destination that is not one of the prologue's pointers (mostly).
fn scalar_dst() -> impl Strategy<Value = Reg> + Clone {
    prop_oneof![
        8 => proptest::sample::select(vec![0u8, 3, 6, 7, 8, 9]).prop_map(reg),
        1 => (0u8..11).prop_map(reg),
    ]
}

/// One body instruction; jump offsets are fixed up later.
fn body_insn() -> impl Strategy<Value = Insn> {
    let dst = scalar_dst();
    let src = (0u8..11).prop_map(reg);
    let width = prop_oneof![Just(Width::W64), Just(Width::W32)];
    let source = prop_oneof![
        small_imm().prop_map(Source::Imm),
        src.clone().prop_map(Source::Reg)
    ];
    prop_oneof![
        4 => (width.clone(), alu_op(), dst.clone(), source.clone())
            .prop_map(|(width, op, dst, src)| Insn::Alu { width, op, dst, src }),
        2 => (prop_oneof![Just(4u8), Just(5)], -24i32..24).prop_map(|(d, i)| Insn::Alu {
            width: Width::W64,
            op: AluOp::Add,
            dst: reg(d),
            src: Source::Imm(i),
        }),
        1 => (prop_oneof![Just(4u8), Just(5)], 0u8..10).prop_map(|(d, s)| Insn::Alu {
            width: Width::W64,
            op: AluOp::Add,
            dst: reg(d),
            src: Source::Reg(reg(s)),
        }),
        2 => (dst.clone(), 0i32..16).prop_map(|(d, m)| Insn::Alu {
            width: Width::W64,
            op: AluOp::And,
            dst: d,
            src: Source::Imm(m),
        }),
        5 => (size(), any::<bool>(), dst.clone(), base_off()).prop_map(|(size, signed, dst, (src, off))| Insn::Load {
            size,
            signed: signed && size != MemSize::DW,
            dst,
            src,
            off,
        }),
        4 => (size(), base_off(), source.clone()).prop_map(|(size, (dst, off), src)| Insn::Store { size, dst, off, src }),
        1 => (prop_oneof![Just(MemSize::W), Just(MemSize::DW)], any::<bool>(), base_off(), dst.clone())
            .prop_map(|(size, fetch, (dst, off), src)| Insn::Atomic { size, op: AtomicOp::Add, fetch, dst, src, off }),
        3 => (width, proptest::sample::select(JmpCond::ALL.to_vec()), dst.clone(), source, -3i16..6)
            .prop_map(|(width, cond, dst, src, off)| Insn::Jmp { width, cond, dst, src, off }),
        1 => (dst, any::<bool>()).prop_map(|(dst, w)| Insn::Neg { width: if w { Width::W64 } else { Width::W32 }, dst }),
        1 => Just(Insn::Call(pkbpf_verifier::isa::CallTarget::Helper(5))),
    ]
}

/// Prologue (input pointer copies, stack pointer copy, constants), body, `r0 = 0; exit`.
fn program() -> impl Strategy<Value = (Vec<Insn>, Vec<u8>)> {
    (
        prop::collection::vec(body_insn(), 1..14),
        prop_oneof![
            1 => prop::collection::vec(any::<u8>(), 0..8),
            4 => prop::collection::vec(any::<u8>(), 20..40),
        ],
        prop::collection::vec(-8i32..64, 4),
    )
        .prop_map(|(body, mem, consts)| {
            let mov = |d: u8, src: Source| Insn::Alu {
                width: Width::W64,
                op: AluOp::Mov,
                dst: reg(d),
                src,
            };
            let mut p = vec![
                mov(0, Source::Imm(0)),
                mov(3, Source::Imm(consts[0])),
                mov(4, Source::Reg(reg(1))),
                mov(5, Source::Reg(reg(10))),
                mov(6, Source::Imm(consts[1])),
                mov(7, Source::Imm(consts[2])),
                mov(8, Source::Imm(consts[3])),
                mov(9, Source::Reg(reg(2))),
                Insn::Store {
                    size: MemSize::DW,
                    dst: reg(10),
                    off: -8,
                    src: Source::Imm(0),
                },
                Insn::Store {
                    size: MemSize::DW,
                    dst: reg(10),
                    off: -16,
                    src: Source::Reg(reg(3)),
                },
            ];
            p.extend(body);
            p.push(mov(0, Source::Imm(0)));
            p.push(Insn::Exit);
            let last = p.len() as i64 - 1;
            for (pc, insn) in p.iter_mut().enumerate() {
                if let Insn::Jmp { off, .. } = insn {
                    let t = (pc as i64 + 1 + *off as i64).clamp(0, last);
                    *off = (t - pc as i64 - 1) as i16;
                }
            }
            (p, mem)
        })
}

/// The soundness property over `strategy`'s programs: every one the
/// verifier accepts runs in the checked interpreter without an
/// out-of-region access, an uninitialised read or running out of budget.
/// Also checks that at least `1 / min_share` of the `n` programs were
/// accepted (a generator whose programs are all rejected proves nothing).
fn accepted_programs_run_cleanly(
    what: &str,
    strategy: impl Strategy<Value = (Vec<Insn>, Vec<u8>)>,
    n: u32,
    min_share: u32,
) {
    let mut runner = TestRunner::new(Config {
        cases: n,
        failure_persistence: None,
        ..Config::default()
    });
    let accepted = std::cell::Cell::new(0u32);
    let result = runner.run(&strategy, |(prog, mem)| {
        let env = ProgramEnv::conformance(mem.len() as u32);
        if verify(&prog, &env).is_ok() {
            accepted.set(accepted.get() + 1);
            if let Err(e) = run_checked(&prog, &mem) {
                let text = pkbpf_verifier::disasm::disassemble(&prog);
                return Err(TestCaseError::fail(format!("accepted but {e}\n{text}")));
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let accepted = accepted.get();
    println!("accepted {accepted} of {n} {what} programs");
    assert!(
        accepted >= n / min_share,
        "only {accepted} {what} programs were accepted"
    );
}

#[test]
fn accepted_generated_programs_run_cleanly() {
    accepted_programs_run_cleanly("generated", program(), cases(1000), 10);
}

/// A bounded loop (`r6` counts to `n`) around a random body, followed by a
/// random tail: exercises pruning across iterations and read marks.
fn loop_program() -> impl Strategy<Value = (Vec<Insn>, Vec<u8>)> {
    (
        program(),
        prop::collection::vec(body_insn(), 1..8),
        1i32..12,
    )
        .prop_map(|((mut p, mem), body, n)| {
            // `p` ends with `r0 = 0; exit`: insert the loop before it.
            let tail = p.split_off(p.len() - 2);
            let never_r6 = |i: &Insn| !matches!(i, Insn::Alu { dst, .. } | Insn::Load { dst, .. } | Insn::Neg { dst, .. } if dst.num() == 6);
            let body: Vec<Insn> = body.into_iter().filter(never_r6).collect();
            let start = p.len();
            p.push(Insn::Alu { width: Width::W64, op: AluOp::Mov, dst: reg(6), src: Source::Imm(0) });
            let head = p.len();
            p.extend(body);
            p.push(Insn::Alu { width: Width::W64, op: AluOp::Add, dst: reg(6), src: Source::Imm(1) });
            let back = p.len();
            p.push(Insn::Jmp {
                width: Width::W64,
                cond: JmpCond::Lt,
                dst: reg(6),
                src: Source::Imm(n),
                off: (head as i64 - back as i64 - 1) as i16,
            });
            p.extend(tail);
            let last = p.len() as i64 - 1;
            // Forward jumps inside the body stay inside the loop or leave it forward.
            for (pc, insn) in p.iter_mut().enumerate().skip(start) {
                if pc == back {
                    continue;
                }
                if let Insn::Jmp { off, .. } = insn {
                    let t = (pc as i64 + 1 + *off as i64).clamp(head as i64, last);
                    *off = (t - pc as i64 - 1) as i16;
                }
            }
            (p, mem)
        })
}

#[test]
fn accepted_loop_programs_run_cleanly() {
    accepted_programs_run_cleanly("loop", loop_program(), cases(600), 40);
}

/// `bpf_loop(n, cb, fp-32, 0)` after the generated prologue, then a random
/// tail; the callback (`r1`, `r4` = its context, `r5` = its own stack, `r6`
/// = the index) runs a random body and returns `r6 & 1` or 0: exercises the
/// callback's frame, the caller's stack through the context, and the
/// iteration fixpoint.
fn callback_program() -> impl Strategy<Value = (Vec<Insn>, Vec<u8>)> {
    (
        program(),
        prop::collection::vec(body_insn(), 1..10),
        prop::collection::vec(body_insn(), 0..6),
        0i32..6,
        any::<bool>(),
    )
        .prop_map(|((mut p, mem), cb_body, tail, n, stop)| {
            use pkbpf_verifier::isa::{CallTarget, LdPseudo};
            let mov = |d: u8, src: Source| Insn::Alu {
                width: Width::W64,
                op: AluOp::Mov,
                dst: reg(d),
                src,
            };
            // Keep the prologue only (10 instructions) and `r0 = 0; exit`.
            let end = p.split_off(p.len() - 2);
            p.truncate(10);
            // fp-40 keeps the input pointer across the call; the context
            // is fp-32, the callback reaching fp-34..fp-12 through it.
            for (off, src) in [
                (-40, Source::Reg(reg(4))),
                (-32, Source::Imm(0)),
                (-24, Source::Imm(0)),
            ] {
                p.push(Insn::Store {
                    size: MemSize::DW,
                    dst: reg(10),
                    off,
                    src,
                });
            }
            p.push(mov(1, Source::Imm(n)));
            let func_at = p.len();
            p.push(Insn::LdPseudo {
                dst: reg(2),
                kind: LdPseudo::Func,
                imm: 0,
                next_imm: 0,
            });
            p.push(Insn::LdImm64Hi);
            p.push(mov(3, Source::Reg(reg(10))));
            p.push(Insn::Alu {
                width: Width::W64,
                op: AluOp::Add,
                dst: reg(3),
                src: Source::Imm(-32),
            });
            p.push(mov(4, Source::Imm(0)));
            p.push(Insn::Call(CallTarget::Helper(181)));
            p.push(Insn::Load {
                size: MemSize::DW,
                signed: false,
                dst: reg(4),
                src: reg(10),
                off: -40,
            });
            p.push(mov(5, Source::Reg(reg(10))));
            p.push(mov(1, Source::Reg(reg(4))));
            p.push(mov(2, Source::Imm(0)));
            p.push(mov(3, Source::Imm(0)));
            let tail_start = p.len();
            p.extend(tail);
            p.extend(end);
            let main_end = p.len();
            // the callback
            p.push(mov(6, Source::Reg(reg(1))));
            p.push(mov(1, Source::Reg(reg(2))));
            p.push(mov(4, Source::Reg(reg(2))));
            p.push(mov(5, Source::Reg(reg(10))));
            p.push(mov(0, Source::Imm(0)));
            p.push(mov(3, Source::Imm(3)));
            p.push(mov(7, Source::Imm(5)));
            p.push(mov(8, Source::Imm(0)));
            p.push(mov(9, Source::Imm(8)));
            p.push(Insn::Store {
                size: MemSize::DW,
                dst: reg(10),
                off: -8,
                src: Source::Imm(0),
            });
            p.push(Insn::Store {
                size: MemSize::DW,
                dst: reg(10),
                off: -16,
                src: Source::Imm(7),
            });
            let body_start = p.len();
            p.extend(cb_body);
            if stop {
                p.push(mov(0, Source::Reg(reg(6))));
                p.push(Insn::Alu {
                    width: Width::W64,
                    op: AluOp::And,
                    dst: reg(0),
                    src: Source::Imm(1),
                });
            } else {
                p.push(mov(0, Source::Imm(0)));
            }
            p.push(Insn::Exit);
            let last = p.len() as i64 - 1;
            if let Insn::LdPseudo { imm, .. } = &mut p[func_at] {
                *imm = (main_end as i64 - func_at as i64 - 1) as i32;
            }
            // Jumps stay within their function, forward.
            for (pc, insn) in p.iter_mut().enumerate() {
                let (lo, hi) = if pc < main_end {
                    (
                        if pc >= tail_start { tail_start } else { 0 },
                        main_end as i64 - 1,
                    )
                } else {
                    (body_start, last)
                };
                if let Insn::Jmp { off, .. } = insn {
                    let t = (pc as i64 + 1 + *off as i64).clamp(lo as i64, hi);
                    *off = (t - pc as i64 - 1) as i16;
                }
            }
            (p, mem)
        })
}

#[test]
fn accepted_callback_programs_run_cleanly() {
    accepted_programs_run_cleanly("callback", callback_program(), cases(400), 20);
}

fn corpus() -> Vec<(String, Vec<Insn>, Vec<u8>)> {
    let dir = std::env::var_os("PKBPF_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../shared/corpus/bpf_conformance"
            ))
        });
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.extension().is_none_or(|x| x != "data") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let (mut asm, mut mem, mut section) = (String::new(), Vec::new(), "");
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("-- ") {
                section = name.trim();
                continue;
            }
            match section {
                "asm" => {
                    asm.push_str(line);
                    asm.push('\n');
                }
                "mem" => mem.extend(
                    line.split_whitespace()
                        .filter_map(|t| u8::from_str_radix(t, 16).ok()),
                ),
                _ => {}
            }
        }
        if let Ok(prog) = assemble(&asm) {
            out.push((
                p.file_stem().unwrap().to_string_lossy().into_owned(),
                prog,
                mem,
            ));
        }
    }
    out
}

/// Changes one field of one instruction (never an `lddw` half).
fn mutate(prog: &[Insn], pick: usize, what: u8, v: i32) -> Vec<Insn> {
    let mut p = prog.to_vec();
    let pc = pick % p.len();
    let r = |x: i32| reg((x.unsigned_abs() % 11) as u8);
    p[pc] = match p[pc] {
        Insn::Alu {
            width,
            op,
            dst,
            src,
        } => match what % 3 {
            0 => Insn::Alu {
                width,
                op,
                dst: r(v),
                src,
            },
            1 => Insn::Alu {
                width,
                op,
                dst,
                src: Source::Imm(v),
            },
            _ => Insn::Alu {
                width,
                op,
                dst,
                src: Source::Reg(r(v)),
            },
        },
        Insn::Load {
            size,
            signed,
            dst,
            src,
            off,
        } => match what % 3 {
            0 => Insn::Load {
                size,
                signed,
                dst,
                src: r(v),
                off,
            },
            1 => Insn::Load {
                size,
                signed,
                dst,
                src,
                off: off.wrapping_add((v % 24) as i16),
            },
            _ => Insn::Load {
                size,
                signed,
                dst: r(v),
                src,
                off,
            },
        },
        Insn::Store {
            size,
            dst,
            off,
            src,
        } => match what % 3 {
            0 => Insn::Store {
                size,
                dst: r(v),
                off,
                src,
            },
            1 => Insn::Store {
                size,
                dst,
                off: off.wrapping_add((v % 24) as i16),
                src,
            },
            _ => Insn::Store {
                size,
                dst,
                off,
                src: Source::Reg(r(v)),
            },
        },
        Insn::Jmp {
            width,
            cond,
            dst,
            src,
            off,
        } => match what % 3 {
            0 => Insn::Jmp {
                width,
                cond,
                dst,
                src: Source::Imm(v),
                off,
            },
            1 => Insn::Jmp {
                width,
                cond: JmpCond::ALL[(v.unsigned_abs() % 11) as usize],
                dst,
                src,
                off,
            },
            _ => Insn::Jmp {
                width,
                cond,
                dst: r(v),
                src,
                off,
            },
        },
        Insn::Atomic {
            size,
            op,
            fetch,
            dst,
            src,
            off,
        } => Insn::Atomic {
            size,
            op,
            fetch,
            dst,
            src,
            off: off.wrapping_add((v % 16) as i16),
        },
        other => other,
    };
    p
}

#[test]
fn accepted_mutations_of_conformance_programs_run_cleanly() {
    let corpus = corpus();
    if corpus.is_empty() {
        println!(
            "skipped: accepted_mutations_of_conformance_programs_run_cleanly: corpus not found"
        );
        return;
    }
    let mut runner = TestRunner::new(Config {
        cases: cases(1200),
        failure_persistence: None,
        ..Config::default()
    });
    let accepted = std::cell::Cell::new(0u32);
    let strategy = (
        any::<usize>(),
        any::<usize>(),
        any::<u8>(),
        prop_oneof![-40i32..40, any::<i32>()],
    );
    let result = runner.run(&strategy, |(which, pick, what, v)| {
        let (name, prog, mem) = &corpus[which % corpus.len()];
        let m = mutate(prog, pick, what, v);
        let env = ProgramEnv::conformance(mem.len() as u32);
        if verify(&m, &env).is_ok() {
            accepted.set(accepted.get() + 1);
            if let Err(e) = run_checked(&m, mem) {
                let text = pkbpf_verifier::disasm::disassemble(&m);
                return Err(TestCaseError::fail(format!(
                    "{name} mutated: accepted but {e}\n{text}"
                )));
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let accepted = accepted.get();
    println!("accepted {accepted} of {} mutations", cases(1200));
    assert!(
        accepted >= cases(1200) / 6,
        "only {accepted} mutations were accepted"
    );
}

#[test]
fn every_conformance_program_runs_cleanly_once_verified() {
    for (name, prog, mem) in corpus() {
        let env = ProgramEnv::conformance(mem.len() as u32);
        if verify(&prog, &env).is_ok() {
            if let Err(e) = run_checked(&prog, &mem) {
                panic!("{name}: {e}");
            }
        }
    }
}
