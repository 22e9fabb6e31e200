//! Path-sensitive exploration: a depth-first worklist of (instruction, state)
//! pairs, states checkpointed at prune points, paths cut when a completed
//! checkpoint subsumes them, loops unrolled until they stop or the budget of
//! 1,000,000 processed instructions runs out (a state that repeats within its
//! own loop is an infinite loop).
//!
//! Soundness of pruning: a checkpoint is used for pruning only once every
//! path below it has been explored without error (its `branches` count is
//! zero), so a subsumed path cannot reach anything the checkpoint's paths
//! did not. With a last-in first-out worklist, a checkpoint still in
//! progress is an ancestor of the current path: subsumption by it means the
//! loop makes no progress.
//!
//! What a completed checkpoint must match: the locations read below it
//! (read marks, [`super::liveness`]), and of the scalars among them the
//! exact values only where they decided something below it (precision, see
//! `Explorer::mark_precise`); elsewhere any scalar will do, which is what
//! lets branchy loops with accumulators prune.
//!
//! `bpf_loop` callbacks: each exit of a callback re-enters it (the next
//! iteration) besides returning to the caller; a state at the callback's
//! entry (or inside it) that an earlier iteration's checkpoint still in
//! progress subsumes is the loop's fixpoint, not an infinite loop (the
//! helper bounds the iterations), and is cut with every location counted
//! as read and precise above it.

use super::cfg::{self, use_def, Cfg};
use super::ctx::CtxDesc;
use super::env::ProgramEnv;
use super::error::{Reason, VerifyError};
use super::liveness::{Loc, Marks};
use super::log::{Log, INSN_LIMIT};
use super::reg::{Pointer, PtrKind, RegValue};
use super::state::{Frame, State};
use super::transfer::{Next, Stepper};
use super::verified::{Facts, Stats, Subprog, VerifiedProgram};
use crate::isa::{CallTarget, Insn, STACK_SIZE};
use std::collections::HashMap;

/// Most states kept per instruction; further ones are explored, not kept.
const MAX_STATES_PER_INSN: usize = 64;
/// Most states kept in all (memory bound); past it, paths are explored
/// without new checkpoints.
const MAX_TOTAL_STATES: usize = 65_536;
/// Most register and slot values kept in all (about 100 bytes each): the
/// memory bound for deep call chains with full stacks.
const MAX_KEPT_VALUES: usize = 2_000_000;
/// Most instructions a path records since its last checkpoint for
/// precision backtracking (see [`Explorer::mark_precise`]).
const MAX_HISTORY: usize = 4096;
/// Comparisons a kept state may fail before it is dropped from its list.
const MAX_MISSES: u32 = 8;

/// The verifier with its options.
///
/// ```
/// use pkbpf_verifier::asm::assemble;
/// use pkbpf_verifier::verifier::{CtxDesc, ProgramEnv, Verifier};
/// let env = ProgramEnv::new(CtxDesc::PtRegs);
/// let prog = assemble("r0 = *(u64 *)(r1 + 8)\nexit").unwrap();
/// let (res, log) = Verifier::new(&env).log_level(2).verify(&prog);
/// assert!(res.is_ok());
/// assert!(log.contains("processed 2 insns"));
/// let bad = assemble("r0 = *(u64 *)(r1 + 168)\nexit").unwrap();
/// let err = Verifier::new(&env).verify(&bad).0.unwrap_err();
/// assert_eq!(err.to_string(), "invalid bpf_context access off=168 size=8");
/// ```
#[derive(Clone, Debug)]
pub struct Verifier<'e> {
    env: &'e ProgramEnv,
    log_level: u32,
}

/// Verifies `insns` (one [`Insn`] per slot) against `env`.
pub fn verify(insns: &[Insn], env: &ProgramEnv) -> Result<VerifiedProgram, VerifyError> {
    Verifier::new(env).verify(insns).0
}

impl<'e> Verifier<'e> {
    /// A verifier for programs running in `env`, without a log.
    pub fn new(env: &'e ProgramEnv) -> Verifier<'e> {
        Verifier { env, log_level: 0 }
    }

    /// Sets the log level: 0 none, 1 the failing path, 2 everything.
    pub fn log_level(mut self, level: u32) -> Verifier<'e> {
        self.log_level = level;
        self
    }

