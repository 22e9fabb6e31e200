//! The C ABI of pkbpf: `libpkbpf.so` / `libpkbpf.a` and `include/pkbpf.h`.
//!
//! Handles are opaque boxes: [`pkbpf_runtime`], [`pkbpf_object`],
//! [`pkbpf_program`], [`pkbpf_error`], each with a `*_free`. Functions that can
//! fail take an optional `pkbpf_error **err` out-parameter, written only on
//! failure (the caller frees it with [`pkbpf_error_free`]); functions that
//! return `int32_t` return 0 or a negative errno, kernel style (`-ENOENT` for a
//! missing key, `-EINVAL` for a bad size, ...). Every entry point checks its
//! pointers for NULL and catches panics, which become `-EIO` / a NULL handle
//! with an error, never an unwind into C.
//!
//! ```c
//! pkbpf_error *err = NULL;
//! pkbpf_runtime *rt = pkbpf_runtime_new(PKBPF_SANDBOX_AUTO, PKBPF_ENGINE_JIT, &err);
//! pkbpf_object *obj = pkbpf_object_load_file(rt, "filter.bpf.o", 16, &err);
//! pkbpf_program *prog = pkbpf_program_find(obj, "add_inputs");
//! uint64_t r0;
//! pkbpf_program_call(prog, ctx, 16, &r0, &err);
//! ```
//!
//! Lifetimes: a program handle must be freed before its object; objects may
//! outlive their runtime. Handles are not synchronised: one thread at a time
//! per handle (calls of different objects may run in parallel).
#![deny(missing_docs)]
#![allow(non_camel_case_types)] // C type names

use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use pkbpf_core::runtime::{
    CallError, CtxLayout, Engine, LoadedObject, Runtime, RuntimeError, Sandbox, SandboxMode,
};

/// `sandbox` argument of [`pkbpf_runtime_new`]: protection keys where they
/// work, none otherwise.
pub const PKBPF_SANDBOX_AUTO: i32 = 0;
/// `sandbox` argument: require protection keys (an error without them).
pub const PKBPF_SANDBOX_MPK: i32 = 1;
/// `sandbox` argument: no protection keys.
pub const PKBPF_SANDBOX_NONE: i32 = 2;
/// `engine` argument of [`pkbpf_runtime_new`]: the x86-64 JIT.
pub const PKBPF_ENGINE_JIT: i32 = 0;
/// `engine` argument: the reference interpreter.
pub const PKBPF_ENGINE_INTERPRETER: i32 = 1;

/// A runtime: loads objects.
pub struct pkbpf_runtime {
    rt: Runtime,
}

/// A loaded object: its programs and maps.
pub struct pkbpf_object {
    obj: LoadedObject,
}

/// A program of an object (must not outlive it).
pub struct pkbpf_program {
    obj: *const LoadedObject,
    index: usize,
}

/// An error: a message and a positive errno.
pub struct pkbpf_error {
    message: CString,
    errno: i32,
}

/// What [`pkbpf_isolation`] reports.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct pkbpf_isolation_info {
    /// 1 when the runtime selected protection keys, 0 when it runs without.
    pub mpk_selected: i32,
    /// 1 when calls actually run inside protection-key domains.
    pub protected_calls: i32,
    /// The runtime's key, or -1 when none.
    pub runtime_key: i32,
    /// How many extension keys are allocated.
    pub extension_key_count: u32,
}

/// A failure on its way to C: positive errno and message.
struct Failure {
    errno: i32,
    message: String,
}

impl Failure {
    fn new(errno: i32, message: impl Into<String>) -> Failure {
        Failure {
            errno,
            message: message.into(),
        }
    }
}

/// `e` and its sources, `: `-joined.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        s.push_str(": ");
        s.push_str(&src.to_string());
        cur = src.source();
    }
    s
}

