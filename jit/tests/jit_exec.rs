//! Per-instruction-class tests: every program runs on the interpreter and on
//! the JIT (after verification); both must agree on r0 and memory, and r0
//! must be the value RFC 9669 gives.

mod jit_support;

use jit_support::both;
use pkbpf_verifier::isa::{AluOp, AtomicOp, Insn, JmpCond, MemSize, Reg, Source, Width};

fn r(n: u8) -> Reg {
    Reg::new(n).unwrap()
}

fn lddw(out: &mut Vec<Insn>, n: u8, v: u64) {
    out.push(Insn::LdImm64 { dst: r(n), imm: v });
    out.push(Insn::LdImm64Hi);
}

#[test]
fn division_and_modulo_by_zero() {
    let g = 0xffff_ffff_0000_0007u64;
    // (op, dividend, expected)
    let cases = [
        ("div", g, 0),
        ("div32", g, 0),
        ("sdiv", g, 0),
        ("sdiv32", g, 0),
        ("mod", g, g),
        ("mod32", g, 7),
        ("smod", g, g),
        ("smod32", g, 7),
    ];
    for (op, a, want) in cases {
        // Register divisor 0, and a 32-bit divisor whose low half is 0.
        check!(format!("lddw %r0, {a:#x}\nmov %r2, 0\n{op} %r0, %r2\nexit") => want);
        if op.ends_with("32") {
            check!(format!("lddw %r0, {a:#x}\nlddw %r2, 0x500000000\n{op} %r0, %r2\nexit") => want);
        }
        check!(format!("lddw %r0, {a:#x}\n{op} %r0, 0\nexit") => want);
        // Dividend in rdx (r3), divisor in rax (r0): the registers div uses.
        check!(format!("lddw %r3, {a:#x}\nmov %r0, 0\n{op} %r3, %r0\nmov %r0, %r3\nexit") => want);
    }
}

#[test]
fn signed_min_divided_by_minus_one_wraps() {
    let cases = [
        (
            "sdiv",
            "lddw %r0, 0x8000000000000000",
            0x8000_0000_0000_0000u64,
        ),
        ("smod", "lddw %r0, 0x8000000000000000", 0),
        ("sdiv32", "lddw %r0, 0xdead000080000000", 0x8000_0000),
        ("smod32", "lddw %r0, 0xdead000080000000", 0),
    ];
    for (op, load, want) in cases {
        check!(format!("{load}\nmov %r2, -1\n{op} %r0, %r2\nexit") => want);
        check!(format!("{load}\n{op} %r0, -1\nexit") => want);
        check!(format!("{load}\nmov %r3, %r0\nmov %r0, -1\n{op} %r3, %r0\nmov %r0, %r3\nexit") => want);
    }
    // Ordinary signed results: truncation toward zero, remainder takes the
    // dividend's sign.
    check!("mov %r0, -7\nsdiv %r0, 2\nexit" => -3i64);
    check!("mov %r0, -7\nsmod %r0, 2\nexit" => -1i64);
    check!("mov32 %r0, -7\nsmod32 %r0, -2\nexit" => (-1i32) as u32);
    check!("mov %r0, 7\nmov %r3, -2\nsdiv %r0, %r3\nexit" => -3i64);
    check!("lddw %r0, 0xffffffffffffffff\nmov %r4, 10\ndiv %r0, %r4\nexit" => u64::MAX / 10);
}