    /// Verifies `insns`; returns the result and the log text.
    pub fn verify(&self, insns: &[Insn]) -> (Result<VerifiedProgram, VerifyError>, String) {
        let mut log = Log::new(self.log_level);
        let res = cfg::analyze(insns, self.env.allow_loops)
            .and_then(|cfg| cfg::check_map_refs(insns, self.env.maps.len()).map(|()| cfg))
            .and_then(|cfg| cfg::check_helper_refs(insns, &self.env.helpers).map(|()| cfg))
            .and_then(|cfg| {
                let mut ex = Explorer::new(self.env, insns, &cfg, &mut log);
                let r = ex.run();
                let stats = ex.stats();
                r.and_then(|facts| finish(self.env, insns, &cfg, facts, stats))
                    .inspect(|_| log.stats(&stats))
                    .inspect_err(|e| {
                        log.reason(&e.to_string());
                        log.stats(&stats);
                    })
            });
        if let Err(e) = &res {
            if log.mark() == 0 {
                log.reason(&e.to_string());
            }
        }
        (res, log.into_text())
    }
}

/// The initial state of the main program.
pub fn initial_state(env: &ProgramEnv) -> State {
    let mut f = Frame::new(0, 0, 0);
    match env.ctx {
        CtxDesc::MemWithLen { size } => {
            f.regs[1] = if size == 0 {
                RegValue::constant(0)
            } else {
                RegValue::Ptr(Pointer::new(PtrKind::Mem {
                    size: size as u64,
                    writable: true,
                }))
            };
            f.regs[2] = RegValue::constant(size as u64);
        }
        _ => f.regs[1] = RegValue::Ptr(Pointer::new(PtrKind::Ctx)),
    }
    State {
        frames: vec![f],
        refs: Vec::new(),
    }
}

/// Combined stack checks over the static call graph, then the output.
fn finish(
    env: &ProgramEnv,
    insns: &[Insn],
    cfg: &Cfg,
    facts: Facts,
    stats: Stats,
) -> Result<VerifiedProgram, VerifyError> {
    let depth = |s: usize| facts.stack_depth[s].div_ceil(32) * 32;
    // Deepest combined stack from each function, over its call chains.
    fn walk(
        s: usize,
        cfg: &Cfg,
        callbacks: &[(usize, usize, usize)],
        depth: &dyn Fn(usize) -> usize,
        frames: usize,
        acc: usize,
    ) -> Result<(), VerifyError> {
        let total = acc + depth(s);
        if total > STACK_SIZE {
            let pc = cfg.subprogs[s];
            return Err(VerifyError::new(
                pc,
                Reason::CombinedStackTooLarge {
                    calls: frames,
                    size: total,
                },
            ));
        }
        for &(caller, _, callee) in cfg.calls.iter().chain(callbacks) {
            if caller == s {
                walk(callee, cfg, callbacks, depth, frames + 1, total)?;
            }
        }
        Ok(())
    }
    // bpf_loop callbacks run in a frame below the function calling bpf_loop.
    let callbacks: Vec<(usize, usize, usize)> = facts.callbacks.iter().copied().collect();
    walk(0, cfg, &callbacks, &depth, 1, 0)?;
    let subprogs = cfg
        .subprogs
        .iter()
        .enumerate()
        .map(|(i, &entry)| Subprog {
            entry,
            stack_depth: facts.stack_depth[i],
        })
        .collect();
    Ok(VerifiedProgram::new(
        insns.to_vec(),
        subprogs,
        facts,
        env.maps.clone(),
        stats,
    ))
}

/// Every register and stack slot of every frame of `state`.
fn all_locs(state: &State) -> Vec<Loc> {
    let mut out = Vec::new();
    for frame in 0..state.frames.len() {
        out.extend((0..11).map(|reg| Loc::Reg { frame, reg }));
        out.extend((0..64).map(|slot| Loc::Slot { frame, slot }));
    }
    out
}