impl From<RuntimeError> for Failure {
    fn from(e: RuntimeError) -> Failure {
        let errno = match &e {
            RuntimeError::NoSuchMap { .. } | RuntimeError::NoSuchProgram { .. } => libc::ENOENT,
            RuntimeError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            RuntimeError::Verify { .. } => libc::EACCES,
            RuntimeError::MpkNotWired | RuntimeError::Sandbox { .. } => libc::EOPNOTSUPP,
            RuntimeError::TooManyHostHelpers { .. } => libc::E2BIG,
            RuntimeError::Map { source, .. } => source.errno(),
            _ => libc::EINVAL,
        };
        let mut message = chain(&e);
        if let RuntimeError::Verify { log, .. } = &e {
            message.push('\n');
            message.push_str(&log.0);
        }
        Failure { errno, message }
    }
}

impl From<CallError> for Failure {
    fn from(e: CallError) -> Failure {
        let errno = match &e {
            CallError::CtxSize { .. } => libc::EINVAL,
            CallError::HelperAbort { .. } => libc::ECANCELED,
            CallError::Timeout { .. } => libc::ETIME,
            _ => libc::EFAULT,
        };
        Failure::new(errno, chain(&e))
    }
}

impl From<pkbpf_maps::MapError> for Failure {
    fn from(e: pkbpf_maps::MapError) -> Failure {
        Failure::new(e.errno(), chain(&e))
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    let what = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    format!("internal error (panic caught at the C boundary): {what}")
}

/// Stores `f` in `*err` when `err` is not NULL.
///
/// # Safety
/// `err` is NULL or valid for one pointer write.
unsafe fn store(err: *mut *mut pkbpf_error, f: Failure) {
    if err.is_null() {
        return;
    }
    let message = CString::new(f.message.replace('\0', "\\0")).unwrap_or_default();
    let e = Box::new(pkbpf_error {
        message,
        errno: f.errno,
    });
    // SAFETY: err is non-null and valid for a write (the caller's duty).
    unsafe { *err = Box::into_raw(e) };
}

/// Runs `f` with panics caught; an error or panic goes to `*err` and gives
/// `-errno`.
///
/// # Safety
/// `err` is NULL or valid for one pointer write.
unsafe fn int_call(err: *mut *mut pkbpf_error, f: impl FnOnce() -> Result<(), Failure>) -> i32 {
    let failure = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => return 0,
        Ok(Err(f)) => f,
        Err(p) => Failure::new(libc::EIO, panic_message(&*p)),
    };
    let errno = failure.errno;
    // SAFETY: forwarded caller duty.
    unsafe { store(err, failure) };
    -errno
}

/// Runs `f` with panics caught; an error or panic goes to `*err` and gives
/// NULL.
///
/// # Safety
/// `err` is NULL or valid for one pointer write.
unsafe fn ptr_call<T>(
    err: *mut *mut pkbpf_error,
    f: impl FnOnce() -> Result<Box<T>, Failure>,
) -> *mut T {
    let failure = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(b)) => return Box::into_raw(b),
        Ok(Err(f)) => f,
        Err(p) => Failure::new(libc::EIO, panic_message(&*p)),
    };
    // SAFETY: forwarded caller duty.
    unsafe { store(err, failure) };
    std::ptr::null_mut()
}

fn null(what: &str) -> Failure {
    Failure::new(libc::EINVAL, format!("{what} is NULL"))
}

/// Borrows a C string argument.
///
/// # Safety
/// `s` is NULL or a NUL-terminated string valid for the returned lifetime.
unsafe fn c_str<'a>(s: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if s.is_null() {
        return Err(null(what));
    }
    // SAFETY: non-null and NUL-terminated (the caller's duty).
    unsafe { CStr::from_ptr(s) }
        .to_str()
        .map_err(|_| Failure::new(libc::EINVAL, format!("{what} is not UTF-8")))
}