#[test]
fn shift_counts_are_masked_to_the_width() {
    let v = 0x8000_0000_0000_0001u64;
    // (op, count, expected)
    let cases = [
        ("lsh", 65, v << 1),
        ("rsh", 65, v >> 1),
        ("arsh", 65, ((v as i64) >> 1) as u64),
        ("lsh32", 33, 2),
        ("rsh32", 33, 0),
        ("arsh32", 33, 0),
        ("lsh", 64, v),
        ("lsh32", 32, 1),
        ("rsh", 63, 1),
        ("arsh", 63, u64::MAX),
        ("arsh32", 31, 0),
    ];
    for (op, n, want) in cases {
        // Count in a register, with the shifted value in and out of rcx (r4).
        for (d, s) in [(0, 2), (4, 2), (0, 4), (4, 4), (2, 0), (3, 4)] {
            let setup = if d == s {
                // Same register: the count is the value itself.
                continue;
            } else {
                format!("lddw %r{d}, {v:#x}\nmov %r{s}, {n}")
            };
            check!(format!("{setup}\n{op} %r{d}, %r{s}\nmov %r0, %r{d}\nexit") => want);
        }
    }
    // Immediate counts (the verifier allows only in-range ones).
    check!(format!("lddw %r0, {v:#x}\nlsh %r0, 15\nexit") => v << 15);
    check!(format!("lddw %r0, {v:#x}\narsh %r0, 15\nexit") => ((v as i64) >> 15) as u64);
    check!(format!("lddw %r0, {v:#x}\nrsh32 %r0, 0\nexit") => 1);
    check!("lddw %r4, 0x300000003\nlsh %r4, %r4\nmov %r0, %r4\nexit" => 0x300000003u64 << 3);
}

#[test]
fn every_jmp32_condition_ignores_the_upper_halves() {
    let values: [u64; 6] = [
        0xdead_beef_0000_0001,
        0x0000_0001_ffff_ffff,
        0xffff_ffff_8000_0000,
        0x1234_5678_7fff_ffff,
        0x0000_0000_0000_0001,
        0xffff_ffff_0000_0000,
    ];
    for cond in JmpCond::ALL {
        for w in [Width::W32, Width::W64] {
            for &a in &values {
                for &b in &values {
                    for imm in [false, true] {
                        // The immediate form sign-extends a 32-bit value.
                        let b = if imm { b as i32 as i64 as u64 } else { b };
                        let mut p = vec![];
                        lddw(&mut p, 2, a);
                        lddw(&mut p, 3, b);
                        p.push(Insn::Alu {
                            width: Width::W64,
                            op: AluOp::Mov,
                            dst: Reg::R0,
                            src: Source::Imm(0),
                        });
                        p.push(Insn::Jmp {
                            width: w,
                            cond,
                            dst: r(2),
                            src: if imm {
                                Source::Imm(b as i32)
                            } else {
                                Source::Reg(r(3))
                            },
                            off: 1,
                        });
                        p.push(Insn::Exit);
                        p.push(Insn::Alu {
                            width: Width::W64,
                            op: AluOp::Mov,
                            dst: Reg::R0,
                            src: Source::Imm(1),
                        });
                        p.push(Insn::Exit);
                        let want = cond.eval(w, a, b) as u64;
                        let got = both(&p, &[]).0.unwrap();
                        assert_eq!(got, want, "{cond:?} {w:?} {a:#x} {b:#x} imm={imm}");
                    }
                }
            }
        }
    }
}

