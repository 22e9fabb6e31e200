//! Small program builders shared by the interpreter tests.
#![allow(dead_code)]

use pkbpf_jit::interp::{ExecError, Interpreter, Memory, NoHelpers, Outcome, RegionKind};
use pkbpf_verifier::isa::{AluOp, Insn, JmpCond, MemSize, Reg, Source, Width};

pub fn r(n: u8) -> Reg {
    Reg::new(n).unwrap()
}

pub fn alu64(op: AluOp, dst: u8, imm: i32) -> Insn {
    Insn::Alu {
        width: Width::W64,
        op,
        dst: r(dst),
        src: Source::Imm(imm),
    }
}

pub fn alu32(op: AluOp, dst: u8, imm: i32) -> Insn {
    Insn::Alu {
        width: Width::W32,
        op,
        dst: r(dst),
        src: Source::Imm(imm),
    }
}

pub fn alu64r(op: AluOp, dst: u8, src: u8) -> Insn {
    Insn::Alu {
        width: Width::W64,
        op,
        dst: r(dst),
        src: Source::Reg(r(src)),
    }
}

pub fn alu32r(op: AluOp, dst: u8, src: u8) -> Insn {
    Insn::Alu {
        width: Width::W32,
        op,
        dst: r(dst),
        src: Source::Reg(r(src)),
    }
}

pub fn mov64(dst: u8, imm: i32) -> Insn {
    alu64(AluOp::Mov, dst, imm)
}

/// `lddw dst, imm` as the two slots `decode_program` gives.
pub fn lddw(dst: u8, imm: u64) -> [Insn; 2] {
    [Insn::LdImm64 { dst: r(dst), imm }, Insn::LdImm64Hi]
}

pub fn ldx(size: MemSize, dst: u8, src: u8, off: i16) -> Insn {
    Insn::Load {
        size,
        signed: false,
        dst: r(dst),
        src: r(src),
        off,
    }
}

pub fn ldxs(size: MemSize, dst: u8, src: u8, off: i16) -> Insn {
    Insn::Load {
        size,
        signed: true,
        dst: r(dst),
        src: r(src),
        off,
    }
}

pub fn stx(size: MemSize, dst: u8, off: i16, src: u8) -> Insn {
    Insn::Store {
        size,
        dst: r(dst),
        off,
        src: Source::Reg(r(src)),
    }
}

pub fn st(size: MemSize, dst: u8, off: i16, imm: i32) -> Insn {
    Insn::Store {
        size,
        dst: r(dst),
        off,
        src: Source::Imm(imm),
    }
}

pub fn jmp(width: Width, cond: JmpCond, dst: u8, src: Source, off: i16) -> Insn {
    Insn::Jmp {
        width,
        cond,
        dst: r(dst),
        src,
        off,
    }
}

/// Runs `prog` with no helpers and no regions but the stack.
pub fn run(prog: &[Insn]) -> Result<Outcome, ExecError> {
    let mut mem = Memory::new();
    Interpreter::new(prog).run(&mut mem, &mut NoHelpers, [0; 5])
}

/// Runs `prog` and returns r0, panicking (test failure) on an error.
pub fn r0(prog: &[Insn]) -> u64 {
    match run(prog) {
        Ok(o) => o.r0,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// Runs `prog` with `input` as a writable input region in r1 (len in r2);
/// returns the outcome and the buffer afterwards.
pub fn run_with_input(prog: &[Insn], input: &[u8]) -> (Result<Outcome, ExecError>, Vec<u8>) {
    let mut buf = input.to_vec();
    let len = buf.len() as u64;
    let res = {
        let mut mem = Memory::new();
        let addr = mem.add_slice_mut(&mut buf, RegionKind::Input);
        Interpreter::new(prog).run(&mut mem, &mut NoHelpers, [addr, len, 0, 0, 0])
    };
    (res, buf)
}
