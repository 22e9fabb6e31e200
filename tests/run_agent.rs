//! `pkbpf run` end to end: real objects on real targets through the preload
//! agent (`libpkbpf_agent.so`), checking what the probes counted and printed.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{cc, have_tools, pkbpf};

fn run(obj: &Path, cwd: &Path, extra: &[&str], cmd: &[&str]) -> Output {
    common::pkbpf_run(Command::new(pkbpf()), obj, cwd, extra, cmd)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// How far apart two runs' malloc/free counts may be beyond the target's own
/// calls: the agent allocates in the target while it attaches the second
/// probe, a few times more or less depending on the process's mappings
/// (seen: 3). Programs probing functions of their own (the bench and thread
/// tests) are checked exactly.
const SLACK: u64 = 16;

/// The `malloc_counts` entries printed by `pkbpf run`: (pid, mallocs,
/// frees), from hex lines (`--hex`) or BTF-decoded ones.
fn malloc_counts(out: &str) -> Vec<(u32, u64, u64)> {
    let mut v = Vec::new();
    for line in out.lines() {
        let Some(rest) = line.strip_prefix("key: ") else {
            continue;
        };
        let (k, val) = rest.split_once("  value: ").expect("key/value line");
        if let Some(fields) = val.strip_prefix("{\"mallocs\": ") {
            let (m, f) = fields
                .strip_suffix('}')
                .and_then(|x| x.split_once(", \"frees\": "))
                .unwrap_or_else(|| panic!("decoded value: {line}"));
            v.push((
                k.parse().expect("decoded pid"),
                m.parse().expect("mallocs"),
                f.parse().expect("frees"),
            ));
            continue;
        }
        let k = common::hex_bytes(k);
        let val = common::hex_bytes(val);
        assert_eq!((k.len(), val.len()), (4, 16), "{line}");
        v.push((
            u32::from_ne_bytes(k.try_into().unwrap()),
            u64::from_ne_bytes(val[..8].try_into().unwrap()),
            u64::from_ne_bytes(val[8..].try_into().unwrap()),
        ));
    }
    v
}

/// The pid of the process whose agent started fresh (not forked).
fn agent_pid(err: &str) -> u32 {
    err.lines()
        .find_map(|l| {
            l.strip_prefix("pkbpf: pid ")?
                .strip_suffix(": agent running")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no agent line in {err}"))
}

/// The pid a target printed as `PREFIX <pid>`.
fn printed_pid(out: &str, prefix: &str) -> u32 {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix:?} line in {out}"))
}

#[test]
fn malloc_counter_counts_the_targets_calls() {
    if !have_tools("malloc_counter_counts_the_targets_calls") {
        return;
    }
    let Some(obj) = common::compile("run_malloc", "malloc_free") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let exe = cc("mallocs", dir.path(), "mallocs");
    let mut counts = Vec::new();
    for n in [1000u64, 3000] {
        let o = run(
            &obj,
            dir.path(),
            &[],
            &[exe.to_str().unwrap(), &n.to_string()],
        );
        assert!(o.status.success(), "pkbpf run failed");
        let out = stdout(&o);
        assert!(stderr(&o).contains("attached count_malloc (uprobe)"));
        assert!(stderr(&o).contains("attached count_free (uprobe)"));
        let pid = printed_pid(&out, "pid ");
        assert!(
            out.contains(&format!("key: {pid}  value: {{\"mallocs\": ")),
            "BTF-decoded entry: {out}"
        );
        let c = malloc_counts(&out);
        assert_eq!(c.len(), 1, "one process, one entry: {c:?}");
        let (p, m, f) = c[0];
        assert_eq!(p, pid, "keyed by the target's pid");
        assert!(m >= n && f >= n, "{m} mallocs, {f} frees for {n} pairs");
        // The hit counts the agent reports agree with the map.
        assert!(out.contains(&format!(
            "prog count_malloc [pid {pid}]: {m} hits, 0 errors"
        )));
        assert!(out.contains(&format!("prog count_free [pid {pid}]: {f} hits, 0 errors")));
        counts.push((m, f));
    }
    // The target's startup and the agent's own work after the malloc probe
    // is in are nearly the same in both runs (the agent's allocations while
    // it attaches vary by a few with the layout of /proc/self/maps): the
    // difference is the 2000 extra pairs.
    let near = |d: u64| d.abs_diff(2000) <= SLACK;
    assert!(near(counts[1].0 - counts[0].0), "{counts:?}");
    assert!(near(counts[1].1 - counts[0].1), "{counts:?}");
}

#[test]
fn forked_child_counts_under_its_own_pid() {
    if !have_tools("forked_child_counts_under_its_own_pid") {
        return;
    }
    let Some(obj) = common::compile("run_fork", "malloc_free") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let exe = cc("mallocs", dir.path(), "mallocs");
    let o = run(
        &obj,
        dir.path(),
        &[],
        &[exe.to_str().unwrap(), "500", "fork"],
    );
    assert!(o.status.success());
    let out = stdout(&o);
    let parent = printed_pid(&out, "pid ");
    let child = printed_pid(&out, "child pid ");
    assert_ne!(parent, child);
    assert!(
        stderr(&o).contains(&format!(
            "pid {child}: agent running (forked from {parent})"
        )),
        "the child reports its own pid"
    );
    let c = malloc_counts(&out);
    let get = |pid| c.iter().find(|e| e.0 == pid).copied();
    let (_, cm, cf) = get(child).expect("an entry for the child's pid");
    let (_, pm, pf) = get(parent).expect("an entry for the parent's pid");
    assert!(
        (500..600).contains(&cm) && (500..600).contains(&cf),
        "child {cm}/{cf}"
    );
    assert!(pm >= 500 && pf >= 500, "parent {pm}/{pf}");
    assert_eq!(c.len(), 2, "{c:?}");
}

#[test]
fn bench_probes_fire_once_per_call() {
    if !have_tools("bench_probes_fire_once_per_call") {
        return;
    }
    let Some(obj) = common::compile("run_bench", "bench_uprobe") else {
        return;
    };
    // The object's sections name `benchmark/test`, relative to the cwd.
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("benchmark/test");
    std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
    let st = Command::new("cc")
        .args(["-O2", "-fno-inline", "-o"])
        .arg(&exe)
        .arg(common::root().join("benchmark/target/bench_target.c"))
        .status()
        .unwrap();
    assert!(st.success());
    let n = 2000;
    let plain = Command::new(&exe).arg(n.to_string()).output().unwrap();
    let o = run(&obj, dir.path(), &[], &["benchmark/test", &n.to_string()]);
    assert!(o.status.success());
    let out = stdout(&o);
    let pid = agent_pid(&stderr(&o));
    for prog in [
        "bench_uprobe",
        "bench_uretprobe",
        "bench_uprobe_both_entry",
        "bench_uprobe_both_exit",
    ] {
        assert!(
            out.contains(&format!("prog {prog} [pid {pid}]: {n} hits, 0 errors")),
            "{prog} fired {n} times"
        );
    }
    // The probes do not change what the functions return.
    let checksum = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("checksum"))
            .map(String::from)
    };
    assert_eq!(
        checksum(&out),
        checksum(&String::from_utf8_lossy(&plain.stdout))
    );
    assert!(checksum(&out).is_some());

    // --prog attaches only the one named.
    let o = run(
        &obj,
        dir.path(),
        &["--prog", "bench_uretprobe"],
        &["benchmark/test", "10"],
    );
    assert!(o.status.success());
    let out = stdout(&o);
    assert!(out.contains("prog bench_uretprobe"), "{out}");
    assert!(!out.contains("prog bench_uprobe "), "{out}");
}