/// Borrows a `(pointer, length)` buffer; NULL is allowed when `len` is 0.
///
/// # Safety
/// `p` is NULL or valid for reads of `len` bytes for the returned lifetime.
unsafe fn bytes<'a>(p: *const u8, len: usize, what: &str) -> Result<&'a [u8], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(null(what));
    }
    // SAFETY: non-null and valid for len bytes (the caller's duty).
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Mutable version of [`bytes`].
///
/// # Safety
/// `p` is NULL or valid for reads and writes of `len` bytes, unaliased, for
/// the returned lifetime.
unsafe fn bytes_mut<'a>(p: *mut u8, len: usize, what: &str) -> Result<&'a mut [u8], Failure> {
    if len == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(null(what));
    }
    // SAFETY: non-null, valid and unaliased for len bytes (the caller's duty).
    Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

/// Creates a runtime. `sandbox` is one of `PKBPF_SANDBOX_*`, `engine` one of
/// `PKBPF_ENGINE_*`. Returns NULL (and sets `*err`) on failure, e.g.
/// `PKBPF_SANDBOX_MPK` without protection keys.
///
/// # Safety
/// `err` is NULL or valid for one pointer write.
#[no_mangle]
pub unsafe extern "C" fn pkbpf_runtime_new(
    sandbox: i32,
    engine: i32,
    err: *mut *mut pkbpf_error,
) -> *mut pkbpf_runtime {
    let f = || {
        let sandbox = match sandbox {
            PKBPF_SANDBOX_AUTO => Sandbox::Auto,
            PKBPF_SANDBOX_MPK => Sandbox::Mpk,
            PKBPF_SANDBOX_NONE => Sandbox::None,
            other => {
                return Err(Failure::new(
                    libc::EINVAL,
                    format!("unknown sandbox mode {other}"),
                ))
            }
        };
        let engine = match engine {
            PKBPF_ENGINE_JIT => Engine::Jit,
            PKBPF_ENGINE_INTERPRETER => Engine::Interpreter,
            other => {
                return Err(Failure::new(
                    libc::EINVAL,
                    format!("unknown engine {other}"),
                ))
            }
        };
        let rt = Runtime::builder().sandbox(sandbox).engine(engine).build()?;
        Ok(Box::new(pkbpf_runtime { rt }))
    };
    // SAFETY: err is the caller's (NULL or writable).
    unsafe { ptr_call(err, f) }
}

/// Frees a runtime (NULL is ignored). Objects it loaded stay valid.
///
/// # Safety
/// `rt` is NULL or a pointer from [`pkbpf_runtime_new`] not freed before.
#[no_mangle]
pub unsafe extern "C" fn pkbpf_runtime_free(rt: *mut pkbpf_runtime) {
    if !rt.is_null() {
        // SAFETY: from Box::into_raw in pkbpf_runtime_new, freed once.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(rt) })));
    }
}

