//! What an instruction does to a state, once `check.rs` has said it may run.

use super::cfg::use_def;
use super::cfg::Cfg;
use super::check::{self, Region};
use super::env::{MapDesc, ProgramEnv};
use super::error::Reason;
use super::helpers::{allowed_map_types, ArgType, RetType};
use super::lattice::Lattice;
use super::liveness::{slots_of, Loc};
use super::reg::{Pointer, PtrKind, RegValue};
use super::scalar::Scalar;
use super::stack::{ByteState, StackRead};
use super::state::{Frame, Ref, State};
use super::verified::Facts;
use crate::isa::{
    AluOp, AtomicOp, CallTarget, Insn, JmpCond, LdPseudo, Source, Width, MAX_CALL_DEPTH,
};

/// Most iterations one `bpf_loop` call runs (the kernel's `BPF_MAX_LOOPS`).
pub const BPF_MAX_LOOPS: u64 = 1 << 23;

/// Where a path goes after one instruction.
pub(crate) enum Next {
    /// Continue at this slot with this state.
    Goto(usize, State),
    /// A conditional jump: the feasible outcomes.
    Branch {
        /// The fall-through state, if that outcome is possible.
        fall: Option<State>,
        /// The jump target and its state, if that outcome is possible.
        target: Option<(usize, State)>,
    },
    /// The main program returned: this path is done.
    Done,
    /// Two successors that are not a branch's (a `bpf_loop` call: the
    /// callback and the loop not running it; a callback's exit: the next
    /// iteration and the return to the caller). The first is explored first.
    Split {
        /// Explored first.
        first: (usize, State),
        /// Explored later.
        second: (usize, State),
    },
}

/// What a step needs besides the state.
pub(crate) struct Stepper<'a> {
    /// The environment.
    pub env: &'a ProgramEnv,
    /// The static analysis.
    pub cfg: &'a Cfg,
    /// Next fresh id.
    pub next_id: &'a mut u32,
    /// Facts collected.
    pub facts: &'a mut Facts,
    /// Stack slots the instruction read.
    pub slot_reads: Vec<Loc>,
    /// Stack slots the instruction overwrote whole.
    pub slot_writes: Vec<Loc>,
    /// Stack slots the instruction may have changed in part (narrow or
    /// variable-offset stores, atomics, helper writes).
    pub slot_partial: Vec<Loc>,
    /// Locations whose exact values decided something here (a branch with
    /// one feasible outcome, a pointer offset, a size, a key, a flag, a
    /// callback result): see `explore.rs` on precision.
    pub precise: Vec<Loc>,
}

fn fresh(next: &mut u32) -> u32 {
    *next += 1;
    *next
}

