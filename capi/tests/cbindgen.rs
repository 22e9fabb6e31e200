//! Regenerates `include/pkbpf.h` with cbindgen (when installed) and fails if
//! the committed header differs: regenerate with
//! `cd capi && cbindgen --config cbindgen.toml --output include/pkbpf.h`.

mod common;

use std::path::Path;
use std::process::Command;

#[test]
fn committed_header_is_what_cbindgen_generates() {
    let test = "committed_header_is_what_cbindgen_generates";
    if !common::have("cbindgen") {
        // Optional tool: skip even under CI (tests/header.rs checks the header).
        println!("skipped: {test}: cbindgen not installed");
        return;
    }
    let capi = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = common::scratch(test).join("pkbpf.h");
    let o = Command::new("cbindgen")
        .current_dir(capi)
        .args(["--config", "cbindgen.toml", "--output"])
        .arg(&out)
        .output()
        .expect("run cbindgen");
    assert!(
        o.status.success(),
        "cbindgen failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let fresh = std::fs::read_to_string(&out).expect("read generated header");
    let committed =
        std::fs::read_to_string(capi.join("include/pkbpf.h")).expect("read committed header");
    if fresh != committed {
        let first = fresh
            .lines()
            .zip(committed.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(fresh.lines().count().min(committed.lines().count()));
        panic!(
            "include/pkbpf.h is stale (first difference at line {}): regenerate with \
             `cd capi && cbindgen --config cbindgen.toml --output include/pkbpf.h`",
            first + 1
        );
    }
}
