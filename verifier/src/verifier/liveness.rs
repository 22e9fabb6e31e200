//! Read marks for pruning, in the spirit of the kernel's `mark_read`.
//!
//! Exploration is a tree of checkpoints. For each checkpoint `C` we record
//! which registers and stack slots some path below `C` read before writing
//! them (its *read marks*). Once `C` is complete, a new state at the same
//! instruction only has to agree with `C` on those locations: every other
//! location is overwritten before it is read on every explored continuation,
//! so its value cannot influence them.
//!
//! A read is charged to the enclosing checkpoints until one whose incoming
//! segment (the path from its parent to it) wrote the location. When a path
//! is pruned against `C`, `C`'s marks are charged to the path's own
//! checkpoints, since its continuation is `C`'s.

use crate::isa::MAX_CALL_DEPTH;

/// A location: a register or an 8-byte stack slot of a frame (by call depth).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loc {
    /// Register `reg` of frame `frame`.
    Reg {
        /// Call depth (0 = main program).
        frame: usize,
        /// Register number.
        reg: usize,
    },
    /// Stack slot `slot` (bytes `[-(8*slot+8), -8*slot)`) of frame `frame`.
    Slot {
        /// Call depth.
        frame: usize,
        /// Slot index.
        slot: usize,
    },
}

/// A set of locations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Marks {
    regs: [u16; MAX_CALL_DEPTH],
    slots: [u64; MAX_CALL_DEPTH],
}

impl Marks {
    /// Whether `loc` is in the set.
    pub fn has(&self, loc: Loc) -> bool {
        match loc {
            Loc::Reg { frame, reg } => frame < MAX_CALL_DEPTH && self.regs[frame] & (1 << reg) != 0,
            Loc::Slot { frame, slot } => {
                frame < MAX_CALL_DEPTH && slot < 64 && self.slots[frame] & (1 << slot) != 0
            }
        }
    }

    /// Adds `loc`.
    pub fn set(&mut self, loc: Loc) {
        match loc {
            Loc::Reg { frame, reg } if frame < MAX_CALL_DEPTH => self.regs[frame] |= 1 << reg,
            Loc::Slot { frame, slot } if frame < MAX_CALL_DEPTH && slot < 64 => {
                self.slots[frame] |= 1 << slot
            }
            _ => {}
        }
    }

    /// Every location.
    pub fn everything() -> Marks {
        Marks {
            regs: [u16::MAX; MAX_CALL_DEPTH],
            slots: [u64::MAX; MAX_CALL_DEPTH],
        }
    }

    /// Removes `loc`.
    pub fn clear(&mut self, loc: Loc) {
        match loc {
            Loc::Reg { frame, reg } if frame < MAX_CALL_DEPTH => self.regs[frame] &= !(1 << reg),
            Loc::Slot { frame, slot } if frame < MAX_CALL_DEPTH && slot < 64 => {
                self.slots[frame] &= !(1 << slot)
            }
            _ => {}
        }
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.regs.iter().all(|&r| r == 0) && self.slots.iter().all(|&s| s == 0)
    }

    /// Adds every register and slot of `frame`.
    pub fn set_frame(&mut self, frame: usize) {
        if frame < MAX_CALL_DEPTH {
            self.regs[frame] = u16::MAX;
            self.slots[frame] = u64::MAX;
        }
    }

    /// The registers of `frame` as a bit mask.
    pub fn regs(&self, frame: usize) -> u16 {
        self.regs.get(frame).copied().unwrap_or(u16::MAX)
    }

    /// The slots of `frame` as a bit mask.
    pub fn slots(&self, frame: usize) -> u64 {
        self.slots.get(frame).copied().unwrap_or(u64::MAX)
    }

    /// Every location in the set.
    pub fn iter(&self) -> impl Iterator<Item = Loc> + '_ {
        (0..MAX_CALL_DEPTH).flat_map(move |frame| {
            let regs = (0..16)
                .filter(move |r| self.regs[frame] & (1 << r) != 0)
                .map(move |reg| Loc::Reg { frame, reg });
            let slots = (0..64)
                .filter(move |s| self.slots[frame] & (1u64 << s) != 0)
                .map(move |slot| Loc::Slot { frame, slot });
            regs.chain(slots)
        })
    }
}

/// The stack slots `size` bytes at offset `off` (negative) cover.
pub fn slots_of(off: i64, size: u64) -> std::ops::RangeInclusive<usize> {
    let first = ((-(off + size as i64 - 1)) - 1).max(0) as usize / 8;
    let last = ((-off) - 1).max(0) as usize / 8;
    first..=last
}
