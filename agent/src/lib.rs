//! The preload agent of `pkbpf run`: `libpkbpf_agent.so`, loaded into the
//! target with `LD_PRELOAD`.
//!
//! Its constructor reads the environment the loader set
//! ([`pkbpf::session`]), loads the object with the runtime inside the
//! target, attaches every `uprobe`/`uretprobe` program (or the one named by
//! `PKBPF_PROG`) and reports each step to the loader over the inherited
//! socket, and passes the fd of the object's map region to the loader (which
//! dumps the maps after the target ends, however it ends). `bpf_printk`
//! lines and ring buffer records stream to the loader as they come; at exit
//! the agent detaches its probes (so its own work is not counted) and sends
//! each program's hit count.
//!
//! Syscall tracepoint programs (`tracepoint/syscalls/...`,
//! `raw_tracepoint/sys_{enter,exit}`) run on the target's system calls
//! from the end of the constructor on (Syscall User Dispatch, see
//! `pkbpf_hooks::syscall`; the agent's own calls are never traced).
//! Programs pkbpf cannot attach from here (embedded programs, a bare
//! `uprobe` section without a target) are reported as skipped, never
//! ignored silently.
//!
//! `fork`: the child sends its own `hello` with its own pid (probes stay in
//! the child's copy of the code and count under the child's pid) and shares
//! the parent's map region. `exec`: the environment carries `LD_PRELOAD` and the
//! socket, so the new image loads the object afresh (its own maps) and
//! reports under the same pid.
//!
//! Without `PKBPF_AGENT_FD` in the environment the constructor does
//! nothing. `pkbpf attach PID` loads the library into a running process
//! with an injected `dlopen` (so the constructor finds no environment) and
//! then calls [`pkbpf_agent_attach`] with the session's description: the
//! agent connects to the loader's socket itself and starts as above. After
//! an `exec`, such a process runs without the agent (nothing in its
//! environment names it).
#![deny(missing_docs)]

use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use pkbpf::maps::{MapType, PerfConsumer, RingBufConsumer};
use pkbpf::object::ProgramKind;
use pkbpf::runtime::{
    AttachPoint, Harden, LoadedObject, Runtime, RuntimeError, Sandbox, SyscallLink, UprobeLink,
};
use pkbpf::session::{self, Message};

/// What the constructor set up, for the exit handler and the fork handler.
struct Agent {
    fd: RawFd,
    /// Only attach this program (`PKBPF_PROG`; absent: all).
    prog: Option<String>,
    /// The process that loaded the object.
    pid: u32,
    links: Mutex<Vec<UprobeLink>>,
    rings: Mutex<Vec<(String, Consumer)>>,
}

/// A ring buffer or perf event array the agent streams to the loader.
enum Consumer {
    Ring(RingBufConsumer),
    Perf(PerfConsumer),
}

static AGENT: OnceLock<Agent> = OnceLock::new();

/// How many `error` messages this process sent (for [`pkbpf_agent_attach`]'s
/// answer).
static ERRORS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// What the agent starts with: from the environment (`LD_PRELOAD` start)
/// or from a session description ([`pkbpf_agent_attach`]).
struct Config {
    /// The socket to the loader.
    fd: RawFd,
    /// The object file.
    object: Option<std::ffi::OsString>,
    /// The sandbox mode, as spelled in the environment.
    sandbox: Option<String>,
    /// Only attach this program.
    prog: Option<String>,
}

fn pid() -> u32 {
    std::process::id()
}

fn ppid() -> u32 {
    // SAFETY: getppid has no preconditions.
    let p = unsafe { libc::getppid() };
    u32::try_from(p).unwrap_or(0)
}

/// Sends one message as one packet; a loader that went away is ignored
/// (no SIGPIPE in the target).
fn send(fd: RawFd, m: &Message) {
    send_fd(fd, m, None);
}

fn send_fd(fd: RawFd, m: &Message, with: Option<BorrowedFd<'_>>) {
    if matches!(m, Message::Error { .. }) {
        ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    // SAFETY: `fd` is the socket the loader passed, open for the life of
    // the process (the agent never closes it); a stale number only makes
    // the send fail.
    let sock = unsafe { BorrowedFd::borrow_raw(fd) };
    let _ = session::send(sock, m, with);
}

/// The whole error chain on one line, plus the verifier log when there is one.
fn describe(e: &RuntimeError) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    if let RuntimeError::Verify { log, .. } = e {
        s.push_str("\nverifier log:\n");
        s.push_str(&log.0);
    }
    s
}

