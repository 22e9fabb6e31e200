//! `pkbpf-bench verifier --quick`: the verification benchmark runs end to
//! end, covers the object corpus and the generated loop program, and writes
//! a JSON report that agrees with its table.

use std::process::Command;

use pkbpf_bench::verifier_bench::{VerifierReport, LOOP_PROGRAM_INSNS, LOOP_PROGRAM_ROW};

#[test]
fn quick_verifier_bench_reports_every_corpus_program_and_the_loop_program() {
    let have_clang = Command::new("clang")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_clang {
        assert!(std::env::var_os("CI").is_none(), "CI must have clang");
        println!("skipped: clang not found");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("verifier.json");
    let out = Command::new(env!("CARGO_BIN_EXE_pkbpf-bench"))
        .args(["--out"])
        .arg(dir.path())
        .args(["verifier", "--quick", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "status {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let rep: VerifierReport =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(rep.runs, 1);
    // Every corpus source gives at least one row, named object/program.
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/bpf");
    for e in std::fs::read_dir(&corpus).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if let Some(obj) = name.strip_suffix(".bpf.c") {
            assert!(
                rep.rows
                    .iter()
                    .any(|r| r.program.starts_with(&format!("{obj}/"))),
                "no row for {obj}"
            );
        }
    }
    for r in &rep.rows {
        assert_eq!(r.time_us.n, 1, "{}", r.program);
        if r.verdict == "accepted" {
            // Every instruction of an accepted program is reached at least once.
            assert!(r.processed >= 1 && r.insns >= 1, "{r:?}");
            assert!(
                stdout.contains(&format!("{}: processed {} insns", r.program, r.processed)),
                "{}",
                r.program
            );
        }
    }
    let lp = rep.get(LOOP_PROGRAM_ROW).expect("loop program row");
    assert_eq!(lp.insns, LOOP_PROGRAM_INSNS);
    assert_eq!(lp.verdict, "accepted");
    assert!(lp.processed > LOOP_PROGRAM_INSNS as u64, "{lp:?}");
    // Most of the corpus verifies (the known rejections are listed in
    // tests/verify_objects.rs).
    let accepted = rep.rows.iter().filter(|r| r.verdict == "accepted").count();
    assert!(accepted + 2 >= rep.rows.len(), "{}", rep.table());
}