impl Stepper<'_> {
    fn note_stack(&mut self, state: &State, region: Region, size: u64) {
        if let Region::Stack { frame, off } | Region::StackVar { frame, lo: off, .. } = region {
            let entry = state.frames[frame].entry;
            let sp = self.cfg.subprog_of(entry);
            self.facts.note_stack(sp, off);
            let _ = size;
        }
    }

    fn note_read(&mut self, region: Region, size: u64) {
        let (frame, off, size) = match region {
            Region::Stack { frame, off } => (frame, off, size),
            Region::StackVar { frame, lo, hi } => (frame, lo, (hi - lo) as u64),
            _ => return,
        };
        for slot in slots_of(off, size) {
            self.slot_reads.push(Loc::Slot { frame, slot });
        }
    }

    fn note_write(&mut self, region: Region, size: u64) {
        match region {
            Region::Stack { frame, off } if size == 8 && off % 8 == 0 => {
                let slot = ((-off) / 8 - 1) as usize;
                self.slot_writes.push(Loc::Slot { frame, slot });
            }
            Region::Stack { frame, off } => self.note_partial(frame, off, size),
            Region::StackVar { frame, lo, hi } => self.note_partial(frame, lo, (hi - lo) as u64),
            _ => {}
        }
    }

    fn note_partial(&mut self, frame: usize, off: i64, size: u64) {
        for slot in slots_of(off, size) {
            self.slot_partial.push(Loc::Slot { frame, slot });
        }
    }

    /// Register `reg` of the current frame needs its exact value.
    fn need(&mut self, state: &State, reg: u8) {
        self.precise.push(Loc::Reg {
            frame: state.frames.len() - 1,
            reg: reg as usize,
        });
    }

    /// Runs `insn` at `pc` on `state`.
    pub fn step(&mut self, pc: usize, insn: &Insn, mut state: State) -> Result<Next, Reason> {
        if let Some(dst) = written_reg(insn) {
            if dst == 10 {
                return Err(Reason::FramePointerWrite);
            }
        }
        // Written registers leave their copy classes.
        let (_, defs) = use_def(insn);
        {
            let f = state.cur_mut();
            for r in 0..11 {
                if defs & (1 << r) != 0 {
                    f.links[r] = 0;
                }
            }
        }
        match *insn {
            Insn::Alu {
                width,
                op,
                dst,
                src,
            } => {
                let v = self.alu(&state, width, op, dst.num(), src)?;
                // A scalar added to a pointer becomes part of its offset.
                if let (RegValue::Ptr(_), Source::Reg(r)) = (v, src) {
                    if !matches!(op, AluOp::Mov) {
                        for reg in [dst.num(), r.num()] {
                            if matches!(state.reg(reg as usize), RegValue::Scalar(_)) {
                                self.need(&state, reg);
                            }
                        }
                    }
                }
                if let (AluOp::Mov, Width::W64, Source::Reg(s), RegValue::Scalar(_)) =
                    (op, width, src, v)
                {
                    if s != dst {
                        let f = state.cur_mut();
                        if f.links[s.idx()] == 0 {
                            f.links[s.idx()] = fresh(self.next_id);
                        }
                        f.links[dst.idx()] = f.links[s.idx()];
                    }
                }
                // Only what holds whatever the operands' values are (pruning
                // lets a path through with values not explored exactly):
                // 32-bit results are zero-extended.
                self.facts
                    .note_upper(pc, width == Width::W32 && matches!(v, RegValue::Scalar(_)));
                state.set_reg(dst.idx(), v);
                Ok(Next::Goto(pc + 1, state))
            }
            Insn::Neg { width, dst } => {
                let s = scalar_operand(&state, dst.num(), "negation")?;
                let r = s.neg(width);
                self.facts.note_upper(pc, width == Width::W32);
                state.set_reg(dst.idx(), RegValue::Scalar(r));
                Ok(Next::Goto(pc + 1, state))
            }
            Insn::Endian { order, bits, dst } => {
                let s = scalar_operand(&state, dst.num(), "byte swap")?;
                let r = s.endian(order, bits);
                self.facts.note_upper(pc, bits < 64);
                state.set_reg(dst.idx(), RegValue::Scalar(r));
                Ok(Next::Goto(pc + 1, state))
            }
            Insn::LdImm64 { dst, imm } => {
                state.set_reg(dst.idx(), RegValue::constant(imm));
                Ok(Next::Goto(pc + 2, state))
            }
            Insn::LdPseudo {
                dst,
                kind,
                imm,
                next_imm,
            } => {
                let map = |i: i32| -> Result<u32, Reason> {
                    if i >= 0 && (i as usize) < self.env.maps.len() {
                        Ok(i as u32)
                    } else {
                        Err(Reason::InvalidMap { index: i as i64 })
                    }
                };
                let v = match kind {
                    LdPseudo::MapFd | LdPseudo::MapIdx => {
                        Pointer::new(PtrKind::Map { map: map(imm)? })
                    }
                    LdPseudo::MapValue | LdPseudo::MapIdxValue => {
                        let m = map(imm)?;
                        let vs = self.env.maps[m as usize].value_size;
                        if next_imm < 0 || next_imm as u32 >= vs {
                            return Err(Reason::InvalidMapValueOffset {
                                value_size: vs,
                                off: next_imm as i64,
                            });
                        }
                        let mut p = Pointer::new(PtrKind::MapValue { map: m });
                        p.off = Scalar::constant(next_imm as u64);
                        p
                    }
                    LdPseudo::Func => {
                        let t = insn.branch_target(pc).unwrap_or(0);
                        Pointer::new(PtrKind::Func { entry: t as u32 })
                    }
                    LdPseudo::BtfId => {
                        return Err(Reason::Unsupported {
                            what: "unsupported ld_imm64 pseudo form",
                        })
                    }
                };
                state.set_reg(dst.idx(), RegValue::Ptr(v));
                Ok(Next::Goto(pc + 2, state))
            }
            Insn::LdImm64Hi => Err(Reason::IncompleteLddw),
            Insn::LdAbs { .. } | Insn::LdInd { .. } => Err(Reason::Unsupported {
                what: "BPF_LD_[ABS|IND] instructions not allowed for this program type",
            }),
            Insn::Load {
                size,
                signed,
                dst,
                src,
                off,
            } => {
                let p = check::base_pointer(&state, src.num())?;
                let bytes = size.bytes() as u32;
                let region =
                    check::check_access(self.env, src.num(), &p, off as i64, bytes as u64, false)?;
                self.note_stack(&state, region, bytes as u64);
                self.note_read(region, bytes as u64);
                let v = match region {
                    Region::Stack { frame, off } => {
                        match state.frames[frame].stack.load(off, bytes) {
                            StackRead::Reg(v) => v,
                            StackRead::Scalar(s) => {
                                RegValue::Scalar(if signed { s.sign_extend(bytes * 8) } else { s })
                            }
                            StackRead::Uninit(o) => {
                                return Err(Reason::UninitStackRead {
                                    off: o,
                                    size: bytes,
                                })
                            }
                            StackRead::PartialPointer => return Err(Reason::PartialPointerFill),
                        }
                    }
                    Region::StackVar { frame, lo, hi } => {
                        let stack = &state.frames[frame].stack;
                        if let Some(o) = stack.first_uninit(lo, (hi - lo) as u32) {
                            return Err(Reason::UninitStackRead {
                                off: o,
                                size: bytes,
                            });
                        }
                        if stack.has_pointer(lo, (hi - lo) as u32) {
                            return Err(Reason::PartialPointerFill);
                        }
                        let s = Scalar::unknown_bytes(bytes);
                        RegValue::Scalar(if signed { s.sign_extend(bytes * 8) } else { s })
                    }
                    _ => {
                        let s = Scalar::unknown_bytes(bytes);
                        RegValue::Scalar(if signed { s.sign_extend(bytes * 8) } else { s })
                    }
                };
                state.set_reg(dst.idx(), v);
                Ok(Next::Goto(pc + 1, state))
            }
            Insn::Store {
                size,
                dst,
                off,
                src,
            } => {
                let (v, sreg) = match src {
                    Source::Reg(r) => (check::read_reg(&state, r.num())?, r.num()),
                    Source::Imm(i) => (RegValue::constant(i as i64 as u64), 0),
                };
                let p = check::base_pointer(&state, dst.num())?;
                let bytes = size.bytes() as u32;
                let region =
                    check::check_access(self.env, dst.num(), &p, off as i64, bytes as u64, true)?;
                self.note_stack(&state, region, bytes as u64);
                self.note_write(region, bytes as u64);
                if let Region::StackVar { frame, lo, hi } = region {
                    // Where it lands is not known: no pointer goes there,
                    // and no spilled pointer may be partly overwritten.
                    if matches!(v, RegValue::Ptr(_))
                        || state.frames[frame].stack.has_pointer(lo, (hi - lo) as u32)
                    {
                        return Err(Reason::PartialPointerSpill);
                    }
                    state.frames[frame].stack.write_var(lo, hi);
                    return Ok(Next::Goto(pc + 1, state));
                }
                if let RegValue::Ptr(_) = v {
                    match region {
                        Region::Stack { off, .. } => {
                            if bytes != 8 || off % 8 != 0 {
                                return Err(Reason::PartialPointerSpill);
                            }
                        }
                        _ => {
                            return Err(Reason::PointerStore {
                                reg: sreg,
                                into: check::leak_target(p.kind),
                            })
                        }
                    }
                }
                if let Region::Stack { frame, off } = region {
                    state.frames[frame].stack.store(off, bytes, v);
                }
                Ok(Next::Goto(pc + 1, state))
            }
            Insn::Atomic {
                size,
                op,
                fetch,
                dst,
                src,
                off,
            } => {
                let operand = check::read_reg(&state, src.num())?;
                if !matches!(operand, RegValue::Scalar(_)) {
                    return Err(Reason::PointerStore {
                        reg: src.num(),
                        into: "mem",
                    });
                }
                if op == AtomicOp::CmpXchg {
                    let r0 = check::read_reg(&state, 0)?;
                    if !matches!(r0, RegValue::Scalar(_)) {
                        return Err(Reason::InvalidAtomic {
                            reg: 0,
                            ty: r0.type_name(),
                        });
                    }
                }
                let p = check::base_pointer(&state, dst.num())?;
                if matches!(p.kind, PtrKind::Ctx) {
                    return Err(Reason::InvalidAtomic {
                        reg: dst.num(),
                        ty: "ctx".into(),
                    });
                }
                let bytes = size.bytes() as u32;
                let region =
                    check::check_access(self.env, dst.num(), &p, off as i64, bytes as u64, true)?;
                if let Region::StackVar { .. } = region {
                    return Err(Reason::VariableStackAccess { reg: dst.num() });
                }
                self.note_stack(&state, region, bytes as u64);
                self.note_read(region, bytes as u64);
                if let Region::Stack { frame, off } = region {
                    let stack = &mut state.frames[frame].stack;
                    match stack.load(off, bytes) {
                        StackRead::Uninit(o) => {
                            return Err(Reason::UninitStackRead {
                                off: o,
                                size: bytes,
                            })
                        }
                        StackRead::PartialPointer | StackRead::Reg(RegValue::Ptr(_)) => {
                            return Err(Reason::InvalidAtomic {
                                reg: dst.num(),
                                ty: "spilled pointer".into(),
                            })
                        }
                        _ => {}
                    }
                    if bytes == 8 && off % 8 == 0 {
                        stack.store(off, 8, RegValue::UNKNOWN);
                    } else {
                        stack.write_bytes(off, bytes, ByteState::Misc);
                    }
                }
                let old = RegValue::Scalar(Scalar::unknown_bytes(bytes));
                match op {
                    AtomicOp::CmpXchg => state.set_reg(0, old),
                    AtomicOp::Xchg => state.set_reg(src.idx(), old),
                    _ if fetch => state.set_reg(src.idx(), old),
                    _ => {}
                }
                Ok(Next::Goto(pc + 1, state))
            }
            Insn::Ja { .. } => Ok(Next::Goto(
                insn.branch_target(pc).unwrap_or(0) as usize,
                state,
            )),
            Insn::Jmp {
                width,
                cond,
                dst,
                src,
                ..
            } => {
                let target = insn.branch_target(pc).unwrap_or(0) as usize;
                self.branch(state, width, cond, dst.num(), src, target)
            }
            Insn::Call(CallTarget::Helper(super::helpers::id::LOOP))
                if self.env.helpers.get(super::helpers::id::LOOP).is_some() =>
            {
                self.bpf_loop(pc, state)
            }
            Insn::Call(CallTarget::Helper(id)) => self.helper_call(pc, id, state),
            Insn::CallX { reg } => {
                let v = check::read_reg(&state, reg.num())?;
                self.need(&state, reg.num());
                match v.scalar().and_then(|s| s.as_const()) {
                    Some(id) if id == super::helpers::id::LOOP as u64 => Err(Reason::Unsupported {
                        what: "bpf_loop must be called directly, not through callx",
                    }),
                    Some(id) if id <= i32::MAX as u64 => self.helper_call(pc, id as i32, state),
                    _ => Err(Reason::Unsupported {
                        what: "callx needs a register holding a known helper id",
                    }),
                }
            }
            Insn::Call(CallTarget::Kfunc(_)) => Err(Reason::Unsupported {
                what: "kernel function calls are not supported",
            }),
            Insn::Call(CallTarget::Local(_)) => {
                let target = insn.branch_target(pc).unwrap_or(0) as usize;
                if state.frames.len() >= MAX_CALL_DEPTH {
                    return Err(Reason::CallTooDeep {
                        frames: state.frames.len() + 1,
                    });
                }
                let mut f = Frame::new(state.frames.len() as u8, target, pc + 1);
                for r in 1..=5 {
                    f.regs[r] = state.reg(r);
                }
                state.frames.push(f);
                Ok(Next::Goto(target, state))
            }
            Insn::Exit => self.exit(state),
        }
    }

    fn exit(&mut self, mut state: State) -> Result<Next, Reason> {
        // A bpf-to-bpf callee may leave r0 unset (clang drops the unused
        // result of a static function); the caller then cannot read it.
        let r0 = if state.frames.len() > 1 && state.cur().callback == 0 {
            state.reg(0)
        } else {
            check::read_reg(&state, 0)?
        };
        if state.frames.len() == 1 {
            if !matches!(r0, RegValue::Scalar(_)) {
                return Err(Reason::PointerReturn);
            }
            if let Some(r) = state.refs.first() {
                return Err(Reason::UnreleasedReference {
                    id: r.id,
                    alloc_insn: r.insn,
                });
            }
            return Ok(Next::Done);
        }
        let callback = state.cur().callback != 0;
        if callback {
            self.need(&state, 0);
            // bpf_loop stops on 1 and goes on on 0; nothing else is defined.
            let RegValue::Scalar(v) = r0 else {
                return Err(Reason::PointerReturn);
            };
            if v.smin() < 0 || v.smax() > 1 {
                return Err(Reason::CallbackReturn {
                    smin: v.smin(),
                    smax: v.smax(),
                });
            }
        }
        let dying = (state.frames.len() - 1) as u8;
        let points_into_dying = |v: &RegValue| matches!(v, RegValue::Ptr(p) if p.kind == PtrKind::Stack { frame: dying });
        if points_into_dying(&r0) {
            return Err(Reason::StackPointerEscape);
        }
        let callee = state.frames.pop().expect("more than one frame");
        if state.all_values().any(points_into_dying) {
            return Err(Reason::StackPointerEscape);
        }
        state.set_reg(0, r0);
        for r in 1..=5 {
            state.set_reg(r, RegValue::NotInit);
        }
        for r in 0..=5 {
            state.cur_mut().links[r] = 0;
        }
        if !callback {
            return Ok(Next::Goto(callee.return_pc, state));
        }
        // The loop may run the callback again, on the state this iteration
        // left, or return (r0: iterations done or an error).
        state.set_reg(0, RegValue::NotInit);
        let again = self.enter_callback(
            state.clone(),
            callee.entry,
            callee.return_pc,
            callee.callback_arg,
        );
        state.set_reg(0, RegValue::UNKNOWN);
        Ok(Next::Split {
            first: (callee.entry, again),
            second: (callee.return_pc, state),
        })
    }

    /// `state` with a fresh callback frame for one `bpf_loop` iteration
    /// pushed: `r1` = the index, `r2` = the context argument.
    fn enter_callback(
        &mut self,
        mut state: State,
        entry: usize,
        return_pc: usize,
        arg: RegValue,
    ) -> State {
        let mut f = Frame::new(state.frames.len() as u8, entry, return_pc);
        f.callback = fresh(self.next_id);
        f.callback_arg = arg;
        f.regs[1] = RegValue::Scalar(Scalar::urange(0, BPF_MAX_LOOPS - 1));
        f.regs[2] = arg;
        state.frames.push(f);
        state
    }

    /// `bpf_loop(nr_loops, callback, ctx, flags)`: checks the arguments,
    /// then goes on two ways: into the callback (whose exit loops back, see
    /// [`Stepper::exit`]) and past the call without running it (zero
    /// iterations, or an error return).
    ///
    /// The callback is verified as a function of its own frame with `r1` a
    /// scalar index and `r2` the context argument, for any number of
    /// iterations: each exit re-enters it with the state the iteration left,
    /// and the exploration stops where an iteration's entry state is
    /// subsumed by an earlier one's (the fixpoint). To get there quickly,
    /// the scalars of the frame the context points into are widened to
    /// unknown before the first iteration.
    fn bpf_loop(&mut self, pc: usize, mut state: State) -> Result<Next, Reason> {
        let nr = check::read_reg(&state, 1)?;
        if nr.scalar().is_none() {
            return Err(Reason::HelperArgType {
                reg: 1,
                expected: "scalar",
                found: nr.type_name(),
            });
        }
        let func = check::read_reg(&state, 2)?;
        let entry = match func {
            RegValue::Ptr(Pointer {
                kind: PtrKind::Func { entry },
                off,
                ..
            }) if off.as_const() == Some(0) => entry as usize,
            _ => {
                return Err(Reason::HelperArgType {
                    reg: 2,
                    expected: "func",
                    found: func.type_name(),
                })
            }
        };
        let arg = check::read_reg(&state, 3)?;
        let ctx_frame = match arg {
            RegValue::Ptr(Pointer {
                kind: PtrKind::Stack { frame },
                ..
            }) => Some(frame as usize),
            RegValue::Ptr(Pointer {
                kind: PtrKind::MapValue { .. },
                ..
            }) => None,
            RegValue::Scalar(s) if s.as_const() == Some(0) => None,
            _ => {
                return Err(Reason::HelperArgType {
                    reg: 3,
                    expected: "fp, map_value or null",
                    found: arg.type_name(),
                })
            }
        };
        let flags = check::read_reg(&state, 4)?;
        self.need(&state, 4);
        if matches!(arg, RegValue::Scalar(_)) {
            self.need(&state, 3);
        }
        match flags {
            RegValue::Scalar(s) => {
                if let Some(v) = s.as_const().filter(|&v| v != 0) {
                    return Err(Reason::InvalidFlags { reg: 4, value: v });
                }
            }
            _ => {
                return Err(Reason::HelperArgType {
                    reg: 4,
                    expected: "scalar",
                    found: flags.type_name(),
                })
            }
        }
        if state.frames.len() >= MAX_CALL_DEPTH {
            return Err(Reason::CallTooDeep {
                frames: state.frames.len() + 1,
            });
        }
        self.facts.helpers.insert(super::helpers::id::LOOP);
        let caller = self.cfg.subprog_of(state.cur().entry);
        let callee = self.cfg.subprog_of(entry);
        self.facts.callbacks.insert((caller, pc, callee));
        for r in 0..=5 {
            state.set_reg(r, RegValue::NotInit);
        }
        let mut into = state.clone();
        if let Some(f) = ctx_frame {
            into.frames[f].stack.widen_scalars();
        }
        let into = self.enter_callback(into, entry, pc + 1, arg);
        state.set_reg(0, RegValue::UNKNOWN);
        Ok(Next::Split {
            first: (entry, into),
            second: (pc + 1, state),
        })
    }

    fn alu(
        &self,
        state: &State,
        width: Width,
        op: AluOp,
        dst: u8,
        src: Source,
    ) -> Result<RegValue, Reason> {
        let s = match src {
            Source::Reg(r) => check::read_reg(state, r.num())?,
            Source::Imm(i) => {
                let v = match width {
                    Width::W64 => i as i64 as u64,
                    Width::W32 => i as u32 as u64,
                };
                RegValue::constant(v)
            }
        };
        let sreg = match src {
            Source::Reg(r) => r.num(),
            Source::Imm(_) => dst,
        };
        if op == AluOp::Mov {
            return match (width, s) {
                (Width::W64, v) => Ok(v),
                (Width::W32, RegValue::Scalar(sc)) => Ok(RegValue::Scalar(sc.zext32())),
                _ => Err(Reason::PointerArith {
                    reg: sreg,
                    what: "partial copy of pointer".into(),
                }),
            };
        }
        if let AluOp::MovSx(_) = op {
            return match s {
                RegValue::Scalar(sc) => {
                    Ok(RegValue::Scalar(Scalar::constant(0).alu(width, op, sc)))
                }
                _ => Err(Reason::PointerArith {
                    reg: sreg,
                    what: "sign extension of pointer".into(),
                }),
            };
        }
        let d = check::read_reg(state, dst)?;
        match (d, s) {
            (RegValue::Scalar(a), RegValue::Scalar(b)) => Ok(RegValue::Scalar(a.alu(width, op, b))),
            (RegValue::Ptr(p), RegValue::Scalar(b)) => {
                pointer_arith_allowed(dst, p, width, op)?;
                let mut q = p;
                q.off = if op == AluOp::Add {
                    p.off.add(b)
                } else {
                    p.off.sub(b)
                };
                Ok(RegValue::Ptr(q))
            }
            (RegValue::Scalar(a), RegValue::Ptr(p)) if op == AluOp::Add => {
                pointer_arith_allowed(sreg, p, width, op)?;
                let mut q = p;
                q.off = p.off.add(a);
                Ok(RegValue::Ptr(q))
            }
            (RegValue::Ptr(p), RegValue::Ptr(q))
                if op == AluOp::Sub && width == Width::W64 && same_region(p.kind, q.kind) =>
            {
                Ok(RegValue::Scalar(p.off.sub(q.off)))
            }
            (RegValue::Ptr(_), RegValue::Ptr(_)) => Err(Reason::PointerArith {
                reg: dst,
                what: format!("pointer {} pointer", op_name(op)),
            }),
            _ => Err(Reason::PointerArith {
                reg: dst,
                what: format!("pointer arithmetic with {} operator", op_name(op)),
            }),
        }
    }

    fn branch(
        &mut self,
        state: State,
        width: Width,
        cond: JmpCond,
        dst: u8,
        src: Source,
        target_pc: usize,
    ) -> Result<Next, Reason> {
        let a = check::read_reg(&state, dst)?;
        let (b, sreg) = match src {
            Source::Reg(r) => (check::read_reg(&state, r.num())?, Some(r.num())),
            Source::Imm(i) => (RegValue::constant(i as i64 as u64), None),
        };
        // A comparison involving a pointer may only be a null check or an
        // ordering of two pointers into the same region. Anything else (a
        // pointer against a number, 32-bit halves of a pointer, pointers
        // into different regions) makes control flow depend on where memory
        // happens to be placed: the program could leak addresses, and the
        // interpreter and the JIT (different stack placement) could disagree.
        // The kernel forbids the same for unprivileged programs.
        let ptr_reg = match (a, b) {
            (RegValue::Ptr(_), _) => Some(dst),
            (_, RegValue::Ptr(_)) => sreg,
            _ => None,
        };
        if let Some(reg) = ptr_reg {
            let allowed = width == Width::W64
                && match (a, b) {
                    (RegValue::Ptr(_), RegValue::Scalar(y))
                    | (RegValue::Scalar(y), RegValue::Ptr(_)) => {
                        y.as_const() == Some(0) && matches!(cond, JmpCond::Eq | JmpCond::Ne)
                    }
                    (RegValue::Ptr(p), RegValue::Ptr(q)) => {
                        // Code addresses differ between engines: no order;
                        // the bits two addresses share depend on placement.
                        p.kind == q.kind
                            && !p.kind.maybe_null()
                            && !matches!(p.kind, PtrKind::Func { .. })
                            && cond != JmpCond::Set
                    }
                    _ => false,
                };
            if !allowed {
                return Err(Reason::PointerComparison { reg });
            }
        }
        let outcome = |taken: bool| -> Option<State> {
            let mut st = state.clone();
            match (a, b) {
                // Two pointers into one region (the packet-style
                // `p + n > end` check): addresses compare as offsets do, so
                // the outcome narrows both offsets.
                (RegValue::Ptr(p), RegValue::Ptr(q))
                    if one_region(p.kind, q.kind) && near(&p) && near(&q) =>
                {
                    let c = offset_cond(cond)?;
                    let (o1, o2) = p.off.refine(q.off, Width::W64, c, taken)?;
                    st.set_reg(dst as usize, RegValue::Ptr(Pointer { off: o1, ..p }));
                    if let Some(r) = sreg {
                        st.set_reg(r as usize, RegValue::Ptr(Pointer { off: o2, ..q }));
                    }
                    Some(st)
                }
                (RegValue::Scalar(x), RegValue::Scalar(y)) => {
                    let (x2, y2) = x.refine(y, width, cond, taken)?;
                    st.set_reg(dst as usize, RegValue::Scalar(x2));
                    if let Some(r) = sreg {
                        st.set_reg(r as usize, RegValue::Scalar(y2));
                    }
                    // Copies hold the same value: narrow them too.
                    let mut narrowed = vec![(dst as usize, x2)];
                    if let Some(r) = sreg {
                        narrowed.push((r as usize, y2));
                    }
                    for (r, v) in narrowed {
                        let link = st.cur().links[r];
                        if link == 0 {
                            continue;
                        }
                        for q in 0..11 {
                            if q != r && st.cur().links[q] == link {
                                if let RegValue::Scalar(old) = st.reg(q) {
                                    st.set_reg(q, RegValue::Scalar(old.meet(&v)?));
                                }
                            }
                        }
                    }
                    Some(st)
                }
                (RegValue::Ptr(p), RegValue::Scalar(y))
                | (RegValue::Scalar(y), RegValue::Ptr(p))
                    if width == Width::W64
                        && y.as_const() == Some(0)
                        && matches!(cond, JmpCond::Eq | JmpCond::Ne) =>
                {
                    let is_null = (cond == JmpCond::Eq) == taken;
                    if p.kind.maybe_null() {
                        mark_null_checked(&mut st, p, is_null);
                        Some(st)
                    } else if is_null && never_null(&p) {
                        // A pointer into a region stays far from address 0
                        // (nothing is mapped below 64 KiB) while its offset is small.
                        None
                    } else {
                        Some(st)
                    }
                }
                _ => Some(st),
            }
        };
        let target = outcome(true).map(|s| (target_pc, s));
        let fall = outcome(false);
        if target.is_none() || fall.is_none() {
            // The values decided which way the path goes.
            if matches!(a, RegValue::Scalar(_)) {
                self.need(&state, dst);
            }
            if let (Some(r), RegValue::Scalar(_)) = (sreg, b) {
                self.need(&state, r);
            }
        }
        Ok(Next::Branch { fall, target })
    }

    fn helper_call(&mut self, pc: usize, id: i32, mut state: State) -> Result<Next, Reason> {
        let Some(proto) = self.env.helpers.get(id) else {
            return Err(Reason::UnknownHelper { id: id as i64 });
        };
        self.facts.helpers.insert(id);
        let mut map: Option<u32> = None;
        // The key's value when it is a constant read from initialised stack.
        let mut const_key: Option<u64> = None;
        let mut mem: Option<(u8, Option<Pointer>, bool)> = None; // reg, ptr (None = null), write
        let mut alloc: Option<u64> = None;
        let mut release: Option<u32> = None;
        let mut writes: Vec<(Region, u64)> = Vec::new();
        for (i, ty) in proto.args.iter().enumerate() {
            let reg = (i + 1) as u8;
            let v = check::read_reg(&state, reg)?;
            // Sizes and a null memory argument's zero decide the checks.
            if matches!(*ty, ArgType::ConstAllocSize)
                || (*ty == ArgType::PtrToMemOrNull && v.scalar().is_some())
            {
                self.need(&state, reg);
            }
            let wrong = |expected: &'static str| Reason::HelperArgType {
                reg,
                expected,
                found: v.type_name(),
            };
            match *ty {
                ArgType::Anything => {}
                ArgType::Scalar => {
                    if v.scalar().is_none() {
                        return Err(wrong("scalar"));
                    }
                }
                ArgType::ConstMapPtr => match v {
                    RegValue::Ptr(Pointer {
                        kind: PtrKind::Map { map: m },
                        ..
                    }) => {
                        let mt = self.env.maps[m as usize].map_type;
                        if let Some(allowed) = allowed_map_types(id) {
                            if !allowed.contains(&mt) {
                                return Err(Reason::HelperMapType {
                                    map_type: mt,
                                    helper: proto.name,
                                    id,
                                });
                            }
                        }
                        map = Some(m);
                    }
                    _ => return Err(wrong("map_ptr")),
                },
                ArgType::PtrToMapKey | ArgType::PtrToMapValue | ArgType::PtrToUninitMapValue => {
                    let Some(m) = map else {
                        return Err(wrong("map_ptr"));
                    };
                    let d = &self.env.maps[m as usize];
                    let (size, write) = match *ty {
                        ArgType::PtrToMapKey => (d.key_size, false),
                        ArgType::PtrToMapValue => (d.value_size, false),
                        _ => (d.value_size, true),
                    };
                    let RegValue::Ptr(p) = v else {
                        return Err(wrong("pointer to stack or map value"));
                    };
                    let region =
                        check::check_mem_arg(self.env, &state, reg, &p, size as u64, write)?;
                    self.note_stack(&state, region, size as u64);
                    if write {
                        writes.push((region, size as u64));
                    } else {
                        self.note_read(region, size as u64);
                    }
                    if let (ArgType::PtrToMapKey, Region::Stack { frame, off }) = (*ty, region) {
                        const_key = const_stack_key(&state, frame, off, size);
                        // An array lookup's result type depends on the key.
                        for slot in slots_of(off, size as u64) {
                            self.precise.push(Loc::Slot { frame, slot });
                        }
                    }
                }
                ArgType::PtrToMem { readonly } => match v {
                    RegValue::Ptr(p) => mem = Some((reg, Some(p), !readonly)),
                    _ => return Err(wrong("mem")),
                },
                ArgType::PtrToUninitMem => match v {
                    RegValue::Ptr(p) => mem = Some((reg, Some(p), true)),
                    _ => return Err(wrong("mem")),
                },
                ArgType::PtrToMemOrNull => match v {
                    RegValue::Ptr(p) => mem = Some((reg, Some(p), false)),
                    RegValue::Scalar(s) if s.as_const() == Some(0) => {
                        mem = Some((reg, None, false))
                    }
                    _ => return Err(wrong("mem_or_null")),
                },
                ArgType::ConstSize | ArgType::ConstSizeOrZero => {
                    self.need(&state, reg);
                    let Some(s) = v.scalar() else {
                        return Err(wrong("scalar"));
                    };
                    let Some((mreg, ptr, write)) = mem.take() else {
                        return Err(wrong("size after a memory argument"));
                    };
                    if s.smin() < 0 || s.umax() > u32::MAX as u64 {
                        return Err(Reason::HelperSizeUnbounded { reg });
                    }
                    if *ty == ArgType::ConstSize && s.umin() == 0 {
                        return Err(Reason::HelperSizeZero { reg });
                    }
                    match ptr {
                        None if s.umax() != 0 => {
                            return Err(Reason::HelperArgType {
                                reg: mreg,
                                expected: "mem",
                                found: "scalar".into(),
                            })
                        }
                        None => {}
                        Some(_) if s.umax() == 0 => {}
                        Some(p) => {
                            let region =
                                check::check_mem_arg(self.env, &state, mreg, &p, s.umax(), write)?;
                            self.note_stack(&state, region, s.umax());
                            if write {
                                writes.push((region, s.umax()));
                            } else {
                                self.note_read(region, s.umax());
                            }
                        }
                    }
                }
                ArgType::ConstAllocSize => match v.scalar().and_then(|s| s.as_const()) {
                    Some(c) if c > 0 && c <= u32::MAX as u64 => alloc = Some(c),
                    _ => return Err(Reason::HelperSizeNotConst { reg }),
                },
                ArgType::PtrToCtx => match v {
                    RegValue::Ptr(p) if p.kind == PtrKind::Ctx && p.const_off() == Some(0) => {}
                    _ => return Err(wrong("ctx")),
                },
                ArgType::PtrToStack => match v {
                    RegValue::Ptr(Pointer {
                        kind: PtrKind::Stack { .. },
                        ..
                    }) => {}
                    _ => return Err(wrong("fp")),
                },
                ArgType::RingbufMem => match v {
                    RegValue::Ptr(p) => match p.kind {
                        PtrKind::RingbufMem { ref_id, .. } if p.const_off() == Some(0) => {
                            if !state.refs.iter().any(|r| r.id == ref_id) {
                                return Err(Reason::ReleaseUnreferenced { reg });
                            }
                            release = Some(ref_id);
                        }
                        PtrKind::RingbufMem { .. } => return Err(wrong("ringbuf_mem at offset 0")),
                        _ => return Err(Reason::ReleaseUnreferenced { reg }),
                    },
                    _ => return Err(Reason::ReleaseUnreferenced { reg }),
                },
            }
        }
        if let Some((reg, _, _)) = mem {
            return Err(Reason::HelperArgType {
                reg: reg + 1,
                expected: "size",
                found: "nothing".into(),
            });
        }
        for (region, size) in writes {
            match region {
                Region::Stack { frame, off } => {
                    state.frames[frame]
                        .stack
                        .write_bytes(off, size as u32, ByteState::Misc);
                }
                Region::StackVar { frame, lo, hi } => {
                    if state.frames[frame].stack.has_pointer(lo, (hi - lo) as u32) {
                        return Err(Reason::PartialPointerSpill);
                    }
                    state.frames[frame].stack.write_var(lo, hi);
                }
                _ => {}
            }
        }
        if let Some(id) = release {
            state.refs.retain(|r| r.id != id);
            for v in state.all_values_mut() {
                if let RegValue::Ptr(p) = v {
                    if matches!(p.kind, PtrKind::RingbufMem { ref_id, .. } | PtrKind::RingbufMemOrNull { ref_id, .. } if ref_id == id)
                    {
                        *v = RegValue::NotInit;
                    }
                }
            }
        }
        if id == super::helpers::id::MAP_LOOKUP_ELEM {
            self.facts.note_lookup(pc, map);
        }
        let r0 = match proto.ret {
            RetType::Integer | RetType::Void => RegValue::UNKNOWN,
            RetType::MapValueOrNull => match map {
                Some(m)
                    if id == super::helpers::id::MAP_LOOKUP_ELEM
                        && array_key_in_range(&self.env.maps[m as usize], const_key) =>
                {
                    // A plain array holds every index below max_entries, so
                    // the lookup cannot fail: no null check needed.
                    RegValue::Ptr(Pointer::new(PtrKind::MapValue { map: m }))
                }
                Some(m) => RegValue::Ptr(Pointer {
                    kind: PtrKind::MapValueOrNull { map: m },
                    off: Scalar::constant(0),
                    id: fresh(self.next_id),
                }),
                None => RegValue::UNKNOWN,
            },
            RetType::RingbufMemOrNull => {
                let id = fresh(self.next_id);
                state.refs.push(Ref { id, insn: pc });
                RegValue::Ptr(Pointer {
                    kind: PtrKind::RingbufMemOrNull {
                        size: alloc.unwrap_or(0),
                        ref_id: id,
                    },
                    off: Scalar::constant(0),
                    id,
                })
            }
        };
        state.set_reg(0, r0);
        for r in 1..=5 {
            state.set_reg(r, RegValue::NotInit);
        }
        Ok(Next::Goto(pc + 1, state))
    }
}

