//! Unit tests of the emitter's internals (the behaviour tests live in
//! `jit/tests/jit_*.rs`).

use pkbpf_verifier::asm::assemble;

use std::collections::{BTreeMap, HashMap};
use std::ffi::c_void;

use pkbpf_verifier::isa::{Insn, LdPseudo};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::codegen::Unit;
use super::*;

#[test]
fn every_insn_has_its_own_unit_and_hi_halves_are_empty() {
    let prog = assemble("lddw %r0, 0x1122334455667788\nadd %r0, 1\nexit").unwrap();
    let jit = JitProgram::compile_seeded(&prog, &JitEnv::new(), 1).unwrap();
    assert!(!jit.insn_code(0).is_empty());
    assert!(jit.insn_code(1).is_empty());
    assert!(!jit.insn_code(2).is_empty());
    // SAFETY: straight-line arithmetic, no memory access.
    assert_eq!(unsafe { jit.call(0, 0) }, 0x1122334455667789);
}

#[test]
fn risky_constants_are_blinded_at_first_emission() {
    // 0x050f is SYSCALL's bytes; 0xef01_0f00 contains WRPKRU.
    let prog = assemble(
        "mov %r0, 0x050f\nadd %r0, 0x00ef010f\nlddw %r1, 0xcd80cd80050f0f05\nxor %r0, %r1\nexit",
    )
    .unwrap();
    let jit = JitProgram::compile_seeded(&prog, &JitEnv::new(), 7).unwrap();
    assert_eq!(scan_gadgets(jit.code()), vec![]);
    assert_eq!(jit.attempts(), 1);
    // SAFETY: straight-line arithmetic, no memory access.
    let r0 = unsafe { jit.call(0, 0) };
    assert_eq!(r0, (0x050f_u64 + 0x00ef_010f) ^ 0xcd80cd80050f0f05);
}

#[test]
fn units_overlapping_finds_neighbours() {
    let out = codegen::Output {
        code: vec![0; 10],
        units: vec![(0, Unit::Prologue), (4, Unit::Insn(0)), (6, Unit::Tail)],
        stubs: BTreeMap::new(),
    };
    assert_eq!(out.units_overlapping(5, 2), vec![Unit::Insn(0), Unit::Tail]);
    assert_eq!(out.units_overlapping(0, 2), vec![Unit::Prologue]);
}

#[test]
fn hardening_loop_moves_jump_displacements_off_gadgets() {
    // A conditional jump over `a` 3-byte movs and two 7-byte adds: for some
    // `a` its rel32 is 0x050f, whose bytes `0f 05` are SYSCALL. No constant
    // of the program is risky, so only the re-emit loop can fix it.
    let mut first_hits = 0;
    for a in 400..460 {
        let mut src = format!("jeq %r1, 0, +{}\n", a + 2);
        for _ in 0..a {
            src.push_str("mov %r0, %r3\n");
        }
        src.push_str("add %r0, 1\nadd %r0, 1\nexit");
        let prog = assemble(&src).unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        let first = codegen::emit(
            &prog,
            &JitEnv::new(),
            &HashMap::new(),
            &mut rng,
            0,
            &BTreeMap::new(),
        )
        .unwrap();
        let jit = JitProgram::compile_seeded(&prog, &JitEnv::new(), 3).unwrap();
        assert_eq!(scan_gadgets(jit.code()), vec![], "a = {a}");
        if !scan_gadgets(&first.code).is_empty() {
            first_hits += 1;
            assert!(jit.attempts() > 1);
            // SAFETY: register moves and adds only.
            assert_eq!(unsafe { jit.call(0, 0) }, 0);
            // SAFETY: as above.
            assert_eq!(unsafe { jit.call(1, 0) }, 2);
        }
    }
    assert!(first_hits > 0, "no program of the sweep produced a gadget");
}

