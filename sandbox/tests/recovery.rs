//! Fault recovery and gates without protection keys: the guarded copy, the
//! entry gate's call path, and recovery of faults in registered JIT ranges.
//! (With PKU the gates also switch PKRU; `isolation.rs` checks that.)

mod common;

use common::{map_code, map_page, LOAD_THROUGH_ARG, STORE_THROUGH_ARG};
use pkbpf_sandbox::fault::{register_code_range, SEGV_ACCERR, SEGV_MAPERR, SEGV_PKUERR};
use pkbpf_sandbox::{copy_from_user, copy_to_user, is_active, Domain, GateCode, GateStub};

/// An address in the first page, below `vm.mmap_min_addr` (at least 4 KiB
/// on every kernel we run on; 64 KiB by default): never mapped, so a fault
/// there is SEGV_MAPERR however the tests running in parallel map and unmap
/// memory (a page this test unmapped itself could be taken by their mmap).
const UNMAPPABLE: *mut u8 = 0x800 as *mut u8;

#[test]
fn guarded_copy_copies_valid_memory() {
    let src: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let mut dst = vec![0u8; 3000];
    copy_from_user(&mut dst, src.as_ptr() as usize).expect("valid source");
    assert_eq!(dst, src);
    // Empty copies never touch the source.
    copy_from_user(&mut [], 8).expect("empty copy");
}

#[test]
fn guarded_copy_reports_unmapped_source() {
    let p = UNMAPPABLE;
    let mut dst = [0u8; 16];
    let f = copy_from_user(&mut dst, p as usize).unwrap_err();
    assert_eq!(f.signal, libc::SIGSEGV);
    assert_eq!(f.code, SEGV_MAPERR);
    assert_eq!(f.addr, p as usize);
    assert_eq!(f.pkey, None);
    // Null and a non-canonical address fail too, without crashing.
    assert!(copy_from_user(&mut dst, 0).is_err());
    assert!(copy_from_user(&mut dst, 0x8000_0000_0000_0000).is_err());
}

#[test]
fn guarded_copy_stops_at_an_inaccessible_page() {
    let p = map_page();
    // SAFETY: our own page, made inaccessible.
    let got = unsafe { libc::mprotect(p.cast(), 4096, libc::PROT_NONE) };
    assert_eq!(got, 0);
    let mut dst = [0u8; 8];
    let f = copy_from_user(&mut dst, p as usize).unwrap_err();
    assert_eq!(f.code, SEGV_ACCERR);
    assert_ne!(f.code, SEGV_PKUERR);
    assert!(!f.is_pku());
    assert_eq!(f.addr, p as usize);
}

#[test]
fn guarded_copy_across_into_a_hole_fails_at_the_hole() {
    // Two pages, the second unmapped: a copy spanning both faults at the
    // second page's first byte.
    let p = map_page();
    // SAFETY: writing within our own page.
    unsafe { std::ptr::write_bytes(p, 0xab, 4096) };
    let hole = map_page();
    // SAFETY: our own page.
    unsafe { libc::munmap(hole.cast(), 4096) };
    let mut dst = [0u8; 8];
    copy_from_user(&mut dst, p as usize + 4088).expect("last 8 bytes are valid");
    assert_eq!(dst, [0xab; 8]);
}

#[test]
fn eight_byte_copies_take_the_short_path_and_fault_cleanly_both_ways() {
    // Eight bytes are one load and one store in the guarded routine (not
    // `rep movsb`); a fault on either is recovered the same way.
    let v = 0x1122_3344_5566_7788u64;
    let mut dst = [0u8; 8];
    copy_from_user(&mut dst, &v as *const u64 as usize).expect("valid source");
    assert_eq!(u64::from_ne_bytes(dst), v);
    let f = copy_from_user(&mut dst, UNMAPPABLE as usize).unwrap_err();
    assert_eq!((f.code, f.addr), (SEGV_MAPERR, UNMAPPABLE as usize));
    let mut out = 0u64;
    // SAFETY: `out` is a live local of eight bytes.
    let r = unsafe { copy_to_user(&mut out as *mut u64 as usize, &v.to_ne_bytes()) };
    r.expect("valid destination");
    assert_eq!(out, v);
    let p = map_page();
    // SAFETY: our own page, made read-only.
    let r = unsafe { libc::mprotect(p.cast(), 4096, libc::PROT_READ) };
    assert_eq!(r, 0);
    // SAFETY: the store faults (read-only page) and is recovered.
    let f = unsafe { copy_to_user(p as usize, &v.to_ne_bytes()) }.unwrap_err();
    assert_eq!((f.code, f.addr), (SEGV_ACCERR, p as usize));
    // SAFETY: reading our own readable page.
    let now = unsafe { std::ptr::read(p as *const u64) };
    assert_eq!(now, 0, "nothing stored");
}

