//! Program generators built on [`arbitrary`]: structured programs biased
//! toward ones the verifier accepts, and the byte format every
//! program-running target reads ([`ProgramInput`]).
//!
//! A [`GenProgram`] is a list of [`Op`]s, each lowered to one or a few
//! instructions, between a fixed prologue and epilogue:
//!
//! - **prologue**: `r1` (the memory pointer) is spilled to `fp-72`, the eight
//!   stack slots `fp-8` … `fp-64` are zeroed, and every scalar register
//!   (`r0`, `r2`–`r9`) gets an arbitrary 64-bit start value;
//! - **body**: ALU (both widths, every operation including `movsx` and signed
//!   division), negation, byte swaps, `lddw`, loads and stores (sign-extending
//!   too) and atomics on the stack slots and on the data area at `r1`,
//!   forward conditional jumps, guarded `ja`, the conformance helper `call 5`,
//!   and "wild" loads and stores at arbitrary offsets (which the verifier must
//!   reject when they leave their region);
//! - **epilogue**: every scalar register and stack slot is copied into the
//!   memory after the data area, then `r0` is reloaded and the program exits,
//!   so comparing the final memory compares registers and stack as well.
//!
//! Memory layout ([`MEM_LEN`] bytes at `r1`): `[data (DATA_LEN)][registers
//! (9 × 8)][stack slots (8 × 8)]`.

use arbitrary::{Arbitrary, Unstructured};
use pkbpf_verifier::isa::{
    decode_program, encode_program, AluOp, AtomicOp, ByteOrder, CallTarget, Insn, JmpCond, MemSize,
    Reg, Source, Width,
};

/// Bytes of the data area at the start of the memory.
pub const DATA_LEN: usize = 64;
/// Registers the generator writes (`r1` keeps the memory pointer).
pub const SCALARS: [u8; 9] = [0, 2, 3, 4, 5, 6, 7, 8, 9];
/// Zeroed 8-byte stack slots below `r10`.
pub const STACK_SLOTS: usize = 8;
/// Offset of the register copy in the memory.
pub const REGS_OFF: usize = DATA_LEN;
/// Offset of the stack-slot copy in the memory.
pub const STACK_OFF: usize = REGS_OFF + SCALARS.len() * 8;
/// Size of the memory a structured program gets at `r1`.
pub const MEM_LEN: usize = STACK_OFF + STACK_SLOTS * 8;
/// Stack offset where the prologue spills `r1`.
pub const R1_SPILL: i16 = -72;
/// Most body operations lowered (longer lists are cut).
pub const MAX_OPS: usize = 64;
/// The conformance helper id (`unwind`: returns `r1`, ends the program when it
/// is 0).
pub const UNWIND_HELPER: i32 = 5;

/// A scalar register, as an index into [`SCALARS`].
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub struct GReg(pub u8);

impl GReg {
    /// The register.
    pub fn reg(self) -> Reg {
        reg(SCALARS[self.0 as usize % SCALARS.len()])
    }
}

/// A second operand.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GSrc {
    /// A scalar register.
    Reg(GReg),
    /// Any immediate.
    Imm(i32),
    /// A small immediate (shift counts, divisors near zero, edge values).
    Small(i8),
}

impl GSrc {
    fn source(self) -> Source {
        match self {
            GSrc::Reg(r) => Source::Reg(r.reg()),
            GSrc::Imm(i) => Source::Imm(i),
            GSrc::Small(i) => Source::Imm(i as i32),
        }
    }
}

/// An ALU operation (`movsx` split by source width).
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum GAlu {
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
    MovSx8,
    MovSx16,
    MovSx32,
    Arsh,
}

/// A jump condition.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum GCond {
    Eq,
    Gt,
    Ge,
    Set,
    Ne,
    Sgt,
    Sge,
    Lt,
    Le,
    Slt,
    Sle,
}

impl GCond {
    fn cond(self) -> JmpCond {
        match self {
            GCond::Eq => JmpCond::Eq,
            GCond::Gt => JmpCond::Gt,
            GCond::Ge => JmpCond::Ge,
            GCond::Set => JmpCond::Set,
            GCond::Ne => JmpCond::Ne,
            GCond::Sgt => JmpCond::Sgt,
            GCond::Sge => JmpCond::Sge,
            GCond::Lt => JmpCond::Lt,
            GCond::Le => JmpCond::Le,
            GCond::Slt => JmpCond::Slt,
            GCond::Sle => JmpCond::Sle,
        }
    }
}

/// An access size.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum GSize {
    B,
    H,
    W,
    DW,
}

