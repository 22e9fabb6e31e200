//! Verification cost, reported like the kernel's `processed N insns`: a
//! 4,096-instruction program with nested bounded loops must verify within
//! the budget, and its statistics are printed (not a timed test).

use pkbpf_verifier::isa::{AluOp, Insn, JmpCond, Reg, Source, Width};
use pkbpf_verifier::verifier::ctx::CtxDesc;
use pkbpf_verifier::{ProgramEnv, Verifier};
use std::time::Instant;

fn reg(n: u8) -> Reg {
    Reg::new(n).unwrap()
}

fn alu(op: AluOp, dst: u8, src: Source) -> Insn {
    Insn::Alu {
        width: Width::W64,
        op,
        dst: reg(dst),
        src,
    }
}

/// `r6` outer counter to 4, `r7` inner counter to 4, straight-line ALU work
/// on r0/r2/r3 in the inner body, padded to `total` slots.
fn nested_loops(total: usize) -> Vec<Insn> {
    let mut p = vec![
        alu(AluOp::Mov, 0, Source::Imm(0)),
        alu(AluOp::Mov, 2, Source::Imm(1)),
        alu(AluOp::Mov, 3, Source::Imm(2)),
        alu(AluOp::Mov, 6, Source::Imm(0)),
    ];
    let outer = p.len();
    p.push(alu(AluOp::Mov, 7, Source::Imm(0)));
    let inner = p.len();
    let body = total - p.len() - 6;
    let ops = [
        AluOp::Add,
        AluOp::Xor,
        AluOp::Mul,
        AluOp::Or,
        AluOp::Sub,
        AluOp::And,
    ];
    for i in 0..body {
        let (dst, src) = [(0u8, 2u8), (2, 3), (3, 0)][i % 3];
        p.push(alu(ops[i % ops.len()], dst, Source::Reg(reg(src))));
    }
    p.push(alu(AluOp::Add, 7, Source::Imm(1)));
    let j = p.len();
    p.push(Insn::Jmp {
        width: Width::W64,
        cond: JmpCond::Lt,
        dst: reg(7),
        src: Source::Imm(4),
        off: (inner as i64 - j as i64 - 1) as i16,
    });
    p.push(alu(AluOp::Add, 6, Source::Imm(1)));
    let j = p.len();
    p.push(Insn::Jmp {
        width: Width::W64,
        cond: JmpCond::Lt,
        dst: reg(6),
        src: Source::Imm(4),
        off: (outer as i64 - j as i64 - 1) as i16,
    });
    p.push(alu(AluOp::Mov, 0, Source::Imm(0)));
    p.push(Insn::Exit);
    assert_eq!(p.len(), total);
    p
}

#[test]
fn nested_loops_of_4096_insns_verify_within_budget() {
    let prog = nested_loops(4096);
    let env = ProgramEnv::new(CtxDesc::PtRegs);
    let t = Instant::now();
    let (res, log) = Verifier::new(&env).log_level(1).verify(&prog);
    let elapsed = t.elapsed();
    let v = res.unwrap_or_else(|e| panic!("rejected: {e}\n{log}"));
    let s = v.stats();
    println!(
        "4096-insn nested loops: {elapsed:?}, processed {} insns, {} states kept, {} pruned",
        s.processed, s.total_states, s.pruned
    );
    // 16 iterations of a ~4,080-instruction body, each instruction once per iteration.
    assert!(s.processed >= 16 * 4000 && s.processed < 20 * 4096, "{s:?}");
    assert!(log.lines().last().unwrap().starts_with("processed "));
}
