//! Kernel oracle: the Linux verifier as a second opinion on pkbpf's.
//!
//! When `bpf()` works (root), every program of the object corpus
//! (`tests/bpf/*.bpf.c`) is loaded into the kernel the way libbpf would
//! (maps created, global data filled, `.rodata` frozen, map references
//! rewritten to fds; program type from the section), and every positive
//! bpf_conformance program is loaded twice: as a kprobe program (the issue's
//! baseline: `r1` = `struct pt_regs`) and as a `BPF_PROG_TYPE_SYSCALL`
//! program, whose context is a plain buffer like the conformance runner's
//! memory. Each verdict is compared with pkbpf's verifier in the matching
//! environment, and the table is printed (`--nocapture`).
//!
//! The test fails only on a disagreement nobody has explained: a program the
//! kernel accepts and pkbpf rejects must be in [`KERNEL_ONLY`] (a
//! compatibility gap, with its reason), and one pkbpf accepts and the kernel
//! rejects must match a reason in [`PKBPF_ONLY`] (why it is still safe in
//! userspace). Where both accept a conformance program as a syscall program,
//! `BPF_PROG_TEST_RUN` runs it in the kernel on the test's memory and the
//! result is compared with pkbpf's interpreter and the expected `-- result`.
//! The negative conformance programs go to both as raw bytes, and a few
//! hand-written edge programs ([`EDGES`]) pin the known differences in
//! policy (privileged-kernel leniencies pkbpf does not copy).

mod common;

use pkbpf::conformance::{Engine, InterpEngine, ProgramSource, TestFile};
use pkbpf::kernel::{
    self, KernelError, KernelObject, Program, ProgramSpec, TestRun, F_SLEEPABLE, PROG_TYPE_KPROBE,
    PROG_TYPE_SYSCALL,
};
use pkbpf::object::Object;
use pkbpf::verifier::isa::{encode_program, CallTarget, Insn, LdPseudo};
use pkbpf::verifier::{verify, CtxDesc, ProgramEnv};
use pkbpf::verify_env::program_env;
use std::fmt;
use std::path::PathBuf;

/// Programs the kernel accepts and pkbpf rejects, `(table name, reason)`:
/// compatibility gaps. A new one fails the test.
const KERNEL_ONLY: &[(&str, &str)] = &[];

/// Why a program pkbpf accepts may be rejected by the kernel and still be
/// safe in pkbpf, keyed by a substring of the kernel's reason (or of the
/// table name, for `name:` keys).
const PKBPF_ONLY: &[(&str, &str)] = &[
    (
        "missing btf func_info",
        "the program passes a callback to bpf_loop, and the kernel demands BTF func_info \
         (each subprogram's prototype) for programs with callbacks; this oracle loads \
         programs without the object's BTF, so the kernel stops before verifying: a loader \
         input, not a safety verdict. pkbpf verifies the callback in its own frame (r1 the \
         index, r2 the context) for any number of iterations, down to a fixpoint, and \
         tests/verify_objects.rs runs these programs on the JIT and the interpreter alike",
    ),
    (
        "invalid shift",
        "shift by an immediate >= the operand width or negative: RFC 9669 defines the amount \
         modulo the width (imm & 63 / & 31) and pkbpf's engines mask it, so the result is \
         defined; the kernel refuses the constant as a likely bug, not for memory safety",
    ),
    (
        "unknown opcode 8d",
        "callx (helper id in a register) is an RFC 9669 instruction the kernel does not \
         implement; pkbpf's verifier requires the register to hold a known helper id and checks \
         that helper's prototype as for a plain call",
    ),
    (
        "invalid bpf_context access off=",
        "the kernel's syscall context demands naturally aligned accesses (off % size == 0); \
         pkbpf's memory context is a plain byte buffer bounds-checked per access, and x86-64 \
         loads and stores unaligned data safely",
    ),
    (
        "R2 !read_ok",
        "the conformance environment passes the memory's length in r2; the kernel's syscall \
         program type sets only r1, so r2 is uninitialised there: an environment difference",
    ),
    (
        "dereference of modified ctx ptr",
        "the kernel forbids arithmetic on the ctx pointer because it rewrites ctx field \
         accesses; pkbpf's memory context is real memory and each access through a derived \
         pointer is bounds-checked at its computed offset",
    ),
    (
        "cannot use helper bpf_probe_write_user",
        "the kernel withholds bpf_probe_write_user here (lockdown/config policy against \
         writing another process's memory); a pkbpf uprobe runs inside the traced process, and \
         its probe_write_user writes only that process through the fault-tolerant copy, \
         refusing destinations in the map region",
    ),
    (
        "Sleepable programs can only use array, hash, ring",
        "embedded programs load as BPF_PROG_TYPE_SYSCALL, the kernel's only plain-buffer \
         context, which must be sleepable, and sleepable programs may not use PROG_ARRAY: a \
         kernel restriction on RCU lifetimes in sleepable code; pkbpf's tail calls are checked \
         like the kernel's (index bound, slot may be empty, 33-call limit)",
    ),
];