impl GSize {
    fn size(self) -> MemSize {
        match self {
            GSize::B => MemSize::B,
            GSize::H => MemSize::H,
            GSize::W => MemSize::W,
            GSize::DW => MemSize::DW,
        }
    }

    fn bytes(self) -> usize {
        match self {
            GSize::B => 1,
            GSize::H => 2,
            GSize::W => 4,
            GSize::DW => 8,
        }
    }
}

/// An atomic operation.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum GAtomic {
    Add,
    Or,
    And,
    Xor,
    Xchg,
    CmpXchg,
}

/// A byte-swap form.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum GOrder {
    ToLe,
    ToBe,
    Swap,
}

/// One generated operation (lowered to one or a few instructions).
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Op {
    /// `dst op= src` (64- or 32-bit).
    Alu {
        w64: bool,
        op: GAlu,
        dst: GReg,
        src: GSrc,
    },
    /// `dst = -dst`.
    Neg { w64: bool, dst: GReg },
    /// Byte swap of 16, 32 or 64 bits (`bits` modulo 3).
    Endian { order: GOrder, bits: u8, dst: GReg },
    /// `lddw dst, imm`.
    Lddw { dst: GReg, imm: u64 },
    /// Aligned load from the zeroed stack area (`at` picks the offset).
    StackLoad {
        size: GSize,
        signed: bool,
        dst: GReg,
        at: u8,
    },
    /// Aligned store into the stack area.
    StackStore { size: GSize, at: u8, src: GSrc },
    /// Aligned load from the data area at `r1`.
    MemLoad {
        size: GSize,
        signed: bool,
        dst: GReg,
        at: u8,
    },
    /// Aligned store into the data area at `r1`.
    MemStore { size: GSize, at: u8, src: GSrc },
    /// Aligned 32- or 64-bit atomic on the stack or the data area.
    Atomic {
        dw: bool,
        op: GAtomic,
        fetch: bool,
        stack: bool,
        at: u8,
        src: GReg,
    },
    /// `if dst cond src goto` the op `skip` ops further on.
    Jmp {
        w64: bool,
        cond: GCond,
        dst: GReg,
        src: GSrc,
        skip: u8,
    },
    /// `if dst cond src goto +1; ja` the op `skip` ops further on.
    Ja {
        skip: u8,
        w64: bool,
        cond: GCond,
        dst: GReg,
        src: GSrc,
    },
    /// `r1 = arg; call 5; r1 = ctx; r2..r5 = 0` (ends the program when `arg`
    /// is 0).
    Unwind { arg: GReg },
    /// A load at any offset from `r1` or `r10`: the verifier must reject the
    /// out-of-region ones.
    WildLoad {
        fp: bool,
        size: GSize,
        dst: GReg,
        off: i16,
    },
    /// A store at any offset from `r1` or `r10`.
    WildStore {
        fp: bool,
        size: GSize,
        off: i16,
        src: GSrc,
    },
}

/// A structured program before lowering.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct GenProgram {
    /// Start values of [`SCALARS`].
    pub init: [u64; 9],
    /// The body (at most [`MAX_OPS`] are lowered).
    pub ops: Vec<Op>,
}

fn reg(n: u8) -> Reg {
    Reg::new(n).expect("generator registers are r0..=r10")
}

fn off16(v: i64) -> i16 {
    i16::try_from(v).expect("generated offsets fit in 16 bits")
}

/// Instructions an op lowers to (jump targets are computed from these).
fn op_len(op: &Op) -> usize {
    match op {
        Op::Lddw { .. } => 2,
        Op::Ja { .. } => 2,
        Op::Unwind { .. } => 7,
        _ => 1,
    }
}

fn alu(w64: bool, op: GAlu, dst: Reg, src: GSrc) -> Insn {
    let width = if w64 { Width::W64 } else { Width::W32 };
    let (op, src) = match (op, src) {
        // movsx has a register form only; 32-bit movsx only from 8 and 16.
        (GAlu::MovSx8 | GAlu::MovSx16 | GAlu::MovSx32, GSrc::Imm(_) | GSrc::Small(_)) => {
            (AluOp::Mov, src)
        }
        (GAlu::MovSx32, _) if !w64 => (AluOp::Mov, src),
        (GAlu::MovSx8, _) => (AluOp::MovSx(8), src),
        (GAlu::MovSx16, _) => (AluOp::MovSx(16), src),
        (GAlu::MovSx32, _) => (AluOp::MovSx(32), src),
        (GAlu::Add, _) => (AluOp::Add, src),
        (GAlu::Sub, _) => (AluOp::Sub, src),
        (GAlu::Mul, _) => (AluOp::Mul, src),
        (GAlu::Div, _) => (AluOp::Div, src),
        (GAlu::SDiv, _) => (AluOp::SDiv, src),
        (GAlu::Or, _) => (AluOp::Or, src),
        (GAlu::And, _) => (AluOp::And, src),
        (GAlu::Lsh, _) => (AluOp::Lsh, src),
        (GAlu::Rsh, _) => (AluOp::Rsh, src),
        (GAlu::Mod, _) => (AluOp::Mod, src),
        (GAlu::SMod, _) => (AluOp::SMod, src),
        (GAlu::Xor, _) => (AluOp::Xor, src),
        (GAlu::Mov, _) => (AluOp::Mov, src),
        (GAlu::Arsh, _) => (AluOp::Arsh, src),
    };
    Insn::Alu {
        width,
        op,
        dst,
        src: src.source(),
    }
}

