//! `pkbpf inspect` and `pkbpf disasm` on the test objects: table and JSON
//! output, source-line comments, and clear errors for bad input.

mod common;

use std::process::Command;

fn pkbpf(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_pkbpf"))
        .args(args)
        .output()
        .expect("run pkbpf");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn inspect_json_describes_programs_maps_and_globals() {
    let Some(path) = common::compile(
        "inspect_json_describes_programs_maps_and_globals",
        "malloc_free",
    ) else {
        return;
    };
    let (ok, out, err) = pkbpf(&["inspect", "--json", path.to_str().unwrap()]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["license"], "GPL");
    let progs = v["programs"].as_array().unwrap();
    assert_eq!(progs.len(), 2);
    assert_eq!(progs[0]["name"], "count_malloc");
    assert_eq!(progs[0]["section"], "uprobe/libc.so.6:malloc");
    assert_eq!(progs[0]["kind"]["kind"], "uprobe");
    assert_eq!(progs[0]["kind"]["target"]["symbol"], "malloc");
    assert_eq!(progs[0]["target"], "libc.so.6:malloc");
    assert_eq!(progs[1]["target"], "libc.so.6:free");
    assert!(progs[0]["insns"].as_u64().unwrap() > 10);
    let maps = v["maps"].as_array().unwrap();
    assert_eq!(maps.len(), 1);
    assert_eq!(maps[0]["name"], "malloc_counts");
    assert_eq!(maps[0]["type"], "hash");
    assert_eq!(maps[0]["key_type"], "__u32");
    assert_eq!(maps[0]["value_type"], "struct counts");
    assert_eq!(
        (maps[0]["key_size"].as_u64(), maps[0]["value_size"].as_u64()),
        (Some(4), Some(16))
    );
    assert_eq!(maps[0]["max_entries"], 1024);
}

#[test]
fn inspect_table_lists_globals() {
    let Some(path) = common::compile("inspect_table_lists_globals", "calls_globals") else {
        return;
    };
    let (ok, out, err) = pkbpf(&["inspect", path.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("license: Dual MIT/GPL"), "{out}");
    let prog = out
        .lines()
        .find(|l| l.trim_start().starts_with("calls_main "))
        .unwrap();
    let cols: Vec<&str> = prog.split_whitespace().collect();
    assert_eq!(
        cols,
        vec![
            "calls_main",
            "uprobe/benchmark/test:__bench_calls",
            "uprobe",
            "benchmark/test:__bench_calls",
            "27"
        ]
    );
    assert!(out.contains("+0    volatile __u64 hits (8 bytes)"), "{out}");
    assert!(
        out.contains("+8    volatile __u32[4] scratch (16 bytes)"),
        "{out}"
    );
    assert!(out.contains("const volatile __u64 multiplier"), "{out}");
    // --btf adds the type table, with the loader's DATASEC fix-ups.
    let (ok, out, err) = pkbpf(&["inspect", "--btf", path.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("DATASEC '.bss' size=24 vlen=2"), "{out}");
    assert!(out.contains("offset=8 size=16 (VAR 'scratch')"), "{out}");
}

#[test]
fn disasm_interleaves_source_lines() {
    let Some(path) = common::compile("disasm_interleaves_source_lines", "calls_globals") else {
        return;
    };
    let (ok, out, err) = pkbpf(&["disasm", path.to_str().unwrap(), "calls_main"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("calls_main (section uprobe/benchmark/test:__bench_calls"));
    // The source line comes right before the first instruction it covers.
    let i = lines
        .iter()
        .position(|l| *l == "; hits++;")
        .expect("source line");
    assert!(
        lines[i + 1].trim_start().starts_with("4: r1 = "),
        "{}",
        lines[i + 1]
    );
    assert!(
        lines.contains(&"<add_scaled>:") && lines.contains(&"<scale>:"),
        "{out}"
    );
    // Only the requested program.
    assert!(!out.contains("calls_second"));
    // An unknown program is an error naming the ones that exist.
    let (ok, _, err) = pkbpf(&["disasm", path.to_str().unwrap(), "nope"]);
    assert!(!ok);
    assert!(
        err.contains("no program `nope`") && err.contains("calls_second"),
        "{err}"
    );
}

#[test]
fn bad_files_give_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("junk.o");
    std::fs::write(&p, b"\x7fELF not really").unwrap();
    let (ok, out, err) = pkbpf(&["inspect", p.to_str().unwrap()]);
    assert!(!ok && out.is_empty());
    assert!(err.starts_with("pkbpf: error: loading "), "{err}");
    assert!(err.contains("malformed ELF"), "{err}");
    let (ok, _, err) = pkbpf(&["disasm", dir.path().join("missing.o").to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("reading "), "{err}");
}
