//! Real programs on real targets through `pkbpf run` (issue 8): a
//! funclatency-style latency histogram of a C target's function, checked
//! against the kernel running the same object when `bpf()` works, and a
//! bashreadline-style uretprobe on `readline` in an interactive bash driven
//! through a pseudo-terminal.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{cc, have_tools, pkbpf};

/// How long to wait for a line the test needs (a loaded 2-core machine
/// compiling in parallel can be very slow; this is a hang guard only).
const WAIT: Duration = Duration::from_secs(120);

/// The number of `work(0)` and of `work(1)` calls tests/targets/sleeper.c
/// makes.
const CALLS: u64 = 20;

/// `1 << SLOW_SLOT` ns (about 1 ms) is below the 2 ms each slow call sleeps.
const SLOW_SLOT: u32 = 20;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(obj: &Path, cwd: &Path, cmd: &[&str]) -> Output {
    common::pkbpf_run(Command::new(pkbpf()), obj, cwd, &[], cmd)
}

/// The lines of `out` from the map header `header` to the next one.
fn map_section<'a>(out: &'a str, header: &str) -> &'a str {
    common::map_section(out, header).unwrap_or_else(|| panic!("no {header:?} in {out}"))
}

/// A `u32 -> u64` map's entries from `key: K  value: V` lines, BTF-decoded
/// or in hex.
fn u32_u64_entries(section: &str) -> BTreeMap<u32, u64> {
    let mut m = BTreeMap::new();
    for line in section.lines() {
        let Some(rest) = line.strip_prefix("key: ") else {
            continue;
        };
        let (k, v) = rest.split_once("  value: ").expect("key/value line");
        let entry = match (k.parse(), v.parse()) {
            (Ok(k), Ok(v)) => (k, v),
            _ => {
                let (k, v) = (common::hex_bytes(k), common::hex_bytes(v));
                assert_eq!((k.len(), v.len()), (4, 8), "{line}");
                (
                    u32::from_ne_bytes(k.try_into().unwrap()),
                    u64::from_ne_bytes(v.try_into().unwrap()),
                )
            }
        };
        assert!(m.insert(entry.0, entry.1).is_none(), "key twice: {line}");
    }
    m
}

/// Checks a latency histogram of sleeper's 2 x CALLS calls of work().
fn check_histogram(who: &str, hist: &BTreeMap<u32, u64>) {
    let total: u64 = hist.values().sum();
    assert_eq!(total, 2 * CALLS, "{who}: one count per call: {hist:?}");
    let slow: u64 = hist.range(SLOW_SLOT..).map(|(_, n)| n).sum();
    // Every slow call slept 2 ms, so its slot's lower bound is >= 2^20 ns;
    // a fast call may land there too when the machine preempts it.
    assert!(slow >= CALLS, "{who}: {slow} calls >= 1 ms: {hist:?}");
    // The fast calls return at once: the lowest used slot is far below a
    // millisecond (one fast call in 20 not being preempted for 1 ms is
    // enough, so a loaded machine does not break this).
    let lowest = hist.iter().find(|(_, n)| **n > 0).map(|(s, _)| *s);
    assert!(
        lowest.is_some_and(|s| s < SLOW_SLOT),
        "{who}: no fast call below 1 ms: {hist:?}"
    );
}

#[test]
fn funclatency_histogram_counts_every_call() {
    let test = "funclatency_histogram_counts_every_call";
    if !have_tools(test) {
        return;
    }
    let Some(obj) = common::compile("real_funclatency", "funclatency") else {
        return;
    };
    // The sections name `sleeper`, relative to the working directory.
    let dir = tempfile::tempdir().unwrap();
    cc("sleeper", dir.path(), "sleeper");
    let o = run(&obj, dir.path(), &["./sleeper"]);
    assert!(o.status.success(), "pkbpf run failed");
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(err.contains("attached work_entry (uprobe)"), "{err}");
    assert!(err.contains("attached work_return (uretprobe)"), "{err}");
    assert!(out.contains("sum 60"), "work() still returns slow + 1");
    let pid: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("pid ")?.parse().ok())
        .expect("the target's pid line");
    for prog in ["work_entry", "work_return"] {
        assert!(
            out.contains(&format!(
                "prog {prog} [pid {pid}]: {} hits, 0 errors",
                2 * CALLS
            )),
            "{prog}: {out}"
        );
    }
    let hist = u32_u64_entries(map_section(&out, &format!("map hist [pid {pid}]")));
    assert_eq!(hist.len(), 64, "the array holds all 64 slots: {hist:?}");
    check_histogram("pkbpf", &hist);
    // Each return deleted its thread's start time.
    let starts = map_section(&out, &format!("map starts [pid {pid}]"));
    assert!(starts.contains("Found 0 elements"), "{starts}");
    assert!(!starts.contains("key: "), "{starts}");

    kernel_histogram(test, &obj, dir.path(), &hist);
}

