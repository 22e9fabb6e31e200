//! Interpreter semantics per instruction class: ALU, byte order, jumps.

mod interp_common;

use interp_common::*;
use pkbpf_verifier::isa::{AluOp, ByteOrder, Insn, JmpCond, Source, Width};

fn prog(body: &[Insn]) -> Vec<Insn> {
    let mut p = body.to_vec();
    p.push(Insn::Exit);
    p
}

fn with_r0(v: u64, body: &[Insn]) -> u64 {
    let mut p = lddw(0, v).to_vec();
    p.extend_from_slice(body);
    p.push(Insn::Exit);
    r0(&p)
}

#[test]
fn alu32_results_zero_extend() {
    // mov32 of -1 leaves the upper half clear.
    assert_eq!(r0(&prog(&[alu32(AluOp::Mov, 0, -1)])), 0xffff_ffff);
    // add32 wraps in 32 bits and clears the upper half.
    assert_eq!(
        with_r0(0xdead_beef_ffff_ffff, &[alu32(AluOp::Add, 0, 2)]),
        1
    );
    // neg32 of 1.
    assert_eq!(
        with_r0(
            0x1234_0000_0000_0001,
            &[Insn::Neg {
                width: Width::W32,
                dst: r(0)
            }]
        ),
        0xffff_ffff
    );
    assert_eq!(
        with_r0(
            1,
            &[Insn::Neg {
                width: Width::W64,
                dst: r(0)
            }]
        ),
        u64::MAX
    );
}

#[test]
fn alu64_immediates_sign_extend() {
    assert_eq!(r0(&prog(&[mov64(0, -1)])), u64::MAX);
    assert_eq!(with_r0(10, &[alu64(AluOp::Sub, 0, -5)]), 15);
    assert_eq!(with_r0(7, &[alu64(AluOp::Mul, 0, -1)]), (-7i64) as u64);
    // unsigned 64-bit division by a sign-extended immediate.
    assert_eq!(with_r0(u64::MAX, &[alu64(AluOp::Div, 0, -1)]), 1);
}

#[test]
fn division_and_modulo_by_zero() {
    assert_eq!(with_r0(42, &[alu64(AluOp::Div, 0, 0)]), 0);
    assert_eq!(with_r0(42, &[alu32(AluOp::Div, 0, 0)]), 0);
    assert_eq!(with_r0(42, &[alu64(AluOp::SDiv, 0, 0)]), 0);
    assert_eq!(with_r0(42, &[alu32(AluOp::SDiv, 0, 0)]), 0);
    // mod by zero leaves dst unchanged ...
    assert_eq!(
        with_r0(0xdead_beef_0000_002a, &[alu64(AluOp::Mod, 0, 0)]),
        0xdead_beef_0000_002a
    );
    assert_eq!(
        with_r0(u64::MAX - 3, &[alu64(AluOp::SMod, 0, 0)]),
        u64::MAX - 3
    );
    // ... but the 32-bit form zero-extends it.
    assert_eq!(
        with_r0(0xdead_beef_0000_002a, &[alu32(AluOp::Mod, 0, 0)]),
        0x2a
    );
    assert_eq!(
        with_r0(0xdead_beef_8000_0000, &[alu32(AluOp::SMod, 0, 0)]),
        0x8000_0000
    );
    // register divisor of zero too.
    assert_eq!(with_r0(9, &[mov64(1, 0), alu64r(AluOp::Div, 0, 1)]), 0);
    assert_eq!(with_r0(9, &[mov64(1, 0), alu64r(AluOp::Mod, 0, 1)]), 9);
}

