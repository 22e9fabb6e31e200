//! The disassembler: one printer of kernel / llvm-objdump syntax used by the
//! CLI, the verifier log, error messages and tests.
//!
//! The text is the one the kernel verifier and `llvm-objdump -d` print, with
//! llvm's spacing (`r0 = *(u32 *)(r1 + 8)`, `if r1 > 0x5 goto +3`). Every
//! instruction [`crate::isa::decode_program`] accepts prints to a line that
//! [`crate::asm::assemble`] reads back to the same instruction. The forms:
//!
//! | instruction | text |
//! |---|---|
//! | ALU (64 / 32 bit) | `r0 += r1`, `w0 += 5`, `r0 s/= r1`, `r0 s%= r1`, `r0 s>>= 3` |
//! | move, sign-extending move | `r0 = r1`, `w0 = -1`, `r0 = (s8)r1`, `w0 = (s16)w1` |
//! | negation, byte order | `r0 = -r0`, `w0 = -w0`, `r0 = be16 r0`, `r0 = le32 r0`, `r0 = bswap64 r0` |
//! | 64-bit immediate | `r0 = 0x1122334455667788 ll` |
//! | `lddw` pseudo forms | `r1 = map[id:3]`, `r1 = map[id:3][0]+16`, `r1 = map[idx:0]`, `r1 = map[idx:0]+16`, `r1 = btf_id:5 ll`, `r1 = func pc+5` |
//! | loads, stores | `r0 = *(u32 *)(r1 + 8)`, `r0 = *(s8 *)(r1 + 0)`, `*(u64 *)(r10 - 8) = r1`, `*(u32 *)(r10 - 4) = 5` |
//! | atomics | `lock *(u64 *)(r10 - 8) += r1`, `r1 = atomic_fetch_add((u64 *)(r10 - 8), r1)`, `r1 = xchg_64(r10 - 8, r1)`, `r0 = cmpxchg_64(r10 - 8, r0, r1)`, 32-bit: `w1 = xchg32_32(r10 - 8, w1)`, `w0 = cmpxchg32_32(r10 - 8, w0, w1)` |
//! | legacy packet loads | `r0 = *(u8 *)skb[5]`, `r0 = *(u16 *)skb[r1 + 5]` |
//! | jumps | `goto +3`, `gotol +70000`, `if r1 > 0x5 goto +3`, `if w1 s< w2 goto -4`, `if r1 & 0x8 goto +1` |
//! | calls, exit | `call bpf_map_lookup_elem#1`, `call #300`, `call pc+5`, `call kfunc#7`, `callx r2`, `exit` |
//!
//! ALU and store immediates print in signed decimal; jump immediates in hex
//! (`-0x1` when negative); the 64-bit immediate as its unsigned hex value. A
//! pseudo `lddw` form whose second immediate is unused by the form but
//! non-zero prints it as a trailing `next_imm:N` so no bit is lost.

use std::fmt::Write as _;

pub use crate::helpers_names::helper_name;
use crate::isa::{
    AluOp, AtomicOp, ByteOrder, CallTarget, Insn, JmpCond, LdPseudo, MemSize, Reg, Source, Width,
};

/// The register as written at `width`: `r3` or `w3`.
fn reg(r: Reg, width: Width) -> String {
    match width {
        Width::W64 => format!("r{}", r.num()),
        Width::W32 => format!("w{}", r.num()),
    }
}

/// `+3`, `-4`, `+0`.
fn signed_off(off: i64) -> String {
    format!("{off:+}")
}

/// `(r1 + 8)`, `(r10 - 8)` (llvm spacing).
fn mem_operand(base: Reg, off: i16) -> String {
    format!("{} {}", base, plus_minus(off.into()))
}

/// `+ 8` / `- 8`.
fn plus_minus(v: i64) -> String {
    if v < 0 {
        format!("- {}", v.unsigned_abs())
    } else {
        format!("+ {v}")
    }
}

/// Jump immediates: `0x5`, `-0x1`.
fn hex_imm(v: i32) -> String {
    if v < 0 {
        format!("-{:#x}", v.unsigned_abs())
    } else {
        format!("{v:#x}")
    }
}

/// The compound-assignment operator of a binary ALU operation
/// (`MovSx` is printed separately).
fn alu_operator(op: AluOp) -> &'static str {
    match op {
        AluOp::Add => "+=",
        AluOp::Sub => "-=",
        AluOp::Mul => "*=",
        AluOp::Div => "/=",
        AluOp::SDiv => "s/=",
        AluOp::Or => "|=",
        AluOp::And => "&=",
        AluOp::Lsh => "<<=",
        AluOp::Rsh => ">>=",
        AluOp::Mod => "%=",
        AluOp::SMod => "s%=",
        AluOp::Xor => "^=",
        AluOp::Mov | AluOp::MovSx(_) => "=",
        AluOp::Arsh => "s>>=",
    }
}

