//! The C entry points called from Rust: NULL arguments, bad modes and bad
//! input give errors with errnos, never a crash.

mod common;

use std::ffi::{CStr, CString};
use std::ptr::{null, null_mut};

use pkbpf::*;

/// The message of `err` (freed).
fn take(err: *mut pkbpf_error) -> (i32, String) {
    assert!(!err.is_null(), "an error was expected");
    // SAFETY: err is a live error from the library; freed once here.
    unsafe {
        let msg = CStr::from_ptr(pkbpf_error_message(err))
            .to_string_lossy()
            .into_owned();
        let errno = pkbpf_error_errno(err);
        pkbpf_error_free(err);
        (errno, msg)
    }
}

#[test]
fn bad_modes_and_nulls_are_errors() {
    let mut err = null_mut();
    // SAFETY: err is a valid out-parameter.
    let rt = unsafe { pkbpf_runtime_new(7, PKBPF_ENGINE_JIT, &mut err) };
    assert!(rt.is_null());
    assert_eq!(
        take(err),
        (libc::EINVAL, "unknown sandbox mode 7".to_string())
    );
    let mut err = null_mut();
    // SAFETY: as above.
    let rt = unsafe { pkbpf_runtime_new(PKBPF_SANDBOX_NONE, 9, &mut err) };
    assert!(rt.is_null());
    assert_eq!(take(err), (libc::EINVAL, "unknown engine 9".to_string()));

    // SAFETY: NULL handles are allowed and checked; no out-parameters.
    unsafe {
        assert!(pkbpf_program_find(null(), c"x".as_ptr()).is_null());
        assert_eq!(pkbpf_isolation(null(), null_mut()), -libc::EINVAL);
        let mut r0 = 0u64;
        assert_eq!(
            pkbpf_program_call(null(), null_mut(), 0, &mut r0, null_mut()),
            -libc::EINVAL
        );
        assert_eq!(
            pkbpf_map_delete(null(), c"m".as_ptr(), null(), 0, null_mut()),
            -libc::EINVAL
        );
        assert!(pkbpf_error_message(null()).is_null());
        assert_eq!(pkbpf_error_errno(null()), 0);
        pkbpf_runtime_free(null_mut());
        pkbpf_object_free(null_mut());
        pkbpf_program_free(null_mut());
        pkbpf_error_free(null_mut());
    }
}

#[test]
fn load_errors_carry_errnos() {
    let mut err = null_mut();
    // SAFETY: valid out-parameter.
    let rt = unsafe { pkbpf_runtime_new(PKBPF_SANDBOX_NONE, PKBPF_ENGINE_INTERPRETER, &mut err) };
    assert!(!rt.is_null());
    let mut iso = pkbpf_isolation_info::default();
    // SAFETY: rt is live, iso writable.
    assert_eq!(unsafe { pkbpf_isolation(rt, &mut iso) }, 0);
    assert_eq!(iso.mpk_selected, 0, "sandbox none was asked for");
    assert_eq!(iso.protected_calls, 0);
    assert_eq!(iso.runtime_key, -1);

    let missing = CString::new("/nonexistent/x.bpf.o").expect("cstring");
    let mut err = null_mut();
    // SAFETY: rt live, path NUL-terminated, err valid.
    let obj = unsafe { pkbpf_object_load_file(rt, missing.as_ptr(), 0, &mut err) };
    assert!(obj.is_null());
    let (errno, msg) = take(err);
    assert_eq!(errno, libc::ENOENT);
    assert!(msg.starts_with("reading /nonexistent/x.bpf.o"), "{msg}");

    let mut err = null_mut();
    // SAFETY: rt live; bytes NULL is checked.
    let obj = unsafe { pkbpf_object_load(rt, null(), 10, 0, &mut err) };
    assert!(obj.is_null());
    assert_eq!(take(err), (libc::EINVAL, "bytes is NULL".to_string()));
    // SAFETY: rt from pkbpf_runtime_new, freed once.
    unsafe { pkbpf_runtime_free(rt) };
}