#[test]
fn atomics_return_and_store_what_the_rfc_says() {
    let old = 0x1100_1100_1100_1100u64;
    let opnd = 0x0011_0011_0011_0011u64;
    let ops = [
        (
            "add",
            old.wrapping_add(opnd),
            (old as u32).wrapping_add(opnd as u32),
        ),
        ("or", old | opnd, (old | opnd) as u32),
        ("and", old & opnd, (old & opnd) as u32),
        ("xor", old ^ opnd, (old ^ opnd) as u32),
    ];
    for (op, new64, new32) in ops {
        for fetch in ["", "fetch "] {
            // 64-bit: memory gets new64; with fetch the source gets the old value.
            let src = format!(
                "lddw %r2, {old:#x}\nlddw %r3, {opnd:#x}\nstxdw [%r10-8], %r2\nlock {fetch}{op} [%r10-8], %r3\nldxdw %r0, [%r10-8]\nexit"
            );
            check!(src => new64);
            let src = format!(
                "lddw %r2, {old:#x}\nlddw %r3, {opnd:#x}\nstxdw [%r10-8], %r2\nlock {fetch}{op} [%r10-8], %r3\nmov %r0, %r3\nexit"
            );
            check!(src => if fetch.is_empty() { opnd } else { old });
            // 32-bit: the upper half of memory is untouched; the fetched old
            // value is zero-extended.
            let src = format!(
                "lddw %r2, {old:#x}\nlddw %r3, {opnd:#x}\nstxdw [%r10-8], %r2\nlock {fetch}{op}32 [%r10-8], %r3\nldxdw %r0, [%r10-8]\nexit"
            );
            check!(src => (old & !0xffff_ffff) | new32 as u64);
            let src = format!(
                "lddw %r2, {old:#x}\nlddw %r3, {opnd:#x}\nstxdw [%r10-8], %r2\nlock {fetch}{op}32 [%r10-8], %r3\nmov %r0, %r3\nexit"
            );
            check!(src => if fetch.is_empty() { opnd } else { old & 0xffff_ffff });
            // Fetch with the operand in r0 (rax, which the loop uses).
            let src = format!(
                "lddw %r2, {old:#x}\nlddw %r0, {opnd:#x}\nstxdw [%r10-8], %r2\nlock {fetch}{op} [%r10-8], %r0\nldxdw %r1, [%r10-8]\nxor %r0, %r1\nexit"
            );
            check!(src => if fetch.is_empty() { opnd ^ new64 } else { old ^ new64 });
        }
    }
    // xchg and cmpxchg, both widths.
    check!(format!("lddw %r2, {old:#x}\nstxdw [%r10-8], %r2\nmov %r3, 5\nlock xchg [%r10-8], %r3\nldxdw %r0, [%r10-8]\nadd %r0, %r3\nexit") => old + 5);
    check!(format!("lddw %r2, {old:#x}\nstxdw [%r10-8], %r2\nlddw %r3, 0xffffffff00000005\nlock xchg32 [%r10-8], %r3\nldxdw %r0, [%r10-8]\nsub %r0, %r3\nexit") => ((old & !0xffff_ffff) | 5).wrapping_sub(old & 0xffff_ffff));
    // cmpxchg success: memory gets r3, r0 gets the old value.
    check!(format!("lddw %r2, {old:#x}\nstxdw [%r10-8], %r2\nmov %r0, %r2\nmov %r3, 9\nlock cmpxchg [%r10-8], %r3\nldxdw %r4, [%r10-8]\nlsh %r4, 60\nxor %r0, %r4\nexit") => old ^ (9 << 60));
    // cmpxchg failure: memory unchanged, r0 gets the old value.
    check!(format!("lddw %r2, {old:#x}\nstxdw [%r10-8], %r2\nmov %r0, 1\nmov %r3, 9\nlock cmpxchg [%r10-8], %r3\nldxdw %r4, [%r10-8]\nsub %r4, %r0\nadd %r0, %r4\nexit") => old);
    // 32-bit cmpxchg: r0 compared and returned on 32 bits, zero-extended.
    check!(format!("lddw %r2, {old:#x}\nstxdw [%r10-8], %r2\nlddw %r0, 0xabcd000011001100\nmov %r3, 9\nlock cmpxchg32 [%r10-8], %r3\nldxdw %r4, [%r10-8]\nlsh %r4, 32\nor %r0, %r4\nexit") => (((old & !0xffff_ffff) | 9) << 32) | (old & 0xffff_ffff));
    check!(format!("lddw %r2, {old:#x}\nstxdw [%r10-8], %r2\nlddw %r0, 0xabcd000011001101\nmov %r3, 9\nlock cmpxchg32 [%r10-8], %r3\nexit") => old & 0xffff_ffff);
}

