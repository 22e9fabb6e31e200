//! Shared helpers for the hooks integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use pkbpf_hooks::resolve::{resolve_target, ProbeTarget, ResolvedTarget};

/// Resolves `TARGET` and panics with the error on failure.
pub fn resolve(target: &str) -> ResolvedTarget {
    let t = ProbeTarget::parse(target).unwrap_or_else(|e| panic!("{target}: {e}"));
    resolve_target(&t).unwrap_or_else(|e| panic!("{target}: {e}"))
}

/// Reads `n` code bytes at `addr`.
pub fn code_bytes(addr: usize, n: usize) -> Vec<u8> {
    // SAFETY: tests only read the first bytes of functions of this process.
    unsafe { std::slice::from_raw_parts(addr as *const u8, n).to_vec() }
}

/// Compiles `source` into a shared library with `cc -O2 -shared -fPIC` plus
/// `extra` flags, `dlopen`s it (never closed) and returns its path.
pub fn build_and_load(name: &str, source: &str, extra: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pkbpf-hooks-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c = dir.join(format!("{name}.c"));
    let so = dir.join(format!("lib{name}.so"));
    std::fs::write(&c, source).unwrap();
    let out = Command::new("cc")
        .args(["-O2", "-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&c)
        .args(extra)
        .output()
        .expect("running cc");
    assert!(
        out.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cpath = std::ffi::CString::new(so.to_str().unwrap()).unwrap();
    // SAFETY: loading a library we just built; it has no constructors.
    let h = unsafe { libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    assert!(!h.is_null(), "dlopen {so:?} failed");
    so
}

/// The address of `symbol` by `dlsym(RTLD_DEFAULT)`.
pub fn dlsym(symbol: &str) -> usize {
    let c = std::ffi::CString::new(symbol).unwrap();
    // SAFETY: dlsym with a valid C string.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) };
    assert!(!p.is_null(), "dlsym {symbol}");
    p as usize
}
