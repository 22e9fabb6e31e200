//! The eBPF instruction set (RFC 9669, including the v4 additions).
//!
//! This is the one place where instruction bytes are decoded and encoded; the
//! assembler, disassembler, interpreter, verifier and JIT all go through it.
//!
//! A program is a sequence of 8-byte *slots*. Every instruction takes one slot
//! except the 64-bit immediate load (`lddw`), which takes two. Like the kernel,
//! pkbpf indexes programs by slot: jump offsets count slots, verifier messages
//! name slot indices, and [`decode_program`] returns one [`Insn`] per slot, the
//! second half of an `lddw` being [`Insn::LdImm64Hi`] (never executed; a jump
//! into it is an error).
//!
//! Encoding layout of one slot (little-endian host order, as clang emits):
//!
//! ```text
//!  byte 0   byte 1        bytes 2-3   bytes 4-7
//!  opcode   src:4 | dst:4  off (i16)   imm (i32)
//! ```

use std::fmt;

/// Size of one instruction slot in bytes.
pub const INSN_SIZE: usize = 8;
/// Size of one stack frame in bytes.
pub const STACK_SIZE: usize = 512;
/// Maximum bpf-to-bpf call depth (frames, including the main program's).
pub const MAX_CALL_DEPTH: usize = 8;

/// Instruction classes (the low three bits of the opcode).
pub mod class {
    /// Non-standard loads (`lddw`, legacy packet access).
    pub const LD: u8 = 0x00;
    /// Loads into a register.
    pub const LDX: u8 = 0x01;
    /// Stores of an immediate.
    pub const ST: u8 = 0x02;
    /// Stores of a register, atomics.
    pub const STX: u8 = 0x03;
    /// 32-bit arithmetic.
    pub const ALU: u8 = 0x04;
    /// 64-bit jumps, calls, exit.
    pub const JMP: u8 = 0x05;
    /// 32-bit jumps.
    pub const JMP32: u8 = 0x06;
    /// 64-bit arithmetic.
    pub const ALU64: u8 = 0x07;
}

/// Source bit of ALU and JMP opcodes.
pub mod source {
    /// Immediate operand.
    pub const K: u8 = 0x00;
    /// Register operand.
    pub const X: u8 = 0x08;
}

/// ALU operation codes (the high four bits).
pub mod alu {
    #![allow(missing_docs)]
    pub const ADD: u8 = 0x00;
    pub const SUB: u8 = 0x10;
    pub const MUL: u8 = 0x20;
    pub const DIV: u8 = 0x30;
    pub const OR: u8 = 0x40;
    pub const AND: u8 = 0x50;
    pub const LSH: u8 = 0x60;
    pub const RSH: u8 = 0x70;
    pub const NEG: u8 = 0x80;
    pub const MOD: u8 = 0x90;
    pub const XOR: u8 = 0xa0;
    pub const MOV: u8 = 0xb0;
    pub const ARSH: u8 = 0xc0;
    pub const END: u8 = 0xd0;
}

/// Jump operation codes (the high four bits).
pub mod jmp {
    #![allow(missing_docs)]
    pub const JA: u8 = 0x00;
    pub const JEQ: u8 = 0x10;
    pub const JGT: u8 = 0x20;
    pub const JGE: u8 = 0x30;
    pub const JSET: u8 = 0x40;
    pub const JNE: u8 = 0x50;
    pub const JSGT: u8 = 0x60;
    pub const JSGE: u8 = 0x70;
    pub const CALL: u8 = 0x80;
    pub const EXIT: u8 = 0x90;
    pub const JLT: u8 = 0xa0;
    pub const JLE: u8 = 0xb0;
    pub const JSLT: u8 = 0xc0;
    pub const JSLE: u8 = 0xd0;
}

/// Load/store size and mode bits.
pub mod mem {
    #![allow(missing_docs)]
    pub const W: u8 = 0x00;
    pub const H: u8 = 0x08;
    pub const B: u8 = 0x10;
    pub const DW: u8 = 0x18;
    pub const IMM: u8 = 0x00;
    pub const ABS: u8 = 0x20;
    pub const IND: u8 = 0x40;
    pub const MEM: u8 = 0x60;
    pub const MEMSX: u8 = 0x80;
    pub const ATOMIC: u8 = 0xc0;
}

/// Atomic operation immediates.
pub mod atomic {
    #![allow(missing_docs)]
    pub const ADD: i32 = 0x00;
    pub const OR: i32 = 0x40;
    pub const AND: i32 = 0x50;
    pub const XOR: i32 = 0xa0;
    pub const FETCH: i32 = 0x01;
    pub const XCHG: i32 = 0xe0 | FETCH;
    pub const CMPXCHG: i32 = 0xf0 | FETCH;
}

/// `src_reg` values of `lddw` pseudo forms (linux/bpf.h `BPF_PSEUDO_*`).
pub mod pseudo {
    #![allow(missing_docs)]
    pub const MAP_FD: u8 = 1;
    pub const MAP_VALUE: u8 = 2;
    pub const BTF_ID: u8 = 3;
    pub const FUNC: u8 = 4;
    pub const MAP_IDX: u8 = 5;
    pub const MAP_IDX_VALUE: u8 = 6;
    /// `call` with src=1: bpf-to-bpf call.
    pub const CALL: u8 = 1;
    /// `call` with src=2: kfunc call by BTF id.
    pub const KFUNC_CALL: u8 = 2;
}

/// One raw 8-byte instruction slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RawInsn {
    /// Opcode byte.
    pub code: u8,
    /// Destination register field (0..=15 as encoded).
    pub dst: u8,
    /// Source register field (0..=15 as encoded).
    pub src: u8,
    /// Signed 16-bit offset.
    pub off: i16,
    /// Signed 32-bit immediate.
    pub imm: i32,
}

