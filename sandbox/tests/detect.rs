//! Detection and `--sandbox` selection: these run on every machine and check
//! the answer against what the CPU and kernel report.

mod common;

use pkbpf_sandbox::{
    detect, select, Domain, DomainGuard, Keys, PkuMissing, PkuStatus, Sandbox, SandboxError,
    SandboxMode,
};

fn cpuinfo_flag(flag: &str) -> bool {
    let info = std::fs::read_to_string("/proc/cpuinfo").expect("read /proc/cpuinfo");
    info.lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|w| w == flag))
}

#[test]
fn detection_agrees_with_proc_cpuinfo() {
    let status = detect();
    assert_eq!(status, detect(), "detect() must be stable");
    let (pku, ospke) = (cpuinfo_flag("pku"), cpuinfo_flag("ospke"));
    match status {
        PkuStatus::Available => assert!(pku && ospke, "detect() says PKU but cpuinfo lacks it"),
        PkuStatus::Missing(PkuMissing::CpuidPku) => assert!(!pku, "cpuinfo has pku"),
        PkuStatus::Missing(PkuMissing::CpuidOspke) => assert!(!ospke, "cpuinfo has ospke"),
        PkuStatus::Missing(_) => {}
    }
    if pku && ospke && cfg!(not(pkbpf_force_disabled_mpk)) {
        assert_eq!(status, PkuStatus::Available, "cpuinfo has pku+ospke");
    }
    if common::pku_required() {
        assert_eq!(status, PkuStatus::Available, "PKBPF_REQUIRE_PKU=1");
    }
}

#[test]
fn missing_feature_is_named() {
    assert_eq!(
        PkuMissing::CpuidPku.to_string(),
        "no PKU: CPUID.7.0:ECX.PKU=0"
    );
    assert_eq!(
        PkuMissing::CpuidOspke.to_string(),
        "no PKU: CPUID.7.0:ECX.OSPKE=0"
    );
    assert_eq!(
        PkuMissing::PkeyAlloc {
            errno: libc::ENOSPC
        }
        .to_string(),
        format!("no PKU: pkey_alloc failed (ENOSPC {})", libc::ENOSPC)
    );
}

#[test]
fn select_mpk_fails_closed_without_pku() {
    match detect() {
        PkuStatus::Available => assert_eq!(select(Sandbox::Mpk), Ok(SandboxMode::Mpk)),
        PkuStatus::Missing(missing) => {
            let err = select(Sandbox::Mpk).unwrap_err();
            assert_eq!(err, SandboxError::MpkUnavailable { missing });
            assert_eq!(
                err.to_string(),
                format!("sandbox: mpk requested but unavailable: {missing}")
            );
            if !cpuinfo_flag("pku") && cfg!(not(pkbpf_force_disabled_mpk)) {
                assert!(err.to_string().ends_with("no PKU: CPUID.7.0:ECX.PKU=0"));
            }
        }
    }
}

#[test]
fn select_auto_says_which_mode() {
    let mode = select(Sandbox::Auto).expect("auto never fails");
    match detect() {
        PkuStatus::Available => {
            assert_eq!(mode, SandboxMode::Mpk);
            assert_eq!(mode.to_string(), "sandbox: mpk (pkeys 1..15)");
        }
        PkuStatus::Missing(m) => {
            assert_eq!(mode, SandboxMode::None { missing: Some(m) });
            assert_eq!(mode.to_string(), format!("sandbox: none ({m})"));
        }
    }
}

#[test]
fn select_none_is_explicit() {
    let mode = select(Sandbox::None).unwrap();
    assert_eq!(mode, SandboxMode::None { missing: None });
    assert_eq!(mode.to_string(), "sandbox: none (requested)");
}

#[test]
fn sandbox_flag_parses() {
    assert_eq!("auto".parse::<Sandbox>(), Ok(Sandbox::Auto));
    assert_eq!("mpk".parse::<Sandbox>(), Ok(Sandbox::Mpk));
    assert_eq!("none".parse::<Sandbox>(), Ok(Sandbox::None));
    assert_eq!(
        "MPK".parse::<Sandbox>(),
        Err(SandboxError::UnknownMode {
            given: "MPK".into()
        })
    );
    assert_eq!(Sandbox::default(), Sandbox::Auto);
}

#[test]
fn keys_without_pku_are_a_typed_error() {
    if let PkuStatus::Missing(missing) = detect() {
        assert_eq!(
            Keys::alloc_extension(),
            Err(SandboxError::MpkUnavailable { missing })
        );
        assert_eq!(
            Keys::alloc_runtime(),
            Err(SandboxError::MpkUnavailable { missing })
        );
        assert_eq!(Keys::in_use(), 0);
    } else {
        println!("skipped: keys_without_pku_are_a_typed_error: this machine has PKU");
    }
}

#[test]
fn fixed_domains_match_the_design_table() {
    // H denies (access-disable) every key but 0, as the kernel's init PKRU.
    assert_eq!(Domain::host().pkru(), 0x5555_5554);
    // T allows everything.
    assert_eq!(Domain::trusted().pkru(), 0);
}

#[test]
fn domain_guard_without_pku_is_a_no_op() {
    if detect().is_available() {
        println!("skipped: domain_guard_without_pku_is_a_no_op: this machine has PKU");
        return;
    }
    let g = DomainGuard::enter(Domain::trusted());
    assert_eq!(g.saved(), None);
    assert_eq!(pkbpf_sandbox::current_pkru(), None);
}

#[test]
fn sandbox_mode_from_the_environment() {
    use std::ffi::OsStr;
    let v = |s: &str| Sandbox::from_env_value(Some(OsStr::new(s)));
    assert_eq!(Sandbox::from_env_value(None), Ok(Sandbox::Auto));
    assert_eq!(v(""), Ok(Sandbox::Auto));
    assert_eq!(v("none"), Ok(Sandbox::None));
    assert_eq!(v("mpk"), Ok(Sandbox::Mpk));
    assert_eq!(
        v("off"),
        Err(SandboxError::UnknownMode {
            given: "off".into()
        })
    );
    // Whatever the test runner's environment holds parses or errors, never panics.
    let _ = Sandbox::from_env();
}
