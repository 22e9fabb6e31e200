//! Static control-flow checks, before any path is explored: lddw pairs,
//! function boundaries, jump ranges, fall-through, reachability, back-edges
//! (when loops are not allowed), recursion; and where states are kept for
//! pruning.

use super::error::{Reason, VerifyError};
use crate::isa::{CallTarget, Insn, LdPseudo, MAX_CALL_DEPTH};

/// What the static pass found.
#[derive(Clone, Debug)]
pub struct Cfg {
    /// Function entries, sorted; the first is 0.
    pub subprogs: Vec<usize>,
    /// Whether a state is checkpointed before each instruction.
    pub prune_point: Vec<bool>,
    /// Calls: (subprog index of the caller, call pc, subprog index of the callee).
    pub calls: Vec<(usize, usize, usize)>,
    /// Registers live before each instruction (bit `r`), within its function:
    /// a register not live is written before it is read on every path.
    pub live: Vec<u16>,
}

impl Cfg {
    /// The function containing `pc`.
    pub fn subprog_of(&self, pc: usize) -> usize {
        match self.subprogs.binary_search(&pc) {
            Ok(i) => i,
            Err(i) => i - 1,
        }
    }

    /// One past the last instruction of function `i`.
    pub fn subprog_end(&self, i: usize, len: usize) -> usize {
        self.subprogs.get(i + 1).copied().unwrap_or(len)
    }
}

fn err(insn: usize, reason: Reason) -> VerifyError {
    VerifyError::new(insn, reason)
}

/// Checks every map reference of an `lddw` pseudo form against the
/// program's map table, reachable or not, as the kernel resolves them all
/// before it verifies (so no later stage meets a dangling reference in code
/// that no path reaches).
pub fn check_map_refs(insns: &[Insn], maps: usize) -> Result<(), VerifyError> {
    for (pc, insn) in insns.iter().enumerate() {
        if let Insn::LdPseudo {
            kind: LdPseudo::MapFd | LdPseudo::MapIdx | LdPseudo::MapValue | LdPseudo::MapIdxValue,
            imm,
            ..
        } = *insn
        {
            if imm < 0 || imm as usize >= maps {
                return Err(err(pc, Reason::InvalidMap { index: imm.into() }));
            }
        }
    }
    Ok(())
}

/// Checks that every helper a `call` names has a prototype in `helpers`,
/// reachable or not: a call in code that no path reaches (the verifier
/// never looks at it) would otherwise reach the JIT, which compiles every
/// instruction and has no helper to call. (The kernel gets the same effect
/// by rewriting dead code before its fixups.)
pub fn check_helper_refs(insns: &[Insn], helpers: &super::HelperTable) -> Result<(), VerifyError> {
    for (pc, insn) in insns.iter().enumerate() {
        if let Insn::Call(CallTarget::Helper(id)) = *insn {
            if helpers.get(id).is_none() {
                return Err(err(pc, Reason::UnknownHelper { id: id.into() }));
            }
        }
    }
    Ok(())
}

