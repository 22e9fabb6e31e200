//! The gadget scanner over byte slices and over the process's mappings.

mod common;

use pkbpf_sandbox::gadgets::{scan_bytes, scan_executable_mappings, GadgetKind};
use pkbpf_sandbox::GateCode;

#[test]
fn emitted_gates_have_only_checked_wrpkru() {
    let code = GateCode::emit(0x5555_5554, 0x5555_5550, true);
    let found = scan_bytes(&code.bytes, 0, "gate");
    let offs: Vec<usize> = found.iter().map(|g| g.addr).collect();
    assert_eq!(offs, code.wrpkru_offsets);
    assert!(found
        .iter()
        .all(|g| g.kind == GadgetKind::Wrpkru && g.checked));
    assert!(scan_bytes(&GateCode::emit(0, 0, false).bytes, 0, "gate").is_empty());
}

#[test]
fn unchecked_wrpkru_and_xrstor_are_found_at_any_offset() {
    // wrpkru; ret — hidden inside a mov imm32 at offset 2.
    let bytes = [0xb8, 0x90, 0x0f, 0x01, 0xef, 0xc3];
    let g = scan_bytes(&bytes, 0x1000, "x");
    assert_eq!(g.len(), 1);
    assert_eq!(
        (g[0].addr, g[0].kind, g[0].checked),
        (0x1002, GadgetKind::Wrpkru, false)
    );
    // xrstor [rax] is a gadget; lfence (0F AE E8, register form) is not.
    let g = scan_bytes(&[0x0f, 0xae, 0x28, 0x0f, 0xae, 0xe8, 0x90], 0, "x");
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].kind, GadgetKind::Xrstor);
    // A WRPKRU followed by a compare but no jne is still unchecked.
    let g = scan_bytes(
        &[0x0f, 0x01, 0xef, 0x3d, 0, 0, 0, 0, 0x90, 0x90, 0x90],
        0,
        "x",
    );
    assert!(!g[0].checked);
    // Truncated patterns at the end are not read past the slice.
    assert!(scan_bytes(&[0x0f, 0x01], 0, "x").is_empty());
}

#[test]
fn process_scan_reports_a_mapped_gate_precisely() {
    let code = GateCode::emit(0x5555_5554, 0, true);
    let page = common::map_code(&code.bytes) as usize;
    let all = scan_executable_mappings().expect("scan");
    let here: Vec<_> = all
        .iter()
        .filter(|g| (page..page + 4096).contains(&g.addr))
        .collect();
    assert_eq!(here.len(), 2, "{here:?}");
    for (g, off) in here.iter().zip(&code.wrpkru_offsets) {
        assert_eq!(g.addr, page + off);
        assert!(g.checked);
        assert_eq!(g.mapping, "[anon]");
    }
    // The test binary itself is scanned too, and it links the Rust-level
    // gate (DomainGuard): all of its WRPKRUs are constant ERIM switches.
    drop(pkbpf_sandbox::DomainGuard::enter(
        pkbpf_sandbox::Domain::host(),
    ));
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    let exe = exe.to_string_lossy();
    let own: Vec<_> = all
        .iter()
        .filter(|g| g.mapping == exe && g.kind == GadgetKind::Wrpkru)
        .collect();
    if cfg!(not(pkbpf_force_disabled_mpk)) {
        // (The disabled backend never links them.)
        assert!(own.len() >= 17, "pkru.rs's 17 switches not found: {own:?}");
    }
    assert!(
        own.iter().all(|g| g.checked),
        "unchecked WRPKRU in {exe}: {own:?}"
    );
}
