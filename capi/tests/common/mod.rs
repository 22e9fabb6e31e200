//! Test support: compiles `tests/bpf/*.bpf.c` with clang (a small copy of
//! the root crate's helper), finds the built cdylib, prints skips.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("capi/ has a parent")
        .to_path_buf()
}

/// Whether `tool --version` runs.
pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Prints the skip line, or fails when `CI` is set.
pub fn skip(test: &str, reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {reason} (CI is set, so this is a failure)");
    }
    println!("skipped: {test}: {reason}");
}

/// A scratch directory unique to this test.
pub fn scratch(test: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("capi")
        .join(format!("{test}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

/// Compiles `tests/bpf/<name>.bpf.c` into `dir`; None (after a skip line)
/// without clang.
pub fn compile(test: &str, name: &str, dir: &Path) -> Option<PathBuf> {
    if !have("clang") {
        skip(test, "clang not found");
        return None;
    }
    let src = root().join("tests/bpf").join(format!("{name}.bpf.c"));
    let out = dir.join(format!("{name}.bpf.o"));
    let o = Command::new("clang")
        .args(["-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86"])
        .arg("-I/usr/include/x86_64-linux-gnu")
        .arg("-I")
        .arg(root().join("tests/bpf/include"))
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("run clang");
    assert!(
        o.status.success(),
        "clang failed on {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    Some(out)
}

/// The directory holding the built `libpkbpf.so` (cargo builds the cdylib
/// next to the test binaries' `deps/`).
pub fn cdylib_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    [deps.to_path_buf(), deps.parent()?.to_path_buf()]
        .into_iter()
        .find(|d| d.join("libpkbpf.so").is_file())
}
