//! The bpf_conformance corpus on pkbpf's engines, the `.data` parser, and the
//! `conformance`, `conformance-plugin` and `demo` commands.
//!
//! The corpus is read from `PKBPF_CONFORMANCE_DIR`, else from
//! `../shared/corpus/bpf_conformance` next to the repository; without it the
//! corpus tests print `skipped: <test>: corpus not found at <path>`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use pkbpf::conformance::{
    data_files, engines, run_file, run_file_negative, run_suite, Engine, EngineChoice, EngineError,
    InterpEngine, ProgramSource, TestError, TestFile, Verdict,
};
use pkbpf::verifier::isa::Insn;

fn corpus(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("PKBPF_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../shared/corpus/bpf_conformance"
            ))
        });
    if dir.join("add.data").is_file() {
        Some(dir)
    } else {
        println!("skipped: {test}: corpus not found at {}", dir.display());
        None
    }
}

#[test]
fn every_positive_test_passes_on_the_interpreter() {
    let Some(dir) = corpus("every_positive_test_passes_on_the_interpreter") else {
        return;
    };
    let files = data_files(&dir).unwrap();
    assert_eq!(files.len(), 313, "the corpus has 313 positive tests");
    let mut e = engines(EngineChoice::Interp).unwrap();
    let report = run_suite(&files, &mut e, false);
    assert!(report.failures.is_empty(), "{report}");
    assert_eq!(report.passed, 313);
    assert_eq!(
        report.to_string().lines().last(),
        Some("313 passed, 0 failed")
    );
}

#[test]
fn every_negative_test_fails_as_expected() {
    let Some(dir) = corpus("every_negative_test_fails_as_expected") else {
        return;
    };
    let files = data_files(&dir.join("negative")).unwrap();
    assert_eq!(files.len(), 60);
    let mut e = engines(EngineChoice::Interp).unwrap();
    for f in &files {
        let how = run_file_negative(f, &mut e);
        assert!(how.is_ok(), "{}: {how:?}", f.display());
    }
    // Tests whose `-- error` names a decoding problem (reserved fields) get a
    // decode error, not a run.
    let how = run_file_negative(&dir.join("negative/unused-call-dst.data"), &mut e).unwrap();
    assert!(how.contains("reserved field dst"), "{how}");
    // A wrong expected value fails on the value itself.
    let how = run_file_negative(
        &dir.join("negative/incorrect_return_value_high_bits.data"),
        &mut e,
    )
    .unwrap();
    assert_eq!(how, "interp: returned 0x8877665544332211");
}

#[test]
fn positive_tests_fail_in_negative_mode() {
    let Some(dir) = corpus("positive_tests_fail_in_negative_mode") else {
        return;
    };
    let files = vec![dir.join("add.data"), dir.join("lddw.data")];
    let mut e = engines(EngineChoice::Interp).unwrap();
    let report = run_suite(&files, &mut e, true);
    assert_eq!((report.passed, report.failed()), (0, 2));
    assert!(report.failures[0].starts_with("FAIL add.data: negative test passed"));
}

#[test]
fn parse_sections() {
    let t = TestFile::parse(
        "# comment\n-- asm\nmov %r0, 1\n# inner comment\nexit\n-- mem\n00 11\n22\n-- result\n0x1\n-- no register offset\nignored text\n",
    )
    .unwrap();
    assert_eq!(t.mem, vec![0x00, 0x11, 0x22]);
    assert_eq!(t.result, Some(1));
    assert_eq!(t.error, None);
    assert!(matches!(t.program, ProgramSource::Asm(ref s) if s.contains("mov %r0, 1")));
    assert_eq!(t.insns().unwrap().len(), 2);

    // raw words are the little-endian value of the 8 bytes; byte lists too.
    let words = TestFile::parse("-- raw\n0x10000000000000000\n").unwrap_err();
    assert!(
        matches!(words, TestError::Syntax { line: 2, .. }),
        "{words}"
    );
    let a =
        TestFile::parse("-- raw\n0x0000002a000000b7\n0x0000000000000095\n-- result\n42\n").unwrap();
    let b = TestFile::parse(
        "-- raw\nb7 00 00 00 2a 00 00 00\n95 00 00 00 00 00 00 00\n-- result\n0x2a\n",
    )
    .unwrap();
    assert_eq!(a.program, b.program);
    assert_eq!(a.result, Some(42));
    let mut e = engines(EngineChoice::Interp).unwrap();
    assert!(matches!(
        pkbpf::conformance::run_test(&a, &mut e),
        Verdict::Pass
    ));
}