/// The comparison operator of a conditional jump.
pub(crate) fn cond_operator(cond: JmpCond) -> &'static str {
    match cond {
        JmpCond::Eq => "==",
        JmpCond::Gt => ">",
        JmpCond::Ge => ">=",
        JmpCond::Set => "&",
        JmpCond::Ne => "!=",
        JmpCond::Sgt => "s>",
        JmpCond::Sge => "s>=",
        JmpCond::Lt => "<",
        JmpCond::Le => "<=",
        JmpCond::Slt => "s<",
        JmpCond::Sle => "s<=",
    }
}

/// The C-like name of an atomic read-modify-write operation.
fn atomic_name(op: AtomicOp) -> &'static str {
    match op {
        AtomicOp::Add => "add",
        AtomicOp::Or => "or",
        AtomicOp::And => "and",
        AtomicOp::Xor => "xor",
        AtomicOp::Xchg => "xchg",
        AtomicOp::CmpXchg => "cmpxchg",
    }
}

/// The compound operator of a non-fetching atomic (`+=`, `|=`, ...).
fn atomic_operator(op: AtomicOp) -> &'static str {
    match op {
        AtomicOp::Add => "+=",
        AtomicOp::Or => "|=",
        AtomicOp::And => "&=",
        AtomicOp::Xor => "^=",
        AtomicOp::Xchg => "xchg=",
        AtomicOp::CmpXchg => "cmpxchg=",
    }
}

/// Prints one instruction in kernel / llvm-objdump syntax. `pc` is the
/// instruction's slot; it is not printed, since jump offsets stay relative
/// (`goto +3`), but it is part of the signature so callers can later be given
/// absolute targets without changing every call site.
pub fn insn_to_string(insn: &Insn, _pc: usize) -> String {
    match *insn {
        Insn::Alu {
            width,
            op,
            dst,
            src,
        } => {
            let d = reg(dst, width);
            match (op, src) {
                (AluOp::MovSx(bits), Source::Reg(s)) => {
                    format!("{d} = (s{bits}){}", reg(s, width))
                }
                (AluOp::MovSx(bits), Source::Imm(i)) => format!("{d} = (s{bits}){i}"),
                (op, Source::Reg(s)) => format!("{d} {} {}", alu_operator(op), reg(s, width)),
                (op, Source::Imm(i)) => format!("{d} {} {i}", alu_operator(op)),
            }
        }
        Insn::Neg { width, dst } => {
            let d = reg(dst, width);
            format!("{d} = -{d}")
        }
        Insn::Endian { order, bits, dst } => {
            let name = match order {
                ByteOrder::ToLe => "le",
                ByteOrder::ToBe => "be",
                ByteOrder::Swap => "bswap",
            };
            format!("{dst} = {name}{bits} {dst}")
        }
        Insn::LdImm64 { dst, imm } => format!("{dst} = {imm:#x} ll"),
        Insn::LdPseudo {
            dst,
            kind,
            imm,
            next_imm,
        } => {
            let (body, uses_next) = match kind {
                LdPseudo::MapFd => (format!("map[id:{imm}]"), false),
                LdPseudo::MapValue => (format!("map[id:{imm}][0]+{}", next_imm as u32), true),
                LdPseudo::MapIdx => (format!("map[idx:{imm}]"), false),
                LdPseudo::MapIdxValue => (format!("map[idx:{imm}]+{}", next_imm as u32), true),
                LdPseudo::BtfId => (format!("btf_id:{imm} ll"), false),
                LdPseudo::Func => (format!("func pc{}", signed_off(imm.into())), false),
            };
            let mut s = format!("{dst} = {body}");
            if !uses_next && next_imm != 0 {
                let _ = write!(s, " next_imm:{next_imm}");
            }
            s
        }
        Insn::LdImm64Hi => "(second half of lddw)".to_string(),
        Insn::LdAbs { size, imm } => format!("r0 = *({} *)skb[{imm}]", size.c_type()),
        Insn::LdInd { size, src, imm } => {
            format!(
                "r0 = *({} *)skb[{src} {}]",
                size.c_type(),
                plus_minus(imm.into())
            )
        }
        Insn::Load {
            size,
            signed,
            dst,
            src,
            off,
        } => {
            let ty = if signed {
                signed_c_type(size)
            } else {
                size.c_type()
            };
            format!("{dst} = *({ty} *)({})", mem_operand(src, off))
        }
        Insn::Store {
            size,
            dst,
            off,
            src,
        } => {
            let value = match src {
                Source::Reg(s) => s.to_string(),
                Source::Imm(i) => i.to_string(),
            };
            format!(
                "*({} *)({}) = {value}",
                size.c_type(),
                mem_operand(dst, off)
            )
        }
        Insn::Atomic {
            size,
            op,
            fetch,
            dst,
            src,
            off,
        } => {
            let w = if size == MemSize::DW {
                Width::W64
            } else {
                Width::W32
            };
            let s = reg(src, w);
            let addr = mem_operand(dst, off);
            let ty = size.c_type();
            match op {
                AtomicOp::Xchg | AtomicOp::CmpXchg if fetch => {
                    let name = atomic_name(op);
                    let suffix = if w == Width::W64 { "_64" } else { "32_32" };
                    if op == AtomicOp::Xchg {
                        format!("{s} = {name}{suffix}({addr}, {s})")
                    } else {
                        let r0 = reg(Reg::R0, w);
                        format!("{r0} = {name}{suffix}({addr}, {r0}, {s})")
                    }
                }
                _ if fetch => format!(
                    "{s} = atomic_fetch_{}(({ty} *)({addr}), {s})",
                    atomic_name(op)
                ),
                _ => format!("lock *({ty} *)({addr}) {} {s}", atomic_operator(op)),
            }
        }
        Insn::Ja { off, long } => {
            let m = if long { "gotol" } else { "goto" };
            format!("{m} {}", signed_off(off.into()))
        }
        Insn::Jmp {
            width,
            cond,
            dst,
            src,
            off,
        } => {
            let rhs = match src {
                Source::Reg(s) => reg(s, width),
                Source::Imm(i) => hex_imm(i),
            };
            format!(
                "if {} {} {rhs} goto {}",
                reg(dst, width),
                cond_operator(cond),
                signed_off(off.into())
            )
        }
        Insn::Call(CallTarget::Helper(id)) => match helper_name(id) {
            Some(name) => format!("call {name}#{id}"),
            None => format!("call #{id}"),
        },
        Insn::Call(CallTarget::Local(off)) => format!("call pc{}", signed_off(off.into())),
        Insn::Call(CallTarget::Kfunc(id)) => format!("call kfunc#{id}"),
        Insn::CallX { reg } => format!("callx {reg}"),
        Insn::Exit => "exit".to_string(),
    }
}

