//! One stack frame's contents, in 8-byte slots.
//!
//! Slot `i` covers bytes `[-(8*i+8), -(8*i))` from the frame pointer. A slot
//! holds either a spilled register (an aligned 8-byte store of a register,
//! kept exactly, pointers included) or per-byte states: never written
//! (`Invalid`, the top for subsumption: not read on that path), written with
//! an unknown value (`Misc`) or with zero (`Zero`). Slots past the end of the
//! vector are `Invalid`.

use super::reg::RegValue;
use super::scalar::Scalar;

/// What one stack byte holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ByteState {
    /// Never written.
    Invalid,
    /// Written, value unknown.
    Misc,
    /// Written with zero.
    Zero,
}

/// One 8-byte slot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    /// A register stored whole at an aligned offset.
    Spill(RegValue),
    /// Per-byte states (byte 0 is the lowest address).
    Bytes([ByteState; 8]),
    /// Per-byte states, plus the exact scalar a narrower store (1, 2 or 4
    /// bytes at byte `at` of the slot) wrote, zero-extended: a load of the
    /// same bytes gets it back (a `u32` counter spilled by clang keeps its
    /// bounds). Any other write to the slot turns it into `Bytes`.
    Partial {
        /// Per-byte states.
        bytes: [ByteState; 8],
        /// First byte of the narrow store within the slot.
        at: u8,
        /// Its size in bytes.
        size: u8,
        /// The stored value, zero-extended from `size` bytes.
        value: Scalar,
    },
}

impl Slot {
    /// The per-byte view of a slot that is not a spill.
    pub fn bytes(&self) -> Option<&[ByteState; 8]> {
        match self {
            Slot::Bytes(b) | Slot::Partial { bytes: b, .. } => Some(b),
            Slot::Spill(_) => None,
        }
    }
}

const EMPTY: Slot = Slot::Bytes([ByteState::Invalid; 8]);

/// A frame's stack.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Stack {
    slots: Vec<Slot>,
}

/// What a read found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackRead {
    /// The whole spilled register.
    Reg(RegValue),
    /// An initialised scalar of the access size, zero-extended.
    Scalar(Scalar),
    /// Some byte was never written (first such offset).
    Uninit(i64),
    /// Part of a spilled pointer.
    PartialPointer,
}

impl Stack {
    fn slot_of(off: i64) -> (usize, usize) {
        let pos = (-off - 1) as usize; // distance below fp, 0-based
        let slot = pos / 8;
        let byte = 7 - pos % 8;
        (slot, byte)
    }

    /// The slot with index `i` (`Invalid` bytes past the end).
    pub fn slot(&self, i: usize) -> &Slot {
        self.slots.get(i).unwrap_or(&EMPTY)
    }

