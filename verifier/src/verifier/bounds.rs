//! Interval bounds of a 64-bit value, in four views: unsigned and signed,
//! 64-bit and low 32-bit.
//!
//! Invariant of a non-empty value: `umin <= umax`, `smin <= smax`,
//! `u32min <= u32max`, `s32min <= s32max`; the described set is every `x`
//! lying in all four ranges at once. The four views are not kept consistent
//! here: [`super::scalar::Scalar::reduce`] is the one place that propagates
//! information between them (and the tnum).

use super::lattice::Lattice;

/// Four interval views of one 64-bit value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Bounds {
    /// Unsigned 64-bit minimum.
    pub umin: u64,
    /// Unsigned 64-bit maximum.
    pub umax: u64,
    /// Signed 64-bit minimum.
    pub smin: i64,
    /// Signed 64-bit maximum.
    pub smax: i64,
    /// Unsigned minimum of the low 32 bits.
    pub u32min: u32,
    /// Unsigned maximum of the low 32 bits.
    pub u32max: u32,
    /// Signed minimum of the low 32 bits.
    pub s32min: i32,
    /// Signed maximum of the low 32 bits.
    pub s32max: i32,
}

/// One of the four views, for code that treats them alike.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum View {
    /// Unsigned 64-bit.
    U64,
    /// Signed 64-bit.
    S64,
    /// Unsigned low 32 bits.
    U32,
    /// Signed low 32 bits.
    S32,
}

impl Bounds {
    /// No constraint.
    pub const UNBOUNDED: Bounds = Bounds {
        umin: 0,
        umax: u64::MAX,
        smin: i64::MIN,
        smax: i64::MAX,
        u32min: 0,
        u32max: u32::MAX,
        s32min: i32::MIN,
        s32max: i32::MAX,
    };

    /// Exactly `v`.
    pub const fn constant(v: u64) -> Bounds {
        Bounds {
            umin: v,
            umax: v,
            smin: v as i64,
            smax: v as i64,
            u32min: v as u32,
            u32max: v as u32,
            s32min: v as i32,
            s32max: v as i32,
        }
    }

    /// Whether `v` lies in all four ranges.
    pub fn contains(&self, v: u64) -> bool {
        (self.umin..=self.umax).contains(&v)
            && (self.smin..=self.smax).contains(&(v as i64))
            && (self.u32min..=self.u32max).contains(&(v as u32))
            && (self.s32min..=self.s32max).contains(&(v as i32))
    }

    /// Whether some range is empty.
    pub fn is_empty(&self) -> bool {
        self.umin > self.umax
            || self.smin > self.smax
            || self.u32min > self.u32max
            || self.s32min > self.s32max
    }

    /// One view as an `i128` interval.
    pub fn get(&self, view: View) -> (i128, i128) {
        match view {
            View::U64 => (self.umin as i128, self.umax as i128),
            View::S64 => (self.smin as i128, self.smax as i128),
            View::U32 => (self.u32min as i128, self.u32max as i128),
            View::S32 => (self.s32min as i128, self.s32max as i128),
        }
    }

    /// Intersects one view with `lo..=hi`; an interval outside the view's
    /// type makes the bounds empty.
    pub fn restrict(&mut self, view: View, lo: i128, hi: i128) {
        let (tmin, tmax) = match view {
            View::U64 => (0, u64::MAX as i128),
            View::S64 => (i64::MIN as i128, i64::MAX as i128),
            View::U32 => (0, u32::MAX as i128),
            View::S32 => (i32::MIN as i128, i32::MAX as i128),
        };
        if lo > hi || lo > tmax || hi < tmin {
            self.umin = 1;
            self.umax = 0;
            return;
        }
        let (lo, hi) = (lo.max(tmin), hi.min(tmax));
        // The casts are exact: both ends lie in the view's type.
        match view {
            View::U64 => {
                self.umin = self.umin.max(lo as u64);
                self.umax = self.umax.min(hi as u64);
            }
            View::S64 => {
                self.smin = self.smin.max(lo as i64);
                self.smax = self.smax.min(hi as i64);
            }
            View::U32 => {
                self.u32min = self.u32min.max(lo as u32);
                self.u32max = self.u32max.min(hi as u32);
            }
            View::S32 => {
                self.s32min = self.s32min.max(lo as i32);
                self.s32max = self.s32max.min(hi as i32);
            }
        }
    }
}

impl Lattice for Bounds {
    fn top() -> Bounds {
        Bounds::UNBOUNDED
    }

    fn join(&self, o: &Bounds) -> Bounds {
        Bounds {
            umin: self.umin.min(o.umin),
            umax: self.umax.max(o.umax),
            smin: self.smin.min(o.smin),
            smax: self.smax.max(o.smax),
            u32min: self.u32min.min(o.u32min),
            u32max: self.u32max.max(o.u32max),
            s32min: self.s32min.min(o.s32min),
            s32max: self.s32max.max(o.s32max),
        }
    }

    fn meet(&self, o: &Bounds) -> Option<Bounds> {
        let b = Bounds {
            umin: self.umin.max(o.umin),
            umax: self.umax.min(o.umax),
            smin: self.smin.max(o.smin),
            smax: self.smax.min(o.smax),
            u32min: self.u32min.max(o.u32min),
            u32max: self.u32max.min(o.u32max),
            s32min: self.s32min.max(o.s32min),
            s32max: self.s32max.min(o.s32max),
        };
        (!b.is_empty()).then_some(b)
    }

    fn le(&self, o: &Bounds) -> bool {
        o.umin <= self.umin
            && self.umax <= o.umax
            && o.smin <= self.smin
            && self.smax <= o.smax
            && o.u32min <= self.u32min
            && self.u32max <= o.u32max
            && o.s32min <= self.s32min
            && self.s32max <= o.s32max
    }
}
