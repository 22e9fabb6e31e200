//! Test support for the object-loader tests: compiles the BPF C sources in
//! `tests/bpf/` with clang into `target/bpf-test-objs/`, and runs the
//! LLVM/bpftool cross-check tools when they are installed.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod bpf;
#[allow(unused_imports)] // each test binary uses a different subset
pub use bpf::{compile, have, obj_dir, root, skip};

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

/// Runs a libbpf loader built by [`build_libbpf_loader`] and returns its
/// stdout; `None`, after a `skipped:` line for `test`, when it exits 2 (no
/// kernel eBPF here: not root, or `bpf()` refused). Any other failure fails
/// the test.
pub fn run_kernel_loader(test: &str, cmd: &mut Command) -> Option<String> {
    let k = cmd.output().expect("run the libbpf loader");
    let kout = String::from_utf8_lossy(&k.stdout).into_owned();
    if k.status.code() == Some(2) {
        println!("skipped: {test}: kernel side: kernel eBPF not available: {kout}");
        return None;
    }
    assert!(
        k.status.success(),
        "{} failed: {kout}{}",
        cmd.get_program().to_string_lossy(),
        String::from_utf8_lossy(&k.stderr)
    );
    Some(kout)
}

/// Runs `c` (a `pkbpf` command, perhaps with environment set) as
/// `--sandbox none run OBJ EXTRA -- CMD` in `cwd` and echoes both streams
/// (shown when the test fails).
pub fn pkbpf_run(mut c: Command, obj: &Path, cwd: &Path, extra: &[&str], cmd: &[&str]) -> Output {
    let out = c
        .args(["--sandbox", "none", "run"])
        .arg(obj)
        .args(extra)
        .arg("--")
        .args(cmd)
        .current_dir(cwd)
        .output()
        .expect("run pkbpf");
    eprintln!(
        "--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Bytes from `pkbpf run`'s hex dump (`0a 1b ...`).
pub fn hex_bytes(hex: &str) -> Vec<u8> {
    hex.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        .collect()
}

/// The lines of `out` from the map header `header` to the next map header.
pub fn map_section<'a>(out: &'a str, header: &str) -> Option<&'a str> {
    let start = out.find(header)?;
    let body = &out[start + header.len()..];
    let end = body.find("\nmap ").map_or(body.len(), |e| e + 1);
    Some(&body[..end])
}
