//! Proptest generators of valid instructions and well-formed programs
//! (feature `strategies`), shared by property tests and fuzzing.
//!
//! Three levels, from most to least structured:
//!
//! * [`any_program`]: well-formed programs (what a verifier may accept);
//! * [`any_insn_sequence`]: valid instructions with arbitrary jump offsets
//!   (what an engine must survive without panicking);
//! * [`any_raw_slot`] / [`any_bytes_program`]: raw slots biased towards
//!   defined opcodes, about a quarter of which decode (what a decoder must
//!   survive).
//!
//! "Valid" means [`crate::isa::decode_program`] accepts the encoding and
//! decodes it back to the same value; "well-formed" programs additionally have
//! every jump, local call and `func` reference landing on an instruction
//! inside the program (never on an `lddw`'s second half).

use proptest::prelude::*;

use crate::isa::{
    AluOp, AtomicOp, ByteOrder, CallTarget, Insn, JmpCond, LdPseudo, MemSize, RawInsn, Reg, Source,
    Width,
};

/// Any register `r0`..`r10`.
pub fn any_reg() -> impl Strategy<Value = Reg> {
    (0u8..=10).prop_map(|n| Reg::new(n).expect("0..=10 is a register"))
}

fn any_width() -> impl Strategy<Value = Width> {
    prop_oneof![Just(Width::W32), Just(Width::W64)]
}

fn any_size() -> impl Strategy<Value = MemSize> {
    prop_oneof![
        Just(MemSize::B),
        Just(MemSize::H),
        Just(MemSize::W),
        Just(MemSize::DW)
    ]
}

/// Immediates biased towards edge values.
fn any_imm() -> impl Strategy<Value = i32> {
    prop_oneof![
        3 => any::<i32>(),
        1 => prop::sample::select(vec![0, 1, -1, i32::MIN, i32::MAX, 0x7fff, -0x8000]),
    ]
}

fn any_off() -> impl Strategy<Value = i16> {
    prop_oneof![
        3 => any::<i16>(),
        1 => prop::sample::select(vec![0, 1, -1, i16::MIN, i16::MAX]),
    ]
}

fn any_source() -> impl Strategy<Value = Source> {
    prop_oneof![
        any_reg().prop_map(Source::Reg),
        any_imm().prop_map(Source::Imm)
    ]
}

fn any_alu_op() -> impl Strategy<Value = AluOp> {
    prop::sample::select(AluOp::PLAIN.to_vec())
}

fn any_alu() -> impl Strategy<Value = Insn> {
    let binary =
        (any_width(), any_alu_op(), any_reg(), any_source()).prop_map(|(width, op, dst, src)| {
            Insn::Alu {
                width,
                op,
                dst,
                src,
            }
        });
    // MOVSX: register source only; 32-bit source only for the 64-bit form.
    let movsx = (
        prop::sample::select(vec![
            (Width::W64, 8u8),
            (Width::W64, 16),
            (Width::W64, 32),
            (Width::W32, 8),
            (Width::W32, 16),
        ]),
        any_reg(),
        any_reg(),
    )
        .prop_map(|((width, bits), dst, src)| Insn::Alu {
            width,
            op: AluOp::MovSx(bits),
            dst,
            src: Source::Reg(src),
        });
    let neg = (any_width(), any_reg()).prop_map(|(width, dst)| Insn::Neg { width, dst });
    let endian = (
        prop::sample::select(vec![ByteOrder::ToLe, ByteOrder::ToBe, ByteOrder::Swap]),
        prop::sample::select(vec![16u8, 32, 64]),
        any_reg(),
    )
        .prop_map(|(order, bits, dst)| Insn::Endian { order, bits, dst });
    prop_oneof![6 => binary, 1 => movsx, 1 => neg, 1 => endian]
}