fn jmp(w64: bool, cond: GCond, dst: GReg, src: GSrc, off: i16) -> Insn {
    Insn::Jmp {
        width: if w64 { Width::W64 } else { Width::W32 },
        cond: cond.cond(),
        dst: dst.reg(),
        src: src.source(),
        off,
    }
}

/// Aligned offset inside an area of `area` bytes for an access of `size`.
fn aligned(at: u8, size: usize, area: usize) -> usize {
    (at as usize % (area / size)) * size
}

impl GenProgram {
    /// The body ops that are lowered (the first [`MAX_OPS`]).
    pub fn body(&self) -> &[Op] {
        &self.ops[..self.ops.len().min(MAX_OPS)]
    }

    /// Lowers to instructions (one [`Insn`] per slot, `lddw` followed by
    /// [`Insn::LdImm64Hi`]).
    pub fn lower(&self) -> Vec<Insn> {
        let body = self.body();
        let mut out = Vec::new();
        out.push(Insn::Store {
            size: MemSize::DW,
            dst: Reg::R10,
            off: R1_SPILL,
            src: Source::Reg(Reg::R1),
        });
        for k in 0..STACK_SLOTS {
            out.push(Insn::Store {
                size: MemSize::DW,
                dst: Reg::R10,
                off: off16(-8 * (k as i64 + 1)),
                src: Source::Imm(0),
            });
        }
        for (i, &r) in SCALARS.iter().enumerate() {
            out.push(Insn::LdImm64 {
                dst: reg(r),
                imm: self.init[i],
            });
            out.push(Insn::LdImm64Hi);
        }
        // Start slot of every op, and of the epilogue (index body.len()).
        let mut starts = Vec::with_capacity(body.len() + 1);
        let mut pc = out.len();
        for op in body {
            starts.push(pc);
            pc += op_len(op);
        }
        starts.push(pc);
        let target = |i: usize, skip: u8| starts[(i + 1 + skip as usize).min(body.len())];
        for (i, op) in body.iter().enumerate() {
            let here = out.len();
            debug_assert_eq!(here, starts[i]);
            match *op {
                Op::Alu { w64, op, dst, src } => out.push(alu(w64, op, dst.reg(), src)),
                Op::Neg { w64, dst } => out.push(Insn::Neg {
                    width: if w64 { Width::W64 } else { Width::W32 },
                    dst: dst.reg(),
                }),
                Op::Endian { order, bits, dst } => out.push(Insn::Endian {
                    order: match order {
                        GOrder::ToLe => ByteOrder::ToLe,
                        GOrder::ToBe => ByteOrder::ToBe,
                        GOrder::Swap => ByteOrder::Swap,
                    },
                    bits: [16, 32, 64][bits as usize % 3],
                    dst: dst.reg(),
                }),
                Op::Lddw { dst, imm } => {
                    out.push(Insn::LdImm64 {
                        dst: dst.reg(),
                        imm,
                    });
                    out.push(Insn::LdImm64Hi);
                }
                Op::StackLoad {
                    size,
                    signed,
                    dst,
                    at,
                } => out.push(Insn::Load {
                    size: size.size(),
                    signed: signed && size != GSize::DW,
                    dst: dst.reg(),
                    src: Reg::R10,
                    off: off16(aligned(at, size.bytes(), STACK_SLOTS * 8) as i64 - 64),
                }),
                Op::StackStore { size, at, src } => out.push(Insn::Store {
                    size: size.size(),
                    dst: Reg::R10,
                    off: off16(aligned(at, size.bytes(), STACK_SLOTS * 8) as i64 - 64),
                    src: src.source(),
                }),
                Op::MemLoad {
                    size,
                    signed,
                    dst,
                    at,
                } => out.push(Insn::Load {
                    size: size.size(),
                    signed: signed && size != GSize::DW,
                    dst: dst.reg(),
                    src: Reg::R1,
                    off: off16(aligned(at, size.bytes(), DATA_LEN) as i64),
                }),
                Op::MemStore { size, at, src } => out.push(Insn::Store {
                    size: size.size(),
                    dst: Reg::R1,
                    off: off16(aligned(at, size.bytes(), DATA_LEN) as i64),
                    src: src.source(),
                }),
                Op::Atomic {
                    dw,
                    op,
                    fetch,
                    stack,
                    at,
                    src,
                } => {
                    let bytes = if dw { 8 } else { 4 };
                    let (dst, off) = if stack {
                        (Reg::R10, aligned(at, bytes, STACK_SLOTS * 8) as i64 - 64)
                    } else {
                        (Reg::R1, aligned(at, bytes, DATA_LEN) as i64)
                    };
                    let (op, fetch) = match op {
                        GAtomic::Add => (AtomicOp::Add, fetch),
                        GAtomic::Or => (AtomicOp::Or, fetch),
                        GAtomic::And => (AtomicOp::And, fetch),
                        GAtomic::Xor => (AtomicOp::Xor, fetch),
                        GAtomic::Xchg => (AtomicOp::Xchg, true),
                        GAtomic::CmpXchg => (AtomicOp::CmpXchg, true),
                    };
                    out.push(Insn::Atomic {
                        size: if dw { MemSize::DW } else { MemSize::W },
                        op,
                        fetch,
                        dst,
                        src: src.reg(),
                        off: off16(off),
                    });
                }
                Op::Jmp {
                    w64,
                    cond,
                    dst,
                    src,
                    skip,
                } => {
                    let off = target(i, skip) as i64 - (here as i64 + 1);
                    out.push(jmp(w64, cond, dst, src, off16(off)));
                }
                Op::Ja {
                    skip,
                    w64,
                    cond,
                    dst,
                    src,
                } => {
                    out.push(jmp(w64, cond, dst, src, 1));
                    let off = target(i, skip) as i64 - (here as i64 + 2);
                    out.push(Insn::Ja {
                        off: off as i32,
                        long: false,
                    });
                }
                Op::Unwind { arg } => {
                    out.push(Insn::Alu {
                        width: Width::W64,
                        op: AluOp::Mov,
                        dst: Reg::R1,
                        src: Source::Reg(arg.reg()),
                    });
                    out.push(Insn::Call(CallTarget::Helper(UNWIND_HELPER)));
                    out.push(Insn::Load {
                        size: MemSize::DW,
                        signed: false,
                        dst: Reg::R1,
                        src: Reg::R10,
                        off: R1_SPILL,
                    });
                    for r in 2..=5 {
                        out.push(Insn::Alu {
                            width: Width::W64,
                            op: AluOp::Mov,
                            dst: reg(r),
                            src: Source::Imm(0),
                        });
                    }
                }
                Op::WildLoad { fp, size, dst, off } => out.push(Insn::Load {
                    size: size.size(),
                    signed: false,
                    dst: dst.reg(),
                    src: if fp { Reg::R10 } else { Reg::R1 },
                    off,
                }),
                Op::WildStore { fp, size, off, src } => out.push(Insn::Store {
                    size: size.size(),
                    dst: if fp { Reg::R10 } else { Reg::R1 },
                    off,
                    src: src.source(),
                }),
            }
        }
        for (i, &r) in SCALARS.iter().enumerate() {
            out.push(Insn::Store {
                size: MemSize::DW,
                dst: Reg::R1,
                off: off16((REGS_OFF + 8 * i) as i64),
                src: Source::Reg(reg(r)),
            });
        }
        for k in 0..STACK_SLOTS {
            out.push(Insn::Load {
                size: MemSize::DW,
                signed: false,
                dst: Reg::R0,
                src: Reg::R10,
                off: off16(-8 * (k as i64 + 1)),
            });
            out.push(Insn::Store {
                size: MemSize::DW,
                dst: Reg::R1,
                off: off16((STACK_OFF + 8 * k) as i64),
                src: Source::Reg(Reg::R0),
            });
        }
        out.push(Insn::Load {
            size: MemSize::DW,
            signed: false,
            dst: Reg::R0,
            src: Reg::R1,
            off: off16(REGS_OFF as i64),
        });
        out.push(Insn::Exit);
        out
    }
}