/// The embedded programs' context size, as `tests/object_verify.rs` uses.
const EMBEDDED_CTX: u32 = 72;

/// One side's verdict.
#[derive(Clone, Debug)]
enum Verdict {
    Accept,
    Reject(String),
    NotApplicable(String),
}

impl Verdict {
    fn accepted(&self) -> bool {
        matches!(self, Verdict::Accept)
    }
    fn rejected(&self) -> bool {
        matches!(self, Verdict::Reject(_))
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Reject(r) => write!(f, "REJECT: {r}"),
            Verdict::NotApplicable(r) => write!(f, "n/a: {r}"),
        }
    }
}

fn kernel_verdict(r: &Result<Program, KernelError>) -> Verdict {
    match r {
        Ok(_) => Verdict::Accept,
        Err(KernelError::Rejected { errno, log, .. }) => {
            Verdict::Reject(format!("{} (errno {errno})", log.reason()))
        }
        Err(e) => Verdict::Reject(e.to_string()),
    }
}

fn pkbpf_verdict(insns: &[Insn], env: &ProgramEnv) -> Verdict {
    match verify(insns, env) {
        Ok(_) => Verdict::Accept,
        Err(e) => Verdict::Reject(format!("insn {}: {e}", e.insn)),
    }
}

/// An error with its sources, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

/// One row of the agreement table.
struct Row {
    name: String,
    kernel: Verdict,
    pkbpf: Verdict,
}

/// Prints the table and returns the unexplained disagreements.
fn judge(title: &str, rows: &[Row]) -> Vec<String> {
    let mut bad = Vec::new();
    let (mut agree, mut explained) = (0, 0);
    println!("\n== {title} ({} programs) ==", rows.len());
    println!("{:<44} | {:<60} | pkbpf", "program", "kernel");
    for r in rows {
        let mut k = r.kernel.to_string();
        if k.len() > 60 {
            k.truncate(57);
            k.push_str("...");
        }
        let mark = match (&r.kernel, &r.pkbpf) {
            (Verdict::Accept, Verdict::Reject(_)) => {
                match KERNEL_ONLY.iter().find(|(n, _)| *n == r.name) {
                    Some((_, why)) => {
                        explained += 1;
                        format!("  [known gap: {why}]")
                    }
                    None => {
                        bad.push(format!(
                            "{}: kernel accepts, pkbpf rejects: {}",
                            r.name, r.pkbpf
                        ));
                        "  [UNEXPLAINED: kernel accepts]".into()
                    }
                }
            }
            (Verdict::Reject(kr), Verdict::Accept) => {
                let hit = PKBPF_ONLY
                    .iter()
                    .find(|(key, _)| match key.strip_prefix("name:") {
                        Some(n) => r.name.contains(n),
                        None => kr.contains(key),
                    });
                match hit {
                    Some((_, why)) => {
                        explained += 1;
                        format!("  [safe in pkbpf: {why}]")
                    }
                    None => {
                        bad.push(format!("{}: pkbpf accepts, kernel rejects: {kr}", r.name));
                        "  [UNEXPLAINED: kernel rejects]".into()
                    }
                }
            }
            _ => {
                agree += 1;
                String::new()
            }
        };
        println!("{:<44} | {:<60} | {}{mark}", r.name, k, r.pkbpf);
    }
    for (n, _) in KERNEL_ONLY {
        if rows.iter().any(|r| r.name == *n && r.pkbpf.accepted()) {
            println!("note: {n} is in KERNEL_ONLY but pkbpf accepts it now: drop the entry");
        }
    }
    let count = |f: &dyn Fn(&Row) -> bool| rows.iter().filter(|r| f(r)).count();
    // Where both reject: does pkbpf give the kernel's reason, word for word?
    let same_reason = count(&|r| match (&r.kernel, &r.pkbpf) {
        (Verdict::Reject(k), Verdict::Reject(p)) => {
            let k = k.rsplit_once(" (errno").map_or(k.as_str(), |(a, _)| a);
            let p = p.split_once(": ").map_or(p.as_str(), |(_, b)| b);
            k == p
        }
        _ => false,
    });
    println!(
        "summary: {agree} agree (both accept {}, both reject {}, {same_reason} of them with the kernel's reason text), {explained} explained disagreements, {} unexplained; kernel n/a {}",
        count(&|r| r.kernel.accepted() && r.pkbpf.accepted()),
        count(&|r| r.kernel.rejected() && r.pkbpf.rejected()),
        bad.len(),
        count(&|r| matches!(r.kernel, Verdict::NotApplicable(_))),
    );
    bad
}