#[test]
fn interpreter_engine_calls_and_map_errors() {
    let test = "interpreter_engine_calls_and_map_errors";
    let Some(path) = common::compile(test, "embedded") else {
        return;
    };
    let path = CString::new(path.to_str().expect("utf-8 path")).expect("cstring");
    // SAFETY: all pointers are live for the calls; handles freed once at the
    // end, the program before its object.
    unsafe {
        let rt = pkbpf_runtime_new(PKBPF_SANDBOX_NONE, PKBPF_ENGINE_INTERPRETER, null_mut());
        assert!(!rt.is_null());
        let obj = pkbpf_object_load_file(rt, path.as_ptr(), 16, null_mut());
        assert!(!obj.is_null());
        // The object outlives its runtime.
        pkbpf_runtime_free(rt);
        let prog = pkbpf_program_find(obj, c"mul_inputs".as_ptr());
        assert!(!prog.is_null());
        let mut ctx = [0u8; 16];
        ctx[..8].copy_from_slice(&6u64.to_ne_bytes());
        ctx[8..].copy_from_slice(&9u64.to_ne_bytes());
        let mut r0 = 0;
        assert_eq!(
            pkbpf_program_call(prog, ctx.as_mut_ptr(), 16, &mut r0, null_mut()),
            0
        );
        assert_eq!(r0, 54);

        // Wrong key size, too-small value buffer, array delete.
        let key = 0u32.to_ne_bytes();
        let mut small = [0u8; 4];
        let mut err = null_mut();
        let rc = pkbpf_map_lookup(
            obj,
            c"legacy_counts".as_ptr(),
            key.as_ptr(),
            2,
            small.as_mut_ptr(),
            4,
            &mut err,
        );
        assert_eq!(rc, -libc::EINVAL);
        assert_eq!(take(err).0, libc::EINVAL);
        let mut err = null_mut();
        let rc = pkbpf_map_lookup(
            obj,
            c"legacy_counts".as_ptr(),
            key.as_ptr(),
            4,
            small.as_mut_ptr(),
            4,
            &mut err,
        );
        assert_eq!(rc, -libc::EINVAL);
        let (_, msg) = take(err);
        assert_eq!(
            msg,
            "map legacy_counts: value buffer is 4 bytes, the value 8"
        );
        let rc = pkbpf_map_delete(obj, c"legacy_counts".as_ptr(), key.as_ptr(), 4, null_mut());
        assert_eq!(rc, -libc::EINVAL);
        pkbpf_program_free(prog);
        pkbpf_object_free(obj);
    }
}

#[test]
fn budgeted_calls_return_or_time_out() {
    let test = "budgeted_calls_return_or_time_out";
    let Some(path) = common::compile(test, "loop_callbacks") else {
        return;
    };
    let path = CString::new(path.to_str().expect("utf-8 path")).expect("cstring");
    // SAFETY: all pointers are live for the calls; handles freed once at the
    // end, the program before its object.
    unsafe {
        let rt = pkbpf_runtime_new(PKBPF_SANDBOX_AUTO, PKBPF_ENGINE_JIT, null_mut());
        assert!(!rt.is_null());
        let obj = pkbpf_object_load_file(rt, path.as_ptr(), 24, null_mut());
        assert!(!obj.is_null());
        let prog = pkbpf_program_find(obj, c"first_square".as_ptr());
        assert!(!prog.is_null());
        // struct io { n, arg (the square to reach), out }.
        let io = |n: u64, target: u64| {
            let mut ctx = [0u8; 24];
            ctx[..8].copy_from_slice(&n.to_ne_bytes());
            ctx[8..16].copy_from_slice(&target.to_ne_bytes());
            ctx
        };
        // Quick: 7 * 7 >= 40 at index 7; a generous budget.
        let mut ctx = io(100, 40);
        let mut r0 = 0;
        let rc = pkbpf_program_call_with_budget(
            prog,
            ctx.as_mut_ptr(),
            24,
            10_000_000_000,
            &mut r0,
            null_mut(),
        );
        assert_eq!(rc, 0);
        assert_eq!(u64::from_ne_bytes(ctx[16..].try_into().unwrap()), 7);
        // 8M iterations that never find their square, with 1 µs: aborted.
        let mut ctx = io(8_000_000, u64::MAX);
        let mut err = null_mut();
        let rc =
            pkbpf_program_call_with_budget(prog, ctx.as_mut_ptr(), 24, 1_000, &mut r0, &mut err);
        assert_eq!(rc, -libc::ETIME);
        let (errno, msg) = take(err);
        assert_eq!(errno, libc::ETIME);
        assert!(msg.contains("time budget"), "{msg}");
        // The thread and the program go on.
        let mut ctx = io(100, 40);
        assert_eq!(
            pkbpf_program_call(prog, ctx.as_mut_ptr(), 24, &mut r0, null_mut()),
            0
        );
        pkbpf_program_free(prog);
        pkbpf_object_free(obj);
        pkbpf_runtime_free(rt);
    }
}
