//! Kernel oracle: loads every bpf_conformance program into the Linux
//! verifier as a kprobe program (when `bpf()` works, i.e. as root) and
//! compares its verdict with pkbpf's in the matching environment (`r1` =
//! x86-64 `struct pt_regs`, read-only; the built-in helpers, id 5 being
//! `ktime_get_ns` as in the kernel). It prints the comparison table and the
//! disagreements; a disagreement is a finding to explain (see the verifier's
//! documentation), not a test failure, since the two run in different worlds
//! (the kernel has privileged-only rules, pkbpf rejects what userspace cannot
//! make safe).

use pkbpf::verifier::asm::assemble;
use pkbpf::verifier::isa::encode_program;
use pkbpf::verifier::{verify, CtxDesc, ProgramEnv};
use std::path::PathBuf;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_KPROBE: u32 = 2;

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to the fields used.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    pad: [u64; 12],
}

/// The kernel's verdict: `Ok(())` or the last line of its log.
fn kernel_verify(bytes: &[u8]) -> Result<(), String> {
    let license = b"GPL\0";
    let mut log = vec![0u8; 1 << 16];
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_KPROBE,
        insn_cnt: (bytes.len() / 8) as u32,
        insns: bytes.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: `attr` is a valid BPF_PROG_LOAD attribute whose pointers
    // (instructions, license, log buffer) outlive the call; the kernel
    // writes at most `log_size` bytes into `log`.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if fd >= 0 {
        // SAFETY: `fd` is a file descriptor the kernel just returned to us.
        unsafe { libc::close(fd as libc::c_int) };
        return Ok(());
    }
    let text = String::from_utf8_lossy(&log);
    let text = text.trim_end_matches('\0');
    let last = text
        .lines()
        .rev()
        .find(|l| !l.starts_with("processed") && !l.trim().is_empty())
        .unwrap_or("(no log)");
    Err(format!(
        "{last} (errno {})",
        std::io::Error::last_os_error()
    ))
}

fn corpus() -> Option<Vec<(String, String)>> {
    let dir = std::env::var_os("PKBPF_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../shared/corpus/bpf_conformance"
            ))
        });
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "data"))
        .collect();
    paths.sort();
    Some(
        paths
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                let mut asm = String::new();
                let mut on = false;
                for line in text.lines() {
                    if let Some(s) = line.strip_prefix("-- ") {
                        on = s.trim() == "asm";
                        continue;
                    }
                    if on {
                        asm.push_str(line);
                        asm.push('\n');
                    }
                }
                (p.file_stem().unwrap().to_string_lossy().into_owned(), asm)
            })
            .collect(),
    )
}

#[test]
fn conformance_corpus_against_the_kernel_verifier() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!(
            "skipped: conformance_corpus_against_the_kernel_verifier: not root, bpf() unavailable"
        );
        return;
    }
    if kernel_verify(&encode_program(&assemble("r0 = 0\nexit").unwrap())).is_err() {
        println!("skipped: conformance_corpus_against_the_kernel_verifier: bpf(BPF_PROG_LOAD) fails here");
        return;
    }
    let Some(corpus) = corpus() else {
        println!("skipped: conformance_corpus_against_the_kernel_verifier: corpus not found");
        return;
    };
    let env = ProgramEnv::new(CtxDesc::PtRegs);
    let (mut both_ok, mut both_no, mut only_kernel, mut only_pkbpf) =
        (0, 0, Vec::new(), Vec::new());
    for (name, asm) in &corpus {
        let Ok(prog) = assemble(asm) else { continue };
        let k = kernel_verify(&encode_program(&prog));
        let p = verify(&prog, &env);
        match (k, p) {
            (Ok(()), Ok(_)) => both_ok += 1,
            (Err(_), Err(_)) => both_no += 1,
            (Ok(()), Err(e)) => only_kernel.push(format!("{name}: pkbpf: insn {}: {e}", e.insn)),
            (Err(k), Ok(_)) => only_pkbpf.push(format!("{name}: kernel: {k}")),
        }
    }
    println!(
        "kernel oracle over {} conformance programs (kprobe / pt_regs):",
        corpus.len()
    );
    println!("  both accept: {both_ok}\n  both reject: {both_no}");
    println!("  kernel accepts, pkbpf rejects: {}", only_kernel.len());
    for l in &only_kernel {
        println!("    {l}");
    }
    println!("  pkbpf accepts, kernel rejects: {}", only_pkbpf.len());
    for l in &only_pkbpf {
        println!("    {l}");
    }
    assert!(both_ok + both_no > 0, "no program compared");
}