/// `s8`, `s16`, `s32` (and `s64`, which no valid instruction uses).
fn signed_c_type(size: MemSize) -> &'static str {
    match size {
        MemSize::B => "s8",
        MemSize::H => "s16",
        MemSize::W => "s32",
        MemSize::DW => "s64",
    }
}

/// Prints a program given one [`Insn`] per slot: one line `N: text` per
/// instruction, `N` being its slot, skipping [`Insn::LdImm64Hi`] (so the line
/// after an `lddw` at slot 3 is numbered 5). Every line ends with a newline.
pub fn disassemble(insns: &[Insn]) -> String {
    let mut out = String::new();
    for (pc, insn) in insns.iter().enumerate() {
        if *insn == Insn::LdImm64Hi {
            continue;
        }
        let _ = writeln!(out, "{pc}: {}", insn_to_string(insn, pc));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::decode_program;

    fn r(n: u8) -> Reg {
        Reg::new(n).unwrap()
    }

    #[test]
    fn prints_kernel_syntax() {
        let cases: Vec<(Insn, &str)> = vec![
            (
                Insn::Load {
                    size: MemSize::W,
                    signed: false,
                    dst: r(0),
                    src: r(1),
                    off: 8,
                },
                "r0 = *(u32 *)(r1 + 8)",
            ),
            (
                Insn::Load {
                    size: MemSize::B,
                    signed: true,
                    dst: r(0),
                    src: r(1),
                    off: 0,
                },
                "r0 = *(s8 *)(r1 + 0)",
            ),
            (
                Insn::Store {
                    size: MemSize::DW,
                    dst: r(10),
                    off: -8,
                    src: Source::Reg(r(1)),
                },
                "*(u64 *)(r10 - 8) = r1",
            ),
            (
                Insn::Store {
                    size: MemSize::W,
                    dst: r(10),
                    off: -4,
                    src: Source::Imm(5),
                },
                "*(u32 *)(r10 - 4) = 5",
            ),
            (
                Insn::Alu {
                    width: Width::W32,
                    op: AluOp::Add,
                    dst: r(0),
                    src: Source::Imm(5),
                },
                "w0 += 5",
            ),
            (
                Insn::Alu {
                    width: Width::W64,
                    op: AluOp::SMod,
                    dst: r(0),
                    src: Source::Reg(r(1)),
                },
                "r0 s%= r1",
            ),
            (
                Insn::Alu {
                    width: Width::W64,
                    op: AluOp::Arsh,
                    dst: r(0),
                    src: Source::Imm(3),
                },
                "r0 s>>= 3",
            ),
            (
                Insn::Alu {
                    width: Width::W32,
                    op: AluOp::MovSx(16),
                    dst: r(0),
                    src: Source::Reg(r(1)),
                },
                "w0 = (s16)w1",
            ),
            (
                Insn::Neg {
                    width: Width::W32,
                    dst: r(0),
                },
                "w0 = -w0",
            ),
            (
                Insn::Endian {
                    order: ByteOrder::Swap,
                    bits: 64,
                    dst: r(0),
                },
                "r0 = bswap64 r0",
            ),
            (
                Insn::LdImm64 {
                    dst: r(0),
                    imm: 0x1122334455667788,
                },
                "r0 = 0x1122334455667788 ll",
            ),
            (
                Insn::LdPseudo {
                    dst: r(1),
                    kind: LdPseudo::MapValue,
                    imm: 3,
                    next_imm: 16,
                },
                "r1 = map[id:3][0]+16",
            ),
            (
                Insn::LdPseudo {
                    dst: r(1),
                    kind: LdPseudo::MapIdx,
                    imm: 0,
                    next_imm: 0,
                },
                "r1 = map[idx:0]",
            ),
            (
                Insn::LdPseudo {
                    dst: r(1),
                    kind: LdPseudo::Func,
                    imm: 5,
                    next_imm: 0,
                },
                "r1 = func pc+5",
            ),
            (
                Insn::Jmp {
                    width: Width::W64,
                    cond: JmpCond::Gt,
                    dst: r(1),
                    src: Source::Imm(5),
                    off: 3,
                },
                "if r1 > 0x5 goto +3",
            ),
            (
                Insn::Jmp {
                    width: Width::W32,
                    cond: JmpCond::Slt,
                    dst: r(1),
                    src: Source::Reg(r(2)),
                    off: -4,
                },
                "if w1 s< w2 goto -4",
            ),
            (
                Insn::Jmp {
                    width: Width::W64,
                    cond: JmpCond::Set,
                    dst: r(1),
                    src: Source::Imm(-1),
                    off: 1,
                },
                "if r1 & -0x1 goto +1",
            ),
            (
                Insn::Ja {
                    off: 70000,
                    long: true,
                },
                "gotol +70000",
            ),
            (
                Insn::Call(CallTarget::Helper(1)),
                "call bpf_map_lookup_elem#1",
            ),
            (Insn::Call(CallTarget::Helper(5000)), "call #5000"),
            (Insn::Call(CallTarget::Local(-3)), "call pc-3"),
            (Insn::Call(CallTarget::Kfunc(7)), "call kfunc#7"),
            (Insn::CallX { reg: r(2) }, "callx r2"),
            (
                Insn::Atomic {
                    size: MemSize::DW,
                    op: AtomicOp::Add,
                    fetch: false,
                    dst: r(10),
                    src: r(1),
                    off: -8,
                },
                "lock *(u64 *)(r10 - 8) += r1",
            ),
            (
                Insn::Atomic {
                    size: MemSize::W,
                    op: AtomicOp::Xor,
                    fetch: true,
                    dst: r(10),
                    src: r(1),
                    off: -8,
                },
                "w1 = atomic_fetch_xor((u32 *)(r10 - 8), w1)",
            ),
            (
                Insn::Atomic {
                    size: MemSize::DW,
                    op: AtomicOp::CmpXchg,
                    fetch: true,
                    dst: r(10),
                    src: r(1),
                    off: -8,
                },
                "r0 = cmpxchg_64(r10 - 8, r0, r1)",
            ),
            (
                Insn::Atomic {
                    size: MemSize::W,
                    op: AtomicOp::Xchg,
                    fetch: true,
                    dst: r(10),
                    src: r(1),
                    off: -8,
                },
                "w1 = xchg32_32(r10 - 8, w1)",
            ),
            (
                Insn::LdInd {
                    size: MemSize::H,
                    src: r(1),
                    imm: 5,
                },
                "r0 = *(u16 *)skb[r1 + 5]",
            ),
            (Insn::Exit, "exit"),
        ];
        for (insn, text) in cases {
            assert_eq!(insn_to_string(&insn, 0), text, "{insn:?}");
        }
    }

    #[test]
    fn disassemble_numbers_slots_and_skips_lddw_high_half() {
        // lddw r0, 0x1122334455667788; r0 += 1; exit
        let bytes = [
            0x18, 0x00, 0, 0, 0x88, 0x77, 0x66, 0x55, 0, 0, 0, 0, 0x44, 0x33, 0x22, 0x11, 0x07,
            0x00, 0, 0, 1, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0,
        ];
        let p = decode_program(&bytes).unwrap();
        assert_eq!(
            disassemble(&p),
            "0: r0 = 0x1122334455667788 ll\n2: r0 += 1\n3: exit\n"
        );
    }
}