#[test]
fn signed_division_overflow_and_signs() {
    assert_eq!(
        with_r0(i64::MIN as u64, &[alu64(AluOp::SDiv, 0, -1)]),
        i64::MIN as u64
    );
    assert_eq!(with_r0(i64::MIN as u64, &[alu64(AluOp::SMod, 0, -1)]), 0);
    assert_eq!(
        with_r0(0x8000_0000, &[alu32(AluOp::SDiv, 0, -1)]),
        0x8000_0000
    );
    assert_eq!(with_r0(0x8000_0000, &[alu32(AluOp::SMod, 0, -1)]), 0);
    // truncating division; the remainder has the dividend's sign.
    assert_eq!(
        with_r0((-7i64) as u64, &[alu64(AluOp::SDiv, 0, 2)]),
        (-3i64) as u64
    );
    assert_eq!(
        with_r0((-7i64) as u64, &[alu64(AluOp::SMod, 0, 2)]),
        (-1i64) as u64
    );
    assert_eq!(with_r0(7, &[alu64(AluOp::SMod, 0, -2)]), 1);
    assert_eq!(
        with_r0((-7i32) as u32 as u64, &[alu32(AluOp::SMod, 0, 2)]),
        0xffff_ffff
    );
    // unsigned division treats the sign bit as magnitude.
    assert_eq!(
        with_r0((-8i64) as u64, &[alu64(AluOp::Div, 0, 2)]),
        u64::MAX / 2 - 3
    );
}

#[test]
fn shifts_mask_the_count() {
    assert_eq!(with_r0(1, &[alu64(AluOp::Lsh, 0, 65)]), 2);
    assert_eq!(with_r0(1, &[alu32(AluOp::Lsh, 0, 33)]), 2);
    assert_eq!(with_r0(1 << 63, &[alu64(AluOp::Rsh, 0, 127)]), 1);
    assert_eq!(with_r0(1 << 63, &[alu64(AluOp::Arsh, 0, 63)]), u64::MAX);
    assert_eq!(
        with_r0(0x8000_0000, &[alu32(AluOp::Arsh, 0, 31)]),
        0xffff_ffff
    );
    assert_eq!(
        with_r0(0xffff_ffff_8000_0000, &[alu32(AluOp::Rsh, 0, 4)]),
        0x0800_0000
    );
    assert_eq!(with_r0(3, &[mov64(1, 64 + 1), alu64r(AluOp::Lsh, 0, 1)]), 6);
}

#[test]
fn bitwise_ops() {
    assert_eq!(with_r0(0b1100, &[alu64(AluOp::And, 0, 0b1010)]), 0b1000);
    assert_eq!(with_r0(0b1100, &[alu64(AluOp::Or, 0, 0b1010)]), 0b1110);
    assert_eq!(with_r0(0b1100, &[alu64(AluOp::Xor, 0, 0b1010)]), 0b0110);
    assert_eq!(with_r0(1 << 40, &[alu32(AluOp::Or, 0, 1)]), 1);
}

#[test]
fn movsx_sign_extends() {
    let v = 0x1234_5678_9abc_def0u64;
    let movsx64 = |bits| Insn::Alu {
        width: Width::W64,
        op: AluOp::MovSx(bits),
        dst: r(0),
        src: Source::Reg(r(1)),
    };
    let movsx32 = |bits| Insn::Alu {
        width: Width::W32,
        op: AluOp::MovSx(bits),
        dst: r(0),
        src: Source::Reg(r(1)),
    };
    let run1 = |i: Insn| {
        let mut p = lddw(1, v).to_vec();
        p.push(i);
        p.push(Insn::Exit);
        r0(&p)
    };
    assert_eq!(run1(movsx64(8)), 0xffff_ffff_ffff_fff0);
    assert_eq!(run1(movsx64(16)), 0xffff_ffff_ffff_def0);
    assert_eq!(run1(movsx64(32)), 0xffff_ffff_9abc_def0);
    assert_eq!(run1(movsx32(8)), 0xffff_fff0);
    assert_eq!(run1(movsx32(16)), 0xffff_def0);
}

#[test]
fn byte_order() {
    let v = 0x1122_3344_5566_7788u64;
    let e = |order, bits| Insn::Endian {
        order,
        bits,
        dst: r(0),
    };
    assert_eq!(with_r0(v, &[e(ByteOrder::ToLe, 16)]), 0x7788);
    assert_eq!(with_r0(v, &[e(ByteOrder::ToLe, 32)]), 0x5566_7788);
    assert_eq!(with_r0(v, &[e(ByteOrder::ToLe, 64)]), v);
    assert_eq!(with_r0(v, &[e(ByteOrder::ToBe, 16)]), 0x8877);
    assert_eq!(with_r0(v, &[e(ByteOrder::ToBe, 32)]), 0x8877_6655);
    assert_eq!(with_r0(v, &[e(ByteOrder::ToBe, 64)]), 0x8877_6655_4433_2211);
    assert_eq!(with_r0(v, &[e(ByteOrder::Swap, 16)]), 0x8877);
    assert_eq!(with_r0(v, &[e(ByteOrder::Swap, 64)]), 0x8877_6655_4433_2211);
}

