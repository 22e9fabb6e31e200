//! Random programs the verifier accepts and both engines can run: scalar
//! arithmetic on r0, r2–r9, loads/stores/atomics on 8 zeroed stack slots and
//! on a data area at r1, forward conditional and unconditional jumps. The
//! epilogue copies every scalar register and the stack slots into memory
//! after the data area, so comparing final memory compares registers and
//! stack too.
//!
//! Layout of the memory the program gets: `[data (data_len)][stack copy
//! (64)][register copy (72)]`.

use proptest::prelude::*;

use pkbpf_verifier::isa::{AluOp, AtomicOp, ByteOrder, Insn, JmpCond, MemSize, Reg, Source, Width};

/// Registers the generator writes (r1 holds the memory pointer).
pub const SCALARS: [u8; 9] = [0, 2, 3, 4, 5, 6, 7, 8, 9];
/// Zeroed 8-byte stack slots below r10.
pub const STACK_SLOTS: usize = 8;

/// Second operand.
#[derive(Clone, Copy, Debug)]
pub enum Src {
    /// Register number.
    Reg(u8),
    /// Immediate.
    Imm(i32),
}

/// One generated operation (lowered to one or two instructions).
#[derive(Clone, Debug)]
pub enum Op {
    Alu {
        w64: bool,
        op: AluOp,
        dst: u8,
        src: Src,
    },
    Neg {
        w64: bool,
        dst: u8,
    },
    Endian {
        order: ByteOrder,
        bits: u8,
        dst: u8,
    },
    Lddw {
        dst: u8,
        imm: u64,
    },
    StackLoad {
        size: MemSize,
        signed: bool,
        dst: u8,
        slot: u8,
        byte: u8,
    },
    StackStore {
        size: MemSize,
        slot: u8,
        byte: u8,
        src: Src,
    },
    MemLoad {
        size: MemSize,
        signed: bool,
        dst: u8,
        off: u16,
    },
    MemStore {
        size: MemSize,
        off: u16,
        src: Src,
    },
    Atomic {
        dw: bool,
        op: AtomicOp,
        fetch: bool,
        stack: bool,
        at: u16,
        src: u8,
    },
    Jmp {
        w64: bool,
        cond: JmpCond,
        dst: u8,
        src: Src,
        skip: u8,
    },
    /// `if !guard goto +1; goto +skip ops` (the guard keeps the next op
    /// reachable: the verifier rejects unreachable code).
    Ja {
        skip: u8,
        w64: bool,
        cond: JmpCond,
        dst: u8,
        src: Src,
    },
}

/// A whole generated program before lowering.
#[derive(Clone, Debug)]
pub struct GenProgram {
    /// Initial values of [`SCALARS`].
    pub init: [u64; 9],
    /// The body.
    pub ops: Vec<Op>,
}

fn scalar() -> impl Strategy<Value = u8> {
    proptest::sample::select(SCALARS.to_vec())
}

fn size() -> impl Strategy<Value = MemSize> {
    prop_oneof![
        Just(MemSize::B),
        Just(MemSize::H),
        Just(MemSize::W),
        Just(MemSize::DW)
    ]
}

/// Bytes that start or continue a gadget pattern.
const PATTERN_BYTES: [u8; 12] = [
    0x0f, 0x05, 0x34, 0x01, 0xef, 0xae, 0x2f, 0xcd, 0x80, 0x00, 0xff, 0x6c,
];

/// A 32-bit value built from gadget bytes (when `patterns`) or anything.
fn imm32(patterns: bool) -> BoxedStrategy<i32> {
    let pat = proptest::array::uniform4(proptest::sample::select(PATTERN_BYTES.to_vec()))
        .prop_map(i32::from_le_bytes);
    if patterns {
        prop_oneof![3 => pat, 1 => any::<i32>()].boxed()
    } else {
        prop_oneof![
            2 => any::<i32>(),
            1 => -16i32..16,
            1 => Just(i32::MIN),
            1 => Just(-1i32),
            1 => pat
        ]
        .boxed()
    }
}

