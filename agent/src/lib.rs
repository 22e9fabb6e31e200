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
//! Programs pkbpf cannot attach from here (syscall tracepoints, embedded
//! programs, a bare `uprobe` section without a target) are reported as
//! skipped, never ignored silently.
//!
//! `fork`: the child sends its own `hello` with its own pid (probes stay in
//! the child's copy of the code and count under the child's pid) and shares
//! the parent's map region. `exec`: the environment carries `LD_PRELOAD` and the
//! socket, so the new image loads the object afresh (its own maps) and
//! reports under the same pid.
//!
//! Without `PKBPF_AGENT_FD` in the environment the agent does nothing.
#![deny(missing_docs)]

use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use pkbpf::maps::{MapType, PerfConsumer, RingBufConsumer};
use pkbpf::object::ProgramKind;
use pkbpf::runtime::{AttachPoint, LoadedObject, Runtime, RuntimeError, Sandbox, UprobeLink};
use pkbpf::session::{self, Message};

/// What the constructor set up, for the exit handler and the fork handler.
struct Agent {
    fd: RawFd,
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

fn sandbox_from_env() -> Result<Sandbox, String> {
    match std::env::var(session::ENV_SANDBOX).as_deref() {
        Err(_) | Ok("auto") => Ok(Sandbox::Auto),
        Ok("mpk") => Ok(Sandbox::Mpk),
        Ok("none") => Ok(Sandbox::None),
        Ok(other) => Err(format!(
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
    let obj = match load(fd) {
        Ok(obj) => Some(obj),
        Err(text) => {
            fail(text);
            None
        }
    };
    let agent = Agent {
        fd,
        pid: me,
        links: Mutex::new(Vec::new()),
        rings: Mutex::new(Vec::new()),
    };
    if AGENT.set(agent).is_err() {
        return;
    }
    // SAFETY: both handlers are plain `extern "C"` functions of this
    // library, which is never unloaded (LD_PRELOAD).
    unsafe {
        libc::pthread_atfork(None, None, Some(after_fork_child));
        libc::atexit(agent_exit);
    }
    if let Some(obj) = obj {
        let Some(agent) = AGENT.get() else { return };
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
}

fn load(fd: RawFd) -> Result<Arc<LoadedObject>, String> {
    let path = std::env::var_os(session::ENV_OBJECT)
        .ok_or_else(|| format!("{} is not set", session::ENV_OBJECT))?;
    let sandbox = sandbox_from_env()?;
    let rt = Runtime::builder()
        .sandbox(sandbox)
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
    let filter = std::env::var(session::ENV_PROG).ok();
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
            ProgramKind::Tracepoint { category, name: tp } => {
                skip(format!(
                    "tracepoint {category}/{tp}: syscall tracepoints are not supported by pkbpf run yet"
                ));
                continue;
            }
            ProgramKind::RawTracepoint { name: tp } => {
                skip(format!(
                    "raw_tracepoint {tp}: syscall tracepoints are not supported by pkbpf run yet"
                ));
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
}

extern "C" fn after_fork_child() {
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
    drain_rings(agent);
    send(agent.fd, &Message::Exit { pid: me });
}