#[test]
fn unsupported_instructions_are_typed_errors() {
    let cases = [
        ("ldabsb 5\nexit", 0, "ldabs"),
        ("ldindh %r1, 5\nexit", 0, "ldind"),
    ];
    for (src, pc, what) in cases {
        let prog = assemble(src).unwrap();
        match JitProgram::compile_seeded(&prog, &JitEnv::new(), 0) {
            Err(JitError::Unsupported { pc: p, what: w }) => assert_eq!((p, w), (pc, what)),
            other => panic!("{src}: {other:?}"),
        }
    }
    let kfunc = [
        Insn::Call(pkbpf_verifier::isa::CallTarget::Kfunc(7)),
        Insn::Exit,
    ];
    assert!(matches!(
        JitProgram::compile_seeded(&kfunc, &JitEnv::new(), 0),
        Err(JitError::Unsupported {
            pc: 0,
            what: "kfunc call"
        })
    ));
    let unknown = assemble("call 77\nexit").unwrap();
    assert!(matches!(
        JitProgram::compile_seeded(&unknown, &JitEnv::conformance(), 0),
        Err(JitError::UnknownHelper { pc: 0, id: 77 })
    ));
    assert!(matches!(
        JitProgram::compile_seeded(&[], &JitEnv::new(), 0),
        Err(JitError::Empty)
    ));
    let e = JitProgram::compile_seeded(&unknown, &JitEnv::conformance(), 0).unwrap_err();
    assert_eq!(e.to_string(), "instruction 0: unknown helper 77");
}

fn map_prog(kind: LdPseudo, imm: i32, next_imm: i32) -> Vec<Insn> {
    vec![
        Insn::LdPseudo {
            dst: pkbpf_verifier::isa::Reg::R0,
            kind,
            imm,
            next_imm,
        },
        Insn::LdImm64Hi,
        Insn::Exit,
    ]
}

#[test]
fn map_pseudo_forms_resolve_to_env_addresses() {
    let env = JitEnv::new()
        .with_map(JitMap {
            object: 0x1000,
            value: None,
            array: None,
        })
        .with_map(JitMap {
            object: 0x7f00_0f05_0000,
            value: Some(0x7f00_cd80_0000),
            array: None,
        });
    let run = |p: &[Insn]| {
        let jit = JitProgram::compile_seeded(p, &env, 9).unwrap();
        assert_eq!(scan_gadgets(jit.code()), vec![]);
        // SAFETY: the program only loads a constant and exits.
        unsafe { jit.call(0, 0) }
    };
    assert_eq!(run(&map_prog(LdPseudo::MapIdx, 0, 0)), 0x1000);
    assert_eq!(run(&map_prog(LdPseudo::MapIdx, 1, 0)), 0x7f00_0f05_0000);
    assert_eq!(
        run(&map_prog(LdPseudo::MapIdxValue, 1, 24)),
        0x7f00_cd80_0000 + 24
    );
    assert!(matches!(
        JitProgram::compile_seeded(&map_prog(LdPseudo::MapIdx, 2, 0), &env, 0),
        Err(JitError::MapIndex {
            pc: 0,
            index: 2,
            maps: 2
        })
    ));
    assert!(matches!(
        JitProgram::compile_seeded(&map_prog(LdPseudo::MapIdxValue, 0, 0), &env, 0),
        Err(JitError::NoMapValue { pc: 0, index: 0 })
    ));
    assert!(matches!(
        JitProgram::compile_seeded(&map_prog(LdPseudo::MapFd, 0, 0), &env, 0),
        Err(JitError::Pseudo {
            pc: 0,
            kind: LdPseudo::MapFd,
            ..
        })
    ));
}

extern "C" fn sum_with_env(a: u64, b: u64, c: u64, d: u64, e: u64, env: *mut c_void) -> HelperRet {
    HelperRet {
        value: a + 2 * b + 3 * c + 4 * d + 5 * e + env as u64,
        abort: 0,
    }
}