struct Checkpoint {
    state: State,
    parent: Option<usize>,
    branches: u32,
    misses: u32,
    /// Locations read below this checkpoint before being written.
    read: Marks,
    /// Locations written on the way from the parent to this checkpoint.
    written: Marks,
    /// Locations whose exact value decided something below (see
    /// [`Explorer::mark_precise`]); scalars elsewhere compare by type only.
    precise: Marks,
    /// Every location counts as precise (a history that could not be
    /// followed back).
    all_precise: bool,
    /// The instructions from the parent checkpoint to this one.
    segment: Vec<Step>,
}

/// One instruction of a path, as precision backtracking needs it.
#[derive(Clone, Debug)]
struct Step {
    pc: usize,
    /// Call depth it ran at.
    frame: usize,
    /// Stack slots it read.
    reads: Vec<Loc>,
    /// Stack slots it overwrote whole.
    writes: Vec<Loc>,
    /// Stack slots it changed in part.
    partial: Vec<Loc>,
}

struct Pending {
    pc: usize,
    from: usize,
    state: State,
    parent: Option<usize>,
    written: Marks,
    /// Instructions since `parent`.
    hist: Vec<Step>,
    log_mark: usize,
}

struct Explorer<'a> {
    env: &'a ProgramEnv,
    insns: &'a [Insn],
    cfg: &'a Cfg,
    log: &'a mut Log,
    checkpoints: Vec<Checkpoint>,
    visited: HashMap<usize, Vec<usize>>,
    work: Vec<Pending>,
    next_id: u32,
    facts: Facts,
    stats: Stats,
    kept_values: usize,
}

enum Visit {
    Pruned,
    Continue(Option<usize>),
}