/// Writes the runtime's isolation status to `*out`. Returns 0 or `-EINVAL`
/// for a NULL argument.
///
/// # Safety
/// `rt` is NULL or a live runtime; `out` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn pkbpf_isolation(
    rt: *const pkbpf_runtime,
    out: *mut pkbpf_isolation_info,
) -> i32 {
    let f = || {
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: NULL or live (the caller's duty).
        let rt = unsafe { rt.as_ref() }.ok_or_else(|| null("rt"))?;
        let iso = rt.rt.isolation();
        let info = pkbpf_isolation_info {
            mpk_selected: i32::from(matches!(iso.mode, SandboxMode::Mpk)),
            protected_calls: i32::from(iso.protected),
            runtime_key: iso.runtime_key.map_or(-1, |k| k as i32),
            extension_key_count: iso.extension_keys.len() as u32,
        };
        // SAFETY: out is non-null and writable (the caller's duty).
        unsafe { out.write(info) };
        Ok(())
    };
    // SAFETY: no error out-parameter.
    unsafe { int_call(std::ptr::null_mut(), f) }
}

fn layout(ctx_size: u32) -> CtxLayout {
    CtxLayout::writable(ctx_size)
}

/// Loads an ELF object from `len` bytes at `bytes`. Its embedded
/// (`SEC("extension")`-style) programs get a context of `ctx_size` writable
/// bytes (0: the runtime's default layout, 64 writable bytes). Every program
/// is verified; a rejection sets `*err` (errno `EACCES`, message with the
/// verifier log) and returns NULL.
///
/// # Safety
/// `rt` is NULL or live; `bytes` is NULL or valid for `len` bytes; `err` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pkbpf_object_load(
    rt: *const pkbpf_runtime,
    bytes: *const u8,
    len: usize,
    ctx_size: u32,
    err: *mut *mut pkbpf_error,
) -> *mut pkbpf_object {
    let f = || {
        // SAFETY: NULL or live (the caller's duty).
        let rt = unsafe { rt.as_ref() }.ok_or_else(|| null("rt"))?;
        if bytes.is_null() {
            return Err(null("bytes"));
        }
        // SAFETY: valid for len bytes (the caller's duty).
        let data = unsafe { self::bytes(bytes, len, "bytes") }?;
        let obj = if ctx_size == 0 {
            rt.rt.load(data)?
        } else {
            rt.rt.load_with_ctx(data, &layout(ctx_size))?
        };
        Ok(Box::new(pkbpf_object { obj }))
    };
    // SAFETY: err is the caller's.
    unsafe { ptr_call(err, f) }
}

/// Loads the ELF object file at `path` (NUL-terminated UTF-8); otherwise as
/// [`pkbpf_object_load`].
///
/// # Safety
/// `rt` is NULL or live; `path` is NULL or a NUL-terminated string; `err`
/// is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pkbpf_object_load_file(
    rt: *const pkbpf_runtime,
    path: *const c_char,
    ctx_size: u32,
    err: *mut *mut pkbpf_error,
) -> *mut pkbpf_object {
    let f = || {
        // SAFETY: NULL or live (the caller's duty).
        let rt = unsafe { rt.as_ref() }.ok_or_else(|| null("rt"))?;
        // SAFETY: NULL or NUL-terminated (the caller's duty).
        let path = Path::new(unsafe { c_str(path, "path") }?);
        let data = std::fs::read(path).map_err(|e| {
            Failure::new(
                e.raw_os_error().unwrap_or(libc::EIO),
                format!("reading {}: {e}", path.display()),
            )
        })?;
        let obj = if ctx_size == 0 {
            rt.rt.load(&data)?
        } else {
            rt.rt.load_with_ctx(&data, &layout(ctx_size))?
        };
        Ok(Box::new(pkbpf_object { obj }))
    };
    // SAFETY: err is the caller's.
    unsafe { ptr_call(err, f) }
}

/// Frees an object, its code and its maps (NULL is ignored).
///
/// # Safety
/// `obj` is NULL or from `pkbpf_object_load*`, not freed before, with no
/// live program handles.
#[no_mangle]
pub unsafe extern "C" fn pkbpf_object_free(obj: *mut pkbpf_object) {
    if !obj.is_null() {
        // SAFETY: from Box::into_raw in pkbpf_object_load*, freed once.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(obj) })));
    }
}

/// The program called `name` in `obj`, or NULL when there is none (or an
/// argument is NULL). Free it with [`pkbpf_program_free`] before the object.
///
/// # Safety
/// `obj` is NULL or live; `name` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn pkbpf_program_find(
    obj: *const pkbpf_object,
    name: *const c_char,
) -> *mut pkbpf_program {
    let f = || {
        // SAFETY: NULL or live (the caller's duty).
        let o = unsafe { obj.as_ref() }.ok_or_else(|| null("obj"))?;
        // SAFETY: NULL or NUL-terminated (the caller's duty).
        let name = unsafe { c_str(name, "name") }?;
        let index = o
            .obj
            .programs()
            .position(|p| p.name() == name)
            .ok_or_else(|| Failure::new(libc::ENOENT, format!("no program named {name}")))?;
        Ok(Box::new(pkbpf_program { obj: &o.obj, index }))
    };
    // SAFETY: no error out-parameter.
    unsafe { ptr_call(std::ptr::null_mut(), f) }
}

