//! Scalars: the reduced product of a [`Tnum`] and [`Bounds`].
//!
//! The described set is the intersection of the tnum's and the bounds'.
//! [`Scalar::reduce`] is the single reduction: it moves information between
//! the tnum and the four interval views until they agree, and reports an
//! empty set as `None`. Every constructor and transfer function ends with it,
//! so a `Scalar` seen outside this file is always reduced and non-empty.
//!
//! Transfer functions are sound over-approximations: for concrete `a` in `A`
//! and `b` in `B`, `op(a, b)` is in `A.op(B)` (property-tested in
//! `tests/verifier_domains.rs`). Constant operands are evaluated exactly with
//! [`eval_alu`], the concrete semantics the interpreter also follows.

use super::bounds::{Bounds, View};
use super::lattice::Lattice;
use super::tnum::Tnum;
use crate::isa::{AluOp, ByteOrder, JmpCond, Width};
use std::fmt;

/// A 64-bit value known up to a tnum and four ranges.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Scalar {
    tnum: Tnum,
    bounds: Bounds,
}

const LOW32: u64 = 0xffff_ffff;

// Named operations (not operator traits): an abstract `add` is an
// over-approximation, not the arithmetic `+` promises.
#[allow(clippy::should_implement_trait)]
impl Scalar {
    /// Any value.
    pub const UNKNOWN: Scalar = Scalar {
        tnum: Tnum::UNKNOWN,
        bounds: Bounds::UNBOUNDED,
    };

    /// Exactly `v`.
    pub const fn constant(v: u64) -> Scalar {
        Scalar {
            tnum: Tnum::constant(v),
            bounds: Bounds::constant(v),
        }
    }

    /// Builds and reduces; `None` when the parts contradict.
    pub fn from_parts(tnum: Tnum, bounds: Bounds) -> Option<Scalar> {
        Scalar { tnum, bounds }.reduce()
    }

    /// Any value of `lo..=hi` (unsigned).
    pub fn urange(lo: u64, hi: u64) -> Scalar {
        let mut b = Bounds::UNBOUNDED;
        b.umin = lo;
        b.umax = hi;
        Scalar::from_parts(Tnum::UNKNOWN, b).unwrap_or(Scalar::UNKNOWN)
    }

    /// Any value of `lo..=hi` (signed).
    pub fn srange(lo: i64, hi: i64) -> Scalar {
        let mut b = Bounds::UNBOUNDED;
        b.smin = lo;
        b.smax = hi;
        Scalar::from_parts(Tnum::UNKNOWN, b).unwrap_or(Scalar::UNKNOWN)
    }

    /// Any value that fits in `bytes` bytes, zero-extended.
    pub fn unknown_bytes(bytes: u32) -> Scalar {
        if bytes >= 8 {
            Scalar::UNKNOWN
        } else {
            Scalar::urange(0, (1u64 << (bytes * 8)) - 1)
        }
    }

    /// The tnum part.
    pub fn tnum(&self) -> Tnum {
        self.tnum
    }

    /// The bounds part.
    pub fn bounds(&self) -> &Bounds {
        &self.bounds
    }

    /// The value when it is a single constant.
    pub fn as_const(&self) -> Option<u64> {
        self.tnum.is_const().then_some(self.tnum.value())
    }

    /// Unsigned minimum.
    pub fn umin(&self) -> u64 {
        self.bounds.umin
    }

    /// Unsigned maximum.
    pub fn umax(&self) -> u64 {
        self.bounds.umax
    }

    /// Signed minimum.
    pub fn smin(&self) -> i64 {
        self.bounds.smin
    }

    /// Signed maximum.
    pub fn smax(&self) -> i64 {
        self.bounds.smax
    }

    /// Whether `v` is a described value.
    pub fn contains(&self, v: u64) -> bool {
        self.tnum.contains(v) && self.bounds.contains(v)
    }

    /// Whether the upper 32 bits are known to be zero.
    pub fn upper_half_zero(&self) -> bool {
        self.tnum.umax() >> 32 == 0
    }