/// Whether the kernel can be asked; prints the skip line when not.
fn kernel_or_skip(test: &str) -> bool {
    match kernel::available() {
        Ok(()) => true,
        Err(why) => {
            println!("skipped: kernel_oracle: {test}: {why}");
            false
        }
    }
}

#[test]
fn object_corpus_against_the_kernel_verifier() {
    const TEST: &str = "object_corpus_against_the_kernel_verifier";
    if !kernel_or_skip(TEST) {
        return;
    }
    let mut rows = Vec::new();
    for name in common::ALL {
        let Some(path) = common::compile(TEST, name) else {
            return;
        };
        let obj = Object::parse(&common::read(&path)).expect("corpus object parses");
        let maps = KernelObject::create(&obj);
        for p in obj.programs() {
            let kernel = match &maps {
                Ok(m) => kernel_verdict(&m.load(&obj, p)),
                Err(e) => Verdict::NotApplicable(format!("maps: {e}")),
            };
            let pkbpf = match program_env(&obj, p, EMBEDDED_CTX) {
                Ok(env) => pkbpf_verdict(&p.insns, &env),
                Err(e) => Verdict::NotApplicable(e.to_string()),
            };
            rows.push(Row {
                name: format!("{name}/{}", p.name),
                kernel,
                pkbpf,
            });
        }
    }
    let bad = judge("object corpus: kernel (libbpf-style load) vs pkbpf", &rows);
    assert!(
        bad.is_empty(),
        "unexplained disagreements:\n{}",
        bad.join("\n")
    );
}

/// The conformance corpus directory.
fn conformance_dir() -> PathBuf {
    std::env::var_os("PKBPF_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../shared/corpus/bpf_conformance"
            ))
        })
}

/// The `.data` files of `dir`, sorted.
fn data_files(dir: &std::path::Path) -> Result<Vec<PathBuf>, String> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "data"))
        .collect();
    paths.sort();
    Ok(paths)
}

/// The positive conformance tests, sorted by name.
fn conformance_corpus() -> Result<Vec<(String, TestFile)>, String> {
    let dir = conformance_dir();
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "data"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let name = p
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            TestFile::load(p)
                .map(|t| (name, t))
                .map_err(|e| format!("{}: {e}", p.display()))
        })
        .collect()
}

fn load_raw(
    name: &str,
    insns: &[Insn],
    prog_type: u32,
    flags: u32,
) -> Result<Program, KernelError> {
    Program::load(&ProgramSpec {
        name,
        prog_type,
        insns,
        license: "GPL",
        kern_version: 0,
        flags,
    })
}

