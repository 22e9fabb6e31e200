//! `pkbpf load` + `start` / `attach` / `map` end to end: a real loader in
//! the foreground, real targets (tests/targets/ticker.c) started through it
//! or injected with ptrace, and the maps read while they run.
//!
//! Every test uses its own sessions directory (`PKBPF_RUNTIME_DIR`), and
//! synchronises on output lines with generous deadlines: nothing depends on
//! how fast the machine is.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::{cc, have_tools, pkbpf};

/// How long any one expected line may take to appear.
const DEADLINE: Duration = Duration::from_secs(120);

/// The lines seen so far, and whether the pipe closed.
type Seen = Mutex<(Vec<String>, bool)>;

/// The lines a child writes to one pipe, collected by a thread.
#[derive(Clone)]
struct Lines(Arc<(Seen, Condvar)>);

impl Lines {
    fn collect(r: impl Read + Send + 'static) -> Lines {
        let l = Lines(Arc::new((Mutex::new((Vec::new(), false)), Condvar::new())));
        let l2 = l.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                let (m, cv) = &*l2.0;
                m.lock().unwrap().0.push(line);
                cv.notify_all();
            }
            let (m, cv) = &*l2.0;
            m.lock().unwrap().1 = true;
            cv.notify_all();
        });
        l
    }

    /// Waits for a line matching `pred`; panics with everything seen when
    /// none comes before the deadline or the pipe closes.
    fn wait(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let (m, cv) = &*self.0;
        let end = Instant::now() + DEADLINE;
        let mut g = m.lock().unwrap();
        loop {
            if let Some(l) = g.0.iter().find(|l| pred(l)) {
                return l.clone();
            }
            let now = Instant::now();
            if g.1 || now >= end {
                panic!("no line {what}; got:\n{}", g.0.join("\n"));
            }
            g = cv.wait_timeout(g, end - now).unwrap().0;
        }
    }

    fn wait_for(&self, needle: &str) -> String {
        self.wait(&format!("containing {needle:?}"), |l| l.contains(needle))
    }

    /// Everything, once the pipe closed.
    fn all(&self) -> String {
        let (m, cv) = &*self.0;
        let end = Instant::now() + DEADLINE;
        let mut g = m.lock().unwrap();
        while !g.1 && Instant::now() < end {
            g = cv.wait_timeout(g, Duration::from_secs(1)).unwrap().0;
        }
        g.0.join("\n") + "\n"
    }
}

/// Waits for a child with a generous deadline.
fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < end, "process {} did not exit", child.id());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A test's world: a sessions directory, the ticker target and its object.
struct World {
    dir: tempfile::TempDir,
    runtime: PathBuf,
    obj: PathBuf,
    ticker: PathBuf,
}

impl World {
    fn new(test: &str) -> Option<World> {
        if !have_tools(test) {
            return None;
        }
        let obj = common::compile(test, "../targets/ticker")?;
        let dir = tempfile::tempdir().unwrap();
        let runtime = dir.path().join("run");
        let ticker = cc("ticker", dir.path(), "ticker");
        Some(World {
            dir,
            runtime,
            obj,
            ticker,
        })
    }

    fn pkbpf(&self) -> Command {
        let mut c = Command::new(pkbpf());
        c.env("PKBPF_RUNTIME_DIR", &self.runtime)
            .current_dir(self.dir.path());
        c
    }