#[test]
fn printk_lines_stream_in_trace_pipe_format() {
    if !have_tools("printk_lines_stream_in_trace_pipe_format") {
        return;
    }
    let Some(obj) = common::compile("run_printk", "../targets/greet") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let exe = cc("greet", dir.path(), "greet");
    let o = run(&obj, dir.path(), &[], &[exe.to_str().unwrap()]);
    assert!(o.status.success());
    let out = stdout(&o);
    let pid = agent_pid(&stderr(&o));
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("bpf_trace_printk: "))
        .collect();
    let msgs: Vec<&str> = lines
        .iter()
        .map(|l| l.split_once("bpf_trace_printk: ").unwrap().1)
        .collect();
    assert_eq!(
        msgs,
        [
            "greet entry 7",
            "greet returned 14",
            "greet entry 8",
            "greet returned 16",
            "greet entry 9",
            "greet returned 18"
        ]
    );
    for l in lines {
        assert!(
            l.contains(&format!("greet-{pid} [")),
            "trace_pipe task field: {l}"
        );
    }
    assert!(out.contains("sum 48"));
}

#[test]
fn malloc_counter_on_real_programs() {
    if !have_tools("malloc_counter_on_real_programs") {
        return;
    }
    let Some(obj) = common::compile("run_real", "malloc_free") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cmds: Vec<Vec<&str>> = vec![vec!["ls", "-l", "/"]];
    if common::have("python3") {
        cmds.push(vec![
            "python3",
            "-c",
            "print(sum(len(str(i)) for i in range(10000)))",
        ]);
    }
    for cmd in cmds {
        let o = run(&obj, dir.path(), &[], &cmd);
        assert!(o.status.success(), "{cmd:?}");
        let c = malloc_counts(&stdout(&o));
        assert!(!c.is_empty(), "{cmd:?}: no counts");
        assert!(c.iter().all(|e| e.1 > 0 && e.2 > 0), "{cmd:?}: {c:?}");
    }
}

