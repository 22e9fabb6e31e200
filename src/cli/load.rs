//! `pkbpf load OBJ [--prog NAME] [--name SESSION]`: loads and verifies an
//! object, registers a session (see [`pkbpf::session`]) and stays in the
//! foreground serving agents: targets started with `pkbpf start` or
//! injected with `pkbpf attach` load the object, attach its programs and
//! stream their output here, exactly as with `pkbpf run` (printk lines,
//! ring buffer and perf records, hit counts when a target exits). Each
//! target process keeps its maps in its own region, which it hands to the
//! loader (`pkbpf map list/dump` read them while the targets run).
//!
//! Ctrl-C, SIGTERM or SIGHUP end the loader: it prints every target's maps
//! as `pkbpf run` does at exit, removes the session and exits 0 (1 when an
//! agent reported an error). Targets still running keep their probes; what
//! they send afterwards is lost.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use anyhow::{Context, Result};
use pkbpf::session::{self, Reply, Request, SessionInfo};

use super::run::{check_object, sandbox_name, Output};
use super::SandboxArg;

/// Arguments of `pkbpf load`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The `.bpf.o` file.
    pub object: PathBuf,
    /// Only attach this program (by function name).
    #[arg(long)]
    pub prog: Option<String>,
    /// The session's name (default: the object's file name without
    /// `.bpf.o`).
    #[arg(long)]
    pub name: Option<String>,
    /// Print map entries in hex even when BTF names their types.
    #[arg(long)]
    pub hex: bool,
}

/// The default session name: the object's file name without `.bpf.o` /
/// `.o`, with characters a session name cannot hold replaced by `_`.
fn default_name(object: &std::path::Path) -> String {
    let file = object
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = file
        .strip_suffix(".bpf.o")
        .or_else(|| file.strip_suffix(".o"))
        .unwrap_or(&file);
    let mut name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with('.') {
        name.insert(0, 's');
    }
    name
}

/// SIGINT, SIGTERM and SIGHUP, blocked and readable from a signalfd.
fn stop_signals() -> Result<OwnedFd> {
    // SAFETY: the set is initialised by sigemptyset before use; blocking
    // signals and creating a signalfd have no memory preconditions.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            anyhow::bail!("blocking SIGINT/SIGTERM");
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("creating a signalfd");
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Prints the object's programs and maps (stderr).
fn describe(object: &std::path::Path) {
    let Ok(bytes) = std::fs::read(object) else {
        return;
    };
    let Ok(obj) = pkbpf::object::Object::parse(&bytes) else {
        return;
    };
    eprintln!("pkbpf: loaded {}", object.display());
    for p in obj.programs() {
        eprintln!("pkbpf:   program {} ({})", p.name, p.section);
    }
    for m in obj.maps() {
        eprintln!(
            "pkbpf:   map {} ({}, key {} bytes, value {} bytes, max_entries {})",
            m.name,
            m.map_type.name(),
            m.key_size,
            m.value_size,
            m.max_entries
        );
    }
}

/// Runs the subcommand.
pub fn run(a: Args, sandbox: SandboxArg) -> Result<i32> {
    // Blocked before anything else, so threads started later inherit the
    // mask and a signal right after "ready" is not lost.
    let sigfd = stop_signals()?;
    let object = std::fs::canonicalize(&a.object)
        .with_context(|| format!("reading {}", a.object.display()))?;
    check_object(&object, a.prog.as_deref(), sandbox.into())?;
    describe(&object);
    let name = a.name.clone().unwrap_or_else(|| default_name(&object));
    let root = session::runtime_dir();
    let reg = session::register(
        &root,
        SessionInfo {
            name: name.clone(),
            pid: 0,
            start_time: 0,
            object: object.clone(),
            sandbox: sandbox_name(sandbox).to_string(),
            prog: a.prog.clone(),
            socket: PathBuf::new(),
        },
    )?;
    eprintln!(
        "pkbpf: session {name} ready (loader pid {}, socket {}): `pkbpf start --session {name} -- CMD` or `pkbpf attach PID --session {name}`; Ctrl-C ends it",
        reg.info.pid,
        reg.info.socket.display()
    );

    let mut out = Output::new(&object, a.hex);
    // Accepted connections: agents, and clients asking for regions.
    let mut conns: Vec<OwnedFd> = Vec::new();
    loop {
        let mut fds: Vec<libc::pollfd> = [sigfd.as_raw_fd(), reg.listener.as_raw_fd()]
            .into_iter()
            .chain(conns.iter().map(|c| c.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid array of pollfds of the length given.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("waiting for agents");
        }
        if fds[0].revents != 0 {
            break;
        }
        let mut closed = Vec::new();
        for (c, p) in conns.iter().zip(&fds[2..]) {
            if p.revents != 0 && drain(&mut out, c.as_fd())? {
                closed.push(c.as_raw_fd());
            }
        }
        conns.retain(|c| !closed.contains(&c.as_raw_fd()));
        if fds[1].revents & libc::POLLIN != 0 {
            while let Some(fd) = session::accept(reg.listener.as_fd()).context("accepting")? {
                conns.push(fd);
            }
        }
    }
    // What the agents sent before the signal is queued: take it.
    for c in &conns {
        drain(&mut out, c.as_fd())?;
    }
    eprintln!("pkbpf: session {name} ending");
    out.close_map()?;
    out.dump_maps()?;
    out.finish()?;
    drop(reg);
    if !out.errors.is_empty() {
        eprintln!(
            "pkbpf: error: the agents reported {} error(s)",
            out.errors.len()
        );
        return Ok(1);
    }
    Ok(0)
}

/// Handles every packet waiting on `sock`; true when the peer closed it.
fn drain(out: &mut Output, sock: BorrowedFd<'_>) -> Result<bool> {
    loop {
        match session::recv(sock) {
            Ok(session::Received::Empty) => return Ok(false),
            Ok(session::Received::Closed) => return Ok(true),
            // A peer that vanished mid-packet is just gone.
            Err(e) => {
                tracing::debug!("connection error: {e}");
                return Ok(true);
            }
            Ok(session::Received::Packet(line, fd)) => match Request::decode(&line) {
                Some(req) => {
                    if let Err(e) = answer(out, sock, req) {
                        tracing::debug!("client went away: {e}");
                        return Ok(true);
                    }
                }
                None => out.packet(&line, fd)?,
            },
        }
    }
}

/// Answers a client's request.
fn answer(out: &Output, sock: BorrowedFd<'_>, req: Request) -> std::io::Result<()> {
    match req {
        Request::Regions => {
            for (pid, region) in &out.regions {
                let alive = session::process_start_time(*pid).is_some();
                let reply = Reply::Region { pid: *pid, alive };
                session::send_text(sock, &reply.encode(), Some(region.fd()))?;
            }
            session::send_text(sock, &Reply::Done.encode(), None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_come_from_the_object() {
        let n = |p: &str| default_name(std::path::Path::new(p));
        assert_eq!(n("/x/malloc_free.bpf.o"), "malloc_free");
        assert_eq!(n("a b.o"), "a_b");
        assert_eq!(n(".hidden.bpf.o"), "s.hidden");
        assert!(session::valid_name(&n("/weird/名.bpf.o")));
    }
}