#[test]
fn conformance_corpus_against_the_kernel_verifier() {
    const TEST: &str = "conformance_corpus_against_the_kernel_verifier";
    if !kernel_or_skip(TEST) {
        return;
    }
    let corpus = match conformance_corpus() {
        Ok(c) => c,
        Err(why) => {
            println!("skipped: kernel_oracle: {TEST}: corpus not readable: {why}");
            return;
        }
    };
    assert!(
        corpus.len() > 300,
        "only {} conformance programs",
        corpus.len()
    );
    let (mut kprobe_rows, mut mem_rows) = (Vec::new(), Vec::new());
    let (mut runs, mut run_mismatch, mut compared) = (Vec::new(), Vec::new(), 0usize);
    for (name, test) in &corpus {
        let insns = match test.insns() {
            Ok(i) => i,
            Err(e) => panic!("{name}: does not assemble: {e}"),
        };
        // The baseline: kprobe type vs pkbpf's uprobe environment.
        kprobe_rows.push(Row {
            name: name.clone(),
            kernel: kernel_verdict(&load_raw(name, &insns, PROG_TYPE_KPROBE, 0)),
            pkbpf: pkbpf_verdict(&insns, &ProgramEnv::new(CtxDesc::PtRegs)),
        });
        // r1 = raw memory: syscall type vs the conformance environment.
        let loaded = load_raw(name, &insns, PROG_TYPE_SYSCALL, F_SLEEPABLE);
        let env = ProgramEnv::conformance(test.mem.len() as u32);
        let row = Row {
            name: name.clone(),
            kernel: kernel_verdict(&loaded),
            pkbpf: pkbpf_verdict(&insns, &env),
        };
        let calls_helper = insns
            .iter()
            .any(|i| matches!(i, Insn::Call(CallTarget::Helper(_)) | Insn::CallX { .. }));
        if let (Ok(prog), true, false) = (&loaded, row.pkbpf.accepted(), calls_helper) {
            let mut mem = test.mem.clone();
            let ours = InterpEngine::default().run(&insns, &mut mem);
            let theirs = prog.test_run(&TestRun {
                ctx_in: &test.mem,
                ..Default::default()
            });
            match (ours, theirs) {
                (Ok(r0), Ok(out)) => {
                    compared += 1;
                    let ok = out.retval == r0 as u32
                        && test.result.is_none_or(|e| e as u32 == out.retval)
                        && (test.mem.is_empty() || out.ctx_in_after == mem);
                    let line = format!(
                        "{name}: kernel retval {:#x}, pkbpf r0 {r0:#x}, expected {:?}{}",
                        out.retval,
                        test.result,
                        if ok { "" } else { "  MISMATCH" }
                    );
                    if !ok {
                        run_mismatch.push(line.clone());
                    }
                    runs.push(line);
                }
                (a, b) => runs.push(format!(
                    "{name}: not compared: pkbpf {:?}, kernel {:?}",
                    a.map(|_| ()).map_err(|e| e.to_string()),
                    b.map(|_| ()).map_err(|e| e.to_string())
                )),
            }
        }
        mem_rows.push(row);
    }
    let mut bad = judge(
        "conformance as BPF_PROG_TYPE_KPROBE vs pkbpf (uprobe env, r1 = pt_regs)",
        &kprobe_rows,
    );
    bad.extend(judge(
        "conformance as BPF_PROG_TYPE_SYSCALL (r1 = raw buffer) vs pkbpf (conformance env)",
        &mem_rows,
    ));
    println!(
        "\n== BPF_PROG_TEST_RUN cross-check ({} programs run in both) ==",
        runs.len()
    );
    for l in &runs {
        println!("{l}");
    }
    println!(
        "summary: {compared} run in both, {} agree on r0 (low 32 bits), the expected result and memory, {} differ, {} not compared",
        compared - run_mismatch.len(),
        run_mismatch.len(),
        runs.len() - compared
    );
    assert!(compared > 100, "too few programs cross-run: {compared}");
    assert!(
        run_mismatch.is_empty(),
        "kernel and pkbpf results differ:\n{}",
        run_mismatch.join("\n")
    );
    assert!(
        bad.is_empty(),
        "unexplained disagreements:\n{}",
        bad.join("\n")
    );
}

// The bpf(2) layer on its own.

