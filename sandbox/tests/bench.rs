//! Gate timings are refused where they would not be real.

mod common;

use pkbpf_sandbox::bench::{gate_costs, hypervisor_vendor, timing_available};
use pkbpf_sandbox::{detect, PkuStatus};

#[test]
fn timings_are_unavailable_without_pku_or_under_tcg() {
    let tcg = hypervisor_vendor().is_some_and(|v| v.starts_with("TCG"));
    match (detect(), tcg) {
        (PkuStatus::Missing(m), _) => {
            let u = gate_costs(10).unwrap_err();
            assert_eq!(u.reason, m.to_string());
            assert_eq!(u.to_string(), format!("unavailable: {m}"));
        }
        (PkuStatus::Available, true) => {
            let u = timing_available().unwrap_err();
            assert!(u.reason.starts_with("emulated CPU"), "{u}");
            assert!(gate_costs(10).is_err());
        }
        (PkuStatus::Available, false) => {
            let c = gate_costs(10_000).expect("real PKU hardware");
            assert!(c.domain_guard_ns > 0.0 && c.entry_gate_ns > 0.0);
            println!("gate costs: {c:?}");
        }
    }
    if common::pku_required() {
        // The MPK VM is QEMU TCG: it must say so rather than time gates.
        assert!(
            tcg,
            "PKBPF_REQUIRE_PKU=1 outside TCG: {:?}",
            hypervisor_vendor()
        );
    }
}