/// The constant value of a `size`-byte map key on frame `frame`'s stack at
/// `off` (already checked initialised), if it is one (keys of up to 8 bytes).
fn const_stack_key(state: &State, frame: usize, off: i64, size: u32) -> Option<u64> {
    if size == 0 || size > 8 {
        return None;
    }
    match state.frames[frame].stack.load(off, size) {
        StackRead::Scalar(s) => s.as_const(),
        StackRead::Reg(RegValue::Scalar(s)) => s.as_const(),
        _ => None,
    }
}

/// Whether a lookup in `map` with key `key` always finds an element: the
/// map is a plain (or per-CPU) array, whose elements all exist, and the key
/// is a known index below `max_entries`.
fn array_key_in_range(map: &MapDesc, key: Option<u64>) -> bool {
    const PERCPU_ARRAY: u32 = 6;
    (map.map_type == MapDesc::ARRAY || map.map_type == PERCPU_ARRAY)
        && map.key_size == 4
        && key.is_some_and(|k| k < map.max_entries as u64)
}

/// After a null check of `p`: every copy (same id) becomes either the
/// constant 0 or the non-null pointer.
fn mark_null_checked(st: &mut State, p: Pointer, is_null: bool) {
    if is_null {
        if let PtrKind::RingbufMemOrNull { ref_id, .. } = p.kind {
            st.refs.retain(|r| r.id != ref_id);
        }
    }
    for v in st.all_values_mut() {
        if let RegValue::Ptr(q) = v {
            if q.id == p.id && q.kind == p.kind {
                if is_null {
                    *v = RegValue::constant(0);
                } else {
                    q.kind = match q.kind {
                        PtrKind::MapValueOrNull { map } => PtrKind::MapValue { map },
                        PtrKind::RingbufMemOrNull { size, ref_id } => {
                            PtrKind::RingbufMem { size, ref_id }
                        }
                        k => k,
                    };
                    q.id = 0;
                }
            }
        }
    }
}