impl RawInsn {
    /// Builds a raw slot from its fields.
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        RawInsn {
            code,
            dst,
            src,
            off,
            imm,
        }
    }

    /// Reads a slot from 8 little-endian bytes.
    pub fn from_bytes(b: [u8; INSN_SIZE]) -> Self {
        RawInsn {
            code: b[0],
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    /// Writes the slot as 8 little-endian bytes.
    pub fn to_bytes(self) -> [u8; INSN_SIZE] {
        let off = self.off.to_le_bytes();
        let imm = self.imm.to_le_bytes();
        [
            self.code,
            (self.dst & 0x0f) | (self.src << 4),
            off[0],
            off[1],
            imm[0],
            imm[1],
            imm[2],
            imm[3],
        ]
    }

    /// The instruction class (low three opcode bits).
    pub fn class(self) -> u8 {
        self.code & 0x07
    }
}

/// Splits bytes into raw slots. Fails when the length is not a multiple of 8.
pub fn raw_slots(bytes: &[u8]) -> Result<Vec<RawInsn>, DecodeError> {
    if !bytes.len().is_multiple_of(INSN_SIZE) {
        return Err(DecodeError {
            index: bytes.len() / INSN_SIZE,
            kind: DecodeErrorKind::Truncated { len: bytes.len() },
        });
    }
    Ok(bytes
        .chunks_exact(INSN_SIZE)
        .map(|c| RawInsn::from_bytes(c.try_into().expect("chunk of 8")))
        .collect())
}

/// A register `r0`..`r10` (`r10` is the read-only frame pointer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reg(u8);

impl Reg {
    /// Return value / helper result.
    pub const R0: Reg = Reg(0);
    /// First argument (the context on entry).
    pub const R1: Reg = Reg(1);
    /// Frame pointer (read-only).
    pub const R10: Reg = Reg(10);
    /// Number of registers.
    pub const COUNT: usize = 11;

    /// Builds a register from its number; `None` above 10.
    pub const fn new(n: u8) -> Option<Reg> {
        if n <= 10 {
            Some(Reg(n))
        } else {
            None
        }
    }

    /// The register number.
    pub const fn num(self) -> u8 {
        self.0
    }

    /// The register number as an index.
    pub const fn idx(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// The second operand of ALU and conditional jump instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// A register (`BPF_X`).
    Reg(Reg),
    /// A sign-extended 32-bit immediate (`BPF_K`).
    Imm(i32),
}

/// Operand width of ALU and JMP instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Width {
    /// 32-bit (`BPF_ALU`, `BPF_JMP32`): ALU results are zero-extended.
    W32,
    /// 64-bit (`BPF_ALU64`, `BPF_JMP`).
    W64,
}

/// Memory access size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemSize {
    /// 1 byte (`u8`).
    B,
    /// 2 bytes (`u16`).
    H,
    /// 4 bytes (`u32`).
    W,
    /// 8 bytes (`u64`).
    DW,
}

impl MemSize {
    /// Size in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            MemSize::B => 1,
            MemSize::H => 2,
            MemSize::W => 4,
            MemSize::DW => 8,
        }
    }

    /// The size bits of the opcode.
    pub const fn bits(self) -> u8 {
        match self {
            MemSize::B => mem::B,
            MemSize::H => mem::H,
            MemSize::W => mem::W,
            MemSize::DW => mem::DW,
        }
    }

    fn from_bits(code: u8) -> MemSize {
        match code & 0x18 {
            mem::B => MemSize::B,
            mem::H => MemSize::H,
            mem::W => MemSize::W,
            _ => MemSize::DW,
        }
    }

    /// The C type name used by the disassembler (`u8`, `u16`, `u32`, `u64`).
    pub const fn c_type(self) -> &'static str {
        match self {
            MemSize::B => "u8",
            MemSize::H => "u16",
            MemSize::W => "u32",
            MemSize::DW => "u64",
        }
    }
}

/// Binary ALU operations (everything but `neg` and byte swaps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AluOp {
    /// `dst += src`
    Add,
    /// `dst -= src`
    Sub,
    /// `dst *= src`
    Mul,
    /// Unsigned division; division by zero gives 0.
    Div,
    /// Signed division (`off = 1`); division by zero gives 0.
    SDiv,
    /// `dst |= src`
    Or,
    /// `dst &= src`
    And,
    /// Left shift, count masked to the width.
    Lsh,
    /// Logical right shift, count masked to the width.
    Rsh,
    /// Unsigned modulo; modulo by zero leaves dst unchanged.
    Mod,
    /// Signed modulo (`off = 1`); modulo by zero leaves dst unchanged.
    SMod,
    /// `dst ^= src`
    Xor,
    /// `dst = src`
    Mov,
    /// `dst = (sN) src`: sign-extending move from 8, 16 or 32 bits.
    MovSx(u8),
    /// Arithmetic right shift, count masked to the width.
    Arsh,
}

impl AluOp {
    /// The opcode's operation bits and the `off` field that selects this op.
    pub const fn encoding(self) -> (u8, i16) {
        match self {
            AluOp::Add => (alu::ADD, 0),
            AluOp::Sub => (alu::SUB, 0),
            AluOp::Mul => (alu::MUL, 0),
            AluOp::Div => (alu::DIV, 0),
            AluOp::SDiv => (alu::DIV, 1),
            AluOp::Or => (alu::OR, 0),
            AluOp::And => (alu::AND, 0),
            AluOp::Lsh => (alu::LSH, 0),
            AluOp::Rsh => (alu::RSH, 0),
            AluOp::Mod => (alu::MOD, 0),
            AluOp::SMod => (alu::MOD, 1),
            AluOp::Xor => (alu::XOR, 0),
            AluOp::Mov => (alu::MOV, 0),
            AluOp::MovSx(bits) => (alu::MOV, bits as i16),
            AluOp::Arsh => (alu::ARSH, 0),
        }
    }
}

impl AluOp {
    /// Every operation except the sign-extending moves, in opcode order
    /// (generators and sweeps iterate over it).
    pub const PLAIN: [AluOp; 14] = [
        AluOp::Add,
        AluOp::Sub,
        AluOp::Mul,
        AluOp::Div,
        AluOp::SDiv,
        AluOp::Or,
        AluOp::And,
        AluOp::Lsh,
        AluOp::Rsh,
        AluOp::Mod,
        AluOp::SMod,
        AluOp::Xor,
        AluOp::Mov,
        AluOp::Arsh,
    ];

