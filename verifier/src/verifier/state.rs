//! The abstract state of one path: call frames (registers and stack) and the
//! references it holds.
//!
//! Subsumption (`le`): `a.le(b)` when every concrete state described by `a`
//! is described by `b`, so a path reaching `a` where a completed path passed
//! through `b` is safe. Pointer ids and reference ids are compared through a
//! consistent mapping (they are names, not values).

use super::lattice::Lattice;
use super::liveness::{Loc, Marks};
use super::reg::{Pointer, PtrKind, RegValue};
use super::stack::{ByteState, Slot, Stack};
use std::collections::HashMap;

/// One function activation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    /// `r0`..`r10`.
    pub regs: [RegValue; 11],
    /// The frame's stack.
    pub stack: Stack,
    /// Where the caller continues (unused for frame 0).
    pub return_pc: usize,
    /// Entry instruction of the function.
    pub entry: usize,
    /// Copy classes: registers with the same non-zero link hold the same
    /// 64-bit scalar (set by `rX = rY`, cleared when either is written), so
    /// a branch that narrows one narrows the others.
    pub links: [u32; 11],
    /// Non-zero for a `bpf_loop` callback: an id fresh for each simulated
    /// call (iteration), so that a state repeating within one iteration is
    /// an infinite loop while one repeating across iterations is the
    /// fixpoint of the loop (see `explore.rs`).
    pub callback: u32,
    /// For a callback frame: the context argument each iteration gets in `r2`.
    pub callback_arg: RegValue,
}

impl Frame {
    /// A frame with `r10` set and everything else uninitialised.
    pub fn new(index: u8, entry: usize, return_pc: usize) -> Frame {
        let mut regs = [RegValue::NotInit; 11];
        regs[10] = RegValue::Ptr(Pointer::new(PtrKind::Stack { frame: index }));
        Frame {
            regs,
            stack: Stack::default(),
            return_pc,
            entry,
            links: [0; 11],
            callback: 0,
            callback_arg: RegValue::NotInit,
        }
    }
}

/// An acquired reference (a ringbuf record).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ref {
    /// Its id.
    pub id: u32,
    /// The instruction that acquired it.
    pub insn: usize,
}

/// The state of one path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    /// Call frames, innermost last.
    pub frames: Vec<Frame>,
    /// References not yet released.
    pub refs: Vec<Ref>,
}

impl State {
    /// The current (innermost) frame.
    pub fn cur(&self) -> &Frame {
        self.frames.last().expect("a state has a frame")
    }

    /// The current frame, mutably.
    pub fn cur_mut(&mut self) -> &mut Frame {
        self.frames.last_mut().expect("a state has a frame")
    }

    /// Register `r` of the current frame.
    pub fn reg(&self, r: usize) -> RegValue {
        self.cur().regs[r]
    }

    /// Sets register `r` of the current frame.
    pub fn set_reg(&mut self, r: usize, v: RegValue) {
        self.cur_mut().regs[r] = v;
    }

    /// Every register and spilled register of every frame, mutably.
    pub fn all_values_mut(&mut self) -> impl Iterator<Item = &mut RegValue> {
        self.frames
            .iter_mut()
            .flat_map(|f| f.regs.iter_mut().chain(f.stack.spills_mut()))
    }

    /// Every register and spilled register of every frame.
    pub fn all_values(&self) -> impl Iterator<Item = &RegValue> {
        self.frames
            .iter()
            .flat_map(|f| f.regs.iter().chain(f.stack.spills()))
    }

    /// Whether both states are in the same `bpf_loop` callback iterations
    /// (frame by frame; true when neither runs a callback).
    pub fn same_activations(&self, other: &State) -> bool {
        self.frames.len() == other.frames.len()
            && self
                .frames
                .iter()
                .zip(&other.frames)
                .all(|(a, b)| a.callback == b.callback)
    }

