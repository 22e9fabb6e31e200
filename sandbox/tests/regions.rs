//! Helper pointer validation (attack 9: helpers as confused deputies).

use pkbpf_sandbox::regions::{Access, PointerRejected, Regions};
use proptest::prelude::*;

#[test]
fn pointers_outside_own_regions_are_rejected() {
    let mut r = Regions::new();
    r.add(0x1000, 0x100, true).unwrap(); // a map value
    r.add(0x3000, 0x40, false).unwrap(); // the context, read-only
                                         // Inside: fine.
    assert_eq!(r.check(0x1000, 0x100, Access::Write), Ok(()));
    assert_eq!(r.check(0x3010, 8, Access::Read), Ok(()));
    // Runtime memory / another extension's value: rejected.
    let other = 0x2000;
    assert_eq!(
        r.check(other, 8, Access::Read),
        Err(PointerRejected {
            addr: other,
            len: 8,
            access: Access::Read
        })
    );
    // Straddling the end, writing a read-only region, wrapping around.
    assert!(r.check(0x10f8, 16, Access::Read).is_err());
    assert!(r.check(0x3000, 8, Access::Write).is_err());
    assert!(r.check(usize::MAX - 4, 8, Access::Read).is_err());
    // Spanning two regions is not inside one.
    let mut two = Regions::new();
    two.add(0x1000, 0x10, true).unwrap();
    two.add(0x1010, 0x10, true).unwrap();
    assert!(two.check(0x1008, 0x10, Access::Read).is_err());
    // Overlapping or empty regions are refused.
    assert!(r.add(0x10f0, 0x20, true).is_err());
    assert!(r.add(0x0ff0, 0x20, true).is_err());
    assert!(r.add(0x5000, 0, true).is_err());
    assert!(r.add(usize::MAX, 2, true).is_err());
    assert_eq!(r.regions().len(), 2);
    assert_eq!(
        PointerRejected {
            addr: 0x2000,
            len: 8,
            access: Access::Write
        }
        .to_string(),
        "pointer 0x2000+8 (write) is outside the extension's regions"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]
    #[test]
    fn check_matches_a_byte_model(
        regs in proptest::collection::vec((0usize..64, 1usize..16, any::<bool>()), 0..6),
        addr in 0usize..96, len in 0usize..24, write in any::<bool>(),
    ) {
        let mut r = Regions::new();
        let mut owner = [None::<(usize, bool)>; 128];
        for (i, &(s, l, w)) in regs.iter().enumerate() {
            let free = (s..s + l).all(|b| owner[b].is_none());
            prop_assert_eq!(r.add(s, l, w).is_ok(), free);
            if free {
                for o in &mut owner[s..s + l] {
                    *o = Some((i, w));
                }
            }
        }
        let access = if write { Access::Write } else { Access::Read };
        let first = owner[addr];
        let model = len == 0
            || (first.is_some()
                && (addr..addr + len).all(|b| owner[b] == first)
                && (!write || first.unwrap().1));
        prop_assert_eq!(r.check(addr, len, access).is_ok(), model);
    }
}
