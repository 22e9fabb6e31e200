//! Laws of the abstract domains, property-tested: join is an upper bound,
//! meet a lower bound that keeps common values, and every transfer function
//! and branch refinement is sound (a concrete result of concrete operands
//! taken from abstract values lies in the abstract result).

use pkbpf_verifier::isa::{AluOp, ByteOrder, JmpCond, Width};
use pkbpf_verifier::verifier::bounds::Bounds;
use pkbpf_verifier::verifier::lattice::Lattice;
use pkbpf_verifier::verifier::scalar::{eval_alu, eval_endian, Scalar};
use pkbpf_verifier::verifier::tnum::Tnum;
use proptest::prelude::*;

fn value() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        0u64..70,
        (-70i64..70).prop_map(|v| v as u64),
        (0u64..0x1_0000_0000),
        (0u32..64).prop_map(|k| 1u64 << k),
        (0u32..64).prop_map(|k| (1u64 << k).wrapping_sub(1)),
    ]
}

/// An abstract scalar together with one value it contains.
fn abstract_with_value() -> impl Strategy<Value = (Scalar, u64)> {
    (value(), any::<u64>(), 0u8..6, any::<u64>(), any::<u64>()).prop_map(
        |(x, mask, kind, d1, d2)| {
            let small = |d: u64| d % 300;
            let s = match kind {
                0 => Scalar::constant(x),
                1 => Scalar::from_parts(Tnum::new(x, mask), Bounds::UNBOUNDED).expect("contains x"),
                2 => Scalar::urange(x.saturating_sub(small(d1)), x.saturating_add(small(d2))),
                3 => {
                    let v = x as i64;
                    Scalar::srange(
                        v.saturating_sub(small(d1) as i64),
                        v.saturating_add(small(d2) as i64),
                    )
                }
                4 => Scalar::urange(
                    x.saturating_sub(d1 >> (d1 % 64)),
                    x.saturating_add(d2 >> (d2 % 64)),
                ),
                _ => {
                    let t = Scalar::from_parts(Tnum::new(x, mask & 0xffff), Bounds::UNBOUNDED)
                        .expect("contains x");
                    t.meet(&Scalar::urange(
                        x.saturating_sub(small(d1)),
                        x.saturating_add(small(d2)),
                    ))
                    .expect("both contain x")
                }
            };
            (s, x)
        },
    )
}

fn alu_op() -> impl Strategy<Value = AluOp> {
    prop_oneof![
        Just(AluOp::Add),
        Just(AluOp::Sub),
        Just(AluOp::Mul),
        Just(AluOp::Div),
        Just(AluOp::SDiv),
        Just(AluOp::Or),
        Just(AluOp::And),
        Just(AluOp::Lsh),
        Just(AluOp::Rsh),
        Just(AluOp::Mod),
        Just(AluOp::SMod),
        Just(AluOp::Xor),
        Just(AluOp::Mov),
        Just(AluOp::MovSx(8)),
        Just(AluOp::MovSx(16)),
        Just(AluOp::MovSx(32)),
        Just(AluOp::Arsh),
    ]
}

fn width() -> impl Strategy<Value = Width> {
    prop_oneof![Just(Width::W64), Just(Width::W32)]
}