    /// Whether `self` is subsumed by `old` (see the module doc).
    pub fn le(&self, old: &State) -> bool {
        self.le_live(old, u16::MAX)
    }

    /// Like [`State::le`], ignoring registers of the innermost frame whose
    /// bit is clear in `live` (they are written before being read).
    pub fn le_live(&self, old: &State, live: u16) -> bool {
        let last = self.frames.len().saturating_sub(1);
        self.le_masked(
            old,
            |f, r| f != last || live & (1 << r) != 0,
            |_, _| true,
            |_| true,
        )
    }

    /// Like [`State::le`], comparing only the registers and stack slots
    /// `marks` holds (see [`super::liveness`]), and of the scalars among
    /// them only the type where `precise` lacks them: an old path that
    /// never let a scalar's value decide anything (a branch with one
    /// feasible outcome, a pointer offset, a size) covers any scalar there.
    pub fn le_marks(&self, old: &State, marks: &Marks, precise: &Marks) -> bool {
        self.le_masked(
            old,
            |f, r| marks.regs(f) & (1 << r) != 0,
            |f, s| s >= 64 || marks.slots(f) & (1u64 << s) != 0,
            |loc| precise.has(loc) || matches!(loc, Loc::Slot { slot, .. } if slot >= 64),
        )
    }

    fn le_masked(
        &self,
        old: &State,
        reg_live: impl Fn(usize, usize) -> bool,
        slot_live: impl Fn(usize, usize) -> bool,
        precise: impl Fn(Loc) -> bool,
    ) -> bool {
        if self.frames.len() != old.frames.len() {
            return false;
        }
        let mut ids = IdMap::default();
        for (fi, (a, b)) in self.frames.iter().zip(&old.frames).enumerate() {
            if a.return_pc != b.return_pc
                || a.entry != b.entry
                || (a.callback == 0) != (b.callback == 0)
                || a.callback_arg != b.callback_arg
            {
                return false;
            }
            for (r, (x, y)) in a.regs.iter().zip(&b.regs).enumerate() {
                if !reg_live(fi, r) {
                    continue;
                }
                let exact = precise(Loc::Reg { frame: fi, reg: r });
                if !value_le(x, y, &mut ids, exact) {
                    return false;
                }
            }
            if !stack_le(
                &a.stack,
                &b.stack,
                &mut ids,
                |s| slot_live(fi, s),
                |s| precise(Loc::Slot { frame: fi, slot: s }),
            ) {
                return false;
            }
            if !links_le(a, b, |r| reg_live(fi, r)) {
                return false;
            }
        }
        if self.refs.len() != old.refs.len() {
            return false;
        }
        self.refs
            .iter()
            .all(|r| old.refs.iter().any(|o| ids.get(o.id) == Some(r.id)))
    }
}

/// Every copy class of the old frame with two or more compared members must
/// be within one class of the new frame (the old path may have relied on
/// their equality).
fn links_le(new: &Frame, old: &Frame, live: impl Fn(usize) -> bool) -> bool {
    let mut map: HashMap<u32, u32> = HashMap::new();
    for r in 0..11 {
        let o = old.links[r];
        if o == 0 || !live(r) {
            continue;
        }
        let members = (0..11).filter(|&q| old.links[q] == o && live(q)).count();
        if members < 2 {
            continue;
        }
        let n = new.links[r];
        if n == 0 || *map.entry(o).or_insert(n) != n {
            return false;
        }
    }
    true
}

/// A consistent renaming of ids from the old state to the new one.
#[derive(Default)]
struct IdMap {
    old_to_new: HashMap<u32, u32>,
    new_to_old: HashMap<u32, u32>,
}

impl IdMap {
    fn check(&mut self, old: u32, new: u32) -> bool {
        if old == 0 || new == 0 {
            return old == new;
        }
        match (self.old_to_new.get(&old), self.new_to_old.get(&new)) {
            (Some(&n), Some(&o)) => n == new && o == old,
            (None, None) => {
                self.old_to_new.insert(old, new);
                self.new_to_old.insert(new, old);
                true
            }
            _ => false,
        }
    }