fn any_mem() -> impl Strategy<Value = Insn> {
    let load = (any_size(), any::<bool>(), any_reg(), any_reg(), any_off()).prop_map(
        |(size, signed, dst, src, off)| Insn::Load {
            size,
            // There is no sign-extending 64-bit load.
            signed: signed && size != MemSize::DW,
            dst,
            src,
            off,
        },
    );
    let store =
        (any_size(), any_reg(), any_off(), any_source()).prop_map(|(size, dst, off, src)| {
            Insn::Store {
                size,
                dst,
                off,
                src,
            }
        });
    let atomic = (
        prop_oneof![Just(MemSize::W), Just(MemSize::DW)],
        prop::sample::select(vec![
            AtomicOp::Add,
            AtomicOp::Or,
            AtomicOp::And,
            AtomicOp::Xor,
            AtomicOp::Xchg,
            AtomicOp::CmpXchg,
        ]),
        any::<bool>(),
        any_reg(),
        any_reg(),
        any_off(),
    )
        .prop_map(|(size, op, fetch, dst, src, off)| Insn::Atomic {
            size,
            op,
            // xchg and cmpxchg always fetch.
            fetch: fetch || matches!(op, AtomicOp::Xchg | AtomicOp::CmpXchg),
            dst,
            src,
            off,
        });
    let legacy_size = prop_oneof![Just(MemSize::B), Just(MemSize::H), Just(MemSize::W)];
    let ld_abs = (legacy_size.clone(), any_imm()).prop_map(|(size, imm)| Insn::LdAbs { size, imm });
    let ld_ind = (legacy_size, any_reg(), any_imm()).prop_map(|(size, src, imm)| Insn::LdInd {
        size,
        src,
        imm,
    });
    prop_oneof![3 => load, 3 => store, 2 => atomic, 1 => ld_abs, 1 => ld_ind]
}

fn any_cond() -> impl Strategy<Value = JmpCond> {
    prop::sample::select(JmpCond::ALL.to_vec())
}

/// Jumps, calls and `func` loads with the given offset strategies.
fn branching(off16: BoxedStrategy<i16>, off32: BoxedStrategy<i32>) -> impl Strategy<Value = Insn> {
    let ja = off16.clone().prop_map(|off| Insn::Ja {
        off: off.into(),
        long: false,
    });
    let gotol = off32.clone().prop_map(|off| Insn::Ja { off, long: true });
    let jmp = (any_width(), any_cond(), any_reg(), any_source(), off16).prop_map(
        |(width, cond, dst, src, off)| Insn::Jmp {
            width,
            cond,
            dst,
            src,
            off,
        },
    );
    let local = off32.clone().prop_map(|o| Insn::Call(CallTarget::Local(o)));
    let func = (any_reg(), off32).prop_map(|(dst, imm)| Insn::LdPseudo {
        dst,
        kind: LdPseudo::Func,
        imm,
        next_imm: 0,
    });
    prop_oneof![2 => ja, 1 => gotol, 4 => jmp, 1 => local, 1 => func]
}

/// Instructions that never jump: everything but jumps, local calls and `func`
/// loads (and never [`Insn::LdImm64Hi`]).
fn any_straight() -> impl Strategy<Value = Insn> {
    let ld64 = (any_reg(), any::<u64>()).prop_map(|(dst, imm)| Insn::LdImm64 { dst, imm });
    let pseudo = (
        any_reg(),
        prop::sample::select(vec![
            LdPseudo::MapFd,
            LdPseudo::MapValue,
            LdPseudo::BtfId,
            LdPseudo::MapIdx,
            LdPseudo::MapIdxValue,
        ]),
        any_imm(),
        any_imm(),
    )
        .prop_map(|(dst, kind, imm, next_imm)| Insn::LdPseudo {
            dst,
            kind,
            imm,
            next_imm,
        });
    let call = prop_oneof![
        any_imm().prop_map(|i| Insn::Call(CallTarget::Helper(i))),
        (1i32..=211).prop_map(|i| Insn::Call(CallTarget::Helper(i))),
        any_imm().prop_map(|i| Insn::Call(CallTarget::Kfunc(i))),
        any_reg().prop_map(|reg| Insn::CallX { reg }),
    ];
    prop_oneof![
        8 => any_alu(),
        6 => any_mem(),
        1 => ld64,
        1 => pseudo,
        2 => call,
        1 => Just(Insn::Exit),
    ]
}

/// Any single valid instruction (never [`Insn::LdImm64Hi`]); jump offsets are
/// arbitrary, so a lone jump need not land inside a program.
pub fn any_insn() -> impl Strategy<Value = Insn> {
    prop_oneof![
        4 => any_straight(),
        1 => branching(any_off().boxed(), any_imm().boxed()),
    ]
}

/// A well-formed program of 1..=`max_len` instructions, one [`Insn`] per slot
/// (an [`Insn::LdImm64Hi`] after each `lddw`, so it may hold up to
/// `2 * max_len` slots): every jump, local call and `func` load targets an
/// instruction of the program, never the second half of an `lddw`.
pub fn any_program(max_len: usize) -> impl Strategy<Value = Vec<Insn>> {
    let max_len = max_len.max(1);
    // Branches first get a placeholder target index; they are retargeted
    // below once the slot layout is known.
    let item = prop_oneof![
        4 => any_straight().prop_map(|i| (i, None)),
        1 => (branching(Just(0i16).boxed(), Just(0i32).boxed()), any::<prop::sample::Index>())
            .prop_map(|(i, t)| (i, Some(t))),
    ];
    prop::collection::vec(item, 1..=max_len).prop_map(|items| {
        let mut slots = Vec::new();
        let mut starts = Vec::new();
        for (insn, _) in &items {
            starts.push(slots.len());
            slots.push(*insn);
            if insn.slots() == 2 {
                slots.push(Insn::LdImm64Hi);
            }
        }
        for (k, (_, target)) in items.iter().enumerate() {
            let Some(target) = target else { continue };
            let pc = starts[k];
            let goal = starts[target.index(starts.len())];
            let rel = goal as i64 - pc as i64 - 1;
            retarget(&mut slots[pc], rel);
        }
        slots
    })
}