#[test]
fn atomics_on_input_memory() {
    let mem = 0x0102_0304_0506_0708u64.to_le_bytes();
    check!("mov %r2, 0x10\nlock add [%r1+0], %r2\nldxdw %r0, [%r1]\nexit", &mem => 0x0102_0304_0506_0718u64);
    check!("mov %r2, 0x10\nlock fetch xor32 [%r1+4], %r2\nmov %r0, %r2\nexit", &mem => 0x0102_0304u64);
}

#[test]
fn byte_swaps() {
    let v = 0x1122_3344_5566_7788u64;
    let cases = [
        ("be16", 0x8877u64),
        ("be32", 0x8877_6655),
        ("be64", 0x8877_6655_4433_2211),
        ("le16", 0x7788),
        ("le32", 0x5566_7788),
        ("le64", v),
        ("bswap16", 0x8877),
        ("bswap32", 0x8877_6655),
        ("bswap64", 0x8877_6655_4433_2211),
    ];
    for (op, want) in cases {
        for reg in [0, 4, 9] {
            check!(format!("lddw %r{reg}, {v:#x}\n{op} %r{reg}\nmov %r0, %r{reg}\nexit") => want);
        }
    }
}

/// Loads distinct values into r0, r2–r9 (r1 keeps the memory pointer on the
/// stack at fp-8), runs `body`, then writes r0–r9 to memory.
fn sweep_program(values: &[u64; 10], body: &[Insn]) -> Vec<Insn> {
    let mut p = vec![Insn::Store {
        size: MemSize::DW,
        dst: Reg::R10,
        off: -8,
        src: Source::Reg(Reg::R1),
    }];
    for (n, &v) in values.iter().enumerate() {
        lddw(&mut p, n as u8, v);
    }
    p.extend_from_slice(body);
    for n in 0..10u8 {
        p.push(Insn::Store {
            size: MemSize::DW,
            dst: Reg::R10,
            off: -16 - 8 * n as i16,
            src: Source::Reg(r(n)),
        });
    }
    p.push(Insn::Load {
        size: MemSize::DW,
        signed: false,
        dst: r(1),
        src: Reg::R10,
        off: -8,
    });
    for n in 0..10i16 {
        p.push(Insn::Load {
            size: MemSize::DW,
            signed: false,
            dst: r(2),
            src: Reg::R10,
            off: -16 - 8 * n,
        });
        p.push(Insn::Store {
            size: MemSize::DW,
            dst: r(1),
            off: 8 * n,
            src: Source::Reg(r(2)),
        });
    }
    p.push(Insn::Exit);
    p
}

/// Every binary ALU op, both widths, over every (dst, src) pair of r0–r9:
/// catches any register the JIT clobbers behind the program's back (rcx for
/// shifts, rax/rdx for division, scratch registers).
#[test]
fn alu_register_sweep() {
    use AluOp::*;
    let sets: [[u64; 10]; 3] = [
        [
            0x8000_0000_0000_0000,
            0,
            0xffff_ffff_ffff_ffff,
            0x0000_0001_0000_0003,
            0x41,
            0x1234_5678_9abc_def0,
            7,
            0xffff_ffff_8000_0000,
            0x0f05_0f34_cd80_01ef,
            0x7fff_ffff_ffff_fffe,
        ],
        [13, 0, 0, 5, 3, 0, 1 << 40, 0, 2, 0x80],
        [
            u64::MAX,
            0,
            0x8000_0000,
            u64::MAX,
            0xffff_ffff,
            0x1_0000_0000,
            3,
            2,
            63,
            64,
        ],
    ];
    let ops = [
        Add,
        Sub,
        Mul,
        Div,
        SDiv,
        Or,
        And,
        Lsh,
        Rsh,
        Mod,
        SMod,
        Xor,
        Mov,
        Arsh,
        MovSx(8),
        MovSx(16),
        MovSx(32),
    ];
    let mem = vec![0u8; 80];
    for values in &sets {
        for op in ops {
            for width in [Width::W64, Width::W32] {
                if width == Width::W32 && op == MovSx(32) {
                    continue;
                }
                for d in (0..10u8).filter(|&d| d != 1) {
                    for s in (0..10u8).filter(|&s| s != 1) {
                        let body = [Insn::Alu {
                            width,
                            op,
                            dst: r(d),
                            src: Source::Reg(r(s)),
                        }];
                        both(&sweep_program(values, &body), &mem).0.unwrap();
                    }
                }
            }
        }
    }
}