/// Frees a program handle (NULL is ignored).
///
/// # Safety
/// `prog` is NULL or from [`pkbpf_program_find`], not freed before.
#[no_mangle]
pub unsafe extern "C" fn pkbpf_program_free(prog: *mut pkbpf_program) {
    if !prog.is_null() {
        // SAFETY: from Box::into_raw in pkbpf_program_find, freed once.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(prog) })));
    }
}

/// Runs `prog` on the `ctx_len` bytes at `ctx` (exactly the size it was
/// loaded with; the program may write its writable ranges) and stores r0 in
/// `*ret`. Returns 0, or a negative errno with `*err` set: `-EINVAL` for a
/// wrong context size or NULL argument, `-ECANCELED` when a helper aborted
/// the call, `-EFAULT` when the program faulted or failed at run time. A
/// failed call ends only that call.
///
/// # Safety
/// `prog` is NULL or live (its object too); `ctx` is NULL or valid for reads
/// and writes of `ctx_len` bytes; `ret` is NULL or writable; `err` is NULL
/// or writable.
#[no_mangle]
pub unsafe extern "C" fn pkbpf_program_call(
    prog: *const pkbpf_program,
    ctx: *mut u8,
    ctx_len: usize,
    ret: *mut u64,
    err: *mut *mut pkbpf_error,
) -> i32 {
    // SAFETY: the caller's contract, forwarded.
    unsafe { call_program(prog, ctx, ctx_len, None, ret, err) }
}

/// [`pkbpf_program_call`] with a wall-time budget of `budget_ns`
/// nanoseconds: a program still running when it is spent is aborted (in its
/// JIT code, never inside a helper, so its maps stay consistent) and the
/// call returns `-ETIME` with `*err` set; the calling thread continues in
/// its own domain. Other returns as [`pkbpf_program_call`]. The
/// interpreter engine is not preempted (the call runs to its end).
///
/// # Safety
/// As [`pkbpf_program_call`].
#[no_mangle]
pub unsafe extern "C" fn pkbpf_program_call_with_budget(
    prog: *const pkbpf_program,
    ctx: *mut u8,
    ctx_len: usize,
    budget_ns: u64,
    ret: *mut u64,
    err: *mut *mut pkbpf_error,
) -> i32 {
    let budget = Some(std::time::Duration::from_nanos(budget_ns));
    // SAFETY: the caller's contract, forwarded.
    unsafe { call_program(prog, ctx, ctx_len, budget, ret, err) }
}

/// The body of [`pkbpf_program_call`] and
/// [`pkbpf_program_call_with_budget`].
///
/// # Safety
/// As [`pkbpf_program_call`].
unsafe fn call_program(
    prog: *const pkbpf_program,
    ctx: *mut u8,
    ctx_len: usize,
    budget: Option<std::time::Duration>,
    ret: *mut u64,
    err: *mut *mut pkbpf_error,
) -> i32 {
    let f = || {
        // SAFETY: NULL or live (the caller's duty).
        let p = unsafe { prog.as_ref() }.ok_or_else(|| null("prog"))?;
        if ret.is_null() {
            return Err(null("ret"));
        }
        // SAFETY: a program handle never outlives its object (the caller's duty).
        let obj = unsafe { &*p.obj };
        let program = obj
            .programs()
            .nth(p.index)
            .ok_or_else(|| Failure::new(libc::EINVAL, "stale program handle"))?;
        // SAFETY: ctx is valid for ctx_len bytes (the caller's duty).
        let ctx = unsafe { bytes_mut(ctx, ctx_len, "ctx") }?;
        let r0 = match budget {
            Some(b) => program.call_with_budget(ctx, b)?,
            None => program.call(ctx)?,
        };
        // SAFETY: ret is non-null and writable (the caller's duty).
        unsafe { ret.write(r0) };
        Ok(())
    };
    // SAFETY: err is the caller's.
    unsafe { int_call(err, f) }
}

