//! Test support: compiles `tests/bpf/*.bpf.c` with clang (the root crate's
//! helper, `tests/common/bpf.rs`), finds the built cdylib, prints skips.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;

#[path = "../../../tests/common/bpf.rs"]
mod bpf;
#[allow(unused_imports)] // each test binary uses a different subset
pub use bpf::{compile, have, root, skip};

/// A scratch directory unique to this test.
pub fn scratch(test: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("capi")
        .join(format!("{test}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
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