impl<'a> Explorer<'a> {
    fn new(env: &'a ProgramEnv, insns: &'a [Insn], cfg: &'a Cfg, log: &'a mut Log) -> Explorer<'a> {
        Explorer {
            env,
            insns,
            cfg,
            log,
            checkpoints: Vec::new(),
            visited: HashMap::new(),
            work: Vec::new(),
            next_id: 0,
            facts: Facts::new(insns.len(), cfg.subprogs.len()),
            stats: Stats::default(),
            kept_values: 0,
        }
    }

    fn stats(&self) -> Stats {
        self.stats
    }

    /// A path ended cleanly: its checkpoints may complete.
    fn complete(&mut self, mut cp: Option<usize>) {
        while let Some(i) = cp {
            let c = &mut self.checkpoints[i];
            c.branches = c.branches.saturating_sub(1);
            if c.branches > 0 {
                break;
            }
            cp = c.parent;
        }
    }

    /// Charges a read of `loc` to the checkpoints above the current path.
    fn mark_read(&mut self, parent: Option<usize>, written: &Marks, loc: Loc) {
        if written.has(loc) {
            return;
        }
        let mut c = parent;
        while let Some(i) = c {
            let cp = &mut self.checkpoints[i];
            if cp.read.has(loc) {
                break;
            }
            cp.read.set(loc);
            if cp.written.has(loc) {
                break;
            }
            c = cp.parent;
        }
    }

    /// Precision, in the spirit of the kernel's `mark_chain_precision`:
    /// the locations `set` hold (at the point `hist` ends, `hist` being the
    /// instructions since checkpoint `parent`) decided something exactly.
    /// Follows them back through the path's instructions (a copy moves the
    /// need to its source, an ALU result adds its operand, a fill its stack
    /// slot, a spill its register, a branch its operands, a constant or a
    /// helper result ends it) and marks what they came from precise in
    /// every checkpoint on the way. Calls and exits between frames are not
    /// followed: everything above them becomes precise.
    fn mark_precise(&mut self, parent: Option<usize>, hist: &[Step], mut set: Marks) {
        // Nothing to mark without a checkpoint, or above one that already
        // counts everything as precise.
        match parent {
            Some(p) if !set.is_empty() && !self.checkpoints[p].all_precise => {}
            _ => return,
        }
        if !backtrack(self.insns, hist, &mut set) {
            self.mark_all_precise(parent);
            return;
        }
        let mut c = parent;
        while let Some(i) = c {
            if set.is_empty() {
                return;
            }
            let cp = &mut self.checkpoints[i];
            if cp.all_precise {
                return;
            }
            let mut fresh = Marks::default();
            for loc in set.iter() {
                if !cp.precise.has(loc) {
                    cp.precise.set(loc);
                    fresh.set(loc);
                }
            }
            set = fresh;
            if set.is_empty() {
                return;
            }
            let segment = std::mem::take(&mut cp.segment);
            let ok = backtrack(self.insns, &segment, &mut set);
            let cp = &mut self.checkpoints[i];
            cp.segment = segment;
            let up = cp.parent;
            if !ok {
                self.mark_all_precise(up);
                return;
            }
            c = up;
        }
    }

    /// Every location of `c` and the checkpoints above it is precise.
    fn mark_all_precise(&mut self, mut c: Option<usize>) {
        while let Some(i) = c {
            let cp = &mut self.checkpoints[i];
            if cp.all_precise {
                return;
            }
            cp.all_precise = true;
            c = cp.parent;
        }
    }

    fn visit(
        &mut self,
        pc: usize,
        state: &State,
        parent: Option<usize>,
        written: &Marks,
        hist: &mut Vec<Step>,
    ) -> Result<Visit, VerifyError> {
        let live = self.cfg.live[pc] | (1 << 10);
        let list = self.visited.entry(pc).or_default();
        let mut pruned_by = None;
        let mut in_progress = false;
        for &i in list.iter() {
            let c = &mut self.checkpoints[i];
            if c.branches == 0 {
                let all = Marks::everything();
                let precise = if c.all_precise { &all } else { &c.precise };
                if state.le_marks(&c.state, &c.read, precise) {
                    pruned_by = Some(i);
                    break;
                }
            } else if state.le_live(&c.state, live) {
                if state.same_activations(&c.state) {
                    return Err(VerifyError::new(pc, Reason::InfiniteLoop { insn: pc }));
                }
                // A later bpf_loop iteration in a state an earlier one,
                // still being explored, covers: the loop's fixpoint (the
                // helper bounds the iterations). That exploration's reads
                // are not all known yet, so everything counts as read.
                in_progress = true;
                break;
            }
            c.misses += 1;
        }
        if in_progress {
            for loc in all_locs(state) {
                self.mark_read(parent, written, loc);
            }
            self.mark_all_precise(parent);
            return Ok(Visit::Pruned);
        }
        if let Some(i) = pruned_by {
            // The path continues as the checkpoint's did: its reads are
            // ours, and what was precise there is precise here.
            let reads: Vec<Loc> = self.checkpoints[i].read.iter().collect();
            for loc in reads {
                self.mark_read(parent, written, loc);
            }
            if self.checkpoints[i].all_precise {
                self.mark_all_precise(parent);
            } else {
                let set = self.checkpoints[i].precise;
                self.mark_precise(parent, hist, set);
            }
            return Ok(Visit::Pruned);
        }
        let list = self.visited.entry(pc).or_default();
        // Forget states that keep failing to match (as the kernel does), so a
        // long loop compares each iteration with a few states, not all.
        let checkpoints = &self.checkpoints;
        list.retain(|&i| checkpoints[i].misses <= MAX_MISSES);
        let cost: usize = state.frames.iter().map(|f| 11 + f.stack.len()).sum();
        if list.len() >= MAX_STATES_PER_INSN
            || self.checkpoints.len() >= MAX_TOTAL_STATES
            || self.kept_values + cost > MAX_KEPT_VALUES
        {
            return Ok(Visit::Continue(parent));
        }
        let idx = self.checkpoints.len();
        self.kept_values += cost;
        list.push(idx);
        let n = list.len();
        self.checkpoints.push(Checkpoint {
            state: state.clone(),
            parent,
            branches: 1,
            misses: 0,
            read: Marks::default(),
            written: *written,
            precise: Marks::default(),
            all_precise: false,
            segment: std::mem::take(hist),
        });
        self.stats.total_states += 1;
        self.stats.peak_states = self.stats.peak_states.max(self.stats.total_states);
        self.stats.max_states_per_insn = self.stats.max_states_per_insn.max(n);
        Ok(Visit::Continue(Some(idx)))
    }

    fn run(&mut self) -> Result<Facts, VerifyError> {
        self.work.push(Pending {
            pc: 0,
            from: 0,
            state: initial_state(self.env),
            parent: None,
            written: Marks::default(),
            hist: Vec::new(),
            log_mark: 0,
        });
        let mut first = true;
        while let Some(p) = self.work.pop() {
            self.log.rewind(p.log_mark);
            if !first {
                self.log.from_to(self.env, p.from, p.pc, &p.state);
            }
            first = false;
            self.run_path(p)?;
        }
        Ok(std::mem::take(&mut self.facts))
    }

    fn run_path(&mut self, p: Pending) -> Result<(), VerifyError> {
        let Pending {
            mut pc,
            mut state,
            mut parent,
            mut written,
            mut hist,
            ..
        } = p;
        loop {
            if self.cfg.prune_point[pc] {
                match self.visit(pc, &state, parent, &written, &mut hist)? {
                    Visit::Pruned => {
                        self.stats.pruned += 1;
                        self.log.safe(pc);
                        self.complete(parent);
                        return Ok(());
                    }
                    Visit::Continue(cp) => {
                        if cp != parent {
                            written = Marks::default();
                            hist.clear();
                        }
                        parent = cp;
                    }
                }
                self.log.state(self.env, pc, &state);
            }
            self.stats.processed += 1;
            if self.stats.processed > INSN_LIMIT {
                return Err(VerifyError::new(
                    pc,
                    Reason::TooComplex {
                        processed: self.stats.processed,
                    },
                ));
            }
            let insn = &self.insns[pc];
            self.facts.visited[pc] = true;
            self.log.insn(self.env, pc, insn);
            let frame = state.frames.len() - 1;
            let mut stepper = Stepper {
                env: self.env,
                cfg: self.cfg,
                next_id: &mut self.next_id,
                facts: &mut self.facts,
                slot_reads: Vec::new(),
                slot_writes: Vec::new(),
                slot_partial: Vec::new(),
                precise: Vec::new(),
            };
            let next = stepper
                .step(pc, insn, state)
                .map_err(|r| VerifyError::new(pc, r))?;
            let (slot_reads, slot_writes, slot_partial, uses) = (
                stepper.slot_reads,
                stepper.slot_writes,
                stepper.slot_partial,
                stepper.precise,
            );
            if !uses.is_empty() {
                let mut set = Marks::default();
                for loc in uses {
                    set.set(loc);
                }
                self.mark_precise(parent, &hist, set);
            }
            // (Not needed once everything above counts as precise.)
            if parent.is_some_and(|p| !self.checkpoints[p].all_precise) {
                hist.push(Step {
                    pc,
                    frame,
                    reads: slot_reads.clone(),
                    writes: slot_writes.clone(),
                    partial: slot_partial,
                });
            }
            if hist.len() > MAX_HISTORY {
                // A long stretch without a new checkpoint (the state lists
                // are full): stop recording it. Once every checkpoint above
                // counts as precise, backtracking never needs it.
                self.mark_all_precise(parent);
                hist.clear();
            }
            // Liveness: reads first, then writes.
            let (uses, defs) = use_def(insn);
            for reg in (0..11).filter(|r| uses & (1 << r) != 0) {
                self.mark_read(parent, &written, Loc::Reg { frame, reg });
            }
            for loc in slot_reads {
                self.mark_read(parent, &written, loc);
            }
            for reg in (0..11).filter(|r| defs & (1 << r) != 0) {
                written.set(Loc::Reg { frame, reg });
            }
            for loc in slot_writes {
                written.set(loc);
            }
            match insn {
                Insn::Call(CallTarget::Local(_))
                | Insn::Call(CallTarget::Helper(super::helpers::id::LOOP)) => {
                    written.set_frame(frame + 1)
                }
                Insn::Exit if frame > 0 => {
                    for reg in 0..6 {
                        written.set(Loc::Reg {
                            frame: frame - 1,
                            reg,
                        });
                    }
                    // A callback's next iteration is a fresh frame here.
                    written.set_frame(frame);
                }
                _ => {}
            }
            match next {
                Next::Goto(t, s) => {
                    if s.frames.len() == frame + 1 {
                        self.log.written(self.env, &s, defs);
                    }
                    pc = t;
                    state = s;
                }
                Next::Done => {
                    self.complete(parent);
                    return Ok(());
                }
                Next::Split {
                    first: (p1, s1),
                    second: (p2, s2),
                } => {
                    if let Some(c) = parent {
                        self.checkpoints[c].branches += 1;
                    }
                    self.work.push(Pending {
                        pc: p2,
                        from: pc,
                        state: s2,
                        parent,
                        written,
                        hist: hist.clone(),
                        log_mark: self.log.mark(),
                    });
                    pc = p1;
                    state = s1;
                }
                Next::Branch { fall, target } => match (fall, target) {
                    (Some(f), Some((t, ts))) => {
                        if let Some(c) = parent {
                            self.checkpoints[c].branches += 1;
                        }
                        self.work.push(Pending {
                            pc: t,
                            from: pc,
                            state: ts,
                            parent,
                            written,
                            hist: hist.clone(),
                            log_mark: self.log.mark(),
                        });
                        pc += 1;
                        state = f;
                    }
                    (Some(f), None) => {
                        pc += 1;
                        state = f;
                    }
                    (None, Some((t, ts))) => {
                        pc = t;
                        state = ts;
                    }
                    (None, None) => {
                        // A reachable state always has a feasible outcome;
                        // fail closed rather than drop the path.
                        return Err(VerifyError::new(
                            pc,
                            Reason::Unsupported {
                                what: "internal error: no feasible branch outcome",
                            },
                        ));
                    }
                },
            }
        }
    }
}