#[test]
fn kernel_maps_update_lookup_freeze() {
    if !kernel_or_skip("kernel_maps_update_lookup_freeze") {
        return;
    }
    let map = kernel::Map::create(&kernel::MapSpec {
        name: "oracle_hash".into(),
        map_type: 1, // BPF_MAP_TYPE_HASH
        key_size: 4,
        value_size: 8,
        max_entries: 4,
        flags: 0,
    })
    .expect("create hash map");
    assert!(map.fd() >= 0);
    map.update(
        &7u32.to_ne_bytes(),
        &0x1122_3344_5566_7788u64.to_ne_bytes(),
        0,
    )
    .expect("update");
    assert_eq!(
        map.lookup(&7u32.to_ne_bytes()).expect("lookup"),
        Some(0x1122_3344_5566_7788u64.to_ne_bytes().to_vec())
    );
    assert_eq!(map.lookup(&8u32.to_ne_bytes()).expect("lookup"), None);
    match map.update(&[0u8; 3], &[0u8; 8], 0) {
        Err(KernelError::BufferSize {
            what: "key",
            expected: 4,
            found: 3,
        }) => {}
        other => panic!("wrong key size gave {other:?}"),
    }
    map.freeze().expect("freeze");
    match map.update(&1u32.to_ne_bytes(), &[0u8; 8], 0) {
        Err(KernelError::Syscall { cmd, source }) => {
            assert_eq!(cmd, "BPF_MAP_UPDATE_ELEM");
            assert_eq!(source.raw_os_error(), Some(libc::EPERM), "{source}");
        }
        other => panic!("update after freeze gave {other:?}"),
    }
    // An impossible map is a typed syscall error, not a panic.
    match kernel::Map::create(&kernel::MapSpec {
        name: "bad".into(),
        map_type: 2,
        key_size: 0,
        value_size: 4,
        max_entries: 1,
        flags: 0,
    }) {
        Err(KernelError::Syscall { cmd, .. }) => assert_eq!(cmd, "BPF_MAP_CREATE"),
        other => panic!("array with key size 0 gave {other:?}"),
    }
}

#[test]
fn kernel_rejection_carries_the_verifier_log() {
    if !kernel_or_skip("kernel_rejection_carries_the_verifier_log") {
        return;
    }
    // (An uninitialised *stack* read would not do: the kernel allows those
    // to privileged loaders; pkbpf does not.)
    let prog = pkbpf::verifier::asm::assemble("r1 = 1\nexit").expect("assemble");
    match load_raw("uninit", &prog, PROG_TYPE_KPROBE, 0) {
        Err(KernelError::Rejected {
            program,
            errno,
            log,
        }) => {
            assert_eq!(program, "uninit");
            assert_eq!(errno, libc::EACCES);
            assert_eq!(log.reason(), "R0 !read_ok", "{log:?}");
            assert!(log.0.contains("1: (95) exit"), "{log:?}");
        }
        other => panic!("uninitialised stack read gave {other:?}"),
    }
}

#[test]
fn kernel_test_run_on_a_syscall_program() {
    if !kernel_or_skip("kernel_test_run_on_a_syscall_program") {
        return;
    }
    // r0 = ctx[0] + ctx[1]; ctx[2] = 0x55 (written back into ctx_in).
    let prog = pkbpf::verifier::asm::assemble(
        "r0 = *(u8 *)(r1 + 0)\nr2 = *(u8 *)(r1 + 1)\nr0 += r2\n*(u8 *)(r1 + 2) = 0x55\nexit",
    )
    .expect("assemble");
    let p = load_raw("sum2", &prog, PROG_TYPE_SYSCALL, F_SLEEPABLE).expect("load");
    let ctx = [40u8, 2, 0, 9];
    let out = p
        .test_run(&TestRun {
            ctx_in: &ctx,
            ..Default::default()
        })
        .expect("test run");
    assert_eq!(out.retval, 42);
    assert_eq!(out.ctx_in_after, [40, 2, 0x55, 9]);
    assert_eq!(ctx, [40, 2, 0, 9], "the caller's slice is never written");
    // A context shorter than what the program reads is refused, not run.
    match p.test_run(&TestRun {
        ctx_in: &ctx[..1],
        ..Default::default()
    }) {
        Err(KernelError::Syscall { cmd, source }) => {
            assert_eq!(cmd, "BPF_PROG_TEST_RUN");
            assert_eq!(source.raw_os_error(), Some(libc::EINVAL));
        }
        other => panic!("short ctx gave {other:?}"),
    }
}

