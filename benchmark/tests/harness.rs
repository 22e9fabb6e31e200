//! The harness's pieces: the victim, statistics, the report's JSON, charts,
//! output parsing, environments' readiness, the kernel baseline (where this
//! machine allows it) and the embedded-call row.

use pkbpf_bench::chart::{write_png, write_svg, ChartData};
use pkbpf_bench::env::{Environment, PkbpfSandbox, Readiness, Setup};
use pkbpf_bench::kernel::{parse_kload_lines, Kernel};
use pkbpf_bench::report::{Record, Report, SCHEMA};
use pkbpf_bench::stats::{geomean, Summary};
use pkbpf_bench::sysinfo::SystemInfo;
use pkbpf_bench::target::{parse_target_output, run_native};
use pkbpf_bench::tools::build_target;
use pkbpf_bench::workload::{kernel_programs, SYSCALL_ROW, TARGET_FUNCTIONS};
use pkbpf_bench::BenchError;

/// Sum over one function's calls of `buffer[i % 4] + i` with the victim's
/// buffer "0123…": what each function contributes to the checksum.
fn expected_checksum_per_function(n: u64) -> u64 {
    (0..n).map(|i| b"0123"[(i % 4) as usize] as u64 + i).sum()
}

#[test]
fn target_prints_17_rows_and_the_syscall_row() {
    let dir = tempfile::tempdir().unwrap();
    let bin = build_target(dir.path()).unwrap();
    let run = run_native(&bin, 100).unwrap();
    let names: Vec<&str> = run.rows.iter().map(|(n, _)| n.as_str()).collect();
    let bench_rows: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| n.starts_with("__bench_"))
        .collect();
    assert_eq!(bench_rows, TARGET_FUNCTIONS.to_vec());
    assert_eq!(names.last(), Some(&SYSCALL_ROW));
    assert_eq!(run.rows.len(), 18);
    for (name, ns) in &run.rows {
        assert!(ns.is_finite() && *ns > 0.0, "{name}: {ns}");
    }
    // Every function really ran 100 times with (buffer, i % 4, i).
    assert_eq!(run.checksum, 17 * expected_checksum_per_function(100));
}

#[test]
fn target_rejects_bad_iteration_counts() {
    let dir = tempfile::tempdir().unwrap();
    let bin = build_target(dir.path()).unwrap();
    let out = std::process::Command::new(&bin)
        .arg("zero")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(matches!(
        run_native(&bin, 0),
        Err(BenchError::ToolFailed { .. })
    ));
}

#[test]
fn target_output_parse_errors_are_typed() {
    let mut ok = String::new();
    for f in TARGET_FUNCTIONS {
        ok.push_str(&format!("{f} 1.5\n"));
    }
    ok.push_str("syscall_write 100.0\nchecksum 7\nprobe bench_uprobe 3\n");
    let (run, other) = parse_target_output(&ok).unwrap();
    assert_eq!(run.checksum, 7);
    assert_eq!(run.get("__bench_read"), Some(1.5));
    assert_eq!(other, vec!["probe bench_uprobe 3".to_string()]);

    let bad = ok.replace("__bench_read 1.5", "__bench_read fast");
    match parse_target_output(&bad) {
        Err(BenchError::BadOutput { line, reason, .. }) => {
            assert_eq!(line, 4);
            assert_eq!(reason, "value is not a number");
        }
        other => panic!("expected BadOutput, got {other:?}"),
    }
    let missing = ok.replace("__bench_write 1.5\n", "");
    match parse_target_output(&missing) {
        Err(BenchError::MissingRow { row, .. }) => assert_eq!(row, "__bench_write"),
        other => panic!("expected MissingRow, got {other:?}"),
    }
    let no_sum = ok.replace("checksum 7\n", "");
    assert!(matches!(
        parse_target_output(&no_sum),
        Err(BenchError::MissingRow { .. })
    ));
}