    /// The concrete semantics (RFC 9669) of `dst = dst OP src` on values `a`
    /// (dst) and `b` (src): 32-bit operations work on the low halves and
    /// zero-extend their result; division by zero gives 0; modulo by zero
    /// leaves the dividend; signed division overflow wraps (`INT_MIN / -1`
    /// is `INT_MIN`, its remainder 0); shift counts are masked to the width.
    /// The interpreter, the verifier's constant folding and the JIT's tests
    /// all use this one definition.
    pub fn eval(self, width: Width, a: u64, b: u64) -> u64 {
        match width {
            Width::W64 => match self {
                AluOp::Add => a.wrapping_add(b),
                AluOp::Sub => a.wrapping_sub(b),
                AluOp::Mul => a.wrapping_mul(b),
                AluOp::Div => a.checked_div(b).unwrap_or(0),
                AluOp::SDiv if b == 0 => 0,
                AluOp::SDiv => (a as i64).wrapping_div(b as i64) as u64,
                AluOp::Mod => a.checked_rem(b).unwrap_or(a),
                AluOp::SMod if b == 0 => a,
                AluOp::SMod => (a as i64).wrapping_rem(b as i64) as u64,
                AluOp::Or => a | b,
                AluOp::And => a & b,
                AluOp::Xor => a ^ b,
                AluOp::Lsh => a << (b & 63),
                AluOp::Rsh => a >> (b & 63),
                AluOp::Arsh => ((a as i64) >> (b & 63)) as u64,
                AluOp::Mov => b,
                AluOp::MovSx(bits) => sign_extend(b, bits.into()),
            },
            Width::W32 => {
                let (x, y) = (a as u32, b as u32);
                let r: u32 = match self {
                    AluOp::Add => x.wrapping_add(y),
                    AluOp::Sub => x.wrapping_sub(y),
                    AluOp::Mul => x.wrapping_mul(y),
                    AluOp::Div => x.checked_div(y).unwrap_or(0),
                    AluOp::SDiv if y == 0 => 0,
                    AluOp::SDiv => (x as i32).wrapping_div(y as i32) as u32,
                    AluOp::Mod => x.checked_rem(y).unwrap_or(x),
                    AluOp::SMod if y == 0 => x,
                    AluOp::SMod => (x as i32).wrapping_rem(y as i32) as u32,
                    AluOp::Or => x | y,
                    AluOp::And => x & y,
                    AluOp::Xor => x ^ y,
                    AluOp::Lsh => x << (y & 31),
                    AluOp::Rsh => x >> (y & 31),
                    AluOp::Arsh => ((x as i32) >> (y & 31)) as u32,
                    AluOp::Mov => y,
                    AluOp::MovSx(bits) => sign_extend(y.into(), bits.into()) as u32,
                };
                r.into()
            }
        }
    }
}

/// Sign-extends the low `bits` bits of `v` to 64 bits (`bits >= 64`: `v`).
pub fn sign_extend(v: u64, bits: u32) -> u64 {
    if bits >= 64 {
        v
    } else {
        let s = 64 - bits;
        (((v << s) as i64) >> s) as u64
    }
}

/// Byte-order operations (`BPF_END`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ByteOrder {
    /// Convert host to little-endian (`le16/32/64`): truncation only on x86.
    ToLe,
    /// Convert host to big-endian (`be16/32/64`).
    ToBe,
    /// Unconditional byte swap (`bswap16/32/64`, ALU64 class).
    Swap,
}

impl ByteOrder {
    /// The concrete semantics on the low `bits` (16, 32, 64) bits of `v`, on
    /// a little-endian host: `ToLe` truncates, `ToBe` and `Swap` swap bytes.
    /// `None` for a width other than 16, 32 or 64.
    pub fn eval(self, bits: u8, v: u64) -> Option<u64> {
        Some(match (self, bits) {
            (ByteOrder::ToLe, 16) => v as u16 as u64,
            (ByteOrder::ToLe, 32) => v as u32 as u64,
            (ByteOrder::ToLe, 64) => v,
            (_, 16) => (v as u16).swap_bytes() as u64,
            (_, 32) => (v as u32).swap_bytes() as u64,
            (_, 64) => v.swap_bytes(),
            _ => return None,
        })
    }
}

/// Conditions of conditional jumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JmpCond {
    /// `==`
    Eq,
    /// unsigned `>`
    Gt,
    /// unsigned `>=`
    Ge,
    /// `dst & src != 0`
    Set,
    /// `!=`
    Ne,
    /// signed `>`
    Sgt,
    /// signed `>=`
    Sge,
    /// unsigned `<`
    Lt,
    /// unsigned `<=`
    Le,
    /// signed `<`
    Slt,
    /// signed `<=`
    Sle,
}

impl JmpCond {
    /// Every condition, in opcode order.
    pub const ALL: [JmpCond; 11] = [
        JmpCond::Eq,
        JmpCond::Gt,
        JmpCond::Ge,
        JmpCond::Set,
        JmpCond::Ne,
        JmpCond::Sgt,
        JmpCond::Sge,
        JmpCond::Lt,
        JmpCond::Le,
        JmpCond::Slt,
        JmpCond::Sle,
    ];

    /// The operation bits of the opcode.
    pub const fn op(self) -> u8 {
        match self {
            JmpCond::Eq => jmp::JEQ,
            JmpCond::Gt => jmp::JGT,
            JmpCond::Ge => jmp::JGE,
            JmpCond::Set => jmp::JSET,
            JmpCond::Ne => jmp::JNE,
            JmpCond::Sgt => jmp::JSGT,
            JmpCond::Sge => jmp::JSGE,
            JmpCond::Lt => jmp::JLT,
            JmpCond::Le => jmp::JLE,
            JmpCond::Slt => jmp::JSLT,
            JmpCond::Sle => jmp::JSLE,
        }
    }

    /// The condition that holds exactly when this one does not.
    pub const fn negate(self) -> Option<JmpCond> {
        Some(match self {
            JmpCond::Eq => JmpCond::Ne,
            JmpCond::Ne => JmpCond::Eq,
            JmpCond::Gt => JmpCond::Le,
            JmpCond::Le => JmpCond::Gt,
            JmpCond::Ge => JmpCond::Lt,
            JmpCond::Lt => JmpCond::Ge,
            JmpCond::Sgt => JmpCond::Sle,
            JmpCond::Sle => JmpCond::Sgt,
            JmpCond::Sge => JmpCond::Slt,
            JmpCond::Slt => JmpCond::Sge,
            JmpCond::Set => return None,
        })
    }

