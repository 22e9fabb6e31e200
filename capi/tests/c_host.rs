//! Builds `examples/c-host/host.c` with `cc` against `include/pkbpf.h` and
//! the cdylib, runs it on `tests/bpf/embedded.bpf.c` and checks what it
//! printed.

mod common;

use std::process::Command;

#[test]
fn c_host_loads_calls_and_reads_maps() {
    let test = "c_host_loads_calls_and_reads_maps";
    if !common::have("cc") {
        return common::skip(test, "cc not found");
    }
    let Some(libdir) = common::cdylib_dir() else {
        return common::skip(test, "libpkbpf.so not built next to the test binary");
    };
    let dir = common::scratch(test);
    let Some(obj) = common::compile(test, "embedded") else {
        return;
    };
    let root = common::root();
    let exe = dir.join("host");
    let o = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
        .arg("-I")
        .arg(root.join("capi/include"))
        .arg(root.join("examples/c-host/host.c"))
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(&libdir)
        .arg(format!("-Wl,-rpath,{}", libdir.display()))
        .arg("-lpkbpf")
        .output()
        .expect("run cc");
    assert!(
        o.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let run = Command::new(&exe).arg(&obj).output().expect("run host");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    println!("{stdout}");
    assert!(run.status.success(), "host failed:\n{stdout}\n{stderr}");
    let get = |key: &str| -> String {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= line in:\n{stdout}"))
            .to_string()
    };
    // 5 calls of add_inputs: (40+i) + 2 for i in 0..5.
    assert_eq!(get("sum"), "220");
    assert_eq!(get("mul"), "42");
    // add_inputs counted its 5 calls in legacy_counts[0].
    assert_eq!(get("count"), "5");
    // The host wrote 100, one more call made it 101.
    assert_eq!(get("count_after_update"), "101");
    assert_eq!(get("missing_program"), "null");
    assert_eq!(get("hash_absent"), "1");
    assert_eq!(get("hash_update"), "0");
    assert_eq!(get("hash_update_again_eexist"), "1");
    assert_eq!(get("hash_lookup"), "0 byte=0xab");
    assert_eq!(get("hash_delete"), "0");
    assert_eq!(get("hash_delete_again_enoent"), "1");
    assert_eq!(get("short_ctx"), format!("1 errno={}", libc::EINVAL));
    assert_eq!(
        get("short_ctx_message"),
        "program add_inputs: context is 4 bytes, expected 16"
    );
    assert_eq!(get("no_such_map_enoent"), "1");
    assert_eq!(get("null_key_einval"), "1");
    assert_eq!(get("null_rt_load"), "null");
    assert_eq!(get("junk_load"), format!("null errno={}", libc::EINVAL));
    let iso = get("isolation");
    assert!(iso.starts_with("pku ") || iso.starts_with("none "), "{iso}");
    assert_eq!(stdout.lines().last(), Some("done"));
}