/// Looks `key` up in map `map` of `obj` and copies the value to `value`
/// (`value_len` must be at least the map's value size). Returns 0,
/// `-ENOENT` when the key is absent or there is no such map, `-EINVAL` for
/// a wrong key size, a too-small value buffer or a NULL argument.
///
/// # Safety
/// `obj` is NULL or live; `map` is NULL or NUL-terminated; `key` is NULL or
/// valid for `key_len` bytes; `value` is NULL or writable for `value_len`
/// bytes; `err` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pkbpf_map_lookup(
    obj: *const pkbpf_object,
    map: *const c_char,
    key: *const u8,
    key_len: usize,
    value: *mut u8,
    value_len: usize,
    err: *mut *mut pkbpf_error,
) -> i32 {
    let f = || {
        // SAFETY: NULL or live (the caller's duty).
        let o = unsafe { obj.as_ref() }.ok_or_else(|| null("obj"))?;
        // SAFETY: NULL or NUL-terminated (the caller's duty).
        let name = unsafe { c_str(map, "map") }?;
        // SAFETY: valid for key_len bytes (the caller's duty).
        let key = unsafe { bytes(key, key_len, "key") }?;
        // SAFETY: writable for value_len bytes (the caller's duty).
        let out = unsafe { bytes_mut(value, value_len, "value") }?;
        let m = o.obj.map(name)?;
        match m.lookup(key)? {
            None => Err(Failure::new(
                libc::ENOENT,
                format!("map {name}: no such key"),
            )),
            Some(v) if v.len() > out.len() => Err(Failure::new(
                libc::EINVAL,
                format!(
                    "map {name}: value buffer is {} bytes, the value {}",
                    out.len(),
                    v.len()
                ),
            )),
            Some(v) => {
                out[..v.len()].copy_from_slice(&v);
                Ok(())
            }
        }
    };
    // SAFETY: err is the caller's.
    unsafe { int_call(err, f) }
}

/// Sets `key` to `value` in map `map` of `obj`; `flags` as `bpf(2)`'s
/// `BPF_ANY` (0), `BPF_NOEXIST` (1), `BPF_EXIST` (2). Returns 0 or a negative
/// errno as the kernel would (`-EEXIST`, `-ENOENT`, `-E2BIG`, `-EINVAL`).
///
/// # Safety
/// As [`pkbpf_map_lookup`], `value` readable for `value_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn pkbpf_map_update(
    obj: *const pkbpf_object,
    map: *const c_char,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    flags: u64,
    err: *mut *mut pkbpf_error,
) -> i32 {
    let f = || {
        // SAFETY: NULL or live (the caller's duty).
        let o = unsafe { obj.as_ref() }.ok_or_else(|| null("obj"))?;
        // SAFETY: NULL or NUL-terminated (the caller's duty).
        let name = unsafe { c_str(map, "map") }?;
        // SAFETY: valid for key_len bytes (the caller's duty).
        let key = unsafe { bytes(key, key_len, "key") }?;
        // SAFETY: valid for value_len bytes (the caller's duty).
        let value = unsafe { bytes(value, value_len, "value") }?;
        o.obj.map(name)?.update(key, value, flags)?;
        Ok(())
    };
    // SAFETY: err is the caller's.
    unsafe { int_call(err, f) }
}