fn imm64(patterns: bool) -> BoxedStrategy<u64> {
    let pat = proptest::array::uniform8(proptest::sample::select(PATTERN_BYTES.to_vec()))
        .prop_map(u64::from_le_bytes);
    if patterns {
        prop_oneof![3 => pat, 1 => any::<u64>()].boxed()
    } else {
        prop_oneof![3 => any::<u64>(), 1 => Just(i64::MIN as u64), 1 => pat].boxed()
    }
}

fn src(patterns: bool) -> BoxedStrategy<Src> {
    prop_oneof![
        scalar().prop_map(Src::Reg),
        imm32(patterns).prop_map(Src::Imm)
    ]
    .boxed()
}

fn alu_op() -> impl Strategy<Value = AluOp> {
    use AluOp::*;
    proptest::sample::select(vec![
        Add, Sub, Mul, Div, SDiv, Or, And, Lsh, Rsh, Mod, SMod, Xor, Mov, Arsh,
    ])
}

fn cond() -> impl Strategy<Value = JmpCond> {
    proptest::sample::select(JmpCond::ALL.to_vec())
}

/// One operation; `data_len` bounds data-area offsets.
fn op(patterns: bool, data_len: u16) -> BoxedStrategy<Op> {
    let off = move |align: u16| (0..data_len / align).prop_map(move |o| o * align);
    let pat_off = move || {
        // Offsets whose bytes form gadget patterns, kept inside the area.
        proptest::array::uniform2(proptest::sample::select(PATTERN_BYTES.to_vec()))
            .prop_map(move |b| u16::from_le_bytes(b) % (data_len - 8))
    };
    let mem_off = move || {
        if patterns {
            prop_oneof![pat_off(), off(1)].boxed()
        } else {
            off(1).boxed()
        }
    };
    prop_oneof![
        6 => (any::<bool>(), alu_op(), scalar(), src(patterns)).prop_map(|(w64, op, dst, src)| {
            // Immediate shift counts stay below the width (the verifier
            // rejects larger ones); register counts may be anything.
            let src = match (op, src) {
                (AluOp::Lsh | AluOp::Rsh | AluOp::Arsh, Src::Imm(i)) => {
                    Src::Imm(i & if w64 { 63 } else { 31 })
                }
                (_, s) => s,
            };
            Op::Alu { w64, op, dst, src }
        }),
        1 => (any::<bool>(), prop_oneof![Just(8u8), Just(16), Just(32)], scalar(), scalar())
            .prop_map(|(w64, bits, dst, s)| Op::Alu {
                w64,
                op: AluOp::MovSx(if w64 { bits } else { bits.min(16) }),
                dst,
                src: Src::Reg(s),
            }),
        1 => (any::<bool>(), scalar()).prop_map(|(w64, dst)| Op::Neg { w64, dst }),
        1 => (
            prop_oneof![Just(ByteOrder::ToLe), Just(ByteOrder::ToBe), Just(ByteOrder::Swap)],
            prop_oneof![Just(16u8), Just(32), Just(64)],
            scalar()
        ).prop_map(|(order, bits, dst)| Op::Endian { order, bits, dst }),
        1 => (scalar(), imm64(patterns)).prop_map(|(dst, imm)| Op::Lddw { dst, imm }),
        2 => (size(), any::<bool>(), scalar(), 0..STACK_SLOTS as u8, 0u8..8).prop_map(
            |(size, signed, dst, slot, byte)| Op::StackLoad {
                signed: signed && size != MemSize::DW,
                size,
                dst,
                slot,
                byte,
            }
        ),
        2 => (size(), 0..STACK_SLOTS as u8, 0u8..8, src(patterns)).prop_map(
            |(size, slot, byte, src)| Op::StackStore { size, slot, byte, src }
        ),
        2 => (size(), any::<bool>(), scalar(), mem_off()).prop_map(
            |(size, signed, dst, off)| Op::MemLoad {
                signed: signed && size != MemSize::DW,
                size,
                dst,
                off,
            }
        ),
        2 => (size(), mem_off(), src(patterns)).prop_map(|(size, off, src)| Op::MemStore {
            size,
            off,
            src
        }),
        2 => (
            any::<bool>(),
            proptest::sample::select(vec![
                AtomicOp::Add,
                AtomicOp::Or,
                AtomicOp::And,
                AtomicOp::Xor,
                AtomicOp::Xchg,
                AtomicOp::CmpXchg
            ]),
            any::<bool>(),
            any::<bool>(),
            any::<u16>(),
            scalar()
        ).prop_map(|(dw, op, fetch, stack, at, src)| Op::Atomic {
            dw,
            op,
            fetch: fetch || matches!(op, AtomicOp::Xchg | AtomicOp::CmpXchg),
            stack,
            at,
            src
        }),
        3 => (any::<bool>(), cond(), scalar(), src(patterns), 0u8..12).prop_map(
            |(w64, cond, dst, src, skip)| Op::Jmp { w64, cond, dst, src, skip }
        ),
        1 => (0u8..12, any::<bool>(), cond(), scalar(), src(patterns)).prop_map(
            |(skip, w64, cond, dst, src)| Op::Ja { skip, w64, cond, dst, src }
        ),
    ]
    .boxed()
}