fn sandbox_from(mode: Option<&str>) -> Result<Sandbox, String> {
    match mode {
        None | Some("auto") => Ok(Sandbox::Auto),
        Some("mpk") => Ok(Sandbox::Mpk),
        Some("none") => Ok(Sandbox::None),
        Some(other) => Err(format!(
            "{}={other:?}: expected auto, mpk or none",
            session::ENV_SANDBOX
        )),
    }
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = agent_init;

extern "C" fn agent_init() {
    let Some(fd) = std::env::var(session::ENV_FD)
        .ok()
        .and_then(|v| v.parse::<RawFd>().ok())
    else {
        return;
    };
    start(Config {
        fd,
        object: std::env::var_os(session::ENV_OBJECT),
        sandbox: std::env::var(session::ENV_SANDBOX).ok(),
        prog: std::env::var(session::ENV_PROG).ok(),
    });
}

/// Starts the agent with `desc`, a session description
/// (`pkbpf::session::SessionInfo`'s text): connects to the loader's socket
/// named there and loads and attaches the object as the constructor does
/// for a preloaded start. Called by `pkbpf attach` through ptrace after it
/// has `dlopen`ed this library into the process. Returns 0 when everything
/// attached, 1 when errors were reported to the loader, -1 for a bad
/// description, -2 when the loader cannot be reached, -3 when the agent
/// already runs in this process.
///
/// # Safety
///
/// `desc` must be null or point to a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn pkbpf_agent_attach(desc: *const std::ffi::c_char) -> std::ffi::c_int {
    if desc.is_null() {
        return -1;
    }
    if AGENT.get().is_some() {
        return -3;
    }
    // SAFETY: the caller passes a NUL-terminated string.
    let text = unsafe { std::ffi::CStr::from_ptr(desc) }.to_string_lossy();
    let Ok(info) = session::SessionInfo::decode(&text) else {
        return -1;
    };
    let Ok(sock) = session::connect(&info.socket) else {
        return -2;
    };
    // The socket stays open for the life of the process, as an inherited
    // one does.
    let fd = std::os::fd::IntoRawFd::into_raw_fd(sock);
    start(Config {
        fd,
        object: Some(info.object.into_os_string()),
        sandbox: Some(info.sandbox),
        prog: info.prog,
    })
}

/// Says hello, loads the object, attaches; the answer of
/// [`pkbpf_agent_attach`].
fn start(cfg: Config) -> std::ffi::c_int {
    let fd = cfg.fd;
    let me = pid();
    send(
        fd,
        &Message::Hello {
            pid: me,
            ppid: ppid(),
            forked: false,
        },
    );
    let fail = |text: String| send(fd, &Message::Error { pid: me, text });
    let obj = match load(&cfg) {
        Ok(obj) => Some(obj),
        Err(text) => {
            fail(text);
            None
        }
    };
    let agent = Agent {
        fd,
        prog: cfg.prog.clone(),
        pid: me,
        links: Mutex::new(Vec::new()),
        rings: Mutex::new(Vec::new()),
    };
    if AGENT.set(agent).is_err() {
        return -3;
    }
    // SAFETY: both handlers are plain `extern "C"` functions of this
    // library, which is never unloaded (LD_PRELOAD, or a dlopen that is
    // never closed).
    unsafe {
        libc::pthread_atfork(None, None, Some(after_fork_child));
        libc::atexit(agent_exit);
    }
    if let Some(obj) = obj {
        let Some(agent) = AGENT.get() else { return -3 };
        // The loader dumps the maps from the region after this process
        // ends, however it ends.
        send_fd(
            fd,
            &Message::Region { pid: me },
            Some(obj.region().fd().as_fd()),
        );
        start_rings(agent, &obj);
        attach_all(agent, &obj);
    }
    if ERRORS.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        0
    } else {
        1
    }
}

/// `PKBPF_HARDEN` = `auto` (default: harden the target in mpk mode),
/// `always` or `off`; `PKBPF_HARDEN_PROC=0` leaves writes under `/proc`
/// allowed (no Landlock layer) for targets that need them.
fn harden_from_env() -> Result<(Harden, bool), String> {
    let harden = match std::env::var("PKBPF_HARDEN").as_deref() {
        Err(_) | Ok("") | Ok("auto") => Harden::Auto,
        Ok("always") => Harden::Always,
        Ok("off") => Harden::Off,
        Ok(other) => {
            return Err(format!(
                "PKBPF_HARDEN={other:?}: expected auto, always or off"
            ))
        }
    };
    let deny_proc_writes = std::env::var("PKBPF_HARDEN_PROC").as_deref() != Ok("0");
    Ok((harden, deny_proc_writes))
}