/// Deletes `key` from map `map` of `obj`. Returns 0, `-ENOENT` when absent,
/// `-EINVAL` for arrays (whose entries cannot be deleted) and bad arguments.
///
/// # Safety
/// As [`pkbpf_map_lookup`].
#[no_mangle]
pub unsafe extern "C" fn pkbpf_map_delete(
    obj: *const pkbpf_object,
    map: *const c_char,
    key: *const u8,
    key_len: usize,
    err: *mut *mut pkbpf_error,
) -> i32 {
    let f = || {
        // SAFETY: NULL or live (the caller's duty).
        let o = unsafe { obj.as_ref() }.ok_or_else(|| null("obj"))?;
        // SAFETY: NULL or NUL-terminated (the caller's duty).
        let name = unsafe { c_str(map, "map") }?;
        // SAFETY: valid for key_len bytes (the caller's duty).
        let key = unsafe { bytes(key, key_len, "key") }?;
        o.obj.map(name)?.delete(key)?;
        Ok(())
    };
    // SAFETY: err is the caller's.
    unsafe { int_call(err, f) }
}

/// The error's message (NUL-terminated UTF-8, valid until the error is
/// freed), or NULL for a NULL error.
///
/// # Safety
/// `err` is NULL or a live error.
#[no_mangle]
pub unsafe extern "C" fn pkbpf_error_message(err: *const pkbpf_error) -> *const c_char {
    // SAFETY: NULL or live (the caller's duty).
    match unsafe { err.as_ref() } {
        Some(e) => e.message.as_ptr(),
        None => std::ptr::null(),
    }
}

/// The error's errno (positive), or 0 for a NULL error.
///
/// # Safety
/// `err` is NULL or a live error.
#[no_mangle]
pub unsafe extern "C" fn pkbpf_error_errno(err: *const pkbpf_error) -> i32 {
    // SAFETY: NULL or live (the caller's duty).
    unsafe { err.as_ref() }.map_or(0, |e| e.errno)
}

/// Frees an error (NULL is ignored).
///
/// # Safety
/// `err` is NULL or an error from this library, not freed before.
#[no_mangle]
pub unsafe extern "C" fn pkbpf_error_free(err: *mut pkbpf_error) {
    if !err.is_null() {
        // SAFETY: from Box::into_raw in store, freed once.
        drop(unsafe { Box::from_raw(err) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr::null_mut;

    /// Takes the message and errno of `err` and frees it.
    fn take(err: *mut pkbpf_error) -> (i32, String) {
        assert!(!err.is_null());
        // SAFETY: err came from `store` and is freed once here.
        let e = unsafe { Box::from_raw(err) };
        (e.errno, e.message.to_string_lossy().into_owned())
    }

    #[test]
    fn a_panic_inside_an_entry_point_becomes_eio_not_an_unwind() {
        let mut err = null_mut();
        // SAFETY: err is a valid out-parameter.
        let rc = unsafe { int_call(&mut err, || panic!("boom inside")) };
        assert_eq!(rc, -libc::EIO);
        assert_eq!(
            take(err),
            (
                libc::EIO,
                "internal error (panic caught at the C boundary): boom inside".to_string()
            )
        );

        let mut err = null_mut();
        // SAFETY: as above.
        let p: *mut u8 =
            unsafe { ptr_call(&mut err, || -> Result<Box<u8>, Failure> { panic!("{}", 7) }) };
        assert!(p.is_null());
        assert_eq!(take(err).0, libc::EIO);
    }

    #[test]
    fn errors_are_written_only_on_failure_and_nul_bytes_survive() {
        let mut err = null_mut();
        // SAFETY: as above.
        assert_eq!(unsafe { int_call(&mut err, || Ok(())) }, 0);
        assert!(err.is_null());
        // SAFETY: as above.
        let rc = unsafe { int_call(&mut err, || Err(Failure::new(libc::ENOENT, "a\0b"))) };
        assert_eq!(rc, -libc::ENOENT);
        assert_eq!(take(err), (libc::ENOENT, "a\\0b".to_string()));
        // A NULL out-parameter is allowed.
        // SAFETY: NULL err is allowed.
        let rc = unsafe { int_call(null_mut(), || Err(Failure::new(libc::E2BIG, "x"))) };
        assert_eq!(rc, -libc::E2BIG);
    }
}
