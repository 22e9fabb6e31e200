//! Building the C parts at run time: the victim, the kernel loader, BPF
//! objects and native shared libraries.
//!
//! Sources are embedded in the harness binary (`include_str!`) and written to
//! a work directory before compiling, so the harness needs only `cc`,
//! `clang`, libbpf and the kernel headers of a Debian system, not the source
//! tree.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::BenchError;

/// The victim's C source.
pub const TARGET_C: &str = include_str!("../target/bench_target.c");
/// The kernel loader's C source.
pub const KLOAD_C: &str = include_str!("../kernel/kload.c");
/// The uprobe/uretprobe programs (owned by the object loader's tests).
pub const BENCH_UPROBE_BPF_C: &str = include_str!("../../tests/bpf/bench_uprobe.bpf.c");
/// The probe_read/probe_write programs (owned by the object loader's tests).
pub const BENCH_PROBE_RW_BPF_C: &str = include_str!("../../tests/bpf/bench_probe_rw.bpf.c");
/// One program per map operation and map type.
pub const BENCH_MAP_OPS_BPF_C: &str = include_str!("../bpf/bench_map_ops.bpf.c");
/// The `sys_exit_write` tracepoint program.
pub const BENCH_SYSCALL_BPF_C: &str = include_str!("../bpf/bench_syscall.bpf.c");

/// Writes `contents` to `dir/name`; returns the path.
pub fn write_source(dir: &Path, name: &str, contents: &str) -> Result<PathBuf, BenchError> {
    let path = dir.join(name);
    std::fs::write(&path, contents).map_err(|source| BenchError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Runs `cmd`, turning a spawn failure or a non-zero status into an error
/// that names the tool and keeps the end of its stderr.
pub fn run_checked(cmd: &mut Command) -> Result<Output, BenchError> {
    let tool = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| BenchError::Spawn {
        tool: tool.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(BenchError::ToolFailed {
            tool,
            status: out.status.to_string(),
            stderr: tail(&String::from_utf8_lossy(&out.stderr), 2000),
        });
    }
    Ok(out)
}

/// The last `max` bytes of `s` (at a char boundary).
pub fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.trim_end().to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].trim_end().to_string()
}

/// Compiles the victim (`cc -O2 -fno-inline`) into `dir/bench_target`.
pub fn build_target(dir: &Path) -> Result<PathBuf, BenchError> {
    let src = write_source(dir, "bench_target.c", TARGET_C)?;
    let bin = dir.join("bench_target");
    run_checked(
        Command::new("cc")
            .args(["-O2", "-fno-inline", "-o"])
            .arg(&bin)
            .arg(&src),
    )?;
    Ok(bin)
}

/// Compiles the kernel loader (`cc -O2 … -lbpf -lelf -lz`) into `dir/kload`.
pub fn build_kload(dir: &Path) -> Result<PathBuf, BenchError> {
    let src = write_source(dir, "kload.c", KLOAD_C)?;
    let bin = dir.join("kload");
    run_checked(
        Command::new("cc")
            .args(["-O2", "-o"])
            .arg(&bin)
            .arg(&src)
            .args(["-lbpf", "-lelf", "-lz"]),
    )?;
    Ok(bin)
}

/// Compiles BPF C `source` (written as `dir/name`) with
/// `clang -O2 -g -target bpf`; returns the object's path.
pub fn compile_bpf(dir: &Path, name: &str, source: &str) -> Result<PathBuf, BenchError> {
    compile_bpf_with(dir, name, source, &[])
}

/// As [`compile_bpf`] with extra `-I` directories.
pub fn compile_bpf_with(
    dir: &Path,
    name: &str,
    source: &str,
    include_dirs: &[&Path],
) -> Result<PathBuf, BenchError> {
    let src = write_source(dir, name, source)?;
    let obj = src.with_extension("o");
    let mut cmd = Command::new("clang");
    cmd.args([
        "-O2",
        "-g",
        "-target",
        "bpf",
        "-D__TARGET_ARCH_x86",
        "-I/usr/include/x86_64-linux-gnu",
    ]);
    for d in include_dirs {
        cmd.arg("-I").arg(d);
    }
    cmd.arg("-c").arg(&src).arg("-o").arg(&obj);
    run_checked(&mut cmd)?;
    Ok(obj)
}

/// The kernel's BPF objects of the suite, compiled into `dir`.
pub fn build_kernel_objects(dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
    Ok(vec![
        compile_bpf(dir, "bench_uprobe.bpf.c", BENCH_UPROBE_BPF_C)?,
        compile_bpf(dir, "bench_probe_rw.bpf.c", BENCH_PROBE_RW_BPF_C)?,
        compile_bpf(dir, "bench_map_ops.bpf.c", BENCH_MAP_OPS_BPF_C)?,
        compile_bpf(dir, "bench_syscall.bpf.c", BENCH_SYSCALL_BPF_C)?,
    ])
}