fn cond() -> impl Strategy<Value = JmpCond> {
    proptest::sample::select(JmpCond::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn generated_values_are_contained((a, x) in abstract_with_value()) {
        prop_assert!(a.contains(x), "{a:?} lacks {x:#x}");
    }

    #[test]
    fn alu_is_sound((a, x) in abstract_with_value(), (b, y) in abstract_with_value(), op in alu_op(), w in width()) {
        // ALU32 sign-extending moves exist for 8 and 16 bits only.
        prop_assume!(!(w == Width::W32 && op == AluOp::MovSx(32)));
        let r = a.alu(w, op, b);
        let c = eval_alu(w, op, x, y);
        prop_assert!(r.contains(c), "{op:?} {w:?}: {a:?} op {b:?} = {r:?} lacks {x:#x} op {y:#x} = {c:#x}");
    }

    #[test]
    fn neg_and_endian_are_sound((a, x) in abstract_with_value(), w in width(), bits in prop_oneof![Just(16u8), Just(32), Just(64)], order in prop_oneof![Just(ByteOrder::ToLe), Just(ByteOrder::ToBe), Just(ByteOrder::Swap)]) {
        let n = a.neg(w);
        let c = eval_alu(w, AluOp::Sub, 0, x);
        prop_assert!(n.contains(c));
        let e = a.endian(order, bits);
        prop_assert!(e.contains(eval_endian(order, bits, x)));
    }

    #[test]
    fn refinement_keeps_the_concrete_outcome((a, x) in abstract_with_value(), (b, y) in abstract_with_value(), c in cond(), w in width()) {
        let taken = c.eval(w, x, y);
        let r = a.refine(b, w, c, taken);
        prop_assert!(r.is_some(), "{c:?} {w:?} taken={taken}: {a:?} vs {b:?} judged impossible for {x:#x}, {y:#x}");
        let (a2, b2) = r.unwrap();
        prop_assert!(a2.contains(x) && b2.contains(y), "{c:?} {w:?} taken={taken}: lost {x:#x} or {y:#x}: {a2:?} {b2:?}");
        prop_assert!(a2.le(&a) || a2.meet(&a).is_some());
    }

    #[test]
    fn scalar_join_is_an_upper_bound((a, x) in abstract_with_value(), (b, y) in abstract_with_value()) {
        let j = a.join(&b);
        prop_assert!(a.le(&j) && b.le(&j), "{a:?} | {b:?} = {j:?}");
        prop_assert!(j.contains(x) && j.contains(y));
    }

    #[test]
    fn scalar_meet_is_a_lower_bound((a, x) in abstract_with_value(), (b, _y) in abstract_with_value()) {
        match a.meet(&b) {
            Some(m) => {
                prop_assert!(m.le(&a) && m.le(&b));
                prop_assert_eq!(m.contains(x), b.contains(x));
            }
            None => prop_assert!(!b.contains(x), "empty meet but {x:#x} in both"),
        }
    }

    #[test]
    fn tnum_laws(x in value(), m1 in any::<u64>(), y in value(), m2 in any::<u64>()) {
        let a = Tnum::new(x, m1);
        let b = Tnum::new(y, m2);
        prop_assert!(a.contains(x) && b.contains(y));
        let j = a.join(&b);
        prop_assert!(a.le(&j) && b.le(&j) && j.contains(x) && j.contains(y));
        if let Some(m) = a.meet(&b) {
            prop_assert!(m.le(&a) && m.le(&b));
        } else {
            prop_assert!(!b.contains(x) || !a.contains(y) || x != y);
        }
        prop_assert!(a.add(b).contains(x.wrapping_add(y)));
        prop_assert!(a.sub(b).contains(x.wrapping_sub(y)));
        prop_assert!(a.mul(b).contains(x.wrapping_mul(y)));
        prop_assert!(a.and(b).contains(x & y));
        prop_assert!(a.or(b).contains(x | y));
        prop_assert!(a.xor(b).contains(x ^ y));
        let k = (y % 64) as u32;
        prop_assert!(a.shl(k).contains(x << k));
        prop_assert!(a.shr(k).contains(x >> k));
        prop_assert!(a.sar(k).contains(((x as i64) >> k) as u64));
        prop_assert!(a.umin() <= x && x <= a.umax());
        prop_assert!(a.smin() <= x as i64 && x as i64 <= a.smax());
    }

    #[test]
    fn tnum_range_covers(lo in value(), hi in value()) {
        let (lo, hi) = (lo.min(hi), lo.max(hi));
        let t = Tnum::range(lo, hi);
        prop_assert!(t.contains(lo) && t.contains(hi));
        let mid = lo + (hi - lo) / 2;
        prop_assert!(t.contains(mid));
    }

    #[test]
    fn bounds_laws((a, x) in abstract_with_value(), (b, y) in abstract_with_value()) {
        let (ba, bb) = (*a.bounds(), *b.bounds());
        let j = ba.join(&bb);
        prop_assert!(ba.le(&j) && bb.le(&j) && j.contains(x) && j.contains(y));
        if let Some(m) = ba.meet(&bb) {
            prop_assert!(m.le(&ba) && m.le(&bb));
        }
        if ba.contains(y) {
            prop_assert!(ba.meet(&bb).is_some());
        }
    }
}

#[test]
fn reduction_tightens_across_views() {
    // A value known to be below 256 has known upper bits and 32-bit bounds.
    let s = Scalar::urange(0, 255);
    assert_eq!(s.tnum().mask(), 0xff);
    assert_eq!(s.bounds().u32max, 255);
    assert_eq!(s.bounds().smax, 255);
    // An empty combination is reported as such.
    let mut b = Bounds::UNBOUNDED;
    b.umin = 10;
    assert!(Scalar::from_parts(Tnum::constant(3), b).is_none());
}

#[test]
fn branch_on_constant_decides() {
    let five = Scalar::constant(5);
    let r = five.refine(Scalar::constant(3), Width::W64, JmpCond::Gt, false);
    assert!(r.is_none(), "5 > 3 cannot be false");
    let (x, _) = Scalar::UNKNOWN
        .refine(Scalar::constant(10), Width::W64, JmpCond::Lt, true)
        .unwrap();
    assert_eq!((x.umin(), x.umax()), (0, 9));
}

#[test]
fn regression_both_outcomes_of_an_unknown_comparison_are_feasible() {
    // Found while building: the signed 32-bit view derived from a tnum whose
    // sign bit is unknown was truncated to 0, so `unknown > 5` looked
    // impossible both ways and the verifier skipped the rest of the program.
    for cond in JmpCond::ALL {
        for w in [Width::W64, Width::W32] {
            for taken in [true, false] {
                let r = Scalar::UNKNOWN.refine(Scalar::constant(5), w, cond, taken);
                assert!(r.is_some(), "{cond:?} {w:?} taken={taken}");
            }
        }
    }
    assert_eq!(Scalar::urange(6, u64::MAX).umin(), 6);
}
