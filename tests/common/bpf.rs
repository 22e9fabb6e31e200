//! Compiling the BPF C sources in `tests/bpf/` with clang, shared by the
//! root crate's integration tests (through `mod.rs`) and capi's (through a
//! `#[path]` module), so there is one copy of the clang invocation.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root: the nearest ancestor of the crate being tested that
/// holds `tests/bpf`.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|p| p.join("tests/bpf").is_dir())
        .expect("the repository root (with tests/bpf) above CARGO_MANIFEST_DIR")
        .to_path_buf()
}

/// Where compiled test objects go.
pub fn obj_dir() -> PathBuf {
    root().join("target").join("bpf-test-objs")
}

/// Whether `tool --version` runs.
pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Prints the skip line, or fails when `CI` is set (CI must have the tools).
pub fn skip(test: &str, reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {reason} (CI is set, so this is a failure)");
    }
    println!("skipped: {test}: {reason}");
}

/// Compiles `tests/bpf/<name>.bpf.c` and returns the object's path, or
/// `None` (after printing `skipped: <test>: clang not found`) without clang.
pub fn compile(test: &str, name: &str) -> Option<PathBuf> {
    if !have("clang") {
        skip(test, "clang not found");
        return None;
    }
    let src = root().join("tests/bpf").join(format!("{name}.bpf.c"));
    let dir = obj_dir();
    std::fs::create_dir_all(&dir).expect("create target/bpf-test-objs");
    let out = dir.join(format!("{name}.bpf.o"));
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).expect("create object dir");
    }
    // Compile to a unique name, then rename: tests run in parallel.
    let tmp = dir.join(format!(
        "{name}.{}.{:?}.tmp.o",
        std::process::id(),
        std::thread::current().id()
    ));
    let status = Command::new("clang")
        .args(["-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86"])
        .arg("-I/usr/include/x86_64-linux-gnu")
        .arg("-I")
        .arg(root().join("tests/bpf/include"))
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(&tmp)
        .output()
        .expect("run clang");
    assert!(
        status.status.success(),
        "clang failed on {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&status.stderr)
    );
    std::fs::rename(&tmp, &out).expect("rename object");
    Some(out)
}
