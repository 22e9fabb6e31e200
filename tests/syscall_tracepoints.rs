//! Syscall tracepoints end to end: `pkbpf run` with `tracepoint/syscalls/*`
//! and `raw_tracepoint/sys_{enter,exit}` programs on real targets, checked
//! against what the targets did (known call counts, return values, file
//! names) and against `strace`.
//!
//! What pkbpf cannot see, by design: system calls made before the agent's
//! constructor finished (the dynamic loader mapping libraries, other
//! libraries' constructors) and after its atexit handler detached the
//! programs (`exit_group`). The strace comparison therefore checks equality
//! only for calls `ls` makes from `main` alone, and `pkbpf ≤ strace` for the
//! rest.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use common::{cc_with, have, have_tools, pkbpf};

fn sud_supported(test: &str) -> bool {
    if pkbpf_hooks::syscall::is_supported() {
        return true;
    }
    println!("skipped: {test}: the kernel has no Syscall User Dispatch");
    false
}

/// Runs `pkbpf run OBJ -- CMD`; `sigsys_only` keeps libc's syscall sites
/// unrewritten, so every call takes the SIGSYS path.
fn run_mode(obj: &Path, cwd: &Path, cmd: &[&str], sigsys_only: bool) -> Output {
    let mut c = Command::new(pkbpf());
    if sigsys_only {
        c.env("PKBPF_NO_SYSCALL_REWRITE", "1");
    } else {
        c.env_remove("PKBPF_NO_SYSCALL_REWRITE");
    }
    common::pkbpf_run(c, obj, cwd, &[], cmd)
}

fn run(obj: &Path, cwd: &Path, cmd: &[&str]) -> Output {
    run_mode(obj, cwd, cmd, false)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
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

/// The forked children the loader reported.
fn forked_pids(err: &str) -> Vec<u32> {
    err.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("pkbpf: pid ")?;
            let (pid, tail) = rest.split_once(": ")?;
            tail.starts_with("agent running (forked from")
                .then(|| pid.parse().ok())
                .flatten()
        })
        .collect()
}

/// `key: K  value: V` lines of one map's dump (decimal keys and values).
fn map_entries(out: &str, map: &str) -> HashMap<i64, u64> {
    let header = format!("map {map} [");
    let start = out
        .find(&header)
        .unwrap_or_else(|| panic!("no map {map} in {out}"));
    let mut m = HashMap::new();
    for line in out[start..].lines().skip(1) {
        let Some(rest) = line.strip_prefix("key: ") else {
            break;
        };
        let (k, v) = rest.split_once("  value: ").expect("key/value line");
        m.insert(
            k.trim().parse().expect("decimal key"),
            v.trim().parse().expect("decimal value"),
        );
    }
    m
}

fn compile_target(dir: &Path) -> std::path::PathBuf {
    cc_with("syscalls", dir, "syscalls", &["-pthread"])
}

#[test]
fn syscall_counter_on_ls_agrees_with_strace() {
    let test = "syscall_counter_on_ls_agrees_with_strace";
    if !have_tools(test) || !sud_supported(test) {
        return;
    }
    if !have("strace") {
        common::skip(test, "strace not found");
        return;
    }
    let Some(obj) = common::compile("sys_ls", "syscount") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let listed = dir.path().join("listed");
    std::fs::create_dir(&listed).unwrap();
    for i in 0..6 {
        std::fs::write(listed.join(format!("file{i}")), b"x").unwrap();
    }
    let ls = ["ls", "-la", listed.to_str().unwrap()];

    let o = run(&obj, dir.path(), &ls);
    assert!(o.status.success());
    assert!(stdout(&o).contains("file5"), "ls listed the directory");
    let ours = map_entries(&stdout(&o), "syscall_counts");

    let trace = dir.path().join("strace.out");
    let st = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        .args(ls)
        .current_dir(dir.path())
        .output()
        .expect("run strace");
    assert!(st.status.success(), "strace failed");
    let mut theirs: HashMap<i64, u64> = HashMap::new();
    for line in std::fs::read_to_string(&trace).unwrap().lines() {
        // `PID name(args) = ret` (-f prefixes the pid).
        let head = line.split('(').next().unwrap_or("");
        let name = head.split_whitespace().last().unwrap_or("");
        if let Some(nr) = pkbpf_hooks::syscall::syscall_nr(name) {
            *theirs.entry(i64::from(nr)).or_default() += 1;
        }
    }
    let nr = |n: &str| i64::from(pkbpf_hooks::syscall::syscall_nr(n).unwrap());
    // Calls ls makes only from main: equal counts.
    let main_only = ["getdents64", "statx", "lgetxattr", "getxattr", "write"];
    let mut compared = 0;
    for name in main_only {
        let Some(&want) = theirs.get(&nr(name)) else {
            continue;
        };
        assert_eq!(
            ours.get(&nr(name)).copied().unwrap_or(0),
            want,
            "{name}: pkbpf {ours:?} vs strace {theirs:?}"
        );
        compared += 1;
    }
    assert!(
        theirs.contains_key(&nr("getdents64")) && compared >= 2,
        "ls made getdents64 and write calls: {theirs:?}"
    );
    // Everything else: never more than strace saw (memory management and
    // futexes depend on the agent's own allocations, so they are left out).
    let noisy = ["mmap", "munmap", "mprotect", "brk", "madvise", "futex"];
    for (&id, &n) in &ours {
        let name = pkbpf_hooks::syscall::syscall_name(id as u64).unwrap_or("?");
        if noisy.contains(&name) {
            continue;
        }
        let want = theirs.get(&id).copied().unwrap_or(0);
        assert!(n <= want, "{name} ({id}): pkbpf {n} > strace {want}");
    }
    // The tracepoint on sys_enter_openat counted what the raw one saw.
    let openat = map_entries(&stdout(&o), "openat_count");
    assert_eq!(
        openat.get(&0).copied().unwrap_or(0),
        ours.get(&nr("openat")).copied().unwrap_or(0)
    );
}