/// When kernel eBPF works here (root, libbpf), the kernel runs the same
/// object on the same target (tests/targets/ksys.c: libbpf auto-attach,
/// then the `hist` map printed) and its histogram passes the same checks
/// with the same total as pkbpf's.
fn kernel_histogram(test: &str, obj: &Path, dir: &Path, ours: &BTreeMap<u32, u64>) {
    let ksys = dir.join("ksys");
    if !common::build_libbpf_loader(test, "tests/targets/ksys.c", &ksys) {
        return;
    }
    // libbpf resolves the section's bare `sleeper` through PATH.
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let Some(kout) = common::run_kernel_loader(
        test,
        Command::new(&ksys)
            .arg(obj)
            .args(["hist", "--", "sleeper"])
            .current_dir(dir)
            .env("PATH", path),
    ) else {
        return;
    };
    let kernel: BTreeMap<u32, u64> = kout
        .lines()
        .filter_map(|l| {
            let (k, v) = l.strip_prefix("key ")?.split_once(" value ")?;
            Some((k.parse().ok()?, v.parse().ok()?))
        })
        .collect();
    assert_eq!(kernel.len(), 64, "{kout}");
    eprintln!("kernel histogram: {kernel:?}");
    check_histogram("kernel", &kernel);
    assert_eq!(
        kernel.values().sum::<u64>(),
        ours.values().sum::<u64>(),
        "kernel {kernel:?} vs pkbpf {ours:?}"
    );
}

/// A pseudo-terminal pair: (master, slave).
fn openpty() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    let (mut m, mut s) = (-1, -1);
    // SAFETY: both out-pointers are valid; the name, termios and winsize
    // arguments may be null.
    let rc = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty returned two fresh descriptors that nothing else owns.
    unsafe { (std::fs::File::from_raw_fd(m), std::fs::File::from_raw_fd(s)) }
}

/// Streams `pipe`'s lines into `tx` (tagged with `tag`) until it closes.
fn forward(
    pipe: impl std::io::Read + Send + 'static,
    tag: &'static str,
    tx: mpsc::Sender<(&'static str, String)>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send((tag, line)).is_err() {
                break;
            }
        }
    });
}

/// Collects lines from `rx` into `seen` until one satisfies `want` (one
/// already in `seen` counts: pkbpf's streams interleave freely, e.g. the
/// last ring buffer record may come after the target's exit line).
fn wait_for(
    child: &mut Child,
    rx: &mpsc::Receiver<(&'static str, String)>,
    seen: &mut Vec<(&'static str, String)>,
    what: &str,
    want: impl Fn(&str, &str) -> bool,
) {
    if seen.iter().any(|(t, l)| want(t, l)) {
        return;
    }
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok((tag, line)) => {
                let hit = want(tag, &line);
                seen.push((tag, line));
                if hit {
                    return;
                }
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("waiting for {what}: {e}; seen so far: {seen:#?}");
            }
        }
    }
}

/// The `{pid, line}` records of the `lines` ring buffer.
fn readline_records(seen: &[(&str, String)]) -> Vec<(u32, String)> {
    seen.iter()
        .filter(|(tag, _)| *tag == "out")
        .filter_map(|(_, l)| {
            let hex = l.strip_prefix("ringbuf lines [pid ")?.split_once("]: ")?.1;
            let b = common::hex_bytes(hex);
            assert_eq!(b.len(), 84, "{l}");
            let pid = u32::from_ne_bytes(b[..4].try_into().unwrap());
            let s = &b[4..];
            let end = s.iter().position(|c| *c == 0).expect("NUL-terminated");
            // The program zeroes the record before bpf_probe_read_user_str,
            // which (as in the kernel) writes nothing past the terminator:
            // no bytes of the target's memory after the string leak in.
            assert!(s[end..].iter().all(|c| *c == 0), "bytes past the NUL: {l}");
            Some((pid, String::from_utf8_lossy(&s[..end]).into_owned()))
        })
        .collect()
}