/// Whether two pointers of these kinds point into the same region (one
/// stack frame, the context, the input memory, one ringbuf record): map
/// values are not (two lookups give two elements of one kind).
fn one_region(a: PtrKind, b: PtrKind) -> bool {
    a == b
        && matches!(
            a,
            PtrKind::Stack { .. } | PtrKind::Ctx | PtrKind::Mem { .. } | PtrKind::RingbufMem { .. }
        )
}

/// Whether the pointer's offset stays within 2^40 of its region's start,
/// where the region lies (user space, far from both ends of the address
/// space): then the addresses' unsigned and signed order is the offsets'
/// signed order.
fn near(p: &Pointer) -> bool {
    const FAR: i64 = 1 << 40;
    p.off.smin() > -FAR && p.off.smax() < FAR
}

/// The comparison of offsets that a comparison of addresses in one region
/// amounts to (see [`near`]).
fn offset_cond(c: JmpCond) -> Option<JmpCond> {
    Some(match c {
        JmpCond::Gt | JmpCond::Sgt => JmpCond::Sgt,
        JmpCond::Ge | JmpCond::Sge => JmpCond::Sge,
        JmpCond::Lt | JmpCond::Slt => JmpCond::Slt,
        JmpCond::Le | JmpCond::Sle => JmpCond::Sle,
        JmpCond::Eq => JmpCond::Eq,
        JmpCond::Ne => JmpCond::Ne,
        JmpCond::Set => return None,
    })
}