unsafe extern "C" fn add_one(x: usize) -> u64 {
    x as u64 + 1
}

#[test]
fn gate_calls_target_and_returns_its_result() {
    let gate = GateStub::new(Domain::host(), Domain::host()).expect("gate");
    for x in [0usize, 41, usize::MAX - 1] {
        // SAFETY: add_one touches no memory.
        assert_eq!(unsafe { gate.call(add_one, x) }, Ok(x as u64 + 1));
    }
    assert_eq!(gate.faulted_calls(), 0);
    assert_eq!(
        gate.code().wrpkru_offsets.len(),
        if is_active() { 2 } else { 0 }
    );
}

#[test]
fn gate_code_without_pku_has_no_wrpkru_bytes() {
    let code = GateCode::emit(0x5555_5554, 0, false);
    assert!(code.wrpkru_offsets.is_empty());
    assert!(!code.bytes.windows(3).any(|w| w == [0x0f, 0x01, 0xef]));
    let hw = GateCode::emit(0x5555_5554, 0, true);
    let found: Vec<usize> = hw
        .bytes
        .windows(3)
        .enumerate()
        .filter(|(_, w)| *w == [0x0f, 0x01, 0xef])
        .map(|(i, _)| i)
        .collect();
    assert_eq!(found, hw.wrpkru_offsets, "every WRPKRU is a checked one");
    // Each WRPKRU is followed by `cmp eax, <the constant it loaded>`.
    for (i, &w) in hw.wrpkru_offsets.iter().enumerate() {
        let want: u32 = if i == 0 { 0x5555_5554 } else { 0 };
        assert_eq!(hw.bytes[w + 3], 0x3d);
        assert_eq!(hw.bytes[w + 4..w + 8], want.to_le_bytes());
        assert_eq!(
            hw.bytes[w - 8..w - 4],
            want.to_le_bytes(),
            "mov eax, same constant"
        );
    }
    assert_eq!(
        &hw.bytes[hw.abort_offset..hw.abort_offset + 2],
        &[0x0f, 0x0b]
    );
}

#[test]
fn fault_in_registered_code_aborts_only_that_invocation() {
    let code = map_code(&LOAD_THROUGH_ARG);
    // SAFETY: the code page stays mapped and unused after the range drops.
    let range = unsafe { register_code_range(code as usize, 4096) }.expect("register");
    // SAFETY: the page holds a C-ABI function of one argument.
    let jit: unsafe extern "C" fn(usize) -> u64 = unsafe { std::mem::transmute(code) };
    let gate = GateStub::new(Domain::host(), Domain::host()).expect("gate");

    let value: u64 = 0x1122_3344_5566_7788;
    // SAFETY: loads through a valid pointer.
    let got = unsafe { gate.call(jit, &value as *const u64 as usize) };
    assert_eq!(got, Ok(value));

    let hole = UNMAPPABLE;
    for n in 1..=3u64 {
        // SAFETY: the load faults inside the registered range; the gate
        // recovers it.
        let err = unsafe { gate.call(jit, hole as usize) }.unwrap_err();
        assert_eq!(err.code, SEGV_MAPERR);
        assert_eq!(err.addr, hole as usize);
        assert_eq!(range.faults(), n);
        assert_eq!(gate.faulted_calls(), n);
    }
    // The host is alive and the gate still works.
    // SAFETY: as the first call.
    let got = unsafe { gate.call(jit, &value as *const u64 as usize) };
    assert_eq!(got, Ok(value));
    assert_eq!(range.faults(), 3);
}