/// Follows the locations in `set` back through `steps` (last first): on
/// return `set` holds the locations at the start of `steps` that the ones
/// given came from. `false`: a step this does not follow (a call or exit
/// between frames) with something still to follow.
fn backtrack(insns: &[Insn], steps: &[Step], set: &mut Marks) -> bool {
    use crate::isa::{AluOp, Source};
    for st in steps.iter().rev() {
        if set.is_empty() {
            return true;
        }
        let f = st.frame;
        let r = |reg: crate::isa::Reg| Loc::Reg {
            frame: f,
            reg: reg.idx(),
        };
        match insns[st.pc] {
            Insn::Alu { op, dst, src, .. } => {
                let d = r(dst);
                if set.has(d) {
                    if matches!(op, AluOp::Mov | AluOp::MovSx(_)) {
                        set.clear(d);
                    }
                    if let Source::Reg(s) = src {
                        set.set(r(s));
                    }
                }
            }
            Insn::Neg { .. } | Insn::Endian { .. } | Insn::Ja { .. } | Insn::LdImm64Hi => {}
            Insn::LdImm64 { dst, .. } | Insn::LdPseudo { dst, .. } => set.clear(r(dst)),
            Insn::Load { dst, .. } => {
                let d = r(dst);
                if set.has(d) {
                    set.clear(d);
                    for &l in &st.reads {
                        set.set(l);
                    }
                }
            }
            Insn::Store { src, .. } => {
                let mut hit = false;
                for &l in &st.writes {
                    if set.has(l) {
                        set.clear(l);
                        hit = true;
                    }
                }
                for &l in &st.partial {
                    hit |= set.has(l);
                }
                if let (true, Source::Reg(s)) = (hit, src) {
                    set.set(r(s));
                }
            }
            Insn::Atomic { dst, src, .. } => {
                // Old value, operand, r0 (cmpxchg) and the slot all mix.
                let touched = st.reads.iter().chain(&st.partial).chain(&st.writes);
                let any = touched.clone().any(|&l| set.has(l))
                    || set.has(r(src))
                    || set.has(Loc::Reg { frame: f, reg: 0 });
                if any {
                    for &l in touched {
                        set.set(l);
                    }
                    set.set(r(src));
                    set.set(r(dst));
                    set.set(Loc::Reg { frame: f, reg: 0 });
                }
            }
            Insn::Jmp { dst, src, .. } => {
                // The branch narrowed its operands (and their copies).
                set.set(r(dst));
                if let Source::Reg(s) = src {
                    set.set(r(s));
                }
            }
            Insn::Call(CallTarget::Helper(id)) if id != super::helpers::id::LOOP => {
                for reg in 0..6 {
                    set.clear(Loc::Reg { frame: f, reg });
                }
            }
            Insn::CallX { .. } => {
                for reg in 0..6 {
                    set.clear(Loc::Reg { frame: f, reg });
                }
            }
            Insn::Call(_) | Insn::Exit | Insn::LdAbs { .. } | Insn::LdInd { .. } => return false,
        }
    }
    true
}