    /// Evaluates the condition on two 64-bit values (callers truncate for JMP32).
    pub fn eval(self, width: Width, a: u64, b: u64) -> bool {
        match width {
            Width::W64 => match self {
                JmpCond::Eq => a == b,
                JmpCond::Gt => a > b,
                JmpCond::Ge => a >= b,
                JmpCond::Set => a & b != 0,
                JmpCond::Ne => a != b,
                JmpCond::Sgt => (a as i64) > (b as i64),
                JmpCond::Sge => (a as i64) >= (b as i64),
                JmpCond::Lt => a < b,
                JmpCond::Le => a <= b,
                JmpCond::Slt => (a as i64) < (b as i64),
                JmpCond::Sle => (a as i64) <= (b as i64),
            },
            Width::W32 => {
                let (a, b) = (a as u32, b as u32);
                match self {
                    JmpCond::Eq => a == b,
                    JmpCond::Gt => a > b,
                    JmpCond::Ge => a >= b,
                    JmpCond::Set => a & b != 0,
                    JmpCond::Ne => a != b,
                    JmpCond::Sgt => (a as i32) > (b as i32),
                    JmpCond::Sge => (a as i32) >= (b as i32),
                    JmpCond::Lt => a < b,
                    JmpCond::Le => a <= b,
                    JmpCond::Slt => (a as i32) < (b as i32),
                    JmpCond::Sle => (a as i32) <= (b as i32),
                }
            }
        }
    }
}

/// Atomic read-modify-write operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AtomicOp {
    /// `*p += src`
    Add,
    /// `*p |= src`
    Or,
    /// `*p &= src`
    And,
    /// `*p ^= src`
    Xor,
    /// `src = xchg(p, src)` (always fetches)
    Xchg,
    /// `r0 = cmpxchg(p, r0, src)` (always fetches, into r0)
    CmpXchg,
}

/// The pseudo forms of `lddw` (linux/bpf.h `BPF_PSEUDO_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LdPseudo {
    /// `imm` is a map fd; the register gets the map pointer.
    MapFd,
    /// `imm` is a map fd, `next_imm` an offset into its value.
    MapValue,
    /// `imm` is a BTF id of a kernel variable.
    BtfId,
    /// `imm` is the slot offset of a subprogram (function pointer).
    Func,
    /// `imm` is a map index into the program's map table.
    MapIdx,
    /// `imm` is a map index, `next_imm` an offset into its value.
    MapIdxValue,
}

impl LdPseudo {
    /// The `src_reg` value of this form.
    pub const fn src(self) -> u8 {
        match self {
            LdPseudo::MapFd => pseudo::MAP_FD,
            LdPseudo::MapValue => pseudo::MAP_VALUE,
            LdPseudo::BtfId => pseudo::BTF_ID,
            LdPseudo::Func => pseudo::FUNC,
            LdPseudo::MapIdx => pseudo::MAP_IDX,
            LdPseudo::MapIdxValue => pseudo::MAP_IDX_VALUE,
        }
    }

    fn from_src(src: u8) -> Option<LdPseudo> {
        Some(match src {
            pseudo::MAP_FD => LdPseudo::MapFd,
            pseudo::MAP_VALUE => LdPseudo::MapValue,
            pseudo::BTF_ID => LdPseudo::BtfId,
            pseudo::FUNC => LdPseudo::Func,
            pseudo::MAP_IDX => LdPseudo::MapIdx,
            pseudo::MAP_IDX_VALUE => LdPseudo::MapIdxValue,
            _ => return None,
        })
    }
}

/// What a `call` instruction calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallTarget {
    /// A helper by static id (`src = 0`).
    Helper(i32),
    /// A bpf-to-bpf call (`src = 1`): target slot = pc + 1 + offset.
    Local(i32),
    /// A kernel function by BTF id (`src = 2`); decoded, never runnable here.
    Kfunc(i32),
}

/// One decoded instruction slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Insn {
    /// Binary ALU operation.
    Alu {
        /// 32- or 64-bit.
        width: Width,
        /// Operation.
        op: AluOp,
        /// Destination (and first operand).
        dst: Reg,
        /// Second operand.
        src: Source,
    },
    /// `dst = -dst`.
    Neg {
        /// 32- or 64-bit.
        width: Width,
        /// Operand register.
        dst: Reg,
    },
    /// Byte-order conversion or swap of the low `bits` (16, 32, 64) bits.
    Endian {
        /// Which conversion.
        order: ByteOrder,
        /// 16, 32 or 64.
        bits: u8,
        /// Operand register.
        dst: Reg,
    },
    /// `dst = imm64` (first slot of `lddw` with `src = 0`).
    LdImm64 {
        /// Destination.
        dst: Reg,
        /// The 64-bit value.
        imm: u64,
    },
    /// `lddw` pseudo forms (first slot): map references, globals, functions.
    LdPseudo {
        /// Destination.
        dst: Reg,
        /// Which form.
        kind: LdPseudo,
        /// First immediate (map fd/index, BTF id, function offset).
        imm: i32,
        /// Second immediate (offset into a map value).
        next_imm: i32,
    },
    /// Second slot of an `lddw`; never executed.
    LdImm64Hi,
    /// Legacy packet load `r0 = *(size *)(skb->data + imm)` (decoded, not supported).
    LdAbs {
        /// Access size.
        size: MemSize,
        /// Offset.
        imm: i32,
    },
    /// Legacy packet load `r0 = *(size *)(skb->data + src + imm)` (decoded, not supported).
    LdInd {
        /// Access size.
        size: MemSize,
        /// Index register.
        src: Reg,
        /// Offset.
        imm: i32,
    },
    /// `dst = *(size *)(src + off)`, sign-extending when `signed`.
    Load {
        /// Access size.
        size: MemSize,
        /// Sign-extend (`BPF_MEMSX`).
        signed: bool,
        /// Destination register.
        dst: Reg,
        /// Base register.
        src: Reg,
        /// Offset.
        off: i16,
    },
    /// `*(size *)(dst + off) = src`.
    Store {
        /// Access size.
        size: MemSize,
        /// Base register.
        dst: Reg,
        /// Offset.
        off: i16,
        /// Value stored (register for STX, immediate for ST).
        src: Source,
    },
    /// Atomic operation on `*(size *)(dst + off)` with `src`.
    Atomic {
        /// `W` or `DW`.
        size: MemSize,
        /// Operation.
        op: AtomicOp,
        /// Return the old value in `src` (always true for xchg/cmpxchg).
        fetch: bool,
        /// Base register.
        dst: Reg,
        /// Operand register.
        src: Reg,
        /// Offset.
        off: i16,
    },
    /// Unconditional jump to `pc + 1 + off`.
    Ja {
        /// Offset in slots.
        off: i32,
        /// Encoded as `gotol` (JMP32 class, 32-bit offset in `imm`).
        long: bool,
    },
    /// Conditional jump to `pc + 1 + off`.
    Jmp {
        /// 32-bit (`JMP32`) or 64-bit comparison.
        width: Width,
        /// Condition.
        cond: JmpCond,
        /// Left operand.
        dst: Reg,
        /// Right operand.
        src: Source,
        /// Offset in slots.
        off: i16,
    },
    /// Helper, local or kfunc call.
    Call(CallTarget),
    /// Call of a helper whose id is in a register (`callx`, register in `dst`).
    CallX {
        /// The register holding the helper id.
        reg: Reg,
    },
    /// Return from the current function (r0 is the result).
    Exit,
}