    /// The single reduction between tnum and bounds (see the module doc).
    pub fn reduce(self) -> Option<Scalar> {
        let mut t = self.tnum;
        let mut b = self.bounds;
        for _ in 0..3 {
            if b.is_empty() {
                return None;
            }
            // tnum -> 64-bit ranges
            b.umin = b.umin.max(t.umin());
            b.umax = b.umax.min(t.umax());
            b.smin = b.smin.max(t.smin());
            b.smax = b.smax.min(t.smax());
            // tnum -> 32-bit ranges
            let t32 = t.truncate(4);
            b.u32min = b.u32min.max(t32.umin() as u32);
            b.u32max = b.u32max.min(t32.umax() as u32);
            let (v32, m32) = (t32.value() as u32, t32.mask() as u32);
            b.s32min = b.s32min.max((v32 | (m32 & 0x8000_0000)) as i32);
            b.s32max = b.s32max.min((v32 | (m32 & 0x7fff_ffff)) as i32);
            if b.is_empty() {
                return None;
            }
            // unsigned <-> signed, when a range stays within one sign half
            if (b.umin as i64) <= (b.umax as i64) {
                b.smin = b.smin.max(b.umin as i64);
                b.smax = b.smax.min(b.umax as i64);
            }
            if (b.smin as u64) <= (b.smax as u64) {
                b.umin = b.umin.max(b.smin as u64);
                b.umax = b.umax.min(b.smax as u64);
            }
            if (b.u32min as i32) <= (b.u32max as i32) {
                b.s32min = b.s32min.max(b.u32min as i32);
                b.s32max = b.s32max.min(b.u32max as i32);
            }
            if (b.s32min as u32) <= (b.s32max as u32) {
                b.u32min = b.u32min.max(b.s32min as u32);
                b.u32max = b.u32max.min(b.s32max as u32);
            }
            if b.is_empty() {
                return None;
            }
            // 64 -> 32: when the upper halves agree, the low halves form an interval
            if b.umin >> 32 == b.umax >> 32 {
                b.u32min = b.u32min.max(b.umin as u32);
                b.u32max = b.u32max.min(b.umax as u32);
            }
            if (b.smin >> 32) == (b.smax >> 32) {
                b.u32min = b.u32min.max(b.smin as u32);
                b.u32max = b.u32max.min(b.smax as u32);
            }
            // 32 -> 64: when the upper half is known
            if t.mask() >> 32 == 0 {
                let upper = t.value() & !LOW32;
                b.umin = b.umin.max(upper | b.u32min as u64);
                b.umax = b.umax.min(upper | b.u32max as u64);
            }
            if b.is_empty() {
                return None;
            }
            // ranges -> tnum
            t = t.meet(&Tnum::range(b.umin, b.umax))?;
            let low = Tnum::range(b.u32min as u64, b.u32max as u64);
            t = t.meet(&Tnum::new(low.value(), low.mask() | !LOW32))?;
        }
        if b.is_empty() {
            return None;
        }
        Some(Scalar { tnum: t, bounds: b })
    }

    fn restrict(self, view: View, lo: i128, hi: i128) -> Option<Scalar> {
        let mut b = self.bounds;
        b.restrict(view, lo, hi);
        Scalar::from_parts(self.tnum, b)
    }

    /// The low 32 bits, zero-extended.
    pub fn zext32(self) -> Scalar {
        let mut b = Bounds::UNBOUNDED;
        b.umin = self.bounds.u32min as u64;
        b.umax = self.bounds.u32max as u64;
        b.u32min = self.bounds.u32min;
        b.u32max = self.bounds.u32max;
        b.s32min = self.bounds.s32min;
        b.s32max = self.bounds.s32max;
        Scalar::from_parts(self.tnum.truncate(4), b).unwrap_or(Scalar::unknown_bytes(4))
    }

    /// The low 32 bits, sign-extended.
    pub fn sext32(self) -> Scalar {
        let mut b = Bounds::UNBOUNDED;
        b.smin = self.bounds.s32min as i64;
        b.smax = self.bounds.s32max as i64;
        b.u32min = self.bounds.u32min;
        b.u32max = self.bounds.u32max;
        b.s32min = self.bounds.s32min;
        b.s32max = self.bounds.s32max;
        Scalar::from_parts(self.tnum.truncate(4).sign_extend(32), b)
            .unwrap_or(Scalar::srange(i32::MIN as i64, i32::MAX as i64))
    }

