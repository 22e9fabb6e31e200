//! `pkbpf-bench --quick` end to end: the CI smoke test of the harness.

use std::process::Command;

use pkbpf_bench::report::Report;
use pkbpf_bench::workload::{EMBED_ROW, TARGET_FUNCTIONS};

#[test]
fn quick_run_writes_table_json_and_charts() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pkbpf-bench"))
        .args(["--quick", "--no-progress", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "status {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("cpu: "), "{stdout}");
    assert!(stdout.contains("probe/tracepoint (median ns)"));
    let rep = Report::read_json(&dir.path().join("report.json")).unwrap();
    assert_eq!((rep.runs, rep.iterations), (1, 1000));
    for f in TARGET_FUNCTIONS {
        let native = rep.get(f, "native").unwrap();
        assert_eq!(native.status, "ok", "{f}");
        assert_eq!(native.samples_ns.len(), 1);
        for env in ["kernel", "pkbpf-none", "pkbpf-mpk"] {
            let r = rep
                .get(f, env)
                .unwrap_or_else(|| panic!("{f} has no {env} record"));
            // A row either has numbers or says why not.
            assert!(
                r.summary.is_some() || r.reason.is_some(),
                "{f} {env}: {r:?}"
            );
        }
    }
    assert_eq!(rep.get(EMBED_ROW, "pkbpf-interp").unwrap().status, "ok");
    for name in ["chart.svg", "chart.png"] {
        let len = std::fs::metadata(dir.path().join(name)).unwrap().len();
        assert!(len > 0, "{name} is empty");
    }
}