#[test]
fn bad_object_fails_before_the_target_starts() {
    if !have_tools("bad_object_fails_before_the_target_starts") {
        return;
    }
    let Some(obj) = common::compile("run_bad", "../targets/bad_uprobe") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    let o = run(
        &obj,
        dir.path(),
        &[],
        &["sh", "-c", &format!("touch {}", marker.display())],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(!marker.exists(), "the target ran");
    let err = stderr(&o);
    assert!(
        err.contains("program past_ctx rejected by the verifier"),
        "{err}"
    );
    assert!(err.contains("verifier log:\n"), "{err}");
    assert!(err.contains("invalid bpf_context access off=4096"), "{err}");

    // A missing --prog is a bad request too.
    let Some(good) = common::compile("run_bad", "malloc_free") else {
        return;
    };
    let o = run(
        &good,
        dir.path(),
        &["--prog", "nope"],
        &["sh", "-c", &format!("touch {}", marker.display())],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(!marker.exists(), "the target ran");
    assert!(stderr(&o).contains("nope"));
}

#[test]
fn tracepoint_programs_attach_and_count() {
    if !have_tools("tracepoint_programs_attach_and_count") {
        return;
    }
    if !pkbpf_hooks::syscall::is_supported() {
        println!("skipped: tracepoint_programs_attach_and_count: no Syscall User Dispatch");
        return;
    }
    let Some(obj) = common::compile("run_tp", "syscount") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("listed-file"), b"x").unwrap();
    let o = run(&obj, dir.path(), &[], &["ls", "-a", "."]);
    let err = stderr(&o);
    assert!(!err.contains("not attached"), "{err}");
    assert!(
        err.contains("attached count_syscalls (raw_tracepoint)"),
        "{err}"
    );
    assert!(err.contains("attached count_openat (tracepoint)"), "{err}");
    assert!(o.status.success());
    let out = stdout(&o);
    assert!(out.contains("listed-file"), "{out}");
    // ls read the directory after the agent started: getdents64 (217) is
    // in the raw tracepoint's per-id counts, and the hit counts are there.
    let counts = common::map_section(&out, "map syscall_counts").expect("syscall_counts dumped");
    assert!(
        counts
            .lines()
            .any(|l| l.starts_with("key: 217  value: ")
                || l.starts_with("key: d9 00 00 00  value: ")),
        "{counts}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("prog count_syscalls [pid ") && !l.contains(": 0 hits")),
        "{out}"
    );
}

#[test]
fn target_exit_status_is_passed_through() {
    if !have_tools("target_exit_status_is_passed_through") {
        return;
    }
    let Some(obj) = common::compile("run_status", "malloc_free") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let o = run(&obj, dir.path(), &[], &["sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7));
}

#[test]
fn ringbuf_records_stream_in_hex() {
    if !have_tools("ringbuf_records_stream_in_hex") {
        return;
    }
    let Some(obj) = common::compile("run_ringbuf", "../targets/greet_ringbuf") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let exe = cc("greet", dir.path(), "greet");
    let o = run(&obj, dir.path(), &[], &[exe.to_str().unwrap()]);
    assert!(o.status.success());
    let pid = agent_pid(&stderr(&o));
    let out = stdout(&o);
    let prefix = format!("ringbuf greet_events [pid {pid}]: ");
    let records: Vec<(i32, u32)> = out
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|h| {
            let b = common::hex_bytes(h);
            assert_eq!(b.len(), 8, "{h}");
            (
                i32::from_ne_bytes(b[..4].try_into().unwrap()),
                u32::from_ne_bytes(b[4..].try_into().unwrap()),
            )
        })
        .collect();
    assert_eq!(records, [(7, pid), (8, pid), (9, pid)]);
}

#[test]
fn attach_failure_in_the_target_makes_run_fail() {
    if !have_tools("attach_failure_in_the_target_makes_run_fail") {
        return;
    }
    let Some(obj) = common::compile("run_attach_fail", "../targets/missing_symbol") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let o = run(
        &obj,
        dir.path(),
        &[],
        &["sh", "-c", &format!("touch {}", marker.display())],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("attaching program nothing_here failed"),
        "{err}"
    );
    assert!(err.contains("pkbpf_no_such_function"), "{err}");
    // The target itself ran: the failure is reported, not hidden.
    assert!(marker.exists());
}

#[test]
fn maps_are_dumped_when_the_target_is_killed() {
    if !have_tools("maps_are_dumped_when_the_target_is_killed") {
        return;
    }
    let Some(obj) = common::compile("run_killed", "malloc_free") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let exe = cc("mallocs", dir.path(), "mallocs");
    let o = run(
        &obj,
        dir.path(),
        &[],
        &[exe.to_str().unwrap(), "700", "kill"],
    );
    // 128 + SIGKILL, as a shell reports it.
    assert_eq!(o.status.code(), Some(137));
    let out = stdout(&o);
    let pid = printed_pid(&out, "pid ");
    // No exit handler ran in the target, so no hit counts; the loader still
    // reads the maps from the region the agent passed it.
    assert!(!out.contains("hits,"), "{out}");
    let c = malloc_counts(&out);
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].0, pid);
    assert!(c[0].1 >= 700 && c[0].2 >= 700, "{c:?}");
}

#[test]
fn ctrl_c_stops_the_target_and_the_maps_are_still_printed() {
    use std::os::unix::process::CommandExt;
    if !have_tools("ctrl_c_stops_the_target_and_the_maps_are_still_printed") {
        return;
    }
    let Some(obj) = common::compile("run_sigint", "malloc_free") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(pkbpf());
    child
        .args(["--sandbox", "none", "run"])
        .arg(&obj)
        .args(["--", "sleep", "30"])
        .current_dir(dir.path())
        .process_group(0);
    // A test run started as a background job of a non-interactive shell
    // inherits SIGINT ignored, and so would pkbpf and its target: give
    // them the disposition a terminal's foreground job has.
    // SAFETY: signal() is async-signal-safe; nothing else runs between fork
    // and exec.
    unsafe {
        child.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = child
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pgid = child.id() as i32;
    // Wait for the agent to report both probes attached, then Ctrl-C the
    // whole group as a terminal would.
    let stderr_pipe = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr_pipe).lines() {
            let line = line.unwrap();
            if line.contains("attached count_free") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("the agent attached");
    // SAFETY: kill has no memory preconditions; the group is ours.
    assert_eq!(unsafe { libc::kill(-pgid, libc::SIGINT) }, 0);
    let o = child.wait_with_output().unwrap();
    let out = stdout(&o);
    let err = reader.join().unwrap();
    eprintln!("{out}\n{err}");
    assert_eq!(o.status.code(), Some(130), "128 + SIGINT");
    assert!(err.contains("attached count_malloc"), "{err}");
    let c = malloc_counts(&out);
    assert_eq!(c.len(), 1, "{c:?}");
    assert!(c[0].1 > 0, "{c:?}");
}

/// When kernel eBPF works here (root), the kernel runs the same object on
/// the same target (libbpf, `benchmark/kernel/kload.c`) and its per-program
/// run counts equal the hit counts `pkbpf run` reports.
#[test]
fn kernel_agrees_on_bench_probe_counts() {
    let test = "kernel_agrees_on_bench_probe_counts";
    if !have_tools(test) {
        return;
    }
    let Some(obj) = common::compile("run_kernel", "bench_uprobe") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let kload = dir.path().join("kload");
    if !common::build_libbpf_loader(test, "benchmark/kernel/kload.c", &kload) {
        return;
    }
    let exe = dir.path().join("benchmark/test");
    std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
    let st = Command::new("cc")
        .args(["-O2", "-fno-inline", "-o"])
        .arg(&exe)
        .arg(common::root().join("benchmark/target/bench_target.c"))
        .status()
        .unwrap();
    assert!(st.success());
    let n = "3000";
    let Some(kout) = common::run_kernel_loader(
        test,
        Command::new(&kload)
            .arg("-o")
            .arg(&obj)
            .args(["--", "benchmark/test", n])
            .current_dir(dir.path()),
    ) else {
        return;
    };
    let kernel: Vec<(String, u64)> = kout
        .lines()
        .filter_map(|l| {
            let mut f = l.strip_prefix("probe ")?.split(' ');
            Some((f.next()?.to_string(), f.next()?.parse().ok()?))
        })
        .collect();
    assert_eq!(kernel.len(), 4, "{kout}");

    let o = run(&obj, dir.path(), &[], &["benchmark/test", n]);
    assert!(o.status.success());
    let out = stdout(&o);
    let pid = agent_pid(&stderr(&o));
    for (prog, count) in kernel {
        assert!(
            out.contains(&format!("prog {prog} [pid {pid}]: {count} hits, 0 errors")),
            "{prog}: the kernel ran it {count} times; pkbpf: {out}"
        );
    }
}

#[test]
fn probe_counts_are_exact_with_8_threads() {
    if !have_tools("probe_counts_are_exact_with_8_threads") {
        return;
    }
    let Some(obj) = common::compile("run_threads", "bench_uprobe") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    cc("threads", dir.path(), "benchmark/test");
    let n: u64 = 20_000;
    let o = run(
        &obj,
        dir.path(),
        &["--prog", "bench_uprobe"],
        &["benchmark/test", &n.to_string()],
    );
    assert!(o.status.success());
    let out = stdout(&o);
    let pid = agent_pid(&stderr(&o));
    assert!(
        out.contains(&format!(
            "prog bench_uprobe [pid {pid}]: {} hits, 0 errors",
            8 * n
        )),
        "{out}"
    );
    // Each call returns buf[i & 3] + 1 = '0'..'3' + 1; the probe changes nothing.
    let per_thread: u64 = (0..n).map(|i| u64::from(b'0') + (i & 3) + 1).sum();
    assert!(out.contains(&format!("total {}", 8 * per_thread)), "{out}");
}

#[test]
fn a_static_target_is_reported_not_silently_unprobed() {
    let test = "a_static_target_is_reported_not_silently_unprobed";
    if !have_tools(test) {
        return;
    }
    let Some(obj) = common::compile("run_static", "malloc_free") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("greet-static");
    let built = Command::new("cc")
        .args(["-static", "-O0", "-o"])
        .arg(&exe)
        .arg(common::root().join("tests/targets/greet.c"))
        .output()
        .unwrap();
    if !built.status.success() {
        println!("skipped: {test}: no static libc to link with");
        return;
    }
    let o = run(&obj, dir.path(), &[], &[exe.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("sum 48"), "the target ran");
    assert!(stderr(&o).contains("the agent never reported"));
}

#[test]
fn two_loaders_at_once_keep_their_outputs_apart() {
    if !have_tools("two_loaders_at_once_keep_their_outputs_apart") {
        return;
    }
    let Some(obj) = common::compile("run_two", "malloc_free") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let exe = cc("mallocs", dir.path(), "mallocs");
    let start = |n: &str| {
        Command::new(pkbpf())
            .args(["--sandbox", "none", "run"])
            .arg(&obj)
            .args(["--", exe.to_str().unwrap(), n])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (start("4000"), start("200"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success());
    let (ca, cb) = (malloc_counts(&stdout(&a)), malloc_counts(&stdout(&b)));
    assert_eq!((ca.len(), cb.len()), (1, 1), "{ca:?} {cb:?}");
    assert_eq!(ca[0].0, printed_pid(&stdout(&a), "pid "));
    assert_eq!(cb[0].0, printed_pid(&stdout(&b), "pid "));
    // Each loader sees only its own target: the extra 3800 pairs are a's
    // (within the agent's own variation, see SLACK).
    assert!((ca[0].1 - cb[0].1).abs_diff(3800) <= SLACK, "{ca:?} {cb:?}");
    assert!((ca[0].2 - cb[0].2).abs_diff(3800) <= SLACK, "{ca:?} {cb:?}");
}

#[test]
fn a_shell_that_forks_and_execs_gets_the_agent_in_each_program() {
    if !have_tools("a_shell_that_forks_and_execs_gets_the_agent_in_each_program") {
        return;
    }
    let Some(obj) = common::compile("run_exec", "malloc_free") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        &obj,
        dir.path(),
        &[],
        &["sh", "-c", "ls / > /dev/null; echo done"],
    );
    assert!(o.status.success());
    let err = stderr(&o);
    // sh, then ls in the process sh forked: each image loads the object
    // afresh (the environment carries LD_PRELOAD and the socket).
    let mut pids: Vec<u32> = err
        .lines()
        .filter_map(|l| {
            l.strip_prefix("pkbpf: pid ")?
                .strip_suffix(": agent running")?
                .parse()
                .ok()
        })
        .collect();
    pids.dedup();
    assert_eq!(pids.len(), 2, "{err}");
    let out = stdout(&o);
    for pid in pids {
        // Each image's own map: sh's map may also hold a few calls that
        // the forked child made before exec replaced it, under the
        // child's pid; what counts is the child's entry in its own map.
        let section = common::map_section(&out, &format!("map malloc_counts [pid {pid}]"))
            .unwrap_or_else(|| panic!("no map for pid {pid}: {out}"));
        let c = malloc_counts(section);
        let e = c.iter().find(|e| e.0 == pid).expect("an entry per image");
        assert!(e.1 > 0 && e.2 > 0, "{e:?} in {section}");
    }
}

#[test]
fn perf_event_records_stream_in_hex() {
    if !have_tools("perf_event_records_stream_in_hex") {
        return;
    }
    let Some(obj) = common::compile("run_perf", "../targets/greet_perf") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let exe = cc("greet", dir.path(), "greet");
    let o = run(&obj, dir.path(), &[], &[exe.to_str().unwrap()]);
    assert!(o.status.success());
    let pid = agent_pid(&stderr(&o));
    let out = stdout(&o);
    let prefix = format!("perf greet_perf [pid {pid} cpu ");
    let values: Vec<i64> = out
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            let (_, h) = rest.split_once("]: ").expect("perf line");
            i64::from_ne_bytes(common::hex_bytes(h).try_into().expect("8 bytes"))
        })
        .collect();
    assert_eq!(values, [14, 16, 18]);
}