    /// Sign-extends the low `bits` bits (8, 16, 32).
    pub fn sign_extend(self, bits: u32) -> Scalar {
        if let Some(c) = self.as_const() {
            return Scalar::constant(crate::isa::sign_extend(c, bits));
        }
        let half = 1u64 << (bits - 1);
        if self.umax() < half {
            return self;
        }
        let t = self.tnum.truncate(bits / 8).sign_extend(bits);
        let mut b = Bounds::UNBOUNDED;
        b.smin = -(half as i64);
        b.smax = half as i64 - 1;
        Scalar::from_parts(t, b).unwrap_or(Scalar::srange(b.smin, b.smax))
    }

    fn with_tnum(t: Tnum) -> Scalar {
        Scalar::from_parts(t, Bounds::UNBOUNDED).unwrap_or(Scalar::UNKNOWN)
    }

    fn with(t: Tnum, b: Bounds) -> Scalar {
        Scalar::from_parts(t, b).unwrap_or_else(|| Scalar::with_tnum(t))
    }

    /// 64-bit `self + o`.
    pub fn add(self, o: Scalar) -> Scalar {
        let (a, c) = (&self.bounds, &o.bounds);
        let mut b = Bounds::UNBOUNDED;
        if let (Some(lo), Some(hi)) = (a.umin.checked_add(c.umin), a.umax.checked_add(c.umax)) {
            b.umin = lo;
            b.umax = hi;
        }
        if let (Some(lo), Some(hi)) = (a.smin.checked_add(c.smin), a.smax.checked_add(c.smax)) {
            b.smin = lo;
            b.smax = hi;
        }
        if let (Some(lo), Some(hi)) = (
            a.u32min.checked_add(c.u32min),
            a.u32max.checked_add(c.u32max),
        ) {
            b.u32min = lo;
            b.u32max = hi;
        }
        if let (Some(lo), Some(hi)) = (
            a.s32min.checked_add(c.s32min),
            a.s32max.checked_add(c.s32max),
        ) {
            b.s32min = lo;
            b.s32max = hi;
        }
        Scalar::with(self.tnum.add(o.tnum), b)
    }

    /// 64-bit `self - o`.
    pub fn sub(self, o: Scalar) -> Scalar {
        let (a, c) = (&self.bounds, &o.bounds);
        let mut b = Bounds::UNBOUNDED;
        if a.umin >= c.umax {
            b.umin = a.umin - c.umax;
            b.umax = a.umax - c.umin;
        }
        if let (Some(lo), Some(hi)) = (a.smin.checked_sub(c.smax), a.smax.checked_sub(c.smin)) {
            b.smin = lo;
            b.smax = hi;
        }
        if a.u32min >= c.u32max {
            b.u32min = a.u32min - c.u32max;
            b.u32max = a.u32max - c.u32min;
        }
        if let (Some(lo), Some(hi)) = (
            a.s32min.checked_sub(c.s32max),
            a.s32max.checked_sub(c.s32min),
        ) {
            b.s32min = lo;
            b.s32max = hi;
        }
        Scalar::with(self.tnum.sub(o.tnum), b)
    }

    fn mul(self, o: Scalar) -> Scalar {
        let (a, c) = (&self.bounds, &o.bounds);
        let mut b = Bounds::UNBOUNDED;
        if let Some(hi) = a.umax.checked_mul(c.umax) {
            b.umin = a.umin * c.umin;
            b.umax = hi;
        }
        if a.smin >= 0 && c.smin >= 0 {
            if let Some(hi) = a.smax.checked_mul(c.smax) {
                b.smin = a.smin * c.smin;
                b.smax = hi;
            }
        }
        Scalar::with(self.tnum.mul(o.tnum), b)
    }

    fn and(self, o: Scalar) -> Scalar {
        let mut b = Bounds::UNBOUNDED;
        b.umax = self.umax().min(o.umax());
        b.u32max = self.bounds.u32max.min(o.bounds.u32max);
        if self.smin() >= 0 || o.smin() >= 0 {
            b.smin = 0;
        }
        Scalar::with(self.tnum.and(o.tnum), b)
    }