#[test]
fn parse_errors_are_clear() {
    let e = TestFile::parse("-- asm\nexit\n").unwrap_err();
    assert_eq!(e.to_string(), "no `-- result` or `-- error` section");
    let e = TestFile::parse("-- result\n0x1\n").unwrap_err();
    assert!(matches!(e, TestError::NoProgram));
    let e = TestFile::parse("-- asm\nexit\n-- bogus\n").unwrap_err();
    assert_eq!(e.to_string(), "line 3: unknown section `-- bogus`");
    let e = TestFile::parse("-- asm\nexit\n-- mem\nzz\n-- result\n0\n").unwrap_err();
    assert!(matches!(e, TestError::Syntax { line: 4, .. }), "{e}");
    let e = TestFile::parse("-- asm\nexit\n-- result\nnope\n").unwrap_err();
    assert!(matches!(e, TestError::Syntax { line: 4, .. }), "{e}");
    // assembly errors name the line
    let t = TestFile::parse("-- asm\nfrob %r0\nexit\n-- result\n0\n").unwrap();
    let e = t.insns().unwrap_err();
    assert!(e.to_string().starts_with("assembly failed: line 1"), "{e}");
    // the file name is in the report line of a missing expectation
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no_result.data");
    std::fs::write(&path, "-- asm\nexit\n").unwrap();
    let mut eng = engines(EngineChoice::Interp).unwrap();
    let report = run_suite(std::slice::from_ref(&path), &mut eng, false);
    assert_eq!(
        report.to_string(),
        "FAIL no_result.data: no `-- result` or `-- error` section\n0 passed, 1 failed"
    );
    assert!(matches!(run_file(&path, &mut eng), Verdict::Fail(_)));
}

#[test]
fn results_and_errors_are_judged() {
    let mut e = engines(EngineChoice::Interp).unwrap();
    let run = |text: &str, e: &mut Vec<Box<dyn Engine>>| match pkbpf::conformance::run_test(
        &TestFile::parse(text).unwrap(),
        e,
    ) {
        Verdict::Pass => "pass".to_string(),
        Verdict::Fail(r) => r.to_string(),
    };
    assert_eq!(
        run("-- asm\nmov %r0, 3\nexit\n-- result\n0x3\n", &mut e),
        "pass"
    );
    assert_eq!(
        run("-- asm\nmov %r0, 3\nexit\n-- result\n0x4\n", &mut e),
        "interp: expected 0x4, got 0x3"
    );
    assert_eq!(
        run("-- asm\nmov %r0, 3\nexit\n-- error\nboom\n", &mut e),
        "interp: expected an error, got 0x3"
    );
    assert_eq!(
        run(
            "-- asm\nldxb %r0, [%r1]\nexit\n-- error\nanything\n",
            &mut e
        ),
        "pass"
    );
    let msg = run("-- asm\nldxb %r0, [%r1]\nexit\n-- result\n0\n", &mut e);
    assert_eq!(
        msg,
        "interp: expected 0x0, got error: instruction 0: read of 1 bytes at 0x0 is outside every region (`r0 = *(u8 *)(r1 + 0)`)"
    );
    // a program that does not decode is the expected error ...
    assert_eq!(
        run(
            "-- raw\n85 01 00 00 00 00 00 00\n95 00 00 00 00 00 00 00\n-- error\n",
            &mut e
        ),
        "pass"
    );
    // ... and a failure when a result was expected
    assert_eq!(
        run("-- raw\n85 01 00 00 00 00 00 00\n95 00 00 00 00 00 00 00\n-- result\n0\n", &mut e),
        "invalid program: invalid instruction 0: reserved field dst is 0x1 for opcode 0x85 (must be 0)"
    );
    // helper failures show their cause (and the disassembled call)
    let msg = run("-- asm\ncall 99\nexit\n-- result\n0\n", &mut e);
    assert!(
        msg.starts_with(
            "interp: expected 0x0, got error: instruction 0: helper 99 failed: unknown helper 99 (`call "
        ),
        "{msg}"
    );
    // r1 / r2 are the input memory and its length
    assert_eq!(
        run("-- asm\nmov %r0, %r2\nldxb %r3, [%r1+2]\nadd %r0, %r3\nexit\n-- mem\n01 02 03\n-- result\n0x6\n", &mut e),
        "pass"
    );
}