/// Runs the static checks.
pub fn analyze(insns: &[Insn], allow_loops: bool) -> Result<Cfg, VerifyError> {
    let n = insns.len();
    if n == 0 {
        return Err(err(0, Reason::EmptyProgram));
    }
    // lddw pairs
    let mut pc = 0;
    while pc < n {
        match insns[pc] {
            Insn::LdImm64 { .. } | Insn::LdPseudo { .. } => {
                if insns.get(pc + 1) != Some(&Insn::LdImm64Hi) {
                    return Err(err(pc, Reason::IncompleteLddw));
                }
                pc += 2;
            }
            Insn::LdImm64Hi => return Err(err(pc, Reason::IncompleteLddw)),
            _ => pc += 1,
        }
    }
    let check_target = |from: usize, t: i64| -> Result<usize, VerifyError> {
        if t < 0 || t as usize >= n {
            return Err(err(from, Reason::JumpOutOfRange { from, to: t }));
        }
        if insns[t as usize] == Insn::LdImm64Hi {
            return Err(err(
                from,
                Reason::JumpIntoLddw {
                    from,
                    to: t as usize,
                },
            ));
        }
        Ok(t as usize)
    };
    // functions
    let mut subprogs = vec![0];
    for (pc, insn) in insns.iter().enumerate() {
        match insn {
            Insn::Call(CallTarget::Local(_)) => {
                let t = check_target(pc, insn.branch_target(pc).unwrap_or(-1))?;
                subprogs.push(t);
            }
            Insn::LdPseudo {
                kind: LdPseudo::Func,
                ..
            } => {
                // A callback: a function of its own (the main program is
                // not one).
                let raw = insn.branch_target(pc).unwrap_or(-1);
                let t = check_target(pc, raw)?;
                if t == 0 {
                    return Err(err(pc, Reason::InvalidCallbackTarget { pc, target: raw }));
                }
                subprogs.push(t);
            }
            _ => {}
        }
    }
    subprogs.sort_unstable();
    subprogs.dedup();
    let mut cfg = Cfg {
        subprogs,
        prune_point: vec![false; n],
        calls: Vec::new(),
        live: vec![0; n],
    };
    for (i, &entry) in cfg.subprogs.iter().enumerate() {
        cfg.prune_point[entry] = true;
        let end = cfg.subprog_end(i, n);
        let last = end - 1;
        if !matches!(insns[last], Insn::Exit | Insn::Ja { .. }) {
            return Err(err(last, Reason::FallThrough));
        }
    }
    // successors and jump ranges
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (pc, insn) in insns.iter().enumerate() {
        let sp = cfg.subprog_of(pc);
        match insn {
            Insn::LdImm64Hi => {}
            Insn::Exit => {}
            Insn::Ja { .. } | Insn::Jmp { .. } => {
                let t = check_target(pc, insn.branch_target(pc).unwrap_or(-1))?;
                if cfg.subprog_of(t) != sp {
                    return Err(err(
                        pc,
                        Reason::JumpOutOfRange {
                            from: pc,
                            to: t as i64,
                        },
                    ));
                }
                succ[pc].push(t);
                cfg.prune_point[t] = true;
                if matches!(insn, Insn::Jmp { .. }) {
                    succ[pc].push(pc + 1);
                    cfg.prune_point[pc + 1] = true;
                }
            }
            Insn::Call(CallTarget::Local(_)) => {
                let t = insn.branch_target(pc).unwrap_or(-1) as usize;
                let callee = cfg.subprog_of(t);
                cfg.calls.push((sp, pc, callee));
                succ[pc].push(pc + 1);
                cfg.prune_point[pc + 1] = true;
            }
            Insn::Call(CallTarget::Helper(super::helpers::id::LOOP)) => {
                // Where the loop's callback returns to, again and again.
                succ[pc].push(pc + 1);
                cfg.prune_point[pc + 1] = true;
            }
            other => succ[pc].push(pc + other.slots().max(1)),
        }
    }
    // reachability from every function entry reached by calls from 0,
    // and back-edges by depth-first search
    let mut color = vec![0u8; n]; // 0 white, 1 on stack, 2 done
    let mut roots = vec![0usize];
    let mut root_seen = vec![false; cfg.subprogs.len()];
    root_seen[0] = true;
    while let Some(root) = roots.pop() {
        if color[root] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        color[root] = 1;
        while let Some(&mut (pc, ref mut k)) = stack.last_mut() {
            if let Insn::Call(CallTarget::Local(_))
            | Insn::LdPseudo {
                kind: LdPseudo::Func,
                ..
            } = insns[pc]
            {
                let t = insns[pc].branch_target(pc).unwrap_or(0) as usize;
                let callee = cfg.subprog_of(t);
                if !root_seen[callee] {
                    root_seen[callee] = true;
                    roots.push(t);
                }
            }
            if *k < succ[pc].len() {
                let t = succ[pc][*k];
                *k += 1;
                if t >= n {
                    return Err(err(pc, Reason::FallThrough));
                }
                match color[t] {
                    0 => {
                        color[t] = 1;
                        stack.push((t, 0));
                    }
                    1 if !allow_loops => return Err(err(pc, Reason::BackEdge { from: pc, to: t })),
                    _ => {}
                }
            } else {
                color[pc] = 2;
                stack.pop();
            }
        }
    }
    for (pc, insn) in insns.iter().enumerate() {
        if color[pc] == 0 && *insn != Insn::LdImm64Hi {
            return Err(err(pc, Reason::Unreachable { insn: pc }));
        }
    }
    // recursion: a cycle in the call graph
    let nsub = cfg.subprogs.len();
    let mut state = vec![0u8; nsub];
    fn visit(s: usize, cfg: &Cfg, state: &mut [u8], depth: usize) -> Result<(), VerifyError> {
        state[s] = 1;
        for &(caller, pc, callee) in &cfg.calls {
            if caller != s {
                continue;
            }
            if state[callee] == 1 {
                return Err(err(
                    pc,
                    Reason::RecursiveCall {
                        from: pc,
                        to: cfg.subprogs[callee],
                    },
                ));
            }
            if depth + 1 >= MAX_CALL_DEPTH {
                return Err(err(pc, Reason::CallTooDeep { frames: depth + 2 }));
            }
            if state[callee] == 0 {
                visit(callee, cfg, state, depth + 1)?;
                state[callee] = 0;
            }
        }
        state[s] = 2;
        Ok(())
    }
    visit(0, &cfg, &mut state, 0)?;
    cfg.live = liveness(insns, &succ);
    Ok(cfg)
}