    fn or(self, o: Scalar) -> Scalar {
        let mut b = Bounds::UNBOUNDED;
        b.umin = self.umin().max(o.umin());
        b.u32min = self.bounds.u32min.max(o.bounds.u32min);
        Scalar::with(self.tnum.or(o.tnum), b)
    }

    fn shift(self, op: AluOp, amount: Scalar, width_bits: u32) -> Scalar {
        let masked = amount.and(Scalar::constant(width_bits as u64 - 1));
        let mut acc: Option<Scalar> = None;
        for k in masked.umin()..=masked.umax().min(width_bits as u64 - 1) {
            if !masked.contains(k) {
                continue;
            }
            let k = k as u32;
            let r = match op {
                AluOp::Lsh => {
                    let mut b = Bounds::UNBOUNDED;
                    if self.umax().leading_zeros() >= k {
                        b.umin = self.umin() << k;
                        b.umax = self.umax() << k;
                    }
                    Scalar::with(self.tnum.shl(k), b)
                }
                AluOp::Rsh => {
                    let mut b = Bounds::UNBOUNDED;
                    b.umin = self.umin() >> k;
                    b.umax = self.umax() >> k;
                    Scalar::with(self.tnum.shr(k), b)
                }
                _ => {
                    let mut b = Bounds::UNBOUNDED;
                    b.smin = self.smin() >> k;
                    b.smax = self.smax() >> k;
                    Scalar::with(self.tnum.sar(k), b)
                }
            };
            acc = Some(match acc {
                None => r,
                Some(a) => a.join(&r),
            });
        }
        acc.unwrap_or(Scalar::UNKNOWN)
    }

    fn div(self, o: Scalar) -> Scalar {
        if o.umin() > 0 {
            Scalar::urange(self.umin() / o.umax(), self.umax() / o.umin())
        } else {
            // division by zero gives 0, and x / y <= x
            Scalar::urange(0, self.umax())
        }
    }

    fn rem(self, o: Scalar) -> Scalar {
        if o.umin() > 0 {
            if self.umax() < o.umin() {
                return self;
            }
            Scalar::urange(0, (o.umax() - 1).min(self.umax()))
        } else {
            // modulo by zero leaves the dividend: the result is at most it
            Scalar::urange(0, self.umax())
        }
    }

    /// The 64-bit result of `op` on two 64-bit operands.
    fn alu64(self, op: AluOp, o: Scalar, width_bits: u32) -> Scalar {
        if let (Some(a), Some(b)) = (self.as_const(), o.as_const()) {
            return Scalar::constant(eval_alu(Width::W64, op, a, b));
        }
        match op {
            AluOp::Add => self.add(o),
            AluOp::Sub => self.sub(o),
            AluOp::Mul => self.mul(o),
            AluOp::Div => self.div(o),
            AluOp::Mod => self.rem(o),
            AluOp::And => self.and(o),
            AluOp::Or => self.or(o),
            AluOp::Xor => Scalar::with_tnum(self.tnum.xor(o.tnum)),
            AluOp::Lsh | AluOp::Rsh | AluOp::Arsh => self.shift(op, o, width_bits),
            AluOp::Mov => o,
            AluOp::MovSx(bits) => o.sign_extend(bits as u32),
            AluOp::SDiv | AluOp::SMod => Scalar::UNKNOWN,
        }
    }

    /// `self op o` at the given width (32-bit results are zero-extended).
    pub fn alu(self, width: Width, op: AluOp, o: Scalar) -> Scalar {
        if let (Some(a), Some(b)) = (self.as_const(), o.as_const()) {
            return Scalar::constant(eval_alu(width, op, a, b));
        }
        match width {
            Width::W64 => self.alu64(op, o, 64),
            Width::W32 => {
                let signed = matches!(op, AluOp::SDiv | AluOp::SMod | AluOp::Arsh);
                let (a, b) = if signed {
                    (self.sext32(), o.sext32())
                } else {
                    (self.zext32(), o.zext32())
                };
                let r = match op {
                    AluOp::MovSx(bits) if bits < 32 => o.zext32().sign_extend(bits as u32),
                    _ => a.alu64(op, b, 32),
                };
                r.zext32()
            }
        }
    }

    /// `-self` at the given width.
    pub fn neg(self, width: Width) -> Scalar {
        match width {
            Width::W64 => Scalar::constant(0).alu(width, AluOp::Sub, self),
            Width::W32 => Scalar::constant(0).alu(width, AluOp::Sub, self.zext32()),
        }
    }