#[test]
fn bashreadline_sees_the_typed_lines() {
    let test = "bashreadline_sees_the_typed_lines";
    if !have_tools(test) {
        return;
    }
    // The probe is on an exported `readline` of /bin/bash (Debian's bash
    // links readline statically and exports it).
    let bash = std::fs::read("/bin/bash").unwrap_or_default();
    let exported = goblin::elf::Elf::parse(&bash).is_ok_and(|e| {
        e.dynsyms
            .iter()
            .any(|s| s.st_value != 0 && e.dynstrtab.get_at(s.st_name) == Some("readline"))
    });
    if !exported {
        println!("skipped: {test}: /bin/bash exports no readline");
        return;
    }
    let Some(obj) = common::compile("real_bashreadline", "bashreadline") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut master, slave) = openpty();
    // bash's stdin is the terminal (so it reads through readline); its
    // output and pkbpf's go to pipes. The pty is not made the controlling
    // terminal: bash then runs without job control, which is fine here.
    let mut child = Command::new(pkbpf())
        .args(["--sandbox", "none", "run"])
        .arg(&obj)
        .args(["--", "bash", "--norc", "--noprofile", "-i"])
        .current_dir(dir.path())
        .env("TERM", "dumb")
        .env("INPUTRC", "/dev/null")
        .env("HISTFILE", dir.path().join("history"))
        .env("PS1", "pkbpf-prompt$ ")
        .stdin(Stdio::from(slave))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pkbpf run");
    let (tx, rx) = mpsc::channel();
    forward(child.stdout.take().unwrap(), "out", tx.clone());
    forward(child.stderr.take().unwrap(), "err", tx);
    let mut seen = Vec::new();
    wait_for(&mut child, &rx, &mut seen, "the probe attached", |t, l| {
        t == "err" && l.contains("attached bash_readline (uretprobe)")
    });
    // Each line is typed once the previous one came back through the ring
    // buffer, so readline reads them one at a time.
    master.write_all(b"echo hello-pkbpf\n").unwrap();
    wait_for(
        &mut child,
        &rx,
        &mut seen,
        "the first line's record",
        |t, l| t == "out" && l.starts_with("ringbuf lines [pid "),
    );
    master.write_all(b"exit\n").unwrap();
    wait_for(
        &mut child,
        &rx,
        &mut seen,
        "the second line's record",
        |t, l| {
            t == "out"
                && l.starts_with("ringbuf lines [pid ")
                && readline_records(&[(t, l.to_string())])
                    .iter()
                    .any(|r| r.1 == "exit")
        },
    );
    // bash exits on `exit`, and pkbpf after it.
    wait_for(&mut child, &rx, &mut seen, "the target's exit", |t, l| {
        t == "err" && l.starts_with("pkbpf: pid ") && l.ends_with(": exited")
    });
    let status = child.wait().expect("wait for pkbpf");
    // The forwarding threads end when pkbpf's pipes close.
    seen.extend(rx.iter());
    drop(master);
    eprintln!("{seen:#?}");
    assert!(status.success(), "pkbpf run: {status}");
    let pid: u32 = seen
        .iter()
        .filter(|(t, _)| *t == "err")
        .find_map(|(_, l)| {
            l.strip_prefix("pkbpf: pid ")?
                .strip_suffix(": agent running")?
                .parse()
                .ok()
        })
        .expect("the agent's pid line");
    let records = readline_records(&seen);
    assert_eq!(
        records,
        [
            (pid, "echo hello-pkbpf".to_string()),
            (pid, "exit".to_string())
        ],
        "{seen:#?}"
    );
    // The typed command really ran in that bash.
    assert!(
        seen.iter().any(|(t, l)| *t == "out" && l == "hello-pkbpf"),
        "{seen:#?}"
    );
}