/// A decoding error, naming the slot.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid instruction {index}: {kind}")]
pub struct DecodeError {
    /// Slot index of the offending instruction.
    pub index: usize,
    /// What is wrong with it.
    pub kind: DecodeErrorKind,
}

/// What is wrong with an instruction.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    /// The byte length is not a multiple of 8.
    #[error("program length {len} is not a multiple of 8 bytes")]
    Truncated {
        /// The byte length.
        len: usize,
    },
    /// The opcode is not defined.
    #[error("unknown opcode {code:#04x}")]
    UnknownOpcode {
        /// The opcode byte.
        code: u8,
    },
    /// A register field names a register above r10.
    #[error("invalid register r{reg} in {field}")]
    InvalidRegister {
        /// The register number.
        reg: u8,
        /// `dst` or `src`.
        field: &'static str,
    },
    /// A field that must be zero for this opcode is not.
    #[error("reserved field {field} is {value:#x} for opcode {code:#04x} (must be 0)")]
    ReservedField {
        /// The opcode.
        code: u8,
        /// The field's name.
        field: &'static str,
        /// Its value.
        value: i64,
    },
    /// A field has a value the opcode does not define.
    #[error("invalid {field} {value:#x} for opcode {code:#04x}")]
    InvalidField {
        /// The opcode.
        code: u8,
        /// The field's name.
        field: &'static str,
        /// Its value.
        value: i64,
    },
    /// `lddw` in the last slot.
    #[error("lddw is missing its second half")]
    IncompleteLddw,
    /// The second slot of an `lddw` is malformed.
    #[error("malformed second half of lddw")]
    BadLddwHi,
}

fn reg(raw: u8, field: &'static str, index: usize) -> Result<Reg, DecodeError> {
    Reg::new(raw).ok_or(DecodeError {
        index,
        kind: DecodeErrorKind::InvalidRegister { reg: raw, field },
    })
}

fn zero(code: u8, field: &'static str, value: i64, index: usize) -> Result<(), DecodeError> {
    if value == 0 {
        Ok(())
    } else {
        Err(DecodeError {
            index,
            kind: DecodeErrorKind::ReservedField { code, field, value },
        })
    }
}

fn invalid(code: u8, field: &'static str, value: i64, index: usize) -> DecodeError {
    DecodeError {
        index,
        kind: DecodeErrorKind::InvalidField { code, field, value },
    }
}