#[test]
fn stats_on_known_inputs() {
    let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
    assert_eq!(
        (s.n, s.min, s.max, s.avg, s.median),
        (4, 1.0, 4.0, 2.5, 2.5)
    );
    assert!((s.stddev - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
    let odd = Summary::of(&[10.0, 30.0, 20.0]).unwrap();
    assert_eq!(odd.median, 20.0);
    assert_eq!(odd.stddev, 10.0);
    let one = Summary::of(&[7.5]).unwrap();
    assert_eq!(
        (one.min, one.max, one.avg, one.stddev, one.median),
        (7.5, 7.5, 7.5, 0.0, 7.5)
    );
    assert!(matches!(Summary::of(&[]), Err(BenchError::NoSamples)));
    assert!(matches!(
        Summary::of(&[1.0, f64::NAN]),
        Err(BenchError::NonFiniteSample { index: 1, .. })
    ));
    assert!((geomean(&[1.0, 4.0]).unwrap() - 2.0).abs() < 1e-12);
    assert!((geomean(&[2.0, 2.0, 2.0]).unwrap() - 2.0).abs() < 1e-12);
    assert_eq!(geomean(&[]), None);
    assert_eq!(geomean(&[1.0, 0.0]), None);
}

fn sample_report() -> Report {
    let ok = |row: &str, env: &str, samples: Vec<f64>| Record {
        row: row.into(),
        env: env.into(),
        status: "ok".into(),
        reason: None,
        summary: Some(Summary::of(&samples).unwrap()),
        samples_ns: samples,
    };
    Report {
        schema: SCHEMA.into(),
        system: SystemInfo::collect(),
        iterations: 1000,
        runs: 3,
        records: vec![
            ok("__bench_uprobe", "native", vec![1.0, 2.0, 3.0]),
            ok("__bench_uprobe", "kernel", vec![2500.0, 2600.0, 2550.0]),
            ok("syscall_write", "native", vec![120.0, 130.0, 125.0]),
            Record {
                row: "__bench_uprobe".into(),
                env: "pkbpf-mpk".into(),
                status: "unavailable".into(),
                reason: Some("no PKU (CPUID.7.0:ECX.PKU=0)".into()),
                samples_ns: Vec::new(),
                summary: None,
            },
        ],
    }
}

#[test]
fn json_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    let rep = sample_report();
    rep.write_json(&path).unwrap();
    let back = Report::read_json(&path).unwrap();
    assert_eq!(back, rep);
    assert_eq!(back.median("__bench_uprobe", "kernel"), Some(2550.0));
    assert_eq!(back.median("__bench_uprobe", "pkbpf-mpk"), None);

    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(SCHEMA, "other/9");
    std::fs::write(&path, text).unwrap();
    assert!(matches!(
        Report::read_json(&path),
        Err(BenchError::BadOutput {
            reason: "unknown schema",
            ..
        })
    ));
    std::fs::write(&path, "{").unwrap();
    assert!(matches!(
        Report::read_json(&path),
        Err(BenchError::Json { .. })
    ));
}

#[test]
fn text_report_has_the_table_and_the_reasons() {
    let text = sample_report().text();
    assert!(text.starts_with("cpu: "), "{text}");
    assert!(text.contains("PKU: "));
    assert!(text.contains("probe/tracepoint (median ns)"));
    // kernel / pkbpf speedup column is '-' while pkbpf has no number.
    let line = text
        .lines()
        .find(|l| l.starts_with("__bench_uprobe ") && l.contains("unavailable"))
        .unwrap();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        cols,
        ["__bench_uprobe", "2.0", "2550.0", "-", "unavailable", "-"],
        "{line}"
    );
    assert!(
        text.contains("pkbpf-mpk: unavailable: no PKU (CPUID.7.0:ECX.PKU=0)"),
        "{text}"
    );
}