#[test]
fn kernel_object_maps_hold_globals_and_rodata_is_frozen() {
    const TEST: &str = "kernel_object_maps_hold_globals_and_rodata_is_frozen";
    if !kernel_or_skip(TEST) {
        return;
    }
    let Some(path) = common::compile(TEST, "calls_globals") else {
        return;
    };
    let obj = Object::parse(&common::read(&path)).expect("parse");
    let k = KernelObject::create(&obj).expect("create maps");
    assert_eq!(k.maps().len(), obj.maps().len());
    let mut globals = 0;
    for (def, map) in obj.maps().iter().zip(k.maps()) {
        let Some(data) = &def.initial_data else {
            continue;
        };
        globals += 1;
        let key = vec![0u8; def.key_size as usize];
        let got = map.lookup(&key).expect("lookup").expect("entry 0 exists");
        assert_eq!(&got[..data.len()], &data[..], "{}", def.name);
        let frozen = map.update(&key, &got, 0).is_err();
        assert_eq!(
            frozen,
            matches!(def.kind, pkbpf::object::MapKind::Rodata { .. }),
            "{}: frozen = {frozen}",
            def.name
        );
    }
    assert!(globals > 0, "calls_globals has initialised globals");
    // Map references by index become fds; a bad index is a typed error.
    let p = &obj.programs()[0];
    let relocated = k.relocate(&p.insns).expect("relocate");
    assert!(!relocated.iter().any(|i| matches!(
        i,
        Insn::LdPseudo {
            kind: LdPseudo::MapIdx | LdPseudo::MapIdxValue,
            ..
        }
    )));
    let bad = [
        Insn::LdPseudo {
            dst: pkbpf::verifier::isa::Reg::R1,
            kind: LdPseudo::MapIdx,
            imm: 99,
            next_imm: 0,
        },
        Insn::LdImm64Hi,
    ];
    match k.relocate(&bad) {
        Err(KernelError::BadMapIndex {
            insn: 0,
            index: 99,
            count,
        }) => assert_eq!(count, obj.maps().len()),
        other => panic!("bad map index gave {other:?}"),
    }
    let (_, loaded) = kernel::load_object_program(&obj, &p.name).expect("load");
    assert!(loaded.fd() >= 0);
    assert!(matches!(
        kernel::load_object_program(&obj, "no_such_prog"),
        Err(KernelError::NoSuchProgram { .. })
    ));
}

#[test]
fn negative_conformance_programs_against_the_kernel_verifier() {
    const TEST: &str = "negative_conformance_programs_against_the_kernel_verifier";
    if !kernel_or_skip(TEST) {
        return;
    }
    let files = match data_files(&conformance_dir().join("negative")) {
        Ok(f) => f,
        Err(why) => {
            println!("skipped: kernel_oracle: {TEST}: corpus not readable: {why}");
            return;
        }
    };
    assert!(files.len() >= 50, "only {} negative programs", files.len());
    let mut rows = Vec::new();
    for path in &files {
        let name = format!(
            "negative/{}",
            path.file_stem().unwrap_or_default().to_string_lossy()
        );
        let test = match TestFile::load(path) {
            Ok(t) => t,
            Err(e) => {
                // No program text the kernel could be given either.
                rows.push(Row {
                    name,
                    kernel: Verdict::NotApplicable("no program".into()),
                    pkbpf: Verdict::Reject(format!("test file: {}", chain(&e))),
                });
                continue;
            }
        };
        let bytes = match &test.program {
            ProgramSource::Raw(b) => Some(b.clone()),
            ProgramSource::Asm(src) => pkbpf::verifier::asm::assemble(src)
                .ok()
                .map(|p| encode_program(&p)),
        };
        let kernel = match &bytes {
            Some(b) => kernel_verdict(&Program::load_bytes(
                &ProgramSpec {
                    name: "negative",
                    prog_type: PROG_TYPE_SYSCALL,
                    insns: &[],
                    license: "GPL",
                    kern_version: 0,
                    flags: F_SLEEPABLE,
                },
                b,
            )),
            None => Verdict::NotApplicable("does not assemble".into()),
        };
        let pkbpf = match test.insns() {
            Ok(insns) => pkbpf_verdict(&insns, &ProgramEnv::conformance(test.mem.len() as u32)),
            Err(e) => Verdict::Reject(format!("decode: {}", chain(&e))),
        };
        rows.push(Row {
            name,
            kernel,
            pkbpf,
        });
    }
    let bad = judge(
        "negative conformance programs: kernel (syscall type) vs pkbpf (decode + verify)",
        &rows,
    );
    assert!(
        bad.is_empty(),
        "unexplained disagreements:\n{}",
        bad.join("\n")
    );
}