#[test]
fn stores_through_the_gate_land() {
    let code = map_code(&STORE_THROUGH_ARG);
    // SAFETY: the page holds a C-ABI function of one argument.
    let jit: unsafe extern "C" fn(usize) -> u64 = unsafe { std::mem::transmute(code) };
    let gate = GateStub::new(Domain::host(), Domain::host()).expect("gate");
    let mut slot: u64 = 0;
    // SAFETY: stores to a valid u64.
    let got = unsafe { gate.call(jit, &mut slot as *mut u64 as usize) };
    assert_eq!(got, Ok(7));
    assert_eq!(slot, 0x2a);
}

#[test]
fn unregistered_fault_is_not_swallowed() {
    // A fault in code that is not registered goes to the previous handler
    // (here the default action): the child dies of SIGSEGV.
    let code = map_code(&LOAD_THROUGH_ARG);
    let status = common::in_child(|| {
        let gate = GateStub::new(Domain::host(), Domain::host()).expect("gate");
        // SAFETY: the page holds a C-ABI function of one argument.
        let jit: unsafe extern "C" fn(usize) -> u64 = unsafe { std::mem::transmute(code) };
        // SAFETY: this faults on purpose in the child, outside any range.
        let _ = unsafe { gate.call(jit, 16) };
        // SAFETY: not reached when the fault is forwarded.
        unsafe { libc::_exit(3) };
    });
    assert_eq!(
        common::term_signal(status),
        Some(libc::SIGSEGV),
        "status {status:#x}"
    );
}

#[test]
fn fault_in_registered_code_outside_a_gate_is_forwarded() {
    // Registered JIT code called directly (no gate frame): nothing to
    // unwind to, so the fault goes to the previous handler (default: death).
    let code = map_code(&LOAD_THROUGH_ARG);
    let status = common::in_child(|| {
        // SAFETY: the page stays mapped for the child's life.
        let _r = unsafe { register_code_range(code as usize, 4096) }.expect("register");
        // SAFETY: the page holds a C-ABI function of one argument.
        let jit: unsafe extern "C" fn(usize) -> u64 = unsafe { std::mem::transmute(code) };
        // SAFETY: faults on purpose in the child.
        unsafe { jit(16) };
        // SAFETY: not reached when the fault is forwarded.
        unsafe { libc::_exit(3) };
    });
    assert_eq!(
        common::term_signal(status),
        Some(libc::SIGSEGV),
        "status {status:#x}"
    );
}

#[test]
fn range_table_reuses_slots_and_counts_per_range() {
    let a = map_code(&LOAD_THROUGH_ARG);
    let b = map_code(&LOAD_THROUGH_ARG);
    // SAFETY: both pages stay mapped; nothing runs in them when dropped.
    let ra = unsafe { register_code_range(a as usize, 4096) }.unwrap();
    // SAFETY: as above.
    let rb = unsafe { register_code_range(b as usize, 4096) }.unwrap();
    let gate = GateStub::new(Domain::host(), Domain::host()).unwrap();
    // SAFETY: the pages hold C-ABI functions of one argument.
    let ja: unsafe extern "C" fn(usize) -> u64 = unsafe { std::mem::transmute(a) };
    // SAFETY: as above.
    let jb: unsafe extern "C" fn(usize) -> u64 = unsafe { std::mem::transmute(b) };
    // SAFETY: the faults happen inside registered ranges.
    unsafe {
        assert!(gate.call(ja, 8).is_err());
        assert!(gate.call(jb, 8).is_err());
        assert!(gate.call(jb, 8).is_err());
    }
    assert_eq!((ra.faults(), rb.faults()), (1, 2));
    drop(ra);
    drop(rb);
    // Many registrations in turn never exhaust the table.
    for _ in 0..(pkbpf_sandbox::fault::MAX_RANGES * 2) {
        // SAFETY: as above.
        let r = unsafe { register_code_range(a as usize, 4096) }.unwrap();
        drop(r);
    }
}

unsafe extern "C" fn weighted(a: usize, b: usize) -> u64 {
    (a as u64) * 1000 + b as u64
}

#[test]
fn gate_passes_two_arguments_in_order() {
    let gate = GateStub::new(Domain::host(), Domain::host()).unwrap();
    // SAFETY: `weighted` touches no memory.
    assert_eq!(unsafe { gate.call2(weighted, 7, 3) }, Ok(7003));
    // SAFETY: as above.
    assert_eq!(unsafe { gate.call2(weighted, 0, usize::MAX) }, Ok(u64::MAX));
}