fn load(cfg: &Config) -> Result<Arc<LoadedObject>, String> {
    let fd = cfg.fd;
    let path = cfg
        .object
        .clone()
        .ok_or_else(|| format!("{} is not set", session::ENV_OBJECT))?;
    let sandbox = sandbox_from(cfg.sandbox.as_deref())?;
    let (harden, deny_proc_writes) = harden_from_env()?;
    // Hardening (mpk mode by default) happens in build(); the object's
    // mappings join the protected ranges as it loads. Attaching afterwards
    // patches the target's own text, which the filter leaves alone.
    let rt = Runtime::builder()
        .sandbox(sandbox)
        .harden(harden)
        .harden_proc_writes(deny_proc_writes)
        .printk(move |line: &str| {
            send(
                fd,
                &Message::Printk {
                    pid: pid(),
                    line: line.to_string(),
                },
            )
        })
        .build()
        .map_err(|e| describe(&e))?;
    let obj = rt.load_file(&path).map_err(|e| {
        format!(
            "loading {} in the target: {}",
            std::path::Path::new(&path).display(),
            describe(&e)
        )
    })?;
    Ok(Arc::new(obj))
}

/// Starts a thread streaming the object's ring buffers and perf event
/// arrays to the loader (only when it has any).
fn start_rings(agent: &'static Agent, obj: &LoadedObject) {
    let mut rings = Vec::new();
    for def in obj.region().defs() {
        let consumer = match def.map_type {
            MapType::RingBuf => |m: &pkbpf::maps::Map| RingBufConsumer::new(m).map(Consumer::Ring),
            MapType::PerfEventArray => {
                |m: &pkbpf::maps::Map| PerfConsumer::new(m).map(Consumer::Perf)
            }
            _ => continue,
        };
        match obj.map(&def.name).map(|m| consumer(&m)) {
            Ok(Ok(c)) => rings.push((def.name.clone(), c)),
            Ok(Err(e)) => send(
                agent.fd,
                &Message::Error {
                    pid: agent.pid,
                    text: format!("ring buffer {}: {e}", def.name),
                },
            ),
            Err(e) => send(
                agent.fd,
                &Message::Error {
                    pid: agent.pid,
                    text: describe(&e),
                },
            ),
        }
    }
    if rings.is_empty() {
        return;
    }
    if let Ok(mut r) = agent.rings.lock() {
        *r = rings;
    }
    let spawned = std::thread::Builder::new()
        .name("pkbpf-ringbuf".into())
        .spawn(move || loop {
            drain_rings(agent);
            std::thread::sleep(Duration::from_millis(20));
        });
    if let Err(e) = spawned {
        send(
            agent.fd,
            &Message::Error {
                pid: agent.pid,
                text: format!("starting the ring buffer thread: {e}"),
            },
        );
    }
}

fn drain_rings(agent: &Agent) {
    let Ok(mut rings) = agent.rings.lock() else {
        return;
    };
    let me = pid();
    for (name, c) in rings.iter_mut() {
        match c {
            Consumer::Ring(c) => c.poll(|rec| {
                send(
                    agent.fd,
                    &Message::Ringbuf {
                        pid: me,
                        map: name.clone(),
                        data: rec.to_vec(),
                    },
                )
            }),
            Consumer::Perf(c) => c.poll(|cpu, rec| {
                send(
                    agent.fd,
                    &Message::Perf {
                        pid: me,
                        map: name.clone(),
                        cpu,
                        data: rec.to_vec(),
                    },
                )
            }),
        };
    }
}