/// Counts, return values and pt_regs through raw tracepoints on a target
/// with a known number of calls: main thread, four threads, a signal
/// handler, the application's own SIGSYS handler, a fork child; with libc's
/// sites rewritten (the fast path) and without (SIGSYS only).
#[test]
fn known_calls_are_counted_exactly_with_their_contexts() {
    let test = "known_calls_are_counted_exactly_with_their_contexts";
    if !have_tools(test) || !sud_supported(test) {
        return;
    }
    let Some(obj) = common::compile("sys_known", "syscall_args") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_target(dir.path());
    for sigsys_only in [false, true] {
        known_calls_once(&obj, dir.path(), &exe, sigsys_only);
    }
}

fn known_calls_once(obj: &Path, dir: &Path, exe: &Path, sigsys_only: bool) {
    let o = run_mode(obj, dir, &[exe.to_str().unwrap()], sigsys_only);
    assert!(o.status.success());
    let out = stdout(&o);
    let err = stderr(&o);
    // The target's own view: signal handlers ran, read got its bytes, the
    // fork child exited cleanly.
    assert!(
        out.contains("usr1 10 sigsys 1 read 1234 child 0"),
        "target output: {out}"
    );
    let pid = agent_pid(&err);
    let children = forked_pids(&err);
    assert_eq!(children.len(), 1, "one fork child: {err}");
    // 100 on main + 4 threads x 50 + 10 in the SIGUSR1 handler.
    let enters = map_entries(&out, "getppid_enter");
    assert_eq!(enters.get(&i64::from(pid)), Some(&310), "{enters:?}");
    assert_eq!(enters.get(&i64::from(children[0])), Some(&7), "{enters:?}");
    // sys_exit_read saw the 1234-byte read once.
    let rets = map_entries(&out, "read_rets");
    assert_eq!(rets.get(&1234), Some(&1), "{rets:?}");
    // raw sys_exit found getppid in pt_regs->orig_ax (parent and child share
    // the map region); raw sys_enter's args[1] always equals orig_ax.
    let raw = map_entries(&out, "raw_counts");
    assert_eq!(raw.get(&0), Some(&317), "{raw:?}");
    assert_eq!(raw.get(&1), Some(&0), "{raw:?}");
    assert!(raw.get(&2).is_some_and(|&n| n >= 317), "{raw:?}");
    assert!(
        err.contains("attached raw_enter (raw_tracepoint)")
            && err.contains("attached exit_read (tracepoint)"),
        "{err}"
    );
}

/// A SIGALRM storm (100 us timer) while the main thread makes system calls
/// and sleeps: every getppid, the main loop's and the handlers', is counted
/// once, and the target finishes.
#[test]
fn signal_storm_target_keeps_working_and_is_counted_exactly() {
    let test = "signal_storm_target_keeps_working_and_is_counted_exactly";
    if !have_tools(test) || !sud_supported(test) {
        return;
    }
    let Some(obj) = common::compile("sys_storm", "syscall_args") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_target(dir.path());
    for sigsys_only in [false, true] {
        storm_once(&obj, dir.path(), &exe, sigsys_only);
    }
}

fn storm_once(obj: &Path, dir: &Path, exe: &Path, sigsys_only: bool) {
    let o = run_mode(obj, dir, &[exe.to_str().unwrap(), "--storm"], sigsys_only);
    assert!(o.status.success());
    let out = stdout(&o);
    let (loops, alarms) = out
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("storm loops ")?;
            let (l, a) = rest.split_once(" alarms ")?;
            Some((l.parse::<u64>().ok()?, a.trim().parse::<u64>().ok()?))
        })
        .unwrap_or_else(|| panic!("no storm line in {out}"));
    assert!(alarms >= 300);
    let pid = agent_pid(&stderr(&o));
    let enters = map_entries(&out, "getppid_enter");
    assert_eq!(
        enters.get(&i64::from(pid)),
        Some(&(loops + alarms)),
        "{enters:?}"
    );
}