    /// Byte-order conversion of the low `bits` bits.
    pub fn endian(self, order: ByteOrder, bits: u8) -> Scalar {
        if let Some(c) = self.as_const() {
            return Scalar::constant(eval_endian(order, bits, c));
        }
        match (order, bits) {
            (ByteOrder::ToLe, 64) => self,
            (ByteOrder::ToLe, b) => self.and(Scalar::constant((1u64 << b) - 1)),
            (_, 64) => Scalar::UNKNOWN,
            (_, b) => Scalar::unknown_bytes(b as u32 / 8),
        }
    }

    /// Narrows `self` (`dst`) and `o` (`src`) assuming `dst cond src` holds at
    /// `width` (`taken`) or does not (`!taken`). `None`: that outcome is
    /// impossible.
    pub fn refine(
        self,
        o: Scalar,
        width: Width,
        cond: JmpCond,
        taken: bool,
    ) -> Option<(Scalar, Scalar)> {
        let cond = if taken {
            cond
        } else {
            match cond.negate() {
                Some(c) => c,
                None => return self.refine_not_set(o, width),
            }
        };
        let (uv, sv) = match width {
            Width::W64 => (View::U64, View::S64),
            Width::W32 => (View::U32, View::S32),
        };
        match cond {
            JmpCond::Eq => {
                let (a, b) = (self, o);
                match width {
                    Width::W64 => {
                        let m = a.meet(&b)?;
                        Some((m, m))
                    }
                    Width::W32 => {
                        let a2 = a.meet_low32(&b)?;
                        let b2 = b.meet_low32(&a)?;
                        Some((a2, b2))
                    }
                }
            }
            JmpCond::Ne => {
                let (a, b) = (self, o);
                let (a, b) = match width {
                    Width::W64 => (
                        a.exclude(b.as_const(), uv, sv)?,
                        b.exclude(a.as_const(), uv, sv)?,
                    ),
                    Width::W32 => {
                        let ac = a.zext32().as_const();
                        let bc = b.zext32().as_const();
                        (a.exclude(bc, uv, sv)?, b.exclude(ac, uv, sv)?)
                    }
                };
                Some((a, b))
            }
            JmpCond::Lt => ordered(self, o, uv, true),
            JmpCond::Le => ordered(self, o, uv, false),
            JmpCond::Slt => ordered(self, o, sv, true),
            JmpCond::Sle => ordered(self, o, sv, false),
            JmpCond::Gt => ordered(o, self, uv, true).map(|(b, a)| (a, b)),
            JmpCond::Ge => ordered(o, self, uv, false).map(|(b, a)| (a, b)),
            JmpCond::Sgt => ordered(o, self, sv, true).map(|(b, a)| (a, b)),
            JmpCond::Sge => ordered(o, self, sv, false).map(|(b, a)| (a, b)),
            JmpCond::Set => {
                let bits = width_mask(width);
                let possible = self.tnum.umax() & o.tnum.umax() & bits;
                if possible == 0 {
                    return None;
                }
                if let Some(c) = o.as_const() {
                    let c = c & bits;
                    if c.count_ones() == 1 {
                        let t = self.tnum.meet(&Tnum::new(c, !c))?;
                        return Some((Scalar::from_parts(t, self.bounds)?, o));
                    }
                }
                Some((self, o))
            }
        }
    }

    fn refine_not_set(self, o: Scalar, width: Width) -> Option<(Scalar, Scalar)> {
        let bits = width_mask(width);
        let certain = self.tnum.value() & o.tnum.value() & bits;
        if certain != 0 {
            return None;
        }
        if let Some(c) = o.as_const() {
            let c = c & bits;
            let t = self.tnum.meet(&Tnum::new(0, !c))?;
            return Some((Scalar::from_parts(t, self.bounds)?, o));
        }
        Some((self, o))
    }