fn attach_all(agent: &Agent, obj: &Arc<LoadedObject>) {
    let filter = agent.prog.clone();
    if let Some(f) = &filter {
        if obj.program(f).is_err() {
            send(
                agent.fd,
                &Message::Error {
                    pid: agent.pid,
                    text: format!("the object has no program named {f}"),
                },
            );
            return;
        }
    }
    let names: Vec<(String, ProgramKind)> = obj
        .programs()
        .filter(|p| filter.as_deref().is_none_or(|f| f == p.name()))
        .map(|p| (p.name().to_string(), p.kind().clone()))
        .collect();
    for (name, kind) in names {
        let skip = |reason: String| {
            send(
                agent.fd,
                &Message::Skipped {
                    pid: agent.pid,
                    prog: name.clone(),
                    reason,
                },
            )
        };
        match &kind {
            ProgramKind::Uprobe { target: None } | ProgramKind::Uretprobe { target: None } => {
                skip(format!(
                    "{} section names no target (give one in the section, e.g. uprobe/libc.so.6:malloc)",
                    kind.name()
                ));
                continue;
            }
            ProgramKind::Uprobe { .. } | ProgramKind::Uretprobe { .. } => {}
            ProgramKind::Tracepoint { .. } | ProgramKind::RawTracepoint { .. } => {
                attach_syscall(agent, obj, &name, &kind);
                continue;
            }
            ProgramKind::Embedded => {
                skip("embedded program: called through the embedding API, not attached".into());
                continue;
            }
        }
        match obj.attach(&name, AttachPoint::Section) {
            Ok(link) => {
                send(
                    agent.fd,
                    &Message::Attached {
                        pid: agent.pid,
                        prog: name.clone(),
                        kind: kind.name().to_string(),
                        addr: link.address() as u64,
                    },
                );
                if let Ok(mut l) = agent.links.lock() {
                    l.push(link);
                }
            }
            Err(e) => send(
                agent.fd,
                &Message::Error {
                    pid: agent.pid,
                    text: describe(&e),
                },
            ),
        }
    }
    if SYSCALL_LINKS.lock().is_ok_and(|l| !l.is_empty()) {
        // From here on this thread's system calls are the application's.
        pkbpf::runtime::trace_current_thread(true);
    }
}

/// The attached syscall tracepoint programs (reported and detached at exit).
static SYSCALL_LINKS: Mutex<Vec<SyscallLink>> = Mutex::new(Vec::new());

/// Attaches a `tracepoint/syscalls/...` or `raw_tracepoint/sys_{enter,exit}`
/// program to the process's system calls (Syscall User Dispatch; see
/// `pkbpf_hooks::syscall`). The thread running the agent is traced from the
/// end of [`attach_all`]; threads the application creates afterwards are
/// traced too.
fn attach_syscall(agent: &Agent, obj: &Arc<LoadedObject>, name: &str, kind: &ProgramKind) {
    match obj.attach_syscall(name) {
        Ok(link) => {
            send(
                agent.fd,
                &Message::Attached {
                    pid: agent.pid,
                    prog: name.to_string(),
                    kind: kind.name().to_string(),
                    addr: 0,
                },
            );
            if let Ok(mut l) = SYSCALL_LINKS.lock() {
                l.push(link);
            }
        }
        Err(e) => send(
            agent.fd,
            &Message::Error {
                pid: agent.pid,
                text: describe(&e),
            },
        ),
    }
}

extern "C" fn after_fork_child() {
    let _untraced = pkbpf::runtime::Untraced::new();
    if let Some(agent) = AGENT.get() {
        send(
            agent.fd,
            &Message::Hello {
                pid: pid(),
                ppid: ppid(),
                forked: true,
            },
        );
    }
}

extern "C" fn agent_exit() {
    // The agent's own system calls from here on are not the application's.
    let _untraced = pkbpf::runtime::Untraced::new();
    let Some(agent) = AGENT.get() else { return };
    let me = pid();
    if me != agent.pid {
        // A forked child: its probes' hit counts include the parent's from
        // before the fork, so only the loading process reports them.
        send(agent.fd, &Message::Exit { pid: me });
        return;
    }
    let links = agent
        .links
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default();
    for link in links {
        let (prog, hits, errors) = (link.program().to_string(), link.hits(), link.errors());
        if let Err(e) = link.detach() {
            send(
                agent.fd,
                &Message::Error {
                    pid: me,
                    text: describe(&e),
                },
            );
        }
        send(
            agent.fd,
            &Message::Hits {
                pid: me,
                prog,
                hits,
                errors,
            },
        );
    }
    let syscall_links = SYSCALL_LINKS
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default();
    for link in syscall_links {
        let (prog, hits, errors) = (link.program().to_string(), link.hits(), link.errors());
        link.detach();
        send(
            agent.fd,
            &Message::Hits {
                pid: me,
                prog,
                hits,
                errors,
            },
        );
    }
    drain_rings(agent);
    send(agent.fd, &Message::Exit { pid: me });
}