const ARGS: u16 = 0b11_1110; // r1..r5
const CALL_CLOBBER: u16 = 0b11_1111; // r0..r5

/// Registers an instruction reads and writes (bit masks).
pub(crate) fn use_def(insn: &Insn) -> (u16, u16) {
    use crate::isa::{AluOp, AtomicOp, Source};
    let bit = |r: crate::isa::Reg| 1u16 << r.num();
    let src_bit = |s: Source| match s {
        Source::Reg(r) => bit(r),
        Source::Imm(_) => 0,
    };
    match *insn {
        Insn::Alu { op, dst, src, .. } => match op {
            AluOp::Mov | AluOp::MovSx(_) => (src_bit(src), bit(dst)),
            _ => (bit(dst) | src_bit(src), bit(dst)),
        },
        Insn::Neg { dst, .. } | Insn::Endian { dst, .. } => (bit(dst), bit(dst)),
        Insn::LdImm64 { dst, .. } | Insn::LdPseudo { dst, .. } => (0, bit(dst)),
        Insn::LdImm64Hi => (0, 0),
        Insn::LdAbs { .. } => (1 << 6, 1),
        Insn::LdInd { src, .. } => ((1 << 6) | bit(src), 1),
        Insn::Load { dst, src, .. } => (bit(src), bit(dst)),
        Insn::Store { dst, src, .. } => (bit(dst) | src_bit(src), 0),
        Insn::Atomic {
            op,
            fetch,
            dst,
            src,
            ..
        } => {
            let mut u = bit(dst) | bit(src);
            let mut d = 0;
            if op == AtomicOp::CmpXchg {
                u |= 1;
                d |= 1;
            } else if fetch || op == AtomicOp::Xchg {
                d |= bit(src);
            }
            (u, d)
        }
        Insn::Ja { .. } => (0, 0),
        Insn::Jmp { dst, src, .. } => (bit(dst) | src_bit(src), 0),
        Insn::Call(_) => (ARGS, CALL_CLOBBER),
        Insn::CallX { reg } => (ARGS | bit(reg), CALL_CLOBBER),
        Insn::Exit => (1, 0),
    }
}

/// Backward liveness to a fixpoint. Calls continue at the next instruction
/// with `r0..r5` written; exits read `r0`.
fn liveness(insns: &[Insn], succ: &[Vec<usize>]) -> Vec<u16> {
    let n = insns.len();
    let mut live = vec![0u16; n];
    let mut changed = true;
    while changed {
        changed = false;
        for pc in (0..n).rev() {
            let out = succ[pc]
                .iter()
                .filter(|&&t| t < n)
                .fold(0u16, |acc, &t| acc | live[t]);
            let (u, d) = use_def(&insns[pc]);
            let inn = u | (out & !d);
            if inn != live[pc] {
                live[pc] = inn;
                changed = true;
            }
        }
    }
    live
}