extern "C" fn abort_with_r1(a: u64, _: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> HelperRet {
    HelperRet { value: 0, abort: a }
}

#[test]
fn helpers_get_five_args_and_the_env_and_can_abort() {
    let env = JitEnv::new()
        .with_helper(1, sum_with_env)
        .with_helper(2, abort_with_r1);
    let prog = assemble(
        "mov %r6, 7\nmov %r1, 1\nmov %r2, 10\nmov %r3, 100\nmov %r4, 1000\nmov %r5, 10000\ncall 1\nadd %r0, %r6\nexit",
    )
    .unwrap();
    let jit = JitProgram::compile_seeded(&prog, &env, 0).unwrap();
    // SAFETY: no memory access; the helper only adds its arguments.
    let r = unsafe { jit.call_with_env(0, 0, 0x5000 as *mut c_void) };
    assert_eq!(r, Ok(1 + 20 + 300 + 4000 + 50000 + 0x5000 + 7));
    assert_eq!(
        jit.helper_stubs().keys().copied().collect::<Vec<_>>(),
        vec![1]
    );

    // An abort from inside a bpf-to-bpf call unwinds every native frame.
    let prog = assemble(
        "mov %r6, 1\ncall local f\nmov %r0, 99\nexit\nf:\nmov %r1, 0x42\ncall 2\nmov %r0, 5\nexit",
    )
    .unwrap();
    let jit = JitProgram::compile_seeded(&prog, &env, 0).unwrap();
    for _ in 0..3 {
        // SAFETY: no memory access; helper 2 aborts.
        let r = unsafe { jit.call_with_env(0, 0, std::ptr::null_mut()) };
        assert_eq!(r, Err(RunError::HelperAbort { code: 0x42 }));
    }
}

extern "C" fn tail_call_if_slot_is_set(
    _ctx: u64,
    _map: u64,
    idx: u64,
    _: u64,
    _: u64,
    _: *mut c_void,
) -> HelperRet {
    // Slot 1 holds program 7; every other slot is empty (-ENOENT).
    if idx == 1 {
        HelperRet {
            value: 7,
            abort: HELPER_TAIL_CALL,
        }
    } else {
        HelperRet {
            value: -2i64 as u64,
            abort: 0,
        }
    }
}

#[test]
fn tail_calls_end_the_program_or_fall_through() {
    let env = JitEnv::new().with_helper(12, tail_call_if_slot_is_set);
    let prog = assemble(
        "mov %r6, %r1
mov %r2, 0
mov %r3, %r6
call 12
add %r0, 100
exit",
    )
    .unwrap();
    let jit = JitProgram::compile_seeded(&prog, &env, 0).unwrap();
    // SAFETY: no memory access; the helper only looks at its arguments.
    unsafe {
        assert_eq!(
            jit.call_with_env(1, 0, std::ptr::null_mut()),
            Err(RunError::TailCall { target: 7 })
        );
        assert_eq!(jit.call_with_env(2, 0, std::ptr::null_mut()), Ok(98));
    }
}

#[test]
fn callx_goes_through_the_stub_table_and_checks_bounds() {
    let env = JitEnv::new()
        .with_helper(1, sum_with_env)
        .with_helper(3, abort_with_r1);
    let prog =
        assemble("mov %r1, 5\nmov %r2, 0\nmov %r3, 0\nmov %r4, 0\nmov %r5, 0\ncall %r0\nexit")
            .unwrap();
    let jit = JitProgram::compile_seeded(&prog, &env, 0).unwrap();
    assert_eq!(scan_gadgets(jit.code()), vec![]);
    // r0 starts at 0, so call an id given through r1 instead.
    let prog = assemble(
        "mov %r6, %r1\nmov %r1, 5\nmov %r2, 0\nmov %r3, 0\nmov %r4, 0\nmov %r5, 0\ncall %r6\nexit",
    )
    .unwrap();
    let jit = JitProgram::compile_seeded(&prog, &env, 0).unwrap();
    // SAFETY: no memory access; ids are checked by the dispatcher.
    unsafe {
        assert_eq!(jit.call_with_env(1, 0, std::ptr::null_mut()), Ok(5));
        assert_eq!(
            jit.call_with_env(3, 0, std::ptr::null_mut()),
            Err(RunError::HelperAbort { code: 5 })
        );
        assert_eq!(
            jit.call_with_env(2, 0, std::ptr::null_mut()),
            Err(RunError::BadCallx)
        );
        assert_eq!(
            jit.call_with_env(4, 0, std::ptr::null_mut()),
            Err(RunError::BadCallx)
        );
        assert_eq!(
            jit.call_with_env(u64::MAX, 0, std::ptr::null_mut()),
            Err(RunError::BadCallx)
        );
    }
}

#[test]
fn dump_shows_each_ebpf_instruction_with_its_machine_code() {
    let prog = assemble("mov %r0, 1\nlddw %r1, 0x100000000\nadd %r0, %r1\nexit").unwrap();
    let jit = JitProgram::compile_seeded(&prog, &JitEnv::new(), 0).unwrap();
    let d = jit.dump(&prog);
    assert!(d.contains("; prologue"), "{d}");
    assert!(d.contains("   0: r0 = 1"), "{d}");
    assert!(d.contains("   3: r0 += r1"), "{d}");
    assert!(d.contains("add rax,rdi"), "{d}");
    assert!(!d.contains("   2:"), "lddw's second half has no code: {d}");
}

#[repr(align(16))]
struct Aligned16(#[allow(dead_code)] [u8; 16]);

extern "C" fn stack_misalignment(
    _: u64,
    _: u64,
    _: u64,
    _: u64,
    _: u64,
    _: *mut c_void,
) -> HelperRet {
    let x = std::hint::black_box(Aligned16([0; 16]));
    let addr = std::hint::black_box(&x as *const Aligned16 as usize);
    HelperRet {
        value: (addr % 16) as u64,
        abort: 0,
    }
}

#[test]
fn helpers_are_called_with_a_16_byte_aligned_stack() {
    let env = JitEnv::new().with_helper(1, stack_misalignment);
    // From the main function and from inside two nested local calls; the
    // misalignments are summed.
    let prog = assemble(
        "call 1\nmov %r6, %r0\ncall local f\nadd %r0, %r6\nexit\nf:\ncall 1\nmov %r6, %r0\ncall local g\nadd %r0, %r6\nexit\ng:\ncall 1\nexit",
    )
    .unwrap();
    let jit = JitProgram::compile_seeded(&prog, &env, 0).unwrap();
    // SAFETY: no memory access; the helper only inspects its own stack.
    assert_eq!(unsafe { jit.call(0, 0) }, 0);
}

/// Counts primes below `n` by trial division (the benchmark's "primes").
const PRIMES_ASM: &str = "mov %r0, 0\nmov %r2, 2\nouter:\nmov %r3, 2\ninner:\nmov %r4, %r3\nmul %r4, %r3\njgt %r4, %r2, prime\nmov %r5, %r2\nmod %r5, %r3\njeq %r5, 0, next\nadd %r3, 1\nja inner\nprime:\nadd %r0, 1\nnext:\nadd %r2, 1\njlt %r2, %r1, outer\nexit";

fn primes_native(n: u64) -> u64 {
    let mut count = 0;
    for k in 2..n {
        let mut d = 2;
        let mut prime = true;
        while d * d <= k {
            if k % d == 0 {
                prime = false;
                break;
            }
            d += 1;
        }
        count += prime as u64;
    }
    count
}

#[test]
fn primes_program_counts_primes() {
    let prog = assemble(PRIMES_ASM).unwrap();
    let jit = JitProgram::compile_seeded(&prog, &JitEnv::new(), 0).unwrap();
    // SAFETY: registers only; terminates for any r1.
    assert_eq!(unsafe { jit.call(100, 0) }, 25);
    assert_eq!(primes_native(100), 25);
}

#[test]
fn raw_entry_reports_aborts_in_the_context() {
    let env = JitEnv::new().with_helper(2, abort_with_r1);
    let prog = assemble("mov %r1, %r2\ncall 2\nexit").unwrap();
    let jit = JitProgram::compile_seeded(&prog, &env, 0).unwrap();
    let mut ctx = RunCtx::new(std::ptr::null_mut());
    // SAFETY: no memory access; helper 2 aborts with code r1 (= our r2).
    let r0 = unsafe { (jit.entry())(0, 0x77, &mut ctx) };
    assert_eq!((r0, ctx.abort), (0, 0x77));
    assert_ne!(ctx.saved_rsp, 0);
}

#[test]
fn leaf_programs_report_falling_off_the_end() {
    // Without and with the eBPF stack (the context slot moves with it).
    for src in [
        "mov %r0, 5\nmov %r6, 1",
        "mov %r0, 5\nmov %r6, 1\nstxdw [%r10-8], %r6\nldxdw %r7, [%r10-8]",
    ] {
        let prog = assemble(src).unwrap();
        let jit = JitProgram::compile_seeded(&prog, &JitEnv::new(), 3).unwrap();
        // SAFETY: stack accesses only, inside the 512-byte frame.
        let r = unsafe { jit.call_with_env(0, 0, std::ptr::null_mut()) };
        assert_eq!(r, Err(RunError::FellOff), "{src}");
    }
}

#[test]
fn leaf_frames_save_only_what_the_program_uses() {
    // The prologue's instructions, one per line.
    let prologue = |src: &str| {
        let prog = assemble(src).unwrap();
        let jit = JitProgram::compile_seeded(&prog, &JitEnv::new(), 3).unwrap();
        let d = jit.dump(&prog);
        let text: Vec<String> = d
            .split("; prologue\n")
            .nth(1)
            .unwrap()
            .lines()
            .take_while(|l| l.starts_with("    "))
            .map(|l| l.split_whitespace().skip(2).collect::<Vec<_>>().join(" "))
            .collect();
        (text, jit)
    };
    // `return 7`: push rdx (the context slot), zero rax, nothing else.
    let (p, jit) = prologue("mov %r0, 7\nexit");
    assert_eq!(p, ["push rdx", "xor eax,eax"]);
    // SAFETY: no memory access.
    assert_eq!(unsafe { jit.call(0, 0) }, 7);
    // r6 and r10 used: rbp and rbx saved, a 512-byte frame.
    let (p, jit) = prologue("mov %r6, 9\nstxdw [%r10-512], %r6\nldxdw %r0, [%r10-512]\nexit");
    assert_eq!(
        p,
        [
            "push rbp",
            "push rbx",
            "push rdx",
            "mov rbp,rsp",
            "sub rsp,200h",
            "xor eax,eax",
            "xor ebx,ebx"
        ]
    );
    // SAFETY: stack accesses inside the frame.
    assert_eq!(unsafe { jit.call(0, 0) }, 9);
    // A program with a helper call keeps the full frame (r12 = run context).
    let env = JitEnv::new().with_helper(2, abort_with_r1);
    let prog = assemble("mov %r1, 0\ncall 2\nexit").unwrap();
    let jit = JitProgram::compile_seeded(&prog, &env, 0).unwrap();
    assert!(jit.dump(&prog).contains("push r12"), "{}", jit.dump(&prog));
}

#[test]
fn loads_and_stores_encode_every_base_register_and_displacement_size() {
    // Every eBPF register as the base (rbp/r13 need a displacement byte even
    // for 0), displacements of no, 8 and 32 bits, every size, register and
    // immediate stores, zero- and sign-extending loads.
    let v: u64 = 0x8182_8384_f5f6_f7f8;
    for base in 0..=9u8 {
        let val = if base == 3 { 4 } else { 3 };
        for off in [0i32, 16, 120, 200, -100] {
            for (sz, bits) in [("b", 8u32), ("h", 16), ("w", 32), ("dw", 64)] {
                let mask = if bits == 64 {
                    u64::MAX
                } else {
                    (1u64 << bits) - 1
                };
                let sext = |x: u64| ((x << (64 - bits)) as i64 >> (64 - bits)) as u64;
                let reg = format!(
                    "mov %r{base}, %r10\nadd %r{base}, -256\nlddw %r{val}, {v:#x}\n\
                     stx{sz} [%r{base}{off:+}], %r{val}\nldx{sz} %r0, [%r{base}{off:+}]\nexit"
                );
                let imm = format!(
                    "mov %r{base}, %r10\nadd %r{base}, -256\n\
                     st{sz} [%r{base}{off:+}], -0x3456789\nldx{sz} %r0, [%r{base}{off:+}]\nexit"
                );
                let imm_v = (-0x3456789i64) as u64;
                let mut cases = vec![(reg, v & mask), (imm, imm_v & mask)];
                if bits < 64 {
                    cases.push((
                        format!(
                            "mov %r{base}, %r10\nadd %r{base}, -256\nlddw %r{val}, {v:#x}\n\
                             stx{sz} [%r{base}{off:+}], %r{val}\nldxs{sz} %r0, [%r{base}{off:+}]\nexit"
                        ),
                        sext(v & mask),
                    ));
                }
                for (src, want) in cases {
                    let prog = assemble(&src).unwrap_or_else(|e| panic!("{src}: {e:?}"));
                    let jit = JitProgram::compile_seeded(&prog, &JitEnv::new(), 5).unwrap();
                    // SAFETY: the accesses are inside the 512-byte stack.
                    let got = unsafe { jit.call(0, 0) };
                    assert_eq!(got, want, "{src}\n{}", jit.dump(&prog));
                }
            }
        }
    }
}

#[test]
fn fused_branch_pairs_take_the_inverted_jump() {
    use pkbpf_verifier::isa::{JmpCond, Width};
    let conds = [
        ("jeq", JmpCond::Eq),
        ("jne", JmpCond::Ne),
        ("jgt", JmpCond::Gt),
        ("jge", JmpCond::Ge),
        ("jlt", JmpCond::Lt),
        ("jle", JmpCond::Le),
        ("jsgt", JmpCond::Sgt),
        ("jsge", JmpCond::Sge),
        ("jslt", JmpCond::Slt),
        ("jsle", JmpCond::Sle),
        ("jset", JmpCond::Set),
    ];
    let vals: [u64; 6] = [0, 1, 5, 0xffff_ffff, 0x1_0000_0005, u64::MAX];
    for (m, cond) in conds {
        for (sfx, width) in [("", Width::W64), ("32", Width::W32)] {
            for &a in &vals {
                for &b in &vals {
                    // `if cond goto +1; goto +1; r0 = 1; exit`: r0 = cond(a, b).
                    let src = format!(
                        "mov %r0, 0\nlddw %r1, {a:#x}\nlddw %r2, {b:#x}\n\
                         {m}{sfx} %r1, %r2, +1\nja +1\nmov %r0, 1\nexit"
                    );
                    let prog = assemble(&src).unwrap();
                    let jit = JitProgram::compile_seeded(&prog, &JitEnv::new(), 2).unwrap();
                    let jcc = prog.len() - 4;
                    assert!(
                        jit.insn_code(jcc + 1).is_empty(),
                        "not fused:\n{}",
                        jit.dump(&prog)
                    );
                    let (ta, tb) = match width {
                        Width::W64 => (a, b),
                        Width::W32 => (a as u32 as u64, b as u32 as u64),
                    };
                    let want = u64::from(cond.eval(width, ta, tb));
                    // SAFETY: no memory access.
                    let got = unsafe { jit.call(0, 0) };
                    assert_eq!(got, want, "{src}\n{}", jit.dump(&prog));
                }
            }
        }
    }
}

#[test]
fn mov_add_pairs_become_lea_unless_the_add_is_a_jump_target() {
    let run = |src: &str| {
        let prog = assemble(src).unwrap();
        let jit = JitProgram::compile_seeded(&prog, &JitEnv::new(), 2).unwrap();
        // SAFETY: no memory access.
        (unsafe { jit.call(0, 0) }, jit, prog)
    };
    // Register and immediate forms, including rbp/r13-mapped sources.
    let (r, jit, prog) = run("mov %r7, 40\nmov %r3, 2\nmov %r0, %r7\nadd %r0, %r3\nexit");
    assert_eq!(r, 42);
    assert!(jit.insn_code(3).is_empty() && jit.dump(&prog).contains("lea"));
    let (r, ..) = run("mov %r6, 40\nmov %r0, %r6\nadd %r0, -50\nexit");
    assert_eq!(r, (-10i64) as u64);
    let (r, ..) = run("mov %r1, %r10\nadd %r1, -8\nmov %r0, %r10\nsub %r0, %r1\nexit");
    assert_eq!(r, 8);
    // `r0 = r1; r0 += r0` doubles r1.
    let (r, ..) = run("mov %r1, 21\nmov %r0, %r1\nadd %r0, %r0\nexit");
    assert_eq!(r, 42);
    // The add is a jump target: not fused, both paths right.
    let src = "mov %r0, 1\nmov %r1, 10\njeq %r0, 1, +1\nmov %r0, %r1\nadd %r0, 5\nexit";
    let (r, jit, _) = run(src);
    assert_eq!(r, 6);
    assert!(!jit.insn_code(4).is_empty());
}

#[test]
fn compares_with_zero_reuse_the_flags_of_the_alu_op_before_them() {
    use pkbpf_verifier::isa::{AluOp, JmpCond, Width};
    // `r0 = 0; r1 = a; r1 <op>= b; if r1 <cond> 0 goto +1; r0 = 1; exit`:
    // r0 = !(cond(a op b, 0)), for every op that sets ZF, both widths of
    // the op and of the jump (a 64-bit op followed by a 32-bit test must
    // not reuse the 64-bit ZF).
    let vals: [u64; 5] = [0, 1, 0xffff_ffff, 0x1_0000_0000, u64::MAX];
    let ops = [
        ("add", AluOp::Add),
        ("sub", AluOp::Sub),
        ("and", AluOp::And),
        ("or", AluOp::Or),
        ("xor", AluOp::Xor),
    ];
    let mut reused = 0;
    for (m, op) in ops {
        for (osfx, ow) in [("", Width::W64), ("32", Width::W32)] {
            for (jsfx, jw) in [("", Width::W64), ("32", Width::W32)] {
                for (j, cond) in [("jeq", JmpCond::Eq), ("jne", JmpCond::Ne)] {
                    for &a in &vals {
                        for &b in &vals {
                            let src = format!(
                                "mov %r0, 0\nlddw %r1, {a:#x}\nlddw %r2, {b:#x}\n\
                                 {m}{osfx} %r1, %r2\n{j}{jsfx} %r1, 0, +1\nmov %r0, 1\nexit"
                            );
                            let prog = assemble(&src).unwrap();
                            let jit = JitProgram::compile_seeded(&prog, &JitEnv::new(), 4).unwrap();
                            let v = op.eval(ow, a, b);
                            let tv = match jw {
                                Width::W64 => v,
                                Width::W32 => v as u32 as u64,
                            };
                            let want = u64::from(!cond.eval(jw, tv, 0));
                            // SAFETY: no memory access.
                            let got = unsafe { jit.call(0, 0) };
                            assert_eq!(got, want, "{src}\n{}", jit.dump(&prog));
                            let jcc = prog.len() - 3;
                            let dump = codegen_text(&jit, jcc);
                            let tested = dump.iter().any(|l| l.starts_with("test"));
                            if jw == Width::W32 && ow == Width::W64 {
                                assert!(tested, "64-bit ZF reused for a 32-bit test:\n{src}");
                            }
                            if !tested {
                                reused += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(reused > 0, "the flags were never reused");
}

/// The disassembled instructions of slot `pc`.
fn codegen_text(jit: &JitProgram, pc: usize) -> Vec<String> {
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
    let mut f = IntelFormatter::new();
    Decoder::with_ip(64, jit.insn_code(pc), 0, DecoderOptions::NONE)
        .into_iter()
        .map(|i| {
            let mut s = String::new();
            f.format(&i, &mut s);
            s
        })
        .collect()
}

#[test]
fn an_add_before_an_access_folds_into_its_displacement_only_when_dead() {
    let mut buf = [0u8; 64];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = i as u8;
    }
    let run = |src: &str, buf: &mut [u8; 64]| {
        let prog = assemble(src).unwrap();
        let jit = JitProgram::compile_seeded(&prog, &JitEnv::new(), 5).unwrap();
        // SAFETY: the programs access only buf[0..64] through r1.
        let r0 = unsafe { jit.call(buf.as_mut_ptr() as u64, 64) };
        (r0, jit)
    };
    // (`mov %r0, 0` keeps each add from fusing with the mov before it.)
    // Load through the added register, which the load overwrites: folded.
    let (r0, jit) = run(
        "mov %r2, %r1\nmov %r0, 0\nadd %r2, 16\nldxb %r2, [%r2+3]\nmov %r0, %r2\nexit",
        &mut buf,
    );
    assert_eq!(r0, 19);
    // The pair is emitted as one access in the add's slot.
    assert!(jit.insn_code(3).is_empty(), "add not folded");
    // Store through it, register dead afterwards: folded.
    let (r0, jit) = run(
        "mov %r2, %r1\nmov %r0, 0\nadd %r2, 32\nstxb [%r2+1], %r1\nldxb %r0, [%r1+33]\nexit",
        &mut buf,
    );
    assert_eq!(r0, buf.as_ptr() as u64 & 0xff);
    // The pair is emitted as one access in the add's slot.
    assert!(jit.insn_code(3).is_empty(), "add not folded");
    // The register is read after the access: the add stays.
    let (r0, jit) = run(
        "mov %r2, %r1\nmov %r0, 0\nadd %r2, 8\nldxb %r3, [%r2+0]\n\
         sub %r2, %r1\nadd %r2, %r3\nmov %r0, %r2\nexit",
        &mut buf,
    );
    assert_eq!(r0, 8 + 8);
    assert!(!jit.insn_code(3).is_empty(), "a live add was dropped");
    // Live around a loop back edge: the add stays and the sum is right.
    let (r0, jit) = run(
        "mov %r0, 0\nmov %r2, %r1\nmov %r4, 0\n\
         add %r2, 1\nldxb %r3, [%r2+0]\nadd %r0, %r3\nadd %r4, 1\njne %r4, 4, -5\nexit",
        &mut buf,
    );
    assert_eq!(r0, 1 + 2 + 3 + 4);
    assert!(
        !jit.insn_code(4).is_empty(),
        "a loop-carried add was dropped"
    );
}

#[test]
fn zero_extension_shift_pairs_become_32_bit_moves() {
    let vals: [u64; 4] = [0, 0x1234_5678, 0xffff_ffff_8000_0001, u64::MAX];
    for &v in &vals {
        // Pair: `r0 <<= 32; r0 >>= 32`.
        let src = format!("lddw %r0, {v:#x}\nlsh %r0, 32\nrsh %r0, 32\nexit");
        let prog = assemble(&src).unwrap();
        let jit = JitProgram::compile_seeded(&prog, &JitEnv::new(), 6).unwrap();
        // SAFETY: no memory access.
        assert_eq!(unsafe { jit.call(0, 0) }, v & 0xffff_ffff, "{src}");
        assert!(
            jit.insn_code(3).is_empty(),
            "not fused:\n{}",
            jit.dump(&prog)
        );
        // Triple: `r0 = r3; r0 <<= 32; r0 >>= 32`, r3 unchanged.
        let src =
            format!("lddw %r3, {v:#x}\nmov %r0, %r3\nlsh %r0, 32\nrsh %r0, 32\nxor %r0, %r3\nexit");
        let prog = assemble(&src).unwrap();
        let jit = JitProgram::compile_seeded(&prog, &JitEnv::new(), 6).unwrap();
        // SAFETY: no memory access.
        let got = unsafe { jit.call(0, 0) };
        assert_eq!(got, (v & 0xffff_ffff) ^ v, "{src}");
        assert!(jit.insn_code(3).is_empty() && jit.insn_code(4).is_empty());
    }
    // The shift right is a jump target: not fused, both paths right.
    let src = "mov %r0, -1\nmov %r1, 0\njeq %r1, 0, +1\nlsh %r0, 32\nrsh %r0, 32\nexit";
    let prog = assemble(src).unwrap();
    let jit = JitProgram::compile_seeded(&prog, &JitEnv::new(), 6).unwrap();
    // SAFETY: no memory access.
    assert_eq!(unsafe { jit.call(0, 0) }, 0xffff_ffff);
    assert!(!jit.insn_code(4).is_empty());
}

#[test]
fn constants_loaded_for_a_compare_fold_into_it_when_dead() {
    use pkbpf_verifier::isa::{JmpCond, Width};
    let conds = [
        ("jeq", JmpCond::Eq),
        ("jne", JmpCond::Ne),
        ("jgt", JmpCond::Gt),
        ("jge", JmpCond::Ge),
        ("jlt", JmpCond::Lt),
        ("jle", JmpCond::Le),
        ("jsgt", JmpCond::Sgt),
        ("jsge", JmpCond::Sge),
        ("jslt", JmpCond::Slt),
        ("jsle", JmpCond::Sle),
        ("jset", JmpCond::Set),
    ];
    let vals: [u64; 5] = [0, 5, 0x8000_0000, 0xffff_ffff_ffff_fffb, u64::MAX];
    let ks: [i32; 4] = [0, 5, -5, i32::MIN];
    let mut folded = 0;
    for (m, cond) in conds {
        for (jsfx, jw) in [("", Width::W64), ("32", Width::W32)] {
            for (msfx, mw) in [("", Width::W64), ("32", Width::W32)] {
                for &v in &vals {
                    for &k in &ks {
                        for left in [false, true] {
                            // r2 = k (dead after the jump) compared with r1 = v,
                            // on either side; r0 = 1 when the jump is taken.
                            let cmp = if left {
                                format!("{m}{jsfx} %r2, %r1, +2")
                            } else {
                                format!("{m}{jsfx} %r1, %r2, +2")
                            };
                            let src = format!(
                                "lddw %r1, {v:#x}\nmov{msfx} %r2, {k}\n{cmp}\n\
                                 mov %r0, 0\nexit\nmov %r0, 1\nexit"
                            );
                            let prog = assemble(&src).unwrap();
                            let jit = JitProgram::compile_seeded(&prog, &JitEnv::new(), 8).unwrap();
                            let kv = match mw {
                                Width::W64 => k as i64 as u64,
                                Width::W32 => k as u32 as u64,
                            };
                            let (a, b) = if left { (kv, v) } else { (v, kv) };
                            let (a, b) = match jw {
                                Width::W64 => (a, b),
                                Width::W32 => (a as u32 as u64, b as u32 as u64),
                            };
                            let want = u64::from(cond.eval(jw, a, b));
                            // SAFETY: no memory access.
                            let got = unsafe { jit.call(0, 0) };
                            assert_eq!(got, want, "{src}\n{}", jit.dump(&prog));
                            if jit.insn_code(3).is_empty() {
                                folded += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(folded > 0, "never folded");
    // The constant's register is read after the jump: it keeps its value.
    let src = "mov %r1, 7\nmov %r2, 9\njgt %r2, %r1, +1\nmov %r2, 0\nmov %r0, %r2\nexit";
    let prog = assemble(src).unwrap();
    let jit = JitProgram::compile_seeded(&prog, &JitEnv::new(), 8).unwrap();
    // SAFETY: no memory access.
    assert_eq!(unsafe { jit.call(0, 0) }, 9);
}
