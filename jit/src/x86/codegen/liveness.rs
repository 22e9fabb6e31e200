//! Register liveness over the eBPF control-flow graph, for peepholes that
//! drop a write nobody reads (`rX += k` folded into the next access's
//! displacement when rX is dead after it).
//!
//! A backward dataflow: `in = use ∪ (out − def)`, `out = ∪ in(successor)`,
//! iterated to a fixed point. It errs towards *live*: a local call reads
//! every register, an atomic defines none, `r10` is always live. Being live
//! only stops a peephole, so imprecision costs speed, never correctness.

use pkbpf_verifier::isa::{CallTarget, Insn, Reg, Source};

/// Bit of eBPF register `r`.
fn bit(r: Reg) -> u16 {
    1 << r.idx()
}

/// r1–r5: arguments, clobbered by calls.
const ARGS: u16 = 0b11_1110;
/// r0–r5: what a call writes (r0) or leaves undefined (r1–r5).
const CLOBBERED: u16 = 0b11_1111;
/// r0–r9.
const ALL: u16 = 0b11_1111_1111;
/// r10, the read-only frame pointer.
const FP: u16 = 1 << 10;

fn src_bit(s: Source) -> u16 {
    match s {
        Source::Reg(r) => bit(r),
        Source::Imm(_) => 0,
    }
}

/// (registers read, registers written) by one instruction.
fn use_def(insn: &Insn) -> (u16, u16) {
    use pkbpf_verifier::isa::AluOp;
    match *insn {
        Insn::Alu { op, dst, src, .. } => {
            let reads_dst = !matches!(op, AluOp::Mov | AluOp::MovSx(_));
            (
                src_bit(src) | if reads_dst { bit(dst) } else { 0 },
                bit(dst),
            )
        }
        Insn::Neg { dst, .. } | Insn::Endian { dst, .. } => (bit(dst), bit(dst)),
        Insn::LdImm64 { dst, .. } | Insn::LdPseudo { dst, .. } => (0, bit(dst)),
        Insn::LdImm64Hi | Insn::Ja { .. } => (0, 0),
        Insn::LdAbs { .. } => (ALL, CLOBBERED),
        Insn::LdInd { src, .. } => (ALL | bit(src), CLOBBERED),
        Insn::Load { dst, src, .. } => (bit(src), bit(dst)),
        Insn::Store { dst, src, .. } => (bit(dst) | src_bit(src), 0),
        // Fetch forms write `src` (or r0); defining nothing keeps them live.
        Insn::Atomic { dst, src, .. } => (bit(dst) | bit(src) | 1, 0),
        Insn::Jmp { dst, src, .. } => (bit(dst) | src_bit(src), 0),
        Insn::Call(CallTarget::Helper(_)) | Insn::Call(CallTarget::Kfunc(_)) => (ARGS, CLOBBERED),
        Insn::Call(CallTarget::Local(_)) => (ALL, CLOBBERED),
        Insn::CallX { reg } => (ARGS | bit(reg), CLOBBERED),
        Insn::Exit => (1, 0),
    }
}

/// Whether any slot pair has a shape a liveness-based peephole looks for
/// (`rX += imm` before a load or store, `rX = imm` before a register
/// compare); without one, liveness is not needed.
fn worth_it(insns: &[Insn]) -> bool {
    use pkbpf_verifier::isa::AluOp;
    insns.windows(2).any(|w| {
        matches!(
            w,
            [
                Insn::Alu {
                    op: AluOp::Add,
                    src: Source::Imm(_),
                    ..
                },
                Insn::Load { .. } | Insn::Store { .. }
            ] | [
                Insn::Alu {
                    op: AluOp::Mov,
                    src: Source::Imm(_),
                    ..
                },
                Insn::Jmp {
                    src: Source::Reg(_),
                    ..
                }
            ]
        )
    })
}

/// The registers live after each slot, or an empty vector when no slot
/// could use the answer. Jump targets out of range (the emitter rejects
/// them) are ignored here.
pub(super) fn live_out(insns: &[Insn]) -> Vec<u16> {
    if !worth_it(insns) {
        return Vec::new();
    }
    let n = insns.len();
    let succ = |pc: usize| -> [Option<usize>; 2] {
        let next = |k: usize| Some(pc + k).filter(|&t| t < n);
        let target = insns[pc]
            .branch_target(pc)
            .and_then(|t| usize::try_from(t).ok())
            .filter(|&t| t < n);
        match insns[pc] {
            Insn::Exit => [None, None],
            Insn::Ja { .. } => [target, None],
            Insn::Jmp { .. } => [next(1), target],
            Insn::LdImm64 { .. } | Insn::LdPseudo { .. } => [next(2), None],
            _ => [next(1), None],
        }
    };
    let mut live_in = vec![0u16; n];
    let mut out = vec![0u16; n];
    let mut changed = true;
    while changed {
        changed = false;
        for pc in (0..n).rev() {
            let mut o = FP;
            for s in succ(pc).into_iter().flatten() {
                o |= live_in[s];
            }
            let (u, d) = use_def(&insns[pc]);
            let i = u | (o & !d) | FP;
            if o != out[pc] || i != live_in[pc] {
                out[pc] = o;
                live_in[pc] = i;
                changed = true;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pkbpf_verifier::asm::assemble;

    fn live(src: &str) -> Vec<u16> {
        let insns = assemble(src).unwrap();
        live_out(&insns)
    }

    #[test]
    fn a_register_redefined_before_its_next_read_is_dead() {
        // r4 += 8; r5 = *(r4 + 0); r4 = r1; r0 = r4; exit
        let l = live("r4 += 8\nr5 = *(u64 *)(r4 + 0)\nr4 = r1\nr0 = r4\nexit\n");
        assert_eq!(l[1] & (1 << 4), 0, "r4 dead after the load: {:b}", l[1]);
        assert_ne!(l[1] & (1 << 1), 0, "r1 is read later");
        assert_eq!(l[1] & (1 << 5), 0, "r5 is never read");
    }

    #[test]
    fn a_loop_back_edge_keeps_registers_live() {
        // r2 is read at the top of the loop on every iteration.
        let l = live(
            "r2 = 0\nr4 += 8\nr3 = *(u64 *)(r4 + 0)\nr2 += 1\nif r2 != 10 goto -4\nr0 = 0\nexit\n",
        );
        assert_ne!(
            l[2] & (1 << 4),
            0,
            "r4 is read again after the back edge: {:b}",
            l[2]
        );
        assert_ne!(l[3] & (1 << 2), 0, "r2 is live around the loop");
    }

    #[test]
    fn calls_read_arguments_and_clobber_them() {
        let l = live("r1 += 8\nr2 = *(u64 *)(r1 + 0)\ncall 1\nexit\n");
        assert_ne!(l[1] & (1 << 1), 0, "r1 is an argument of the call");
        assert_ne!(l[2] & 1, 0, "r0 from the call is returned");
    }

    #[test]
    fn no_candidate_no_analysis() {
        assert!(live("r0 = 1\nexit\n").is_empty());
    }
}