#[test]
fn charts_are_written_and_not_empty() {
    let dir = tempfile::tempdir().unwrap();
    let data = ChartData::from_report(&sample_report());
    assert_eq!(
        data.rows,
        vec!["__bench_uprobe".to_string(), "syscall_write".to_string()]
    );
    assert_eq!(data.envs, vec!["native".to_string(), "kernel".to_string()]);
    assert_eq!(data.values[1], vec![Some(125.0), None]);
    let svg = write_svg(&data, &dir.path().join("c.svg")).unwrap();
    let png = write_png(&data, &dir.path().join("c.png")).unwrap();
    let svg_text = std::fs::read_to_string(svg).unwrap();
    assert!(svg_text.contains("<svg"));
    assert!(svg_text.contains("<rect"));
    let png_bytes = std::fs::read(png).unwrap();
    assert_eq!(&png_bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(png_bytes.len() > 1000);
}

#[test]
fn kload_lines_parse() {
    let lines: Vec<String> = [
        "probe bench_uprobe 1000",
        "unsupported bench_probe_write Invalid argument",
        "unattached bench_sys_exit_write No such file or directory",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let rep = parse_kload_lines(&lines).unwrap();
    assert_eq!(rep.run_counts.get("bench_uprobe"), Some(&1000));
    assert_eq!(
        rep.unsupported.get("bench_probe_write").map(String::as_str),
        Some("Invalid argument")
    );
    assert!(rep.unattached.contains_key("bench_sys_exit_write"));
    let skipped = parse_kload_lines(&["skipped: kernel rows: not root".to_string()]).unwrap();
    assert_eq!(skipped.skipped.as_deref(), Some("not root"));
    assert!(matches!(
        parse_kload_lines(&["probe x many".to_string()]),
        Err(BenchError::BadOutput { tool: "kload", .. })
    ));
}

#[test]
fn every_row_has_its_kernel_programs() {
    for f in TARGET_FUNCTIONS {
        assert!(!kernel_programs(f).is_empty(), "{f}");
    }
    assert_eq!(
        kernel_programs("__bench_per_cpu_hash_map_delete"),
        vec!["bench_per_cpu_hash_map_delete"]
    );
    assert_eq!(kernel_programs(SYSCALL_ROW), vec!["bench_sys_exit_write"]);
    assert_eq!(kernel_programs("embedded_call"), Vec::<String>::new());
}

#[test]
fn pkbpf_mpk_environment_is_unavailable_without_pku_never_emulated() {
    use pkbpf_bench::inproc::PkbpfInProcess;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        workdir: dir.path().to_path_buf(),
        target: dir.path().join("unused"),
        iterations: 10,
    };
    let mut mpk = PkbpfInProcess::new(PkbpfSandbox::Mpk);
    assert_eq!(mpk.name(), "pkbpf-mpk");
    match (pkbpf_sandbox::detect(), mpk.prepare(&setup)) {
        (pkbpf_sandbox::PkuStatus::Missing(_), Readiness::Unavailable(r)) => {
            assert!(r.starts_with("no PKU ("), "{r}")
        }
        (pkbpf_sandbox::PkuStatus::Available, Readiness::Ready) => {
            // Real protection keys: the rows run in MPK domains.
            let cells = mpk.run_once(&setup).unwrap();
            assert_eq!(cells.len(), 18);
            mpk.finish();
        }
        (pku, other) => panic!("PKU {pku:?} but the mpk environment said {other:?}"),
    }
}

/// Real kernel uprobes where this machine allows them; prints a skip line
/// otherwise.
#[test]
fn kernel_rows_run_and_every_probe_fired() {
    let dir = tempfile::tempdir().unwrap();
    let target = build_target(dir.path()).unwrap();
    let setup = Setup {
        workdir: dir.path().to_path_buf(),
        target,
        iterations: 200,
    };
    let mut k = Kernel::new();
    match k.prepare(&setup) {
        Readiness::Ready => {}
        other => {
            println!(
                "skipped: kernel_rows_run_and_every_probe_fired: {}",
                other.reason().unwrap_or("")
            );
            return;
        }
    }
    let cells = k.run_once(&setup).unwrap();
    use pkbpf_bench::env::Cell;
    let uprobe = cells.get("__bench_uprobe").unwrap();
    match uprobe {
        Cell::Ns(ns) => assert!(*ns > 0.0),
        Cell::NotRun(why) if why.contains("skipped") || why.contains("bpf") => {
            println!("skipped: kernel_rows_run_and_every_probe_fired: {why}");
            return;
        }
        Cell::NotRun(why) => panic!("uprobe row did not run: {why}"),
    }
    // kload exits 3 (an error here) when a loaded probe fired fewer than
    // `iterations` times, so reaching this point means every one did.
    assert_eq!(cells.len(), 18);
}

/// pkbpf's own probes on the victim's functions, in this process, and its
/// syscall tracepoint on this thread: every row runs (the hit counts are
/// checked inside `run_once`).
#[test]
fn pkbpf_in_process_rows_run_and_probes_fire() {
    use pkbpf_bench::env::Cell;
    use pkbpf_bench::inproc::PkbpfInProcess;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        workdir: dir.path().to_path_buf(),
        target: dir.path().join("unused"),
        iterations: 50,
    };
    let mut env = PkbpfInProcess::new(PkbpfSandbox::None);
    assert_eq!(env.name(), "pkbpf-none");
    match env.prepare(&setup) {
        Readiness::Ready => {}
        other => panic!("pkbpf in-process environment not ready: {other:?}"),
    }
    let cells = env.run_once(&setup).unwrap();
    assert_eq!(cells.len(), 18);
    for f in [
        "__bench_uprobe",
        "__bench_uretprobe",
        "__bench_uprobe_uretprobe",
        "__bench_array_map_lookup",
    ] {
        match &cells[f] {
            Cell::Ns(ns) => assert!(*ns > 0.0, "{f}"),
            Cell::NotRun(why) => panic!("{f} did not run: {why}"),
        }
    }
    // The syscall row: pkbpf's sys_exit_write program on this thread's
    // write()s (the hit count is checked inside `run_once`).
    match &cells[SYSCALL_ROW] {
        Cell::Ns(ns) => assert!(*ns > 0.0),
        Cell::NotRun(why) => panic!("{SYSCALL_ROW} did not run: {why}"),
    }
    env.finish();
}