/// Programs of up to `max_ops` operations over a data area of `data_len`
/// bytes (at least 16).
pub fn program(max_ops: usize, data_len: u16, patterns: bool) -> BoxedStrategy<GenProgram> {
    (
        proptest::array::uniform9(imm64(patterns)),
        proptest::collection::vec(op(patterns, data_len), 1..max_ops),
    )
        .prop_map(|(init, ops)| GenProgram { init, ops })
        .boxed()
}

fn r(n: u8) -> Reg {
    Reg::new(n).expect("generator registers are r0..r10")
}

fn source(s: Src) -> Source {
    match s {
        Src::Reg(n) => Source::Reg(r(n)),
        Src::Imm(i) => Source::Imm(i),
    }
}

fn width(w64: bool) -> Width {
    if w64 {
        Width::W64
    } else {
        Width::W32
    }
}

/// Total memory the program needs.
pub fn mem_len(data_len: u16) -> usize {
    data_len as usize + 8 * STACK_SLOTS + 8 * SCALARS.len()
}

/// Stack offset of byte `byte` of slot `slot`, aligned down to `size`.
fn stack_off(slot: u8, byte: u8, size: MemSize) -> i16 {
    let n = size.bytes() as i16;
    let b = (byte as i16 / n) * n;
    -8 * (slot as i16 + 1) + b
}