    fn get(&self, old: u32) -> Option<u32> {
        self.old_to_new.get(&old).copied()
    }
}

fn kind_le(a: PtrKind, b: PtrKind, ids: &mut IdMap) -> bool {
    match (a, b) {
        (
            PtrKind::RingbufMem {
                size: s1,
                ref_id: r1,
            },
            PtrKind::RingbufMem {
                size: s2,
                ref_id: r2,
            },
        )
        | (
            PtrKind::RingbufMemOrNull {
                size: s1,
                ref_id: r1,
            },
            PtrKind::RingbufMemOrNull {
                size: s2,
                ref_id: r2,
            },
        ) => s1 == s2 && ids.check(r2, r1),
        _ => a == b,
    }
}

fn value_le(new: &RegValue, old: &RegValue, ids: &mut IdMap, exact: bool) -> bool {
    match (new, old) {
        (_, RegValue::NotInit) => true,
        (RegValue::Scalar(a), RegValue::Scalar(b)) => !exact || a.le(b),
        (RegValue::Ptr(a), RegValue::Ptr(b)) => {
            kind_le(a.kind, b.kind, ids) && a.off.le(&b.off) && ids.check(b.id, a.id)
        }
        _ => false,
    }
}

fn stack_le(
    new: &Stack,
    old: &Stack,
    ids: &mut IdMap,
    live: impl Fn(usize) -> bool,
    precise: impl Fn(usize) -> bool,
) -> bool {
    for i in 0..old.len() {
        if !live(i) {
            continue;
        }
        let exact = precise(i);
        match (new.slot(i), old.slot(i)) {
            (n, Slot::Spill(o)) => match n {
                Slot::Spill(nv) => {
                    if !value_le(nv, o, ids, exact) {
                        return false;
                    }
                }
                Slot::Bytes(nb) | Slot::Partial { bytes: nb, .. } => {
                    // An unknown (or imprecise) scalar spill accepts any
                    // initialised bytes.
                    let ok = match o {
                        RegValue::NotInit => true,
                        RegValue::Scalar(s) => {
                            (!exact || *s == super::scalar::Scalar::UNKNOWN)
                                && nb.iter().all(|b| *b != ByteState::Invalid)
                        }
                        RegValue::Ptr(_) => false,
                    };
                    if !ok {
                        return false;
                    }
                }
            },
            (n, old_slot) => {
                let Some(ob) = old_slot.bytes() else {
                    unreachable!("spills are matched above")
                };
                if let (
                    Slot::Partial {
                        at, size, value, ..
                    },
                    true,
                ) = (old_slot, exact)
                {
                    // The old path may have read the narrow value back.
                    match n {
                        Slot::Partial {
                            at: a2,
                            size: s2,
                            value: v2,
                            ..
                        } if a2 == at && s2 == size && v2.le(value) => {}
                        _ => return false,
                    }
                }
                for (k, ob) in ob.iter().enumerate() {
                    let nb = match n {
                        Slot::Bytes(nb) | Slot::Partial { bytes: nb, .. } => nb[k],
                        Slot::Spill(RegValue::Ptr(_)) => return false,
                        Slot::Spill(RegValue::NotInit) => ByteState::Invalid,
                        Slot::Spill(RegValue::Scalar(s)) => {
                            if s.as_const() == Some(0) {
                                ByteState::Zero
                            } else {
                                ByteState::Misc
                            }
                        }
                    };
                    let ok = match ob {
                        ByteState::Invalid => true,
                        ByteState::Misc => nb != ByteState::Invalid,
                        ByteState::Zero => {
                            nb == ByteState::Zero || (!exact && nb != ByteState::Invalid)
                        }
                    };
                    if !ok {
                        return false;
                    }
                }
            }
        }
    }
    true
}