    /// Runs `pkbpf ARGS` to completion (killed, and the test failed, when
    /// it hangs).
    fn cmd(&self, args: &[&str]) -> Output {
        let mut child = self
            .pkbpf()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run pkbpf");
        let slurp = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = r.read_to_end(&mut v);
                v
            })
        };
        let out = slurp(Box::new(child.stdout.take().unwrap()));
        let err = slurp(Box::new(child.stderr.take().unwrap()));
        let end = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() >= end {
                let _ = child.kill();
                let _ = child.wait();
                panic!("pkbpf {args:?} hung");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let o = Output {
            status,
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        };
        eprintln!(
            "--- pkbpf {args:?}: {}\n--- stdout\n{}--- stderr\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    /// Starts `pkbpf load` and waits until its session is ready.
    fn load(&self, name: &str) -> Loader {
        let mut child = self
            .pkbpf()
            .args(["--sandbox", "none", "load"])
            .arg(&self.obj)
            .args(["--name", name])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pkbpf load");
        let out = Lines::collect(child.stdout.take().unwrap());
        let err = Lines::collect(child.stderr.take().unwrap());
        err.wait_for(&format!("session {name} ready"));
        Loader { child, out, err }
    }

    /// Starts a ticker through `pkbpf start` (`session`: `--session`).
    fn start(&self, session: Option<&str>) -> Target {
        let mut c = self.pkbpf();
        c.arg("start");
        if let Some(s) = session {
            c.args(["--session", s]);
        }
        c.arg("--").arg(&self.ticker);
        Target::spawn(c)
    }

    /// Starts a ticker on its own.
    fn plain(&self, exe: &Path) -> Target {
        let mut c = Command::new(exe);
        c.env_remove("LD_PRELOAD");
        Target::spawn(c)
    }

    /// Starts a ticker in `mode`: its main thread spins in user code
    /// (`spin`), or in malloc and free (`churn`), or waits in poll()
    /// (`poll`).
    fn with_mode(&self, mode: &str) -> Target {
        let mut c = Command::new(&self.ticker);
        c.arg(mode).env_remove("LD_PRELOAD");
        Target::spawn(c)
    }
}

/// A running `pkbpf load`.
struct Loader {
    child: Child,
    out: Lines,
    err: Lines,
}

impl Loader {
    /// Ends the loader with SIGTERM: (exit status, all stdout, all stderr).
    fn stop(mut self) -> (std::process::ExitStatus, String, String) {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let st = wait_exit(&mut self.child);
        let (out, err) = (self.out.all(), self.err.all());
        eprintln!("--- loader {st}\n--- stdout\n{out}--- stderr\n{err}");
        (st, out, err)
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A ticker process, fed commands on stdin.
struct Target {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Lines,
    pid: u32,
}

impl Target {
    fn spawn(mut c: Command) -> Target {
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("start the ticker");
        let stdin = child.stdin.take();
        let out = Lines::collect(child.stdout.take().unwrap());
        // (`pkbpf start`'s own lines; kept out of the test's output.)
        let _err = Lines::collect(child.stderr.take().unwrap());
        let pid = out
            .wait_for("pid ")
            .trim_start_matches("pid ")
            .parse()
            .unwrap();
        out.wait_for("ready");
        Target {
            child,
            stdin,
            out,
            pid,
        }
    }

    fn send(&mut self, text: &str) {
        let s = self.stdin.as_mut().expect("stdin open");
        s.write_all(text.as_bytes()).unwrap();
        s.flush().unwrap();
    }

    /// Bytes written to stdin that the ticker has not read yet.
    fn unread(&self) -> i32 {
        use std::os::fd::AsRawFd;
        let fd = self.stdin.as_ref().expect("stdin open").as_raw_fd();
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
        assert_eq!(r, 0, "FIONREAD");
        n
    }

    /// Calls tick() n times and checks what it returned.
    fn ticks(&mut self, n: u64) {
        self.send(&format!("{n}\n"));
        self.out
            .wait_for(&format!("done {n} sum {}", n * (n + 1) / 2));
    }

    /// Closes stdin (the ticker exits 0) and returns the exit status.
    fn finish(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        wait_exit(&mut self.child)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `pkbpf map dump NAME --json` (plus `extra`), parsed.
fn dump_json(w: &World, extra: &[&str], name: &str) -> serde_json::Value {
    let mut args = vec!["map", "dump", name, "--json"];
    args.extend_from_slice(extra);
    let o = w.cmd(&args);
    assert!(o.status.success(), "map dump failed");
    serde_json::from_slice(&o.stdout).expect("map dump --json is JSON")
}

/// The `calls` of pid's entry in a `tick_by_pid` JSON dump.
fn calls_of(dump: &serde_json::Value, pid: u32) -> u64 {
    let entries = dump.as_array().expect("an array");
    let e = entries
        .iter()
        .find(|e| e["key"] == serde_json::json!(pid))
        .unwrap_or_else(|| panic!("no entry for pid {pid} in {dump}"));
    e["value"]["calls"].as_u64().expect("calls")
}

#[test]
fn load_then_start_counts_and_maps_read_while_running() {
    let Some(w) = World::new("load_then_start") else {
        return;
    };
    let loader = w.load("tick");
    let mut t = w.start(None);
    let pid = t.pid;
    loader
        .err
        .wait_for(&format!("pid {pid}: attached count_tick (uprobe)"));
    t.ticks(250);

    // Read while the target runs (blocked in read(), probes attached).
    let d = dump_json(&w, &[], "tick_by_pid");
    assert_eq!(d.as_array().unwrap().len(), 1, "{d}");
    assert_eq!(calls_of(&d, pid), 250);
    assert_eq!(d[0]["value"]["last_arg"], serde_json::json!(249));
    let pc = dump_json(&w, &["--session", "tick"], "tick_percpu");
    let values = pc[0]["values"].as_array().expect("per-CPU values");
    assert!(!values.is_empty());
    let sum: u64 = values.iter().map(|v| v["value"].as_u64().unwrap()).sum();
    assert_eq!(sum, 250, "{pc}");
    assert_eq!(values[0]["cpu"], serde_json::json!(0));
    let o = w.cmd(&["map", "dump", "tick_total"]);
    assert!(o.status.success());
    let out = text(&o.stdout);
    assert!(
        out.contains(&format!("map tick_total [pid {pid}] (array")),
        "{out}"
    );
    assert!(out.contains("key: 0  value: 250\n"), "{out}");
    assert!(out.contains("Found 1 element\n"), "{out}");
    let o = w.cmd(&["map", "list"]);
    assert!(o.status.success());
    let out = text(&o.stdout);
    for m in ["tick_by_pid", "tick_total", "tick_percpu"] {
        assert!(out.contains(&format!("name {m}")), "{out}");
    }
    let o = w.cmd(&["map", "lookup", "tick_total", "0"]);
    assert!(text(&o.stdout).contains("key: 0  value: 250"));
    // Reading changed nothing: the target goes on counting.
    t.ticks(10);
    assert_eq!(calls_of(&dump_json(&w, &[], "tick_by_pid"), pid), 260);

    assert!(t.finish().success(), "start passes the target's status");
    loader
        .out
        .wait_for(&format!("prog count_tick [pid {pid}]: 260 hits, 0 errors"));
    // The loader keeps an exited target's maps.
    let o = w.cmd(&["map", "dump", "tick_by_pid", "--json"]);
    assert!(o.status.success());
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(calls_of(&d, pid), 260);
    assert!(text(&o.stderr).contains(&format!("pid {pid} has exited")));
    let (st, out, _) = loader.stop();
    assert!(st.success(), "loader: {st}");
    assert!(
        out.contains(&format!(
            "key: {pid}  value: {{\"calls\": 260, \"last_arg\": 9}}"
        )),
        "maps at exit: {out}"
    );
    assert!(
        !w.runtime.join("tick").exists(),
        "the session directory is removed"
    );
}

#[test]
fn two_targets_on_one_loader_count_apart() {
    let Some(w) = World::new("two_targets") else {
        return;
    };
    let loader = w.load("two");
    let mut a = w.start(Some("two"));
    let mut b = w.start(Some("two"));
    assert_ne!(a.pid, b.pid);
    a.ticks(7);
    b.ticks(30);
    // Each target has its own maps; --json needs one.
    let o = w.cmd(&["map", "dump", "tick_by_pid", "--json"]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("--pid"), "{err}");
    let pa = a.pid.to_string();
    assert_eq!(
        calls_of(&dump_json(&w, &["--pid", &pa], "tick_by_pid"), a.pid),
        7
    );
    let (ap, bp) = (a.pid, b.pid);
    assert!(a.finish().success());
    assert!(b.finish().success());
    loader
        .out
        .wait_for(&format!("prog count_tick [pid {ap}]: 7 hits, 0 errors"));
    loader
        .out
        .wait_for(&format!("prog count_tick [pid {bp}]: 30 hits, 0 errors"));
    let (st, out, _) = loader.stop();
    assert!(st.success());
    assert!(
        out.contains(&format!("key: {bp}  value: {{\"calls\": 30,")),
        "{out}"
    );
}

#[test]
fn start_needs_exactly_one_loader_or_a_name() {
    let Some(w) = World::new("start_errors") else {
        return;
    };
    let marker = w.dir.path().join("ran");
    let touch = format!("touch {}", marker.display());
    let o = w.cmd(&["start", "--", "sh", "-c", &touch]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        text(&o.stderr).contains("no pkbpf session is running"),
        "{}",
        text(&o.stderr)
    );
    let o = w.cmd(&["map", "list"]);
    assert_ne!(o.status.code(), Some(0));

    let l1 = w.load("one");
    let l2 = w.load("other");
    let o = w.cmd(&["start", "--", "sh", "-c", &touch]);
    assert_ne!(o.status.code(), Some(0));
    let err = text(&o.stderr);
    assert!(
        err.contains("2 pkbpf sessions are running (one, other)"),
        "{err}"
    );
    assert!(err.contains("--session"), "{err}");
    let o = w.cmd(&["start", "--session", "nope", "--", "sh", "-c", &touch]);
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o.stderr).contains("no pkbpf session named \"nope\""));
    assert!(!marker.exists(), "no target ran");
    // The same name twice is refused while the first loader lives.
    let o = w.cmd(&[
        "--sandbox",
        "none",
        "load",
        w.obj.to_str().unwrap(),
        "--name",
        "one",
    ]);
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o.stderr).contains("already running"));
    // A named one works, and passes the exit status through.
    let o = w.cmd(&["start", "--session", "other", "--", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    let (s1, _, _) = l1.stop();
    assert!(s1.success());
    // sh maps no `ticker` to probe: the agent's error reaches the loader,
    // which exits 1.
    let (s2, _, err) = l2.stop();
    assert_eq!(s2.code(), Some(1));
    assert!(err.contains("binary `ticker` not found"), "{err}");

    // A loader killed outright leaves its directory behind: a new loader
    // of the same name replaces it, and other commands remove it.
    for _ in 0..2 {
        let mut dead = w.load("gone");
        dead.child.kill().unwrap();
        dead.child.wait().unwrap();
        assert!(w.runtime.join("gone/session").exists());
    }
    let o = w.cmd(&["map", "list", "--session", "gone"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o.stderr).contains("no pkbpf session named \"gone\""));
    assert!(!w.runtime.join("gone").exists(), "stale session removed");
}

/// Whether `pkbpf attach` (a sibling of the target, not its parent) may
/// ptrace it here; prints the skip line when not.
fn ptrace_allowed(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    match std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope") {
        Ok(s) if s.trim() != "0" => {
            println!(
                "skipped: {test}: Yama ptrace_scope is {} and we are not root",
                s.trim()
            );
            false
        }
        _ => true,
    }
}

/// The first field of /proc/PID/syscall: the system call the process is
/// blocked in.
fn blocked_in(pid: u32) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    s.split_whitespace().next().map(String::from)
}

#[test]
fn attach_injects_into_a_process_blocked_in_read() {
    if !ptrace_allowed("attach_blocked_in_read") {
        return;
    }
    let Some(w) = World::new("attach_blocked_in_read") else {
        return;
    };
    let loader = w.load("inj");
    let mut t = w.plain(&w.ticker);
    let pid = t.pid;
    // Calls before the attach are not counted.
    t.ticks(5);
    // Half a command: the ticker holds "1" and waits in read() for more.
    t.send("1");
    let end = Instant::now() + DEADLINE;
    while t.unread() != 0 || blocked_in(pid).as_deref() != Some("0") {
        assert!(Instant::now() < end, "pid {pid} never blocked in read()");
        std::thread::sleep(Duration::from_millis(10));
    }
    let o = w.cmd(&["attach", &pid.to_string(), "--session", "inj"]);
    assert!(o.status.success(), "attach failed");
    assert!(text(&o.stderr).contains(&format!("attached to pid {pid}")));
    loader
        .err
        .wait_for(&format!("pid {pid}: attached count_tick (uprobe)"));
    // The interrupted read() restarted: the rest of the line completes
    // "100", nothing lost or doubled.
    t.send("00\n");
    t.out.wait_for("done 100 sum 5050");
    assert_eq!(calls_of(&dump_json(&w, &[], "tick_by_pid"), pid), 100);

    // A second attach is refused: the agent is there.
    let o = w.cmd(&["attach", &pid.to_string()]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        text(&o.stderr).contains(&format!("agent in pid {pid} is already running")),
        "{}",
        text(&o.stderr)
    );
    t.ticks(3);
    assert!(t.finish().success());
    loader
        .out
        .wait_for(&format!("prog count_tick [pid {pid}]: 103 hits, 0 errors"));
    let (st, _, _) = loader.stop();
    assert!(st.success());
}

#[test]
fn attach_restarts_a_poll_with_a_timeout() {
    if !ptrace_allowed("attach_poll") {
        return;
    }
    let Some(w) = World::new("attach_poll") else {
        return;
    };
    let loader = w.load("poll");
    let mut t = w.with_mode("poll");
    let pid = t.pid;
    t.ticks(2);
    // Blocked in poll() (7) with its hour's timeout: the kernel answers
    // the interruption with -ERESTART_RESTARTBLOCK, resumed through
    // restart_syscall.
    let end = Instant::now() + DEADLINE;
    while t.unread() != 0 || blocked_in(pid).as_deref() != Some("7") {
        assert!(Instant::now() < end, "pid {pid} never blocked in poll()");
        std::thread::sleep(Duration::from_millis(10));
    }
    let o = w.cmd(&["attach", &pid.to_string()]);
    assert!(o.status.success(), "attach failed");
    loader
        .err
        .wait_for(&format!("pid {pid}: attached count_tick (uprobe)"));
    t.ticks(10);
    assert_eq!(calls_of(&dump_json(&w, &[], "tick_by_pid"), pid), 10);
    // Exit 0: poll() never failed (the ticker exits 4 if it does).
    assert!(t.finish().success());
    let (st, _, _) = loader.stop();
    assert!(st.success());
}

#[test]
fn attach_uses_a_live_thread_when_main_has_exited() {
    if !ptrace_allowed("attach_orphan") {
        return;
    }
    let Some(w) = World::new("attach_orphan") else {
        return;
    };
    let loader = w.load("orphan");
    let mut t = w.with_mode("orphan");
    let pid = t.pid;
    t.ticks(3);
    let end = Instant::now() + DEADLINE;
    let state = || {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        s.rsplit_once(')')
            .map(|(_, r)| r.trim_start().chars().next())
    };
    while state() != Some(Some('Z')) {
        assert!(
            Instant::now() < end,
            "the main thread of {pid} never exited"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The injection runs on the live thread: no hang, the agent starts,
    // and the probes resolve their target through that thread's view of
    // the mappings (/proc/self/maps is empty once the main thread is gone).
    let o = w.cmd(&["attach", &pid.to_string()]);
    assert!(o.status.success(), "attach failed: {}", text(&o.stderr));
    loader
        .err
        .wait_for(&format!("pid {pid}: attached count_tick (uprobe)"));
    t.ticks(20);
    assert_eq!(calls_of(&dump_json(&w, &[], "tick_by_pid"), pid), 20);
    assert!(t.finish().success());
    let (st, _, _) = loader.stop();
    assert!(st.code().is_some());
}

#[test]
fn attach_injects_into_a_process_running_user_code() {
    if !ptrace_allowed("attach_spinning") {
        return;
    }
    let Some(w) = World::new("attach_spinning") else {
        return;
    };
    let loader = w.load("spin");
    // Spinning in its own code, then spinning through malloc/free (attach
    // waits for a stop outside the C library, whose locks dlopen takes).
    for mode in ["spin", "churn"] {
        attach_spinning(&w, &loader, mode);
    }
    let (st, _, _) = loader.stop();
    assert!(st.success());
}

fn attach_spinning(w: &World, loader: &Loader, mode: &str) {
    let mut t = w.with_mode(mode);
    let pid = t.pid;
    t.ticks(6);
    let o = w.cmd(&["attach", &pid.to_string()]);
    assert!(o.status.success(), "attach failed");
    loader
        .err
        .wait_for(&format!("pid {pid}: attached count_tick (uprobe)"));
    t.ticks(40);
    t.ticks(2);
    let d = dump_json(w, &["--pid", &pid.to_string()], "tick_by_pid");
    assert_eq!(calls_of(&d, pid), 42);
    let mine = d
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == serde_json::json!(pid));
    assert_eq!(mine.unwrap()["value"]["last_arg"], serde_json::json!(1));
    let st = t.finish();
    assert!(st.success(), "{mode}: {st}");
    loader
        .out
        .wait_for(&format!("prog count_tick [pid {pid}]: 42 hits, 0 errors"));
}

#[test]
fn attach_starts_an_idle_preloaded_agent() {
    if !ptrace_allowed("attach_idle_agent") {
        return;
    }
    let Some(w) = World::new("attach_idle_agent") else {
        return;
    };
    let loader = w.load("idle");
    // Preloaded without a loader's fd: the agent is mapped but does nothing.
    let lib = pkbpf().parent().unwrap().join("libpkbpf_agent.so");
    let mut c = Command::new(&w.ticker);
    c.env("LD_PRELOAD", &lib);
    let mut t = Target::spawn(c);
    let pid = t.pid;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(maps.contains("libpkbpf_agent.so"), "the agent is preloaded");
    t.ticks(4);
    let o = w.cmd(&["attach", &pid.to_string()]);
    assert!(o.status.success(), "attach failed");
    loader
        .err
        .wait_for(&format!("pid {pid}: attached count_tick (uprobe)"));
    t.ticks(9);
    assert_eq!(calls_of(&dump_json(&w, &[], "tick_by_pid"), pid), 9);
    assert!(t.finish().success());
    let (st, _, _) = loader.stop();
    assert!(st.success());
}

#[test]
fn attach_errors_are_clear() {
    let Some(w) = World::new("attach_errors") else {
        return;
    };
    // No such session, no such process.
    let mut t = w.plain(&w.ticker);
    let o = w.cmd(&["attach", &t.pid.to_string(), "--session", "nope"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        text(&o.stderr).contains("no pkbpf session"),
        "{}",
        text(&o.stderr)
    );
    let loader = w.load("err");
    let o = w.cmd(&["attach", "2147483647"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o.stderr).contains("no process with pid 2147483647"));
    let o = w.cmd(&["map", "dump", "nope"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o.stderr).contains("no target has loaded"));
    // The ticker is untouched by the failed attach.
    t.ticks(4);
    // A statically linked process has no dlopen to call.
    let st = Command::new("cc")
        .args(["-O0", "-static", "-o"])
        .arg(w.dir.path().join("static_probe"))
        .arg(common::root().join("tests/targets/ticker.c"))
        .output();
    if st.is_ok_and(|o| o.status.success()) {
        let mut s = w.plain(&w.dir.path().join("static_probe"));
        let o = w.cmd(&["attach", &s.pid.to_string()]);
        assert_ne!(o.status.code(), Some(0));
        assert!(
            text(&o.stderr).contains("statically linked"),
            "{}",
            text(&o.stderr)
        );
        s.ticks(2);
        assert!(s.finish().success());
    } else {
        println!("skipped: attach_errors (static part): cc -static does not link");
    }
    assert!(t.finish().success());
    let (st, _, _) = loader.stop();
    assert!(st.success());
}

#[test]
fn printk_and_ringbuf_stream_through_the_loader() {
    let Some(mut w) = World::new("load_streams") else {
        return;
    };
    let Some(printk) = common::compile("load_streams", "../targets/greet") else {
        return;
    };
    let Some(ring) = common::compile("load_streams", "../targets/greet_ringbuf") else {
        return;
    };
    let greet = cc("greet", w.dir.path(), "greet");
    w.obj = printk;
    let pk = w.load("pk");
    w.obj = ring;
    let rb = w.load("rb");
    let mut pids = Vec::new();
    for s in ["pk", "rb"] {
        let o = w.cmd(&["start", "--session", s, "--", greet.to_str().unwrap()]);
        assert!(o.status.success());
        assert!(text(&o.stdout).contains("sum 48"));
        let err = text(&o.stderr);
        let pid: u32 = err
            .split_once("(pid ")
            .and_then(|(_, r)| r.split_once(')'))
            .and_then(|(p, _)| p.parse().ok())
            .unwrap_or_else(|| panic!("no pid in {err}"));
        pids.push(pid);
    }
    let line = pk.out.wait_for("bpf_trace_printk: greet returned 18");
    assert!(line.contains(&format!("greet-{} [", pids[0])), "{line}");
    pk.out.wait_for("bpf_trace_printk: greet entry 7");
    let rec = rb.out.wait_for(&format!(
        "ringbuf greet_events [pid {}]: 09 00 00 00",
        pids[1]
    ));
    let mut want = 9u32.to_ne_bytes().to_vec();
    want.extend_from_slice(&pids[1].to_ne_bytes());
    let hex: Vec<String> = want.iter().map(|b| format!("{b:02x}")).collect();
    assert!(rec.ends_with(&hex.join(" ")), "{rec}");
    let (s1, _, _) = pk.stop();
    let (s2, _, _) = rb.stop();
    assert!(s1.success() && s2.success());
}