/// Lowers to one [`Insn`] per slot.
pub fn lower(p: &GenProgram, data_len: u16) -> Vec<Insn> {
    let mut out = Vec::new();
    let lddw = |out: &mut Vec<Insn>, dst: u8, imm: u64| {
        out.push(Insn::LdImm64 { dst: r(dst), imm });
        out.push(Insn::LdImm64Hi);
    };
    for (i, &reg) in SCALARS.iter().enumerate() {
        lddw(&mut out, reg, p.init[i]);
    }
    for s in 0..STACK_SLOTS {
        out.push(Insn::Store {
            size: MemSize::DW,
            dst: Reg::R10,
            off: -8 * (s as i16 + 1),
            src: Source::Imm(0),
        });
    }
    // Body, with jumps patched once every op's start is known.
    let mut starts = Vec::with_capacity(p.ops.len() + 1);
    let mut jumps = Vec::new();
    for (i, op) in p.ops.iter().enumerate() {
        starts.push(out.len());
        match *op {
            Op::Alu { w64, op, dst, src } => out.push(Insn::Alu {
                width: width(w64),
                op,
                dst: r(dst),
                src: source(src),
            }),
            Op::Neg { w64, dst } => out.push(Insn::Neg {
                width: width(w64),
                dst: r(dst),
            }),
            Op::Endian { order, bits, dst } => out.push(Insn::Endian {
                order,
                bits,
                dst: r(dst),
            }),
            Op::Lddw { dst, imm } => lddw(&mut out, dst, imm),
            Op::StackLoad {
                size,
                signed,
                dst,
                slot,
                byte,
            } => out.push(Insn::Load {
                size,
                signed,
                dst: r(dst),
                src: Reg::R10,
                off: stack_off(slot, byte, size),
            }),
            Op::StackStore {
                size,
                slot,
                byte,
                src,
            } => out.push(Insn::Store {
                size,
                dst: Reg::R10,
                off: stack_off(slot, byte, size),
                src: source(src),
            }),
            Op::MemLoad {
                size,
                signed,
                dst,
                off,
            } => out.push(Insn::Load {
                size,
                signed,
                dst: r(dst),
                src: Reg::R1,
                off: off.min(data_len - size.bytes() as u16) as i16,
            }),
            Op::MemStore { size, off, src } => out.push(Insn::Store {
                size,
                dst: Reg::R1,
                off: off.min(data_len - size.bytes() as u16) as i16,
                src: source(src),
            }),
            Op::Atomic {
                dw,
                op,
                fetch,
                stack,
                at,
                src,
            } => {
                let size = if dw { MemSize::DW } else { MemSize::W };
                let n = size.bytes() as u16;
                let (dst, off) = if stack {
                    let slot = (at % STACK_SLOTS as u16) as u8;
                    (Reg::R10, stack_off(slot, (at >> 8) as u8 % 8, size))
                } else {
                    (Reg::R1, ((at % (data_len / n)) * n) as i16)
                };
                out.push(Insn::Atomic {
                    size,
                    op,
                    fetch,
                    dst,
                    src: r(src),
                    off,
                });
            }
            Op::Jmp {
                w64,
                cond,
                dst,
                src,
                skip,
            } => {
                jumps.push((out.len(), i + 1 + skip as usize));
                out.push(Insn::Jmp {
                    width: width(w64),
                    cond,
                    dst: r(dst),
                    src: source(src),
                    off: 0,
                });
            }
            Op::Ja {
                skip,
                w64,
                cond,
                dst,
                src,
            } => {
                out.push(Insn::Jmp {
                    width: width(w64),
                    cond,
                    dst: r(dst),
                    src: source(src),
                    off: 1,
                });
                jumps.push((out.len(), i + 1 + skip as usize));
                out.push(Insn::Ja {
                    off: 0,
                    long: false,
                });
            }
        }
    }
    starts.push(out.len());
    for (pc, to) in jumps {
        let t = starts[to.min(p.ops.len())];
        let delta = (t - pc - 1) as i16;
        match &mut out[pc] {
            Insn::Jmp { off, .. } => *off = delta,
            Insn::Ja { off, .. } => *off = delta.into(),
            _ => unreachable!("jumps records only jumps"),
        }
    }
    // Epilogue: registers, then the stack slots, into memory.
    let regs_at = data_len as i16 + 8 * STACK_SLOTS as i16;
    for (i, &reg) in SCALARS.iter().enumerate() {
        out.push(Insn::Store {
            size: MemSize::DW,
            dst: Reg::R1,
            off: regs_at + 8 * i as i16,
            src: Source::Reg(r(reg)),
        });
    }
    for s in 0..STACK_SLOTS {
        out.push(Insn::Load {
            size: MemSize::DW,
            signed: false,
            dst: r(2),
            src: Reg::R10,
            off: -8 * (s as i16 + 1),
        });
        out.push(Insn::Store {
            size: MemSize::DW,
            dst: Reg::R1,
            off: data_len as i16 + 8 * s as i16,
            src: Source::Reg(r(2)),
        });
    }
    out.push(Insn::Exit);
    out
}
