//! Test support for the object-loader tests: compiles the BPF C sources in
//! `tests/bpf/` with clang into `target/bpf-test-objs/`, and runs the
//! LLVM/bpftool cross-check tools when they are installed.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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

/// Every test source's base name.
pub const ALL: [&str; 14] = [
    "bench_uprobe",
    "bench_probe_rw",
    "bench_maps",
    "malloc_free",
    "syscount",
    "ringbuf_opensnoop",
    "calls_globals",
    "core_probe",
    "embedded",
    "btf_kinds",
    "tail_calls",
    "loop_callbacks",
    "funclatency",
    "bashreadline",
];

/// Reads a file.
pub fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Runs a tool and returns its stdout.
pub fn run(tool: &str, args: &[&str], file: &Path) -> String {
    let o = Command::new(tool)
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    assert!(
        o.status.success(),
        "{tool} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The `pkbpf` binary under test, with the preload agent built next to it
/// (the workspace build does so too; a `cargo test -p pkbpf` alone does
/// not).
pub fn pkbpf() -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_pkbpf"));
    BUILT.get_or_init(|| {
        let profile_dir = bin.parent().expect("bin dir");
        let target_dir = profile_dir.parent().expect("target dir");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-q", "-p", "pkbpf-agent"])
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(root());
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("run cargo build -p pkbpf-agent");
        assert!(st.success(), "cargo build -p pkbpf-agent failed");
        assert!(profile_dir.join("libpkbpf_agent.so").is_file());
    });
    bin
}

/// Compiles `tests/targets/<name>.c` into `dir/<out>` with `cc -O0` and
/// `extra` flags.
pub fn cc_with(name: &str, dir: &Path, out: &str, extra: &[&str]) -> PathBuf {
    let exe = dir.join(out);
    if let Some(p) = exe.parent() {
        std::fs::create_dir_all(p).expect("target dir");
    }
    let src = root().join("tests/targets").join(format!("{name}.c"));
    let st = Command::new("cc")
        .args(["-O0", "-fno-inline"])
        .args(extra)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("run cc");
    assert!(st.success(), "cc {} failed", src.display());
    exe
}

/// Compiles `tests/targets/<name>.c` into `dir/<out>` with `cc -O0`.
pub fn cc(name: &str, dir: &Path, out: &str) -> PathBuf {
    cc_with(name, dir, out, &[])
}

/// Whether cc and clang are there (else prints the skip line).
pub fn have_tools(test: &str) -> bool {
    if !have("cc") {
        skip(test, "cc not found");
        return false;
    }
    have("clang") || {
        skip(test, "clang not found");
        false
    }
}

/// Builds the libbpf loader whose C source is `src` (relative to the
/// repository root) into `out`; false, after a `skipped:` line for `test`,
/// where libbpf cannot be linked (the kernel side of a comparison is then
/// left out, the pkbpf side still checked).
pub fn build_libbpf_loader(test: &str, src: &str, out: &Path) -> bool {
    let built = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(out)
        .arg(root().join(src))
        .args(["-lbpf", "-lelf", "-lz"])
        .output()
        .expect("run cc");
    if !built.status.success() {
        println!(
            "skipped: {test}: kernel side: libbpf not available to build {src}\n{}",
            String::from_utf8_lossy(&built.stderr)
        );
    }
    built.status.success()
}