fn never_null(p: &Pointer) -> bool {
    const LOW: i64 = 1 << 16;
    p.off.smin() > -LOW && p.off.smax() < (1i64 << 40)
}

fn same_region(a: PtrKind, b: PtrKind) -> bool {
    match (a, b) {
        (PtrKind::Stack { frame: x }, PtrKind::Stack { frame: y }) => x == y,
        _ => a == b && !a.maybe_null() && !matches!(a, PtrKind::Map { .. } | PtrKind::Func { .. }),
    }
}

fn pointer_arith_allowed(reg: u8, p: Pointer, width: Width, op: AluOp) -> Result<(), Reason> {
    if width == Width::W32 {
        return Err(Reason::PointerArith {
            reg,
            what: "32-bit pointer arithmetic".into(),
        });
    }
    if !matches!(op, AluOp::Add | AluOp::Sub) {
        return Err(Reason::PointerArith {
            reg,
            what: format!("pointer arithmetic with {} operator", op_name(op)),
        });
    }
    if p.kind.maybe_null() || matches!(p.kind, PtrKind::Map { .. } | PtrKind::Func { .. }) {
        return Err(Reason::PointerArith {
            reg,
            what: format!("pointer arithmetic on {}", p.kind.name()),
        });
    }
    Ok(())
}