#[test]
fn alu_immediate_sweep() {
    use AluOp::*;
    let values = [
        0x8000_0000_0000_0000,
        0,
        0xffff_ffff_ffff_fff0,
        0x0000_0001_0000_0003,
        0x41,
        0x1234_5678_9abc_def0,
        7,
        0xffff_ffff_8000_0000,
        0x0f05_0f34_cd80_01ef,
        0x7fff_ffff_ffff_fffe,
    ];
    let imms = [
        0,
        1,
        -1,
        7,
        i32::MIN,
        i32::MAX,
        0x050f,
        0x0f01_ef00,
        -0x7f33_0000,
        31,
        63,
    ];
    let ops = [
        Add, Sub, Mul, Div, SDiv, Or, And, Lsh, Rsh, Mod, SMod, Xor, Mov, Arsh,
    ];
    let mem = vec![0u8; 80];
    for op in ops {
        for width in [Width::W64, Width::W32] {
            for d in [0u8, 2, 3, 4, 9] {
                for &i in &imms {
                    let shift = matches!(op, Lsh | Rsh | Arsh);
                    let limit = if width == Width::W64 { 64 } else { 32 };
                    if shift && !(0..limit).contains(&i) {
                        continue;
                    }
                    let body = [Insn::Alu {
                        width,
                        op,
                        dst: r(d),
                        src: Source::Imm(i),
                    }];
                    both(&sweep_program(&values, &body), &mem).0.unwrap();
                }
            }
        }
    }
}

#[test]
fn atomic_register_sweep() {
    let ops = [
        (AtomicOp::Add, false),
        (AtomicOp::Add, true),
        (AtomicOp::Or, true),
        (AtomicOp::And, true),
        (AtomicOp::Xor, true),
        (AtomicOp::Or, false),
        (AtomicOp::Xchg, true),
        (AtomicOp::CmpXchg, true),
    ];
    let values = [
        0x1100_1100_1100_1100,
        0,
        0x0011_0011_0011_0011,
        0xffff_0000_ffff_0000,
        0x1234,
        0x8000_0000_0000_0001,
        0x0f0f,
        0xcd80,
        3,
        0x1100_1100_1100_1100,
    ];
    let mem = vec![0u8; 80];
    for (op, fetch) in ops {
        for size in [MemSize::W, MemSize::DW] {
            for s in (0..10u8).filter(|&s| s != 1) {
                // The slot holds r9's value so that cmpxchg succeeds with r0 = r9.
                let body = [
                    Insn::Store {
                        size: MemSize::DW,
                        dst: Reg::R10,
                        off: -104,
                        src: Source::Reg(r(9)),
                    },
                    Insn::Atomic {
                        size,
                        op,
                        fetch,
                        dst: Reg::R10,
                        src: r(s),
                        off: -104,
                    },
                    Insn::Load {
                        size: MemSize::DW,
                        signed: false,
                        dst: r(8),
                        src: Reg::R10,
                        off: -104,
                    },
                ];
                let mut v = values;
                both(&sweep_program(&v, &body), &mem).0.unwrap();
                v[0] = v[9];
                both(&sweep_program(&v, &body), &mem).0.unwrap();
            }
        }
    }
}