/// A program and the memory it gets at `r1` (`r2` = its length), run under
/// the conformance environment (`ProgramEnv::conformance(mem.len())`, helper
/// 5 = unwind).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// One instruction per slot.
    pub insns: Vec<Insn>,
    /// Initial memory at `r1` (empty: `r1` = 0).
    pub mem: Vec<u8>,
}

/// Input-byte tag of a raw [`Case`] (see [`Case::from_bytes`]).
pub const TAG_RAW: u8 = 0;
/// Input-byte tag of a structured [`Case`].
pub const TAG_STRUCTURED: u8 = 1;

impl Case {
    /// Reads a case from fuzzer bytes. The low bit of the first byte picks
    /// the form:
    ///
    /// - [`TAG_RAW`]: `[tag][mem_len: u16 LE][mem][program bytes]` — the
    ///   form seeds from the conformance corpus take ([`Case::to_raw_bytes`]);
    ///   `None` when the program does not decode;
    /// - [`TAG_STRUCTURED`]: `[tag][arbitrary bytes]` → a [`GenProgram`] and
    ///   [`DATA_LEN`] data bytes, with [`MEM_LEN`] bytes of memory.
    pub fn from_bytes(data: &[u8]) -> Option<Case> {
        let (&tag, rest) = data.split_first()?;
        if tag & 1 == TAG_RAW {
            let len = u16::from_le_bytes([*rest.first()?, *rest.get(1)?]) as usize;
            let rest = &rest[2..];
            let len = len.min(rest.len());
            let (mem, prog) = rest.split_at(len);
            let insns = decode_program(prog).ok()?;
            if insns.is_empty() {
                return None;
            }
            Some(Case {
                insns,
                mem: mem.to_vec(),
            })
        } else {
            let mut u = Unstructured::new(rest);
            Some(Case::structured(&mut u))
        }
    }