fn op_name(op: AluOp) -> &'static str {
    match op {
        AluOp::Add => "+=",
        AluOp::Sub => "-=",
        AluOp::Mul => "*=",
        AluOp::Div | AluOp::SDiv => "/=",
        AluOp::Mod | AluOp::SMod => "%=",
        AluOp::Or => "|=",
        AluOp::And => "&=",
        AluOp::Xor => "^=",
        AluOp::Lsh => "<<=",
        AluOp::Rsh => ">>=",
        AluOp::Arsh => "s>>=",
        AluOp::Mov | AluOp::MovSx(_) => "=",
    }
}

fn scalar_operand(state: &State, reg: u8, what: &str) -> Result<Scalar, Reason> {
    match check::read_reg(state, reg)? {
        RegValue::Scalar(s) => Ok(s),
        _ => Err(Reason::PointerArith {
            reg,
            what: format!("{what} of pointer"),
        }),
    }
}

/// The register an instruction writes (for the r10 check).
pub fn written_reg(insn: &Insn) -> Option<u8> {
    match *insn {
        Insn::Alu { dst, .. }
        | Insn::Neg { dst, .. }
        | Insn::Endian { dst, .. }
        | Insn::LdImm64 { dst, .. }
        | Insn::LdPseudo { dst, .. }
        | Insn::Load { dst, .. } => Some(dst.num()),
        Insn::Atomic {
            src, fetch: true, ..
        } => Some(src.num()),
        Insn::Atomic {
            op: AtomicOp::Xchg,
            src,
            ..
        } => Some(src.num()),
        _ => None,
    }
}