/// Hand-written programs at the edges where the two verifiers may differ,
/// with the verdicts observed: `(name, program, kernel accepts, pkbpf
/// accepts, why)`. All run as kprobe / uprobe programs with map 0 a
/// 1-entry array and map 1 a hash (4-byte keys, 8-byte values). A change on
/// either side fails here first.
const EDGES: &[(&str, &str, bool, bool, &str)] = &[
    (
        "uninit stack read",
        "r0 = *(u64 *)(r10 - 8)\nexit",
        true,
        false,
        "the kernel lets privileged loaders read uninitialised stack (allow_uninit_stack); \
         pkbpf never does, since the bytes would be the previous extension's or the host's",
    ),
    (
        "pointer returned",
        "r0 = r10\nexit",
        true,
        false,
        "privileged kernel programs may leak pointers (allow_ptr_leaks); a pkbpf return \
         value reaches the host, so a stack address must not",
    ),
    (
        "pointer stored in a map",
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:0]\ncall bpf_map_lookup_elem#1\n\
         if r0 == 0 goto +1\n*(u64 *)(r0 + 0) = r10\nr0 = 0\nexit",
        true,
        false,
        "as above: map values are host-readable, so pkbpf forbids storing pointers there",
    ),
    (
        "null check missing (hash)",
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:1]\ncall bpf_map_lookup_elem#1\n\
         r0 = *(u64 *)(r0 + 0)\nexit",
        false,
        false,
        "both: the lookup may return null",
    ),
    (
        "null check missing (array, key 0)",
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:0]\ncall bpf_map_lookup_elem#1\n\
         r0 = *(u64 *)(r0 + 0)\nexit",
        true,
        true,
        "both: an array lookup with a constant key below max_entries cannot fail (every \
         index of a plain array exists), so the result is proven non-null",
    ),
    (
        "null check missing (array, key 1 of 1)",
        "*(u32 *)(r10 - 4) = 1\nr2 = r10\nr2 += -4\nr1 = map[idx:0]\ncall bpf_map_lookup_elem#1\n\
         r0 = *(u64 *)(r0 + 0)\nexit",
        false,
        false,
        "both: key 1 is past the 1-entry array, so the lookup returns null",
    ),
    (
        "map value out of bounds",
        "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:0]\ncall bpf_map_lookup_elem#1\n\
         if r0 == 0 goto +1\nr0 = *(u64 *)(r0 + 8)\nr0 = 0\nexit",
        false,
        false,
        "both: the value is 8 bytes",
    ),
    (
        "ctx write",
        "*(u64 *)(r1 + 0) = 0\nr0 = 0\nexit",
        false,
        false,
        "both: a kprobe/uprobe context is read-only",
    ),
    (
        "stack below 512 bytes",
        "*(u64 *)(r10 - 520) = 0\nr0 = 0\nexit",
        false,
        false,
        "both: a frame has 512 bytes",
    ),
    (
        "infinite loop",
        "r0 = 0\nr0 += 1\nif r0 != 0 goto -2\nexit",
        false,
        false,
        "both: the loop never ends (processed-instruction budget)",
    ),
    (
        "bounded loop",
        "r0 = 0\nr0 += 1\nif r0 < 100 goto -2\nexit",
        true,
        true,
        "both explore the 100 iterations",
    ),
    (
        "pointer comparison",
        "r2 = r10\nr0 = 0\nif r1 > r2 goto +1\nr0 = 1\nexit",
        true,
        false,
        "the kernel lets privileged loaders order pointers into different regions; pkbpf \
         does not (nor a pointer against a number, nor 32-bit halves of a pointer): the \
         outcome depends on where memory is placed, leaks addresses into control flow, and \
         differed between the interpreter and the JIT (fuzz crash-787963bf)",
    ),
    (
        "same-region pointer comparison",
        "r2 = r10\nr3 = r10\nr3 += -8\nr0 = 0\nif r3 < r2 goto +1\nr0 = 1\nexit",
        true,
        true,
        "both: ordering two pointers into the same stack frame is deterministic",
    ),
];