/// opensnoop: `sys_enter_openat` events through a ring buffer carry the
/// file the target opened, its pid and comm; `sys_exit_openat` events carry
/// a file descriptor.
#[test]
fn opensnoop_ringbuf_names_the_file_the_target_opened() {
    let test = "opensnoop_ringbuf_names_the_file_the_target_opened";
    if !have_tools(test) || !sud_supported(test) {
        return;
    }
    let Some(obj) = common::compile("sys_opensnoop", "ringbuf_opensnoop") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_target(dir.path());
    let file = dir.path().join("opened-by-the-target.txt");
    std::fs::write(&file, b"x").unwrap();
    let o = run(
        &obj,
        dir.path(),
        &[exe.to_str().unwrap(), file.to_str().unwrap()],
    );
    assert!(o.status.success());
    let pid = agent_pid(&stderr(&o));
    let out = stdout(&o);
    let prefix = format!("ringbuf events [pid {pid}]: ");
    // struct event { u32 pid; int ret; char comm[16]; char filename[128]; }
    let events: Vec<(u32, i32, String, String)> = out
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|hex| {
            let b: Vec<u8> = hex
                .split_whitespace()
                .map(|x| u8::from_str_radix(x, 16).expect("hex byte"))
                .collect();
            assert_eq!(b.len(), 152, "{hex}");
            let cstr = |s: &[u8]| {
                let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
                String::from_utf8_lossy(&s[..end]).into_owned()
            };
            (
                u32::from_ne_bytes(b[0..4].try_into().unwrap()),
                i32::from_ne_bytes(b[4..8].try_into().unwrap()),
                cstr(&b[8..24]),
                cstr(&b[24..152]),
            )
        })
        .collect();
    let want = file.to_str().unwrap();
    let opened: Vec<_> = events.iter().filter(|e| e.3 == want).collect();
    assert_eq!(opened.len(), 1, "events: {events:?}");
    assert_eq!(opened[0].0, pid);
    assert_eq!(opened[0].2, "syscalls");
    // Exit events (empty file name) carry descriptors, and there is one per
    // entry event.
    let (enter, exit): (Vec<_>, Vec<_>) = events.iter().partition(|e| !e.3.is_empty());
    assert_eq!(enter.len(), exit.len(), "{events:?}");
    assert!(exit.iter().all(|e| e.1 >= 0), "{events:?}");
}

/// When kernel eBPF works here (root, libbpf), the kernel runs the same
/// object on the same target (`tests/targets/ksys.c`: libbpf auto-attach,
/// then a dump of `getppid_enter`) and counts what pkbpf counts: 310
/// getppid entries in the target process, 7 in its fork child.
#[test]
fn kernel_agrees_on_per_process_syscall_counts() {
    let test = "kernel_agrees_on_per_process_syscall_counts";
    if !have_tools(test) || !sud_supported(test) {
        return;
    }
    let Some(obj) = common::compile("sys_kernel", "syscall_args") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ksys = dir.path().join("ksys");
    if !common::build_libbpf_loader(test, "tests/targets/ksys.c", &ksys) {
        return;
    }
    let exe = compile_target(dir.path());
    let Some(kout) = common::run_kernel_loader(
        test,
        Command::new(&ksys)
            .arg(&obj)
            .args(["getppid_enter", "--"])
            .arg(&exe)
            .current_dir(dir.path()),
    ) else {
        return;
    };
    let target: i64 = kout
        .lines()
        .find_map(|l| l.strip_prefix("target ")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no target line: {kout}"));
    let kernel: HashMap<i64, u64> = kout
        .lines()
        .filter_map(|l| {
            let (k, v) = l.strip_prefix("key ")?.split_once(" value ")?;
            Some((k.parse().ok()?, v.trim().parse().ok()?))
        })
        .collect();

    let o = run(&obj, dir.path(), &[exe.to_str().unwrap()]);
    assert!(o.status.success());
    let err = stderr(&o);
    let ours = map_entries(&stdout(&o), "getppid_enter");
    let pid = i64::from(agent_pid(&err));
    let child = i64::from(forked_pids(&err)[0]);
    assert_eq!(
        kernel.get(&target),
        ours.get(&pid),
        "kernel {kernel:?} vs pkbpf {ours:?}"
    );
    assert_eq!(ours.get(&pid), Some(&310));
    // The kernel saw the fork child's calls too (other processes calling
    // getppid meanwhile may add entries of their own).
    let child_count = ours[&child];
    assert!(
        kernel
            .iter()
            .any(|(&p, &v)| p != target && v == child_count),
        "kernel {kernel:?} vs pkbpf child {child_count}"
    );
}
