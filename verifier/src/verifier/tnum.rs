//! Tristate numbers: 64 bits, each known 0, known 1, or unknown.
//!
//! Invariant: `value & mask == 0`. A bit set in `mask` is unknown; otherwise
//! the bit equals the bit of `value`. The described set is every `x` with
//! `x & !mask == value`. Top is `mask == u64::MAX`; there is no bottom
//! (an empty meet returns `None`).

use super::lattice::Lattice;
use std::fmt;

/// A 64-bit value with known and unknown bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Tnum {
    value: u64,
    mask: u64,
}

const SIGN64: u64 = 1 << 63;

// Named operations (not operator traits): an abstract `add` is an
// over-approximation, not the arithmetic `+` promises.
#[allow(clippy::should_implement_trait)]
impl Tnum {
    /// Every value.
    pub const UNKNOWN: Tnum = Tnum {
        value: 0,
        mask: u64::MAX,
    };

    /// Exactly `v`.
    pub const fn constant(v: u64) -> Tnum {
        Tnum { value: v, mask: 0 }
    }

    /// Known bits `value` where `mask` is clear; unknown where it is set.
    pub const fn new(value: u64, mask: u64) -> Tnum {
        Tnum {
            value: value & !mask,
            mask,
        }
    }

    /// The known-one bits.
    pub const fn value(self) -> u64 {
        self.value
    }

    /// The unknown bits.
    pub const fn mask(self) -> u64 {
        self.mask
    }

    /// Whether every bit is known.
    pub const fn is_const(self) -> bool {
        self.mask == 0
    }

    /// The smallest tnum containing every value of `min..=max`.
    pub fn range(min: u64, max: u64) -> Tnum {
        let differing = min ^ max;
        if differing == 0 {
            return Tnum::constant(min);
        }
        let bits = 64 - differing.leading_zeros();
        if bits >= 64 {
            return Tnum::UNKNOWN;
        }
        let low = (1u64 << bits) - 1;
        Tnum::new(min & !low, low)
    }

    /// Whether `v` is one of the described values.
    pub const fn contains(self, v: u64) -> bool {
        v & !self.mask == self.value
    }

    /// Smallest described value (unsigned).
    pub const fn umin(self) -> u64 {
        self.value
    }

    /// Largest described value (unsigned).
    pub const fn umax(self) -> u64 {
        self.value | self.mask
    }

    /// Smallest described value (signed).
    pub const fn smin(self) -> i64 {
        (self.value | (self.mask & SIGN64)) as i64
    }

    /// Largest described value (signed).
    pub const fn smax(self) -> i64 {
        (self.value | (self.mask & !SIGN64)) as i64
    }

    /// Sum, wrapping.
    pub fn add(self, o: Tnum) -> Tnum {
        let sum_values = self.value.wrapping_add(o.value);
        let sum_all = sum_values.wrapping_add(self.mask.wrapping_add(o.mask));
        // Bits where carries may differ between the extreme choices.
        let carries = sum_all ^ sum_values;
        let unknown = carries | self.mask | o.mask;
        Tnum::new(sum_values, unknown)
    }

    /// Difference, wrapping.
    pub fn sub(self, o: Tnum) -> Tnum {
        let diff = self.value.wrapping_sub(o.value);
        let hi = diff.wrapping_add(self.mask);
        let lo = diff.wrapping_sub(o.mask);
        let unknown = (hi ^ lo) | self.mask | o.mask;
        Tnum::new(diff, unknown)
    }

    /// Product, wrapping: a sum of shifted partial products, one per
    /// possibly-set bit of `self`.
    pub fn mul(self, o: Tnum) -> Tnum {
        let mut acc = Tnum::constant(0);
        for i in 0..64 {
            let bit = 1u64 << i;
            if self.value & bit != 0 {
                acc = acc.add(o.shl(i));
            } else if self.mask & bit != 0 {
                // Either 0 or `o << i`: every bit that may be set is unknown.
                acc = acc.add(Tnum::new(0, o.umax() << i));
            }
        }
        acc
    }

    /// Bitwise and.
    pub fn and(self, o: Tnum) -> Tnum {
        let value = self.value & o.value;
        Tnum::new(value, self.umax() & o.umax() & !value)
    }

    /// Bitwise or.
    pub fn or(self, o: Tnum) -> Tnum {
        let value = self.value | o.value;
        Tnum::new(value, (self.mask | o.mask) & !value)
    }

    /// Bitwise exclusive or.
    pub fn xor(self, o: Tnum) -> Tnum {
        let unknown = self.mask | o.mask;
        Tnum::new(self.value ^ o.value, unknown)
    }

    /// Left shift by `k < 64`.
    pub fn shl(self, k: u32) -> Tnum {
        Tnum::new(self.value << k, self.mask << k)
    }

    /// Logical right shift by `k < 64`.
    pub fn shr(self, k: u32) -> Tnum {
        Tnum::new(self.value >> k, self.mask >> k)
    }

    /// Arithmetic right shift by `k < 64`.
    pub fn sar(self, k: u32) -> Tnum {
        Tnum::new(
            ((self.value as i64) >> k) as u64,
            ((self.mask as i64) >> k) as u64,
        )
    }

    /// The low `bytes` bytes, zero-extended.
    pub fn truncate(self, bytes: u32) -> Tnum {
        if bytes >= 8 {
            return self;
        }
        let keep = (1u64 << (bytes * 8)) - 1;
        Tnum::new(self.value & keep, self.mask & keep)
    }

    /// The low `bits` bits, sign-extended.
    pub fn sign_extend(self, bits: u32) -> Tnum {
        if bits >= 64 {
            return self;
        }
        let shift = 64 - bits;
        self.shl(shift).sar(shift)
    }
}

impl Lattice for Tnum {
    fn top() -> Tnum {
        Tnum::UNKNOWN
    }

    fn join(&self, o: &Tnum) -> Tnum {
        let unknown = self.mask | o.mask | (self.value ^ o.value);
        Tnum::new(self.value, unknown)
    }

    fn meet(&self, o: &Tnum) -> Option<Tnum> {
        let both_known = !self.mask & !o.mask;
        if (self.value ^ o.value) & both_known != 0 {
            return None;
        }
        let mask = self.mask & o.mask;
        Some(Tnum::new(self.value | o.value, mask))
    }

    fn le(&self, o: &Tnum) -> bool {
        self.mask & !o.mask == 0 && (self.value ^ o.value) & !o.mask == 0
    }
}

impl fmt::Display for Tnum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({:#x}; {:#x})", self.value, self.mask)
    }
}