/// An engine that always answers 7, to see disagreements reported.
struct Seven;

impl Engine for Seven {
    fn name(&self) -> &'static str {
        "seven"
    }
    fn run(&mut self, _: &[Insn], _: &mut [u8]) -> Result<u64, EngineError> {
        Ok(7)
    }
}

#[test]
fn disagreeing_engines_fail() {
    let t = TestFile::parse("-- asm\nmov %r0, 7\nexit\n-- result\n0x7\n").unwrap();
    let mut agree: Vec<Box<dyn Engine>> = vec![Box::new(InterpEngine::default()), Box::new(Seven)];
    assert!(matches!(
        pkbpf::conformance::run_test(&t, &mut agree),
        Verdict::Pass
    ));
    let t = TestFile::parse("-- asm\nmov %r0, 8\nexit\n-- result\n0x8\n").unwrap();
    match pkbpf::conformance::run_test(&t, &mut agree) {
        Verdict::Fail(r) => assert_eq!(r.to_string(), "engines disagree: interp=0x8 seven=0x7"),
        Verdict::Pass => panic!("disagreement not reported"),
    }
}

#[test]
fn jit_engine_is_reported_unavailable() {
    match engines(EngineChoice::Jit) {
        Err(e) => assert_eq!(
            e.to_string(),
            "the jit engine is not available: the x86-64 JIT is not built yet"
        ),
        Ok(v) => assert!(v.iter().any(|e| e.name() == "jit")),
    }
}

fn pkbpf() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pkbpf"))
}

#[test]
fn cli_conformance_ends_with_the_summary() {
    let Some(dir) = corpus("cli_conformance_ends_with_the_summary") else {
        return;
    };
    let out = pkbpf()
        .args(["conformance", "--engine", "interp"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("313 passed, 0 failed"));
    // negative/ is detected by its name
    let out = pkbpf()
        .arg("conformance")
        .arg(dir.join("negative"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("60 passed, 0 failed"));
    // a failing test makes the exit code non-zero
    let out = pkbpf()
        .args(["conformance", "--negative"])
        .arg(dir.join("add.data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().last(),
        Some("0 passed, 1 failed")
    );
}

fn plugin(program_hex: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut child = pkbpf()
        .arg("conformance-plugin")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(program_hex.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn cli_plugin_protocol() {
    // ldxh r0, [r1+1]; exit -- memory in the runner's "aa  bb  " format
    let prog = "69  10  01  00  00  00  00  00  95  00  00  00  00  00  00  00  \n";
    assert_eq!(
        plugin(prog, &["11  22  33  ", ""]),
        (Some(0), "3322\n".into())
    );
    // no memory: r1 = 0, so the load fails with a message and exit code 1
    let (code, out) = plugin(prog, &[]);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("instruction 0: read of 2 bytes at 0x1"),
        "{out}"
    );
    // a reserved field is a decode error
    let (code, out) = plugin("85 01 00 00 00 00 00 00 95 00 00 00 00 00 00 00", &[]);
    assert_eq!(code, Some(1));
    assert!(out.contains("reserved field dst"), "{out}");
    // odd hex is rejected
    let (code, _) = plugin("950", &[]);
    assert_eq!(code, Some(1));
}

#[test]
fn cli_demo_probes_and_counts_primes() {
    // The default demo: uprobe + uretprobe on a function of the binary.
    let out = pkbpf().args(["demo", "--calls", "3000"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("pkbpf demo: JIT engine, sandbox: "),
        "{stdout}"
    );
    assert!(stdout.contains("@request_size (log2 histogram"), "{stdout}");
    assert!(
        stdout.contains("check: 3000 uprobe and 3000 uretprobe hits, histogram and sum match"),
        "{stdout}"
    );
    // The same on the reference interpreter.
    let out = pkbpf()
        .args(["demo", "--calls", "500", "--interpreter"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("check: 500 uprobe and 500 uretprobe hits"),
        "{stdout}"
    );
    // The compute demo.
    let out = pkbpf().args(["demo", "--below", "1000"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("primes below 1000: 168 (interpreter, "),
        "{stdout}"
    );
    let out = pkbpf().args(["demo", "--below", "30"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("primes below 30: 10 "), "{stdout}");
}