impl Insn {
    /// Decodes the instruction at `slots[index]` (with `slots[index + 1]` for
    /// `lddw`). The caller supplies every slot so the second half can be read.
    pub fn decode(slots: &[RawInsn], index: usize) -> Result<Insn, DecodeError> {
        let r = slots[index];
        let code = r.code;
        let unknown = || DecodeError {
            index,
            kind: DecodeErrorKind::UnknownOpcode { code },
        };
        match r.class() {
            class::ALU | class::ALU64 => {
                let width = if r.class() == class::ALU64 {
                    Width::W64
                } else {
                    Width::W32
                };
                let dst = reg(r.dst, "dst", index)?;
                let op_bits = code & 0xf0;
                let is_x = code & source::X != 0;
                if op_bits == alu::NEG {
                    if is_x {
                        return Err(unknown());
                    }
                    zero(code, "src", r.src.into(), index)?;
                    zero(code, "off", r.off.into(), index)?;
                    zero(code, "imm", r.imm.into(), index)?;
                    return Ok(Insn::Neg { width, dst });
                }
                if op_bits == alu::END {
                    zero(code, "src", r.src.into(), index)?;
                    zero(code, "off", r.off.into(), index)?;
                    if !matches!(r.imm, 16 | 32 | 64) {
                        return Err(invalid(code, "imm", r.imm.into(), index));
                    }
                    let order = match (width, is_x) {
                        (Width::W32, false) => ByteOrder::ToLe,
                        (Width::W32, true) => ByteOrder::ToBe,
                        (Width::W64, false) => ByteOrder::Swap,
                        (Width::W64, true) => return Err(unknown()),
                    };
                    return Ok(Insn::Endian {
                        order,
                        bits: r.imm as u8,
                        dst,
                    });
                }
                let op = match (op_bits, r.off) {
                    (alu::ADD, 0) => AluOp::Add,
                    (alu::SUB, 0) => AluOp::Sub,
                    (alu::MUL, 0) => AluOp::Mul,
                    (alu::DIV, 0) => AluOp::Div,
                    (alu::DIV, 1) => AluOp::SDiv,
                    (alu::OR, 0) => AluOp::Or,
                    (alu::AND, 0) => AluOp::And,
                    (alu::LSH, 0) => AluOp::Lsh,
                    (alu::RSH, 0) => AluOp::Rsh,
                    (alu::MOD, 0) => AluOp::Mod,
                    (alu::MOD, 1) => AluOp::SMod,
                    (alu::XOR, 0) => AluOp::Xor,
                    (alu::MOV, 0) => AluOp::Mov,
                    (alu::MOV, 8 | 16) if is_x => AluOp::MovSx(r.off as u8),
                    (alu::MOV, 32) if is_x && width == Width::W64 => AluOp::MovSx(32),
                    (alu::ARSH, 0) => AluOp::Arsh,
                    (alu::ADD..=alu::ARSH, off) => {
                        return Err(
                            if off != 0 && !matches!(op_bits, alu::DIV | alu::MOD | alu::MOV) {
                                DecodeError {
                                    index,
                                    kind: DecodeErrorKind::ReservedField {
                                        code,
                                        field: "off",
                                        value: off.into(),
                                    },
                                }
                            } else {
                                invalid(code, "off", off.into(), index)
                            },
                        )
                    }
                    _ => return Err(unknown()),
                };
                let src = if is_x {
                    zero(code, "imm", r.imm.into(), index)?;
                    Source::Reg(reg(r.src, "src", index)?)
                } else {
                    zero(code, "src", r.src.into(), index)?;
                    Source::Imm(r.imm)
                };
                Ok(Insn::Alu {
                    width,
                    op,
                    dst,
                    src,
                })
            }
            class::JMP | class::JMP32 => {
                let width = if r.class() == class::JMP {
                    Width::W64
                } else {
                    Width::W32
                };
                let op_bits = code & 0xf0;
                let is_x = code & source::X != 0;
                match op_bits {
                    jmp::JA => {
                        if is_x {
                            return Err(unknown());
                        }
                        zero(code, "dst", r.dst.into(), index)?;
                        zero(code, "src", r.src.into(), index)?;
                        if width == Width::W64 {
                            zero(code, "imm", r.imm.into(), index)?;
                            Ok(Insn::Ja {
                                off: r.off.into(),
                                long: false,
                            })
                        } else {
                            zero(code, "off", r.off.into(), index)?;
                            Ok(Insn::Ja {
                                off: r.imm,
                                long: true,
                            })
                        }
                    }
                    jmp::CALL => {
                        if width == Width::W32 {
                            return Err(unknown());
                        }
                        zero(code, "off", r.off.into(), index)?;
                        if is_x {
                            zero(code, "src", r.src.into(), index)?;
                            zero(code, "imm", r.imm.into(), index)?;
                            return Ok(Insn::CallX {
                                reg: reg(r.dst, "dst", index)?,
                            });
                        }
                        zero(code, "dst", r.dst.into(), index)?;
                        let target = match r.src {
                            0 => CallTarget::Helper(r.imm),
                            pseudo::CALL => CallTarget::Local(r.imm),
                            pseudo::KFUNC_CALL => CallTarget::Kfunc(r.imm),
                            s => return Err(invalid(code, "src", s.into(), index)),
                        };
                        Ok(Insn::Call(target))
                    }
                    jmp::EXIT => {
                        if width == Width::W32 || is_x {
                            return Err(unknown());
                        }
                        zero(code, "dst", r.dst.into(), index)?;
                        zero(code, "src", r.src.into(), index)?;
                        zero(code, "off", r.off.into(), index)?;
                        zero(code, "imm", r.imm.into(), index)?;
                        Ok(Insn::Exit)
                    }
                    _ => {
                        let cond = JmpCond::ALL
                            .iter()
                            .copied()
                            .find(|c| c.op() == op_bits)
                            .ok_or_else(unknown)?;
                        let dst = reg(r.dst, "dst", index)?;
                        let src = if is_x {
                            zero(code, "imm", r.imm.into(), index)?;
                            Source::Reg(reg(r.src, "src", index)?)
                        } else {
                            zero(code, "src", r.src.into(), index)?;
                            Source::Imm(r.imm)
                        };
                        Ok(Insn::Jmp {
                            width,
                            cond,
                            dst,
                            src,
                            off: r.off,
                        })
                    }
                }
            }
            class::LD => {
                let size = MemSize::from_bits(code);
                match code & 0xe0 {
                    mem::IMM if size == MemSize::DW => {
                        let dst = reg(r.dst, "dst", index)?;
                        zero(code, "off", r.off.into(), index)?;
                        let hi = *slots.get(index + 1).ok_or(DecodeError {
                            index,
                            kind: DecodeErrorKind::IncompleteLddw,
                        })?;
                        if hi.code != 0 || hi.dst != 0 || hi.src != 0 || hi.off != 0 {
                            return Err(DecodeError {
                                index,
                                kind: DecodeErrorKind::BadLddwHi,
                            });
                        }
                        if r.src == 0 {
                            let imm = (r.imm as u32 as u64) | ((hi.imm as u32 as u64) << 32);
                            Ok(Insn::LdImm64 { dst, imm })
                        } else {
                            let kind = LdPseudo::from_src(r.src)
                                .ok_or_else(|| invalid(code, "src", r.src.into(), index))?;
                            Ok(Insn::LdPseudo {
                                dst,
                                kind,
                                imm: r.imm,
                                next_imm: hi.imm,
                            })
                        }
                    }
                    mem::ABS if size != MemSize::DW => {
                        zero(code, "dst", r.dst.into(), index)?;
                        zero(code, "src", r.src.into(), index)?;
                        zero(code, "off", r.off.into(), index)?;
                        Ok(Insn::LdAbs { size, imm: r.imm })
                    }
                    mem::IND if size != MemSize::DW => {
                        zero(code, "dst", r.dst.into(), index)?;
                        zero(code, "off", r.off.into(), index)?;
                        Ok(Insn::LdInd {
                            size,
                            src: reg(r.src, "src", index)?,
                            imm: r.imm,
                        })
                    }
                    _ => Err(unknown()),
                }
            }
            class::LDX => {
                let size = MemSize::from_bits(code);
                let signed = match code & 0xe0 {
                    mem::MEM => false,
                    mem::MEMSX if size != MemSize::DW => true,
                    _ => return Err(unknown()),
                };
                zero(code, "imm", r.imm.into(), index)?;
                Ok(Insn::Load {
                    size,
                    signed,
                    dst: reg(r.dst, "dst", index)?,
                    src: reg(r.src, "src", index)?,
                    off: r.off,
                })
            }
            class::ST => {
                if code & 0xe0 != mem::MEM {
                    return Err(unknown());
                }
                zero(code, "src", r.src.into(), index)?;
                Ok(Insn::Store {
                    size: MemSize::from_bits(code),
                    dst: reg(r.dst, "dst", index)?,
                    off: r.off,
                    src: Source::Imm(r.imm),
                })
            }
            class::STX => {
                let size = MemSize::from_bits(code);
                let dst = reg(r.dst, "dst", index)?;
                let src = reg(r.src, "src", index)?;
                match code & 0xe0 {
                    mem::MEM => {
                        zero(code, "imm", r.imm.into(), index)?;
                        Ok(Insn::Store {
                            size,
                            dst,
                            off: r.off,
                            src: Source::Reg(src),
                        })
                    }
                    mem::ATOMIC if matches!(size, MemSize::W | MemSize::DW) => {
                        let (op, fetch) = match r.imm {
                            atomic::XCHG => (AtomicOp::Xchg, true),
                            atomic::CMPXCHG => (AtomicOp::CmpXchg, true),
                            imm => {
                                let op = match imm & !atomic::FETCH {
                                    atomic::ADD => AtomicOp::Add,
                                    atomic::OR => AtomicOp::Or,
                                    atomic::AND => AtomicOp::And,
                                    atomic::XOR => AtomicOp::Xor,
                                    _ => return Err(invalid(code, "imm", imm.into(), index)),
                                };
                                (op, imm & atomic::FETCH != 0)
                            }
                        };
                        Ok(Insn::Atomic {
                            size,
                            op,
                            fetch,
                            dst,
                            src,
                            off: r.off,
                        })
                    }
                    _ => Err(unknown()),
                }
            }
            _ => unreachable!("class is three bits"),
        }
    }