    /// A structured case from `u` (never fails: missing bytes read as zeros).
    pub fn structured(u: &mut Unstructured<'_>) -> Case {
        let prog = GenProgram::arbitrary(u).unwrap_or(GenProgram {
            init: [0; 9],
            ops: Vec::new(),
        });
        let mut mem = vec![0u8; MEM_LEN];
        let n = u.len().min(DATA_LEN);
        if let Ok(bytes) = u.bytes(n) {
            mem[..n].copy_from_slice(bytes);
        }
        Case {
            insns: prog.lower(),
            mem,
        }
    }

    /// The raw input form of this case (see [`Case::from_bytes`]); memory
    /// beyond 65535 bytes is cut.
    pub fn to_raw_bytes(&self) -> Vec<u8> {
        let len = self.mem.len().min(u16::MAX as usize);
        let mut out = vec![TAG_RAW];
        out.extend_from_slice(&(len as u16).to_le_bytes());
        out.extend_from_slice(&self.mem[..len]);
        out.extend_from_slice(&encode_program(&self.insns));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowered_jumps_land_on_op_starts() {
        let prog = GenProgram {
            init: [1; 9],
            ops: vec![
                Op::Jmp {
                    w64: true,
                    cond: GCond::Eq,
                    dst: GReg(0),
                    src: GSrc::Imm(1),
                    skip: 1,
                },
                Op::Lddw {
                    dst: GReg(1),
                    imm: 7,
                },
                Op::Ja {
                    skip: 200,
                    w64: false,
                    cond: GCond::Ne,
                    dst: GReg(2),
                    src: GSrc::Small(0),
                },
            ],
        };
        let insns = prog.lower();
        let body = 1 + STACK_SLOTS + 2 * SCALARS.len();
        // The first jump skips the lddw (2 slots) and lands on the Ja op.
        assert_eq!(
            insns[body],
            Insn::Jmp {
                width: Width::W64,
                cond: JmpCond::Eq,
                dst: Reg::R0,
                src: Source::Imm(1),
                off: 2
            }
        );
        // The ja's skip is clamped to the epilogue, right after it.
        assert_eq!(
            insns[body + 4],
            Insn::Ja {
                off: 0,
                long: false
            }
        );
        // Round trip through the byte encoding.
        assert_eq!(decode_program(&encode_program(&insns)).unwrap(), insns);
    }

    #[test]
    fn raw_bytes_round_trip() {
        let case = Case {
            insns: GenProgram {
                init: [0; 9],
                ops: vec![],
            }
            .lower(),
            mem: vec![1, 2, 3],
        };
        assert_eq!(Case::from_bytes(&case.to_raw_bytes()), Some(case));
    }

    #[test]
    fn truncated_raw_input_is_none() {
        assert_eq!(Case::from_bytes(&[]), None);
        assert_eq!(Case::from_bytes(&[TAG_RAW, 4]), None);
        // Program bytes that are not a multiple of 8 do not decode.
        assert_eq!(Case::from_bytes(&[TAG_RAW, 0, 0, 0x95, 0, 0]), None);
    }
}