#[test]
fn conditional_jumps_64_and_32() {
    // r0 = 1 if cond(r1, src) else 0
    let check = |width, cond, a: u64, src: Source, b: Option<u64>| {
        let mut p = lddw(1, a).to_vec();
        if let Some(b) = b {
            p.extend(lddw(2, b));
        }
        p.extend([
            mov64(0, 0),
            jmp(width, cond, 1, src, 1),
            Insn::Exit,
            mov64(0, 1),
            Insn::Exit,
        ]);
        r0(&p) == 1
    };
    let reg2 = Source::Reg(r(2));
    let w64 = Width::W64;
    let w32 = Width::W32;
    assert!(check(w64, JmpCond::Eq, 5, Source::Imm(5), None));
    assert!(!check(w64, JmpCond::Ne, 5, Source::Imm(5), None));
    assert!(check(w64, JmpCond::Gt, u64::MAX, Source::Imm(1), None));
    assert!(!check(w64, JmpCond::Sgt, u64::MAX, Source::Imm(1), None));
    assert!(check(w64, JmpCond::Slt, u64::MAX, Source::Imm(0), None));
    // the immediate is sign-extended: -1 == u64::MAX
    assert!(check(w64, JmpCond::Eq, u64::MAX, Source::Imm(-1), None));
    assert!(check(w64, JmpCond::Set, 0b100, reg2, Some(0b110)));
    assert!(!check(w64, JmpCond::Set, 0b001, reg2, Some(0b110)));
    assert!(check(w64, JmpCond::Ge, 3, reg2, Some(3)));
    assert!(check(w64, JmpCond::Le, 3, reg2, Some(3)));
    assert!(!check(w64, JmpCond::Lt, 3, reg2, Some(3)));
    assert!(check(w64, JmpCond::Sle, (-3i64) as u64, reg2, Some(3)));
    assert!(check(w64, JmpCond::Sge, 3, reg2, Some((-3i64) as u64)));
    // 32-bit compares ignore the upper half.
    assert!(check(
        w32,
        JmpCond::Eq,
        0xffff_0000_0000_0005,
        Source::Imm(5),
        None
    ));
    assert!(!check(
        w64,
        JmpCond::Eq,
        0xffff_0000_0000_0005,
        Source::Imm(5),
        None
    ));
    assert!(check(
        w32,
        JmpCond::Slt,
        0x0000_0000_8000_0000,
        Source::Imm(0),
        None
    ));
    assert!(check(
        w32,
        JmpCond::Gt,
        0x1_0000_0002,
        reg2,
        Some(0xffff_0000_0000_0001)
    ));
}

#[test]
fn ja_and_gotol() {
    let p = [
        mov64(0, 1),
        Insn::Ja {
            off: 1,
            long: false,
        },
        mov64(0, 2),
        Insn::Ja { off: 1, long: true },
        mov64(0, 3),
        Insn::Exit,
    ];
    assert_eq!(r0(&p), 1);
    // backwards: a loop counting to 10
    let p = [
        mov64(0, 0),
        alu64(AluOp::Add, 0, 1),
        jmp(Width::W64, JmpCond::Lt, 0, Source::Imm(10), -2),
        Insn::Exit,
    ];
    let out = run(&p).unwrap();
    assert_eq!(out.r0, 10);
    assert_eq!(out.stats.insns, 1 + 10 * 2 + 1);
}

#[test]
fn lddw_counts_once_and_skips_its_second_half() {
    let mut p = lddw(0, 0x1_0000_0001).to_vec();
    p.push(Insn::Exit);
    let out = run(&p).unwrap();
    assert_eq!(out.r0, 0x1_0000_0001);
    assert_eq!(out.stats.insns, 2);
}