    /// Encodes the instruction, appending one slot (two for `lddw`; none for
    /// [`Insn::LdImm64Hi`], whose content belongs to the first half).
    pub fn encode_into(&self, out: &mut Vec<RawInsn>) {
        let width_class = |w: Width, c64: u8, c32: u8| if w == Width::W64 { c64 } else { c32 };
        match *self {
            Insn::Alu {
                width,
                op,
                dst,
                src,
            } => {
                let (bits, off) = op.encoding();
                let cls = width_class(width, class::ALU64, class::ALU);
                let (s, sreg, imm) = match src {
                    Source::Reg(r) => (source::X, r.num(), 0),
                    Source::Imm(i) => (source::K, 0, i),
                };
                out.push(RawInsn::new(cls | s | bits, dst.num(), sreg, off, imm));
            }
            Insn::Neg { width, dst } => {
                let cls = width_class(width, class::ALU64, class::ALU);
                out.push(RawInsn::new(cls | alu::NEG, dst.num(), 0, 0, 0));
            }
            Insn::Endian { order, bits, dst } => {
                let code = match order {
                    ByteOrder::ToLe => class::ALU | alu::END | source::K,
                    ByteOrder::ToBe => class::ALU | alu::END | source::X,
                    ByteOrder::Swap => class::ALU64 | alu::END | source::K,
                };
                out.push(RawInsn::new(code, dst.num(), 0, 0, bits.into()));
            }
            Insn::LdImm64 { dst, imm } => {
                out.push(RawInsn::new(
                    class::LD | mem::IMM | mem::DW,
                    dst.num(),
                    0,
                    0,
                    imm as u32 as i32,
                ));
                out.push(RawInsn::new(0, 0, 0, 0, (imm >> 32) as u32 as i32));
            }
            Insn::LdPseudo {
                dst,
                kind,
                imm,
                next_imm,
            } => {
                out.push(RawInsn::new(
                    class::LD | mem::IMM | mem::DW,
                    dst.num(),
                    kind.src(),
                    0,
                    imm,
                ));
                out.push(RawInsn::new(0, 0, 0, 0, next_imm));
            }
            Insn::LdImm64Hi => {}
            Insn::LdAbs { size, imm } => out.push(RawInsn::new(
                class::LD | mem::ABS | size.bits(),
                0,
                0,
                0,
                imm,
            )),
            Insn::LdInd { size, src, imm } => out.push(RawInsn::new(
                class::LD | mem::IND | size.bits(),
                0,
                src.num(),
                0,
                imm,
            )),
            Insn::Load {
                size,
                signed,
                dst,
                src,
                off,
            } => {
                let mode = if signed { mem::MEMSX } else { mem::MEM };
                out.push(RawInsn::new(
                    class::LDX | mode | size.bits(),
                    dst.num(),
                    src.num(),
                    off,
                    0,
                ));
            }
            Insn::Store {
                size,
                dst,
                off,
                src,
            } => match src {
                Source::Reg(s) => out.push(RawInsn::new(
                    class::STX | mem::MEM | size.bits(),
                    dst.num(),
                    s.num(),
                    off,
                    0,
                )),
                Source::Imm(i) => out.push(RawInsn::new(
                    class::ST | mem::MEM | size.bits(),
                    dst.num(),
                    0,
                    off,
                    i,
                )),
            },
            Insn::Atomic {
                size,
                op,
                fetch,
                dst,
                src,
                off,
            } => {
                let imm = match op {
                    AtomicOp::Xchg => atomic::XCHG,
                    AtomicOp::CmpXchg => atomic::CMPXCHG,
                    AtomicOp::Add => atomic::ADD,
                    AtomicOp::Or => atomic::OR,
                    AtomicOp::And => atomic::AND,
                    AtomicOp::Xor => atomic::XOR,
                } | if fetch { atomic::FETCH } else { 0 };
                out.push(RawInsn::new(
                    class::STX | mem::ATOMIC | size.bits(),
                    dst.num(),
                    src.num(),
                    off,
                    imm,
                ));
            }
            Insn::Ja { off, long } => {
                if long {
                    out.push(RawInsn::new(class::JMP32 | jmp::JA, 0, 0, 0, off));
                } else {
                    out.push(RawInsn::new(class::JMP | jmp::JA, 0, 0, off as i16, 0));
                }
            }
            Insn::Jmp {
                width,
                cond,
                dst,
                src,
                off,
            } => {
                let cls = width_class(width, class::JMP, class::JMP32);
                let (s, sreg, imm) = match src {
                    Source::Reg(r) => (source::X, r.num(), 0),
                    Source::Imm(i) => (source::K, 0, i),
                };
                out.push(RawInsn::new(cls | s | cond.op(), dst.num(), sreg, off, imm));
            }
            Insn::Call(target) => {
                let (src, imm) = match target {
                    CallTarget::Helper(i) => (0, i),
                    CallTarget::Local(i) => (pseudo::CALL, i),
                    CallTarget::Kfunc(i) => (pseudo::KFUNC_CALL, i),
                };
                out.push(RawInsn::new(class::JMP | jmp::CALL, 0, src, 0, imm));
            }
            Insn::CallX { reg } => out.push(RawInsn::new(
                class::JMP | jmp::CALL | source::X,
                reg.num(),
                0,
                0,
                0,
            )),
            Insn::Exit => out.push(RawInsn::new(class::JMP | jmp::EXIT, 0, 0, 0, 0)),
        }
    }