#[test]
fn load_store_register_sweep() {
    let mem: Vec<u8> = (0..80u8).map(|i| i.wrapping_mul(37) ^ 0x80).collect();
    let values = [
        0x8000_0000_0000_0000,
        0,
        0xffff_ffff_ffff_fff0,
        0x0000_0001_0000_0003,
        0x41,
        0x1234_5678_9abc_def0,
        7,
        0xffff_ffff_8000_0000,
        0x0f05_0f34_cd80_01ef,
        0x7fff_ffff_ffff_fffe,
    ];
    for size in [MemSize::B, MemSize::H, MemSize::W, MemSize::DW] {
        for signed in [false, true] {
            if signed && size == MemSize::DW {
                continue;
            }
            for d in (0..10u8).filter(|&d| d != 1) {
                for s in (0..10u8).filter(|&s| s != 1) {
                    let body = [
                        Insn::Store {
                            size,
                            dst: Reg::R10,
                            off: -103,
                            src: Source::Reg(r(s)),
                        },
                        Insn::Store {
                            size: MemSize::W,
                            dst: Reg::R10,
                            off: -112,
                            src: Source::Imm(-0x7ef0_f1f2),
                        },
                        Insn::Load {
                            size,
                            signed,
                            dst: r(d),
                            src: Reg::R10,
                            off: -103,
                        },
                        Insn::Load {
                            size: MemSize::W,
                            signed,
                            dst: r(s),
                            src: Reg::R10,
                            off: -112,
                        },
                    ];
                    both(&sweep_program(&values, &body), &mem).0.unwrap();
                }
            }
        }
    }
}

#[test]
fn bpf_to_bpf_calls_preserve_r6_to_r9_and_nest_eight_deep() {
    // main → f1 → … → f7: eight frames. Every function sets r6–r9 and both
    // ends of its 512-byte stack, calls the next, then checks they survived.
    let mut src = String::from(
        "mov %r6, 6\nmov %r7, 7\nmov %r8, 8\nmov %r9, 9\nstxdw [%r10-8], %r9\ncall local f1\n\
         jne %r6, 6, bad\njne %r7, 7, bad\njne %r8, 8, bad\njne %r9, 9, bad\n\
         ldxdw %r1, [%r10-8]\njne %r1, 9, bad\nexit\nbad:\nmov %r0, -1\nexit\n",
    );
    for f in 1..=7 {
        let (r6, r7, r8, r9) = (f * 10 + 6, f * 10 + 7, f * 10 + 8, f * 10 + 9);
        src.push_str(&format!(
            "f{f}:\nmov %r6, {r6}\nmov %r7, {r7}\nmov %r8, {r8}\nmov %r9, {r9}\n\
             stxdw [%r10-16], %r6\nstxdw [%r10-8], %r9\n"
        ));
        if f < 7 {
            src.push_str(&format!("call local f{}\nadd %r0, {f}\n", f + 1));
        } else {
            src.push_str("mov %r0, 7\n");
        }
        src.push_str(&format!(
            "jne %r6, {r6}, bad{f}\njne %r7, {r7}, bad{f}\njne %r8, {r8}, bad{f}\njne %r9, {r9}, bad{f}\n\
             ldxdw %r1, [%r10-16]\njne %r1, {r6}, bad{f}\nldxdw %r1, [%r10-8]\njne %r1, {r9}, bad{f}\n\
             exit\nbad{f}:\nmov %r0, -1000\nexit\n"
        ));
    }
    check!(src => 28);
}

#[test]
fn unwind_helper_ends_the_program_from_a_nested_call() {
    let src = "mov %r6, 1\ncall local f\nmov %r0, 99\nexit\nf:\ncall local g\nmov %r0, 98\nexit\ng:\nmov %r1, 0\ncall 5\nmov %r0, 97\nexit";
    check!(src => 0);
    // A non-zero argument returns it and goes on.
    check!("mov %r1, 42\ncall 5\nadd %r0, 1\nexit" => 43);
}