#[test]
fn edge_programs_give_the_documented_verdicts() {
    const TEST: &str = "edge_programs_give_the_documented_verdicts";
    if !kernel_or_skip(TEST) {
        return;
    }
    let map = kernel::Map::create(&kernel::MapSpec {
        name: "edges".into(),
        map_type: 2,
        key_size: 4,
        value_size: 8,
        max_entries: 1,
        flags: 0,
    })
    .expect("create map");
    let hash = kernel::Map::create(&kernel::MapSpec {
        name: "edges_hash".into(),
        map_type: 1,
        key_size: 4,
        value_size: 8,
        max_entries: 4,
        flags: 0,
    })
    .expect("create hash map");
    let maps = KernelObject::from_maps(vec![map, hash]);
    let env = ProgramEnv::new(CtxDesc::PtRegs)
        .with_map(pkbpf::verifier::MapDesc::new(2, 4, 8, 1))
        .with_map(pkbpf::verifier::MapDesc::new(1, 4, 8, 4));
    let mut wrong = Vec::new();
    println!("\n== edge programs (kprobe / uprobe env) ==");
    for (name, src, kernel_ok, pkbpf_ok, why) in EDGES {
        let insns = pkbpf::verifier::asm::assemble(src)
            .unwrap_or_else(|e| panic!("{name}: does not assemble: {e}"));
        let kernel_insns = maps.relocate(&insns).expect("relocate");
        let k = kernel_verdict(&load_raw("edge", &kernel_insns, PROG_TYPE_KPROBE, 0));
        let p = pkbpf_verdict(&insns, &env);
        println!("{name:<34} | kernel {k} | pkbpf {p} | {why}");
        if k.accepted() != *kernel_ok || p.accepted() != *pkbpf_ok {
            wrong.push(format!(
                "{name}: expected kernel {kernel_ok} pkbpf {pkbpf_ok}, got kernel {k}, pkbpf {p}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn embedded_programs_run_alike_in_the_kernel_and_in_pkbpf() {
    const TEST: &str = "embedded_programs_run_alike_in_the_kernel_and_in_pkbpf";
    if !kernel_or_skip(TEST) {
        return;
    }
    let Some(path) = common::compile(TEST, "embedded") else {
        return;
    };
    let bytes = common::read(&path);
    let obj = Object::parse(&bytes).expect("parse");
    let k = KernelObject::create(&obj).expect("kernel maps");
    let rt = pkbpf::Runtime::builder()
        .embedded_ctx(pkbpf::runtime::CtxLayout::writable(16))
        .build()
        .expect("runtime");
    let ours = rt.load(&bytes).expect("pkbpf loads embedded.bpf.o");
    let inputs: [(u64, u64); 4] = [(40, 2), (0, 0), (u64::MAX, 3), (0x1_0000_0001, 0x7fff_ffff)];
    let mut calls = 0u64;
    for name in ["add_inputs", "mul_inputs"] {
        let theirs = k
            .load(&obj, obj.program(name).expect("program"))
            .expect("kernel loads it");
        let prog = ours.program(name).expect("pkbpf program");
        for (a, b) in inputs {
            let mut ctx = [a.to_ne_bytes(), b.to_ne_bytes()].concat();
            let out = theirs
                .test_run(&TestRun {
                    ctx_in: &ctx,
                    ..Default::default()
                })
                .expect("kernel test run");
            let r0 = prog.call(&mut ctx).expect("pkbpf call");
            // `int` results: the kernel keeps 32 bits.
            assert_eq!(out.retval, r0 as u32, "{name}({a:#x}, {b:#x})");
            let expect = if name == "add_inputs" {
                a.wrapping_add(b)
            } else {
                a.wrapping_mul(b)
            };
            assert_eq!(out.retval, expect as u32, "{name}({a:#x}, {b:#x})");
            assert_eq!(out.ctx_in_after, ctx, "{name}: context after the run");
        }
        if name == "add_inputs" {
            calls += inputs.len() as u64;
        }
    }
    // add_inputs counts its calls in legacy_counts[0] on both sides.
    let idx = obj
        .maps()
        .iter()
        .position(|m| m.name == "legacy_counts")
        .expect("legacy_counts");
    let kernel_count = k.maps()[idx]
        .lookup(&0u32.to_ne_bytes())
        .expect("kernel lookup")
        .expect("array entry");
    let our_count = ours
        .map("legacy_counts")
        .expect("pkbpf map")
        .lookup(&0u32.to_ne_bytes())
        .expect("pkbpf lookup")
        .expect("array entry");
    assert_eq!(kernel_count, calls.to_ne_bytes());
    assert_eq!(our_count, kernel_count);
    println!("embedded: add_inputs/mul_inputs agree with the kernel on {} inputs each; counter {calls} on both sides", inputs.len());
}