    /// Number of slots the instruction occupies (2 for `lddw`, 0 for its second half).
    pub fn slots(&self) -> usize {
        match self {
            Insn::LdImm64 { .. } | Insn::LdPseudo { .. } => 2,
            Insn::LdImm64Hi => 0,
            _ => 1,
        }
    }

    /// For jumps and local calls: the target slot, given this instruction's slot.
    /// `None` for other instructions. May be out of range; callers check.
    pub fn branch_target(&self, pc: usize) -> Option<i64> {
        let next = pc as i64 + 1;
        match *self {
            Insn::Ja { off, .. } => Some(next + off as i64),
            Insn::Jmp { off, .. } => Some(next + off as i64),
            Insn::Call(CallTarget::Local(off)) => Some(next + off as i64),
            Insn::LdPseudo {
                kind: LdPseudo::Func,
                imm,
                ..
            } => Some(next + imm as i64),
            _ => None,
        }
    }
}

/// Decodes a whole program: one [`Insn`] per slot, with structural checks
/// (every `lddw` complete; no jump outside the program or into the middle of
/// an `lddw`). Semantic checks belong to the verifier.
pub fn decode_program(bytes: &[u8]) -> Result<Vec<Insn>, DecodeError> {
    decode_slots(&raw_slots(bytes)?)
}

/// Like [`decode_program`] for already split slots.
pub fn decode_slots(slots: &[RawInsn]) -> Result<Vec<Insn>, DecodeError> {
    let mut out = Vec::with_capacity(slots.len());
    let mut pc = 0;
    while pc < slots.len() {
        let insn = Insn::decode(slots, pc)?;
        out.push(insn);
        if insn.slots() == 2 {
            out.push(Insn::LdImm64Hi);
            pc += 2;
        } else {
            pc += 1;
        }
    }
    for (pc, insn) in out.iter().enumerate() {
        if let Some(t) = insn.branch_target(pc) {
            if t < 0 || t as usize >= out.len() {
                return Err(DecodeError {
                    index: pc,
                    kind: DecodeErrorKind::InvalidField {
                        code: slots[pc].code,
                        field: "jump target",
                        value: t,
                    },
                });
            }
            if out[t as usize] == Insn::LdImm64Hi {
                return Err(DecodeError {
                    index: pc,
                    kind: DecodeErrorKind::InvalidField {
                        code: slots[pc].code,
                        field: "jump target (middle of lddw)",
                        value: t,
                    },
                });
            }
        }
    }
    Ok(out)
}

/// Encodes a program given one [`Insn`] per slot (as [`decode_program`] returns)
/// or one per instruction (without [`Insn::LdImm64Hi`] entries): both give the
/// same bytes.
pub fn encode_program(insns: &[Insn]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(insns.len());
    for i in insns {
        i.encode_into(&mut raw);
    }
    raw.iter().flat_map(|r| r.to_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lddw_roundtrip() {
        let bytes = [
            0x18, 0x00, 0x00, 0x00, 0x88, 0x77, 0x66, 0x55, 0x00, 0x00, 0x00, 0x00, 0x44, 0x33,
            0x22, 0x11, 0x95, 0, 0, 0, 0, 0, 0, 0,
        ];
        let p = decode_program(&bytes).unwrap();
        assert_eq!(
            p,
            vec![
                Insn::LdImm64 {
                    dst: Reg::R0,
                    imm: 0x1122334455667788
                },
                Insn::LdImm64Hi,
                Insn::Exit
            ]
        );
        assert_eq!(encode_program(&p), bytes);
    }

    #[test]
    fn reserved_fields_rejected() {
        // add64 r0, 1 with off=1
        let e = decode_program(&[0x07, 0, 1, 0, 1, 0, 0, 0]).unwrap_err();
        assert_eq!(e.index, 0);
        assert!(matches!(
            e.kind,
            DecodeErrorKind::ReservedField { field: "off", .. }
        ));
        // exit with imm
        let e = decode_program(&[0x95, 0, 0, 0, 1, 0, 0, 0]).unwrap_err();
        assert!(matches!(
            e.kind,
            DecodeErrorKind::ReservedField { field: "imm", .. }
        ));
    }

    #[test]
    fn jump_into_lddw_rejected() {
        let mut raw = vec![];
        Insn::Ja {
            off: 1,
            long: false,
        }
        .encode_into(&mut raw);
        Insn::LdImm64 {
            dst: Reg::R0,
            imm: 5,
        }
        .encode_into(&mut raw);
        Insn::Exit.encode_into(&mut raw);
        let e = decode_slots(&raw).unwrap_err();
        assert_eq!(e.index, 0);
    }

    #[test]
    fn truncated_rejected() {
        let e = decode_program(&[0x95, 0, 0]).unwrap_err();
        assert!(matches!(e.kind, DecodeErrorKind::Truncated { len: 3 }));
        let e = decode_program(&[0x18, 0, 0, 0, 0, 0, 0, 0]).unwrap_err();
        assert_eq!(e.kind, DecodeErrorKind::IncompleteLddw);
    }
}