    /// Number of slots that may be non-empty.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no slot was ever written.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn slot_mut(&mut self, i: usize) -> &mut Slot {
        if self.slots.len() <= i {
            self.slots.resize(i + 1, EMPTY);
        }
        &mut self.slots[i]
    }

    /// Forgets the values of everything but pointers: spilled scalars become
    /// unknown scalars, known-zero bytes unknown bytes (what a callback that
    /// may write the frame any number of times leaves). Pointers and
    /// never-written bytes stay as they are.
    pub fn widen_scalars(&mut self) {
        for s in &mut self.slots {
            match s {
                Slot::Spill(RegValue::Scalar(sc)) => *sc = Scalar::UNKNOWN,
                Slot::Spill(_) => {}
                Slot::Bytes(b) | Slot::Partial { bytes: b, .. } => {
                    let mut b = *b;
                    for x in &mut b {
                        if *x == ByteState::Zero {
                            *x = ByteState::Misc;
                        }
                    }
                    *s = Slot::Bytes(b);
                }
            }
        }
    }

    /// Turns a spilled slot into per-byte states (a scalar's bytes are
    /// `Misc`, or `Zero` for a constant zero; a pointer's become `Misc`).
    fn split(&mut self, i: usize) {
        let s = self.slot_mut(i);
        if let Slot::Partial { bytes, .. } = s {
            *s = Slot::Bytes(*bytes);
        }
        if let Slot::Spill(v) = s {
            let b = match v {
                RegValue::Scalar(sc) if sc.as_const() == Some(0) => ByteState::Zero,
                RegValue::NotInit => ByteState::Invalid,
                _ => ByteState::Misc,
            };
            *s = Slot::Bytes([b; 8]);
        }
    }

    /// Stores `size` bytes of `value` at `off` (already bounds-checked to lie
    /// within the frame). Pointers must be stored whole and aligned (the
    /// caller checks).
    pub fn store(&mut self, off: i64, size: u32, value: RegValue) {
        if size == 8 && off % 8 == 0 {
            let (slot, _) = Stack::slot_of(off);
            *self.slot_mut(slot) = Slot::Spill(value);
            return;
        }
        let fill = match value {
            RegValue::Scalar(s) if s.as_const().is_some_and(|c| c & mask(size) == 0) => {
                ByteState::Zero
            }
            _ => ByteState::Misc,
        };
        self.write_bytes(off, size, fill);
        let (slot, at) = Stack::slot_of(off);
        let (slot_end, _) = Stack::slot_of(off + size as i64 - 1);
        if let (RegValue::Scalar(v), true) = (value, slot == slot_end) {
            if let Slot::Bytes(bytes) = self.slot(slot).clone() {
                *self.slot_mut(slot) = Slot::Partial {
                    bytes,
                    at: at as u8,
                    size: size as u8,
                    value: truncate(v, size),
                };
            }
        }
    }

    /// Marks `size` bytes at `off` as holding `state`.
    pub fn write_bytes(&mut self, off: i64, size: u32, state: ByteState) {
        for o in off..off + size as i64 {
            let (slot, byte) = Stack::slot_of(o);
            self.split(slot);
            if let Slot::Bytes(b) = self.slot_mut(slot) {
                b[byte] = state;
            }
        }
    }

    /// A write of unknown position within bytes `[lo, hi)` (a variable
    /// offset): each byte may or may not be written, so written bytes
    /// become unknown and never-written ones stay never-written. Spills in
    /// the range become bytes (the caller rejects ranges holding pointers).
    pub fn write_var(&mut self, lo: i64, hi: i64) {
        for o in lo..hi {
            let (slot, byte) = Stack::slot_of(o);
            self.split(slot);
            if let Slot::Bytes(b) = self.slot_mut(slot) {
                if b[byte] == ByteState::Zero {
                    b[byte] = ByteState::Misc;
                }
            }
        }
    }

    /// Whether some of the `size` bytes at `off` hold (part of) a spilled pointer.
    pub fn has_pointer(&self, off: i64, size: u32) -> bool {
        (off..off + size as i64).any(|o| {
            let (slot, _) = Stack::slot_of(o);
            matches!(self.slot(slot), Slot::Spill(RegValue::Ptr(_)))
        })
    }

    /// First never-written byte among `size` bytes at `off`.
    pub fn first_uninit(&self, off: i64, size: u32) -> Option<i64> {
        (off..off + size as i64).find(|&o| {
            let (slot, byte) = Stack::slot_of(o);
            match self.slot(slot) {
                Slot::Spill(RegValue::NotInit) => true,
                Slot::Spill(_) => false,
                Slot::Bytes(b) | Slot::Partial { bytes: b, .. } => b[byte] == ByteState::Invalid,
            }
        })
    }

    /// Reads `size` bytes at `off` (within the frame).
    pub fn load(&self, off: i64, size: u32) -> StackRead {
        let (slot, _) = Stack::slot_of(off);
        if let Slot::Spill(v) = self.slot(slot) {
            if size == 8 && off % 8 == 0 {
                return match v {
                    RegValue::NotInit => StackRead::Uninit(off),
                    _ => StackRead::Reg(*v),
                };
            }
        }
        if let Some(o) = self.first_uninit(off, size) {
            return StackRead::Uninit(o);
        }
        if self.has_pointer(off, size) {
            return StackRead::PartialPointer;
        }
        if let Slot::Partial {
            at, size: n, value, ..
        } = self.slot(slot)
        {
            if *at as usize == Stack::slot_of(off).1 && *n as u32 == size {
                return StackRead::Scalar(*value);
            }
        }
        // Exact value when the bytes come from one spilled constant.
        if let Slot::Spill(RegValue::Scalar(s)) = self.slot(slot) {
            let (slot_end, _) = Stack::slot_of(off + size as i64 - 1);
            if slot_end == slot {
                if let Some(c) = s.as_const() {
                    let first = Stack::slot_of(off).1 as u32;
                    return StackRead::Scalar(Scalar::constant((c >> (first * 8)) & mask(size)));
                }
            }
        }
        let all_zero = (off..off + size as i64).all(|o| {
            let (slot, byte) = Stack::slot_of(o);
            match self.slot(slot) {
                Slot::Spill(RegValue::Scalar(s)) => s.as_const() == Some(0),
                Slot::Spill(_) => false,
                Slot::Bytes(b) | Slot::Partial { bytes: b, .. } => b[byte] == ByteState::Zero,
            }
        });
        if all_zero {
            StackRead::Scalar(Scalar::constant(0))
        } else {
            StackRead::Scalar(Scalar::unknown_bytes(size))
        }
    }

    /// Every register spilled in this frame, mutably.
    pub fn spills_mut(&mut self) -> impl Iterator<Item = &mut RegValue> {
        self.slots.iter_mut().filter_map(|s| match s {
            Slot::Spill(v) => Some(v),
            _ => None,
        })
    }

    /// Every register spilled in this frame.
    pub fn spills(&self) -> impl Iterator<Item = &RegValue> {
        self.slots.iter().filter_map(|s| match s {
            Slot::Spill(v) => Some(v),
            _ => None,
        })
    }

    /// Kernel-style one character per byte for non-empty slots:
    /// `fp-8=mmmmmmmm`, spills as their register value.
    pub fn render(&self, mut reg: impl FnMut(&RegValue) -> String) -> Vec<String> {
        let mut out = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            let off = -((i as i64 + 1) * 8);
            match s {
                Slot::Spill(v) => out.push(format!("fp{off}={}", reg(v))),
                Slot::Bytes(b) | Slot::Partial { bytes: b, .. } => {
                    if b.iter().all(|x| *x == ByteState::Invalid) {
                        continue;
                    }
                    let txt: String = b
                        .iter()
                        .rev()
                        .map(|x| match x {
                            ByteState::Invalid => '?',
                            ByteState::Misc => 'm',
                            ByteState::Zero => '0',
                        })
                        .collect();
                    out.push(format!("fp{off}={txt}"));
                }
            }
        }
        out
    }
}

/// The low `size` bytes of `v`, zero-extended.
fn truncate(v: Scalar, size: u32) -> Scalar {
    match size {
        4 => v.zext32(),
        8 => v,
        n => v.alu(
            crate::isa::Width::W64,
            crate::isa::AluOp::And,
            Scalar::constant(mask(n)),
        ),
    }
}

fn mask(size: u32) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size * 8)) - 1
    }
}