    /// Meet of the low 32 bits only (the upper halves are unrelated).
    fn meet_low32(&self, o: &Scalar) -> Option<Scalar> {
        let mut b = self.bounds;
        b.u32min = b.u32min.max(o.bounds.u32min);
        b.u32max = b.u32max.min(o.bounds.u32max);
        b.s32min = b.s32min.max(o.bounds.s32min);
        b.s32max = b.s32max.min(o.bounds.s32max);
        let ot = o.tnum;
        let low = Tnum::new(ot.value() & LOW32, (ot.mask() & LOW32) | !LOW32);
        Scalar::from_parts(self.tnum.meet(&low)?, b)
    }

    /// Removes constant `c` (from the other operand) where it is an end of a range.
    fn exclude(self, c: Option<u64>, uv: View, sv: View) -> Option<Scalar> {
        let Some(c) = c else { return Some(self) };
        let mut s = self;
        for view in [uv, sv] {
            let cv: i128 = match view {
                View::U64 => c as i128,
                View::S64 => c as i64 as i128,
                View::U32 => c as u32 as i128,
                View::S32 => c as u32 as i32 as i128,
            };
            let (lo, hi) = s.bounds.get(view);
            if lo == cv {
                s = s.restrict(view, lo + 1, hi)?;
            } else if hi == cv {
                s = s.restrict(view, lo, hi - 1)?;
            }
        }
        Some(s)
    }
}

/// Narrows `a < b` (`strict`) or `a <= b` in one view.
fn ordered(a: Scalar, b: Scalar, view: View, strict: bool) -> Option<(Scalar, Scalar)> {
    let d = strict as i128;
    let (alo, ahi) = a.bounds.get(view);
    let (blo, bhi) = b.bounds.get(view);
    let a2 = a.restrict(view, alo, ahi.min(bhi - d))?;
    let b2 = b.restrict(view, blo.max(alo + d), bhi)?;
    Some((a2, b2))
}

fn width_mask(width: Width) -> u64 {
    match width {
        Width::W64 => u64::MAX,
        Width::W32 => LOW32,
    }
}

/// The concrete semantics of a binary ALU instruction: [`AluOp::eval`], the
/// one definition the interpreter also runs.
pub fn eval_alu(width: Width, op: AluOp, a: u64, b: u64) -> u64 {
    op.eval(width, a, b)
}

/// The concrete semantics of a byte-order instruction on the low `bits` bits
/// ([`ByteOrder::eval`]; widths other than 16/32/64 leave `v` as is).
pub fn eval_endian(order: ByteOrder, bits: u8, v: u64) -> u64 {
    order.eval(bits, v).unwrap_or(v)
}

impl Lattice for Scalar {
    fn top() -> Scalar {
        Scalar::UNKNOWN
    }

    fn join(&self, o: &Scalar) -> Scalar {
        Scalar::with(self.tnum.join(&o.tnum), self.bounds.join(&o.bounds))
    }

    fn meet(&self, o: &Scalar) -> Option<Scalar> {
        Scalar::from_parts(self.tnum.meet(&o.tnum)?, self.bounds.meet(&o.bounds)?)
    }

    fn le(&self, o: &Scalar) -> bool {
        self.tnum.le(&o.tnum) && self.bounds.le(&o.bounds)
    }
}

impl fmt::Display for Scalar {
    /// Kernel style: a constant prints as its value, otherwise
    /// `scalar(...)` listing the non-default bounds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(c) = self.as_const() {
            return write!(f, "{}", c as i64);
        }
        let b = &self.bounds;
        let mut parts = Vec::new();
        if b.smin != i64::MIN {
            parts.push(format!("smin={}", b.smin));
        }
        if b.smax != i64::MAX {
            parts.push(format!("smax={}", b.smax));
        }
        if b.umin != 0 {
            parts.push(format!("umin={}", b.umin));
        }
        if b.umax != u64::MAX {
            parts.push(format!("umax={}", b.umax));
        }
        if b.s32min != i32::MIN {
            parts.push(format!("smin32={}", b.s32min));
        }
        if b.s32max != i32::MAX {
            parts.push(format!("smax32={}", b.s32max));
        }
        if b.u32min != 0 {
            parts.push(format!("umin32={}", b.u32min));
        }
        if b.u32max != u32::MAX {
            parts.push(format!("umax32={}", b.u32max));
        }
        if self.tnum.mask() != u64::MAX {
            parts.push(format!("var_off={}", self.tnum));
        }
        write!(f, "scalar({})", parts.join(","))
    }
}