/// Sets the relative target of a branch, falling back to a short-range
/// offset the field can hold (the program is short, so offsets always fit).
fn retarget(insn: &mut Insn, rel: i64) {
    let rel32 = i32::try_from(rel).unwrap_or(0);
    let rel16 = i16::try_from(rel).unwrap_or(0);
    match insn {
        Insn::Ja { off, long: true } => *off = rel32,
        Insn::Ja { off, long: false } => *off = rel16.into(),
        Insn::Jmp { off, .. } => *off = rel16,
        Insn::Call(CallTarget::Local(off)) => *off = rel32,
        Insn::LdPseudo {
            kind: LdPseudo::Func,
            imm,
            ..
        } => *imm = rel32,
        _ => {}
    }
}

/// Valid instructions in per-slot form (an [`Insn::LdImm64Hi`] after each
/// `lddw`) whose jump offsets are arbitrary: a branch may leave the program
/// or land on an `lddw`'s second half. For "never panics" properties of
/// engines that take `&[Insn]`.
pub fn any_insn_sequence(max_len: usize) -> impl Strategy<Value = Vec<Insn>> {
    prop::collection::vec(any_insn(), 1..=max_len.max(1)).prop_map(|insns| {
        let mut slots = Vec::with_capacity(insns.len() * 2);
        for insn in insns {
            slots.push(insn);
            if insn.slots() == 2 {
                slots.push(Insn::LdImm64Hi);
            }
        }
        slots
    })
}

/// One raw slot with fields biased towards values that decode: mostly
/// defined opcodes, registers `r0`..`r10`, zero or small offsets and
/// immediates, and the immediates that select atomics and byte swaps.
pub fn any_raw_slot() -> impl Strategy<Value = RawInsn> {
    let code = prop_oneof![
        3 => prop::sample::select(vec![
            0x07u8, 0x0f, 0x04, 0x0c, 0x17, 0x1f, 0x24, 0x2c, 0x34, 0x3f, 0x44, 0x54, 0x64,
            0x77, 0x84, 0x87, 0x94, 0x9f, 0xa4, 0xb7, 0xbf, 0xbc, 0xc7, 0xd4, 0xdc, 0xd7, 0x18,
            0x00, 0x20, 0x28, 0x30, 0x40, 0x48, 0x50, 0x61, 0x69, 0x71, 0x79, 0x81, 0x89, 0x91,
            0x62, 0x6a, 0x72, 0x7a, 0x63, 0x6b, 0x73, 0x7b, 0xc3, 0xdb, 0x05, 0x06, 0x15, 0x1d,
            0x16, 0x1e, 0x25, 0xa5, 0xd6, 0xde, 0x45, 0x4e, 0x85, 0x8d, 0x95,
        ]),
        1 => any::<u8>(),
    ];
    let regs = prop_oneof![3 => (0u8..=10, 0u8..=10), 1 => (0u8..16, 0u8..16)];
    let regs =
        (regs, any::<bool>()).prop_map(|((d, s), zero_src)| (d, if zero_src { 0 } else { s }));
    let off = prop_oneof![
        4 => Just(0i16),
        2 => -3i16..3,
        1 => any::<i16>(),
        1 => prop::sample::select(vec![1i16, 8, 16, 32]),
    ];
    let imm = prop_oneof![
        3 => Just(0i32),
        2 => -3i32..3,
        1 => any::<i32>(),
        1 => prop::sample::select(vec![16, 32, 64, 0x40, 0x41, 0x50, 0x51, 0xa0, 0xa1, 0xe1, 0xf1]),
    ];
    (code, regs, off, imm)
        .prop_map(|(code, (dst, src), off, imm)| RawInsn::new(code, dst, src, off, imm))
}

/// The bytes of 1..=`max_slots` slots from [`any_raw_slot`].
pub fn any_bytes_program(max_slots: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any_raw_slot(), 1..=max_slots.max(1))
        .prop_map(|slots| slots.iter().flat_map(|s| s.to_bytes()).collect())
}
