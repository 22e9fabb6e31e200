//! `pkbpf run OBJ [--prog NAME] -- CMD ARGS…`: loads and verifies an
//! object, starts CMD with the preload agent (`libpkbpf_agent.so`) which
//! attaches the object's uprobe/uretprobe programs inside it, and streams
//! what the programs produce.
//!
//! Output (stdout): `bpf_printk` lines in the kernel's `trace_pipe` format as
//! they come, ring buffer records in hex (`ringbuf MAP: BYTES`), and when the
//! target exits each program's hit count and each map's contents in the
//! shape of `bpftool map dump` (hex keys and values). Progress and problems
//! go to stderr. The exit status is the target's, or 1 when the object is
//! bad (the target is not started) or the agent reported an error (a failed
//! load or attach; the target still ran).
//!
//! The agent library is found next to the `pkbpf` binary, or at
//! `$PKBPF_AGENT_LIB`.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use pkbpf::runtime::{Runtime, RuntimeError, Sandbox};
use pkbpf::session::{self, Message};

use super::SandboxArg;

/// Arguments of `pkbpf run`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The `.bpf.o` file.
    pub object: PathBuf,
    /// Only attach this program (by function name).
    #[arg(long)]
    pub prog: Option<String>,
    /// The command to start, with its arguments (after `--`).
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

/// The agent library's file name.
pub const AGENT_LIB: &str = "libpkbpf_agent.so";

/// Where the agent library is: `$PKBPF_AGENT_LIB`, else next to the
/// running binary.
pub fn agent_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PKBPF_AGENT_LIB") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating the pkbpf binary")?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let lib = dir.join(AGENT_LIB);
    if !lib.is_file() {
        bail!(
            "the agent library {} is missing (build it with `cargo build -p pkbpf-agent`, or set PKBPF_AGENT_LIB)",
            lib.display()
        );
    }
    Ok(lib)
}

fn sandbox_name(s: SandboxArg) -> &'static str {
    match s {
        SandboxArg::Auto => "auto",
        SandboxArg::Mpk => "mpk",
        SandboxArg::None => "none",
    }
}

/// Loads and verifies the object here, so a bad one fails before the
/// target starts (with the verifier's log).
fn check_object(path: &Path, prog: Option<&str>, sandbox: Sandbox) -> Result<()> {
    let rt = Runtime::builder().sandbox(sandbox).build()?;
    match rt.load_file(path) {
        Ok(obj) => {
            if let Some(p) = prog {
                obj.program(p)
                    .with_context(|| format!("{}: --prog {p}", path.display()))?;
            }
            Ok(())
        }
        Err(e @ RuntimeError::Verify { .. }) => {
            let log = match &e {
                RuntimeError::Verify { log, .. } => log.0.clone(),
                _ => String::new(),
            };
            Err(anyhow::Error::new(e).context(format!("{}: verifier log:\n{log}", path.display())))
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("loading {}", path.display()))),
    }
}

fn socket_pair() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("creating the agent socket");
    }
    // SAFETY: socketpair succeeded: both fds are new and ours alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Runs the subcommand.
pub fn run(a: Args, sandbox: SandboxArg) -> Result<i32> {
    let object = std::fs::canonicalize(&a.object)
        .with_context(|| format!("reading {}", a.object.display()))?;
    check_object(&object, a.prog.as_deref(), sandbox.into())?;
    let agent = agent_path()?;
    let (ours, theirs) = socket_pair()?;
    let child_fd = theirs.as_raw_fd();

    let preload = match std::env::var_os("LD_PRELOAD") {
        Some(old) if !old.is_empty() => {
            let mut p = agent.clone().into_os_string();
            p.push(":");
            p.push(old);
            p
        }
        _ => agent.clone().into_os_string(),
    };
    let mut cmd = Command::new(&a.command[0]);
    cmd.args(&a.command[1..])
        .env("LD_PRELOAD", preload)
        .env(session::ENV_OBJECT, &object)
        .env(session::ENV_SANDBOX, sandbox_name(sandbox))
        .env(session::ENV_FD, child_fd.to_string());
    match &a.prog {
        Some(p) => cmd.env(session::ENV_PROG, p),
        None => cmd.env_remove(session::ENV_PROG),
    };
    // SAFETY: the closure only calls fcntl (async-signal-safe) on an fd that
    // is open in the child.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(child_fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", a.command[0]))?;
    drop(theirs);

    let mut out = Output::default();
    let fd = ours.as_raw_fd();
    let status = loop {
        out.receive(fd, 100)?;
        if out.eof {
            break child.wait().context("waiting for the target")?;
        }
        if let Some(st) = child.try_wait().context("waiting for the target")? {
            break st;
        }
    };
    // What the target sent before exiting is queued: take it without
    // waiting for processes it left behind (they may hold the socket).
    while !out.eof && out.receive(fd, 0)? {}
    out.finish()?;

    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    if !out.errors.is_empty() {
        eprintln!(
            "pkbpf: error: the agent reported {} error(s); the target exited with status {code}",
            out.errors.len()
        );
        return Ok(1);
    }
    if out.hellos == 0 {
        eprintln!(
            "pkbpf: error: the agent never reported from {} (a statically linked or setuid target ignores LD_PRELOAD)",
            a.command[0]
        );
        return Ok(1);
    }
    Ok(code)
}

/// Prints what the agents send.
#[derive(Default)]
struct Output {
    errors: Vec<String>,
    hellos: usize,
    /// Every process holding the socket has closed it.
    eof: bool,
    /// The map whose entries are being printed, and how many so far.
    open_map: Option<(u32, String, usize)>,
}

impl Output {
    /// Receives and prints what is there, waiting up to `timeout_ms` for the
    /// first packet; false when nothing came (or the socket reached EOF).
    fn receive(&mut self, fd: RawFd, timeout_ms: i32) -> Result<bool> {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if n <= 0 || pfd.revents & libc::POLLIN == 0 {
            return Ok(false);
        }
        let mut buf = vec![0u8; session::MAX_LINE + 1];
        let mut got = false;
        loop {
            // SAFETY: `buf` is a live buffer of `buf.len()` bytes.
            let n =
                unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n == 0 {
                // Every agent closed its end.
                self.eof = true;
                return Ok(got);
            }
            if n < 0 {
                return Ok(got);
            }
            got = true;
            let text = String::from_utf8_lossy(&buf[..n as usize]);
            let line = text.trim_end_matches('\n');
            match Message::decode(line) {
                Ok(m) => self.show(m)?,
                Err(e) => eprintln!("pkbpf: warning: {e}"),
            }
        }
    }

    fn close_map(&mut self) -> Result<()> {
        if let Some((_, _, n)) = self.open_map.take() {
            let mut o = std::io::stdout().lock();
            writeln!(o, "Found {n} element{}", if n == 1 { "" } else { "s" })?;
        }
        Ok(())
    }

    fn show(&mut self, m: Message) -> Result<()> {
        if !matches!(m, Message::MapEntry { .. }) {
            self.close_map()?;
        }
        let mut o = std::io::stdout().lock();
        match m {
            Message::Hello { pid, ppid, forked } => {
                self.hellos += 1;
                if forked {
                    eprintln!("pkbpf: pid {pid}: agent running (forked from {ppid})");
                } else {
                    eprintln!("pkbpf: pid {pid}: agent running");
                }
            }
            Message::Attached {
                pid,
                prog,
                kind,
                addr,
            } => eprintln!("pkbpf: pid {pid}: attached {prog} ({kind}) at {addr:#x}"),
            Message::Skipped { pid, prog, reason } => {
                eprintln!("pkbpf: warning: pid {pid}: {prog} not attached: {reason}")
            }
            Message::Error { pid, text } => {
                eprintln!("pkbpf: error: pid {pid}: {text}");
                self.errors.push(text);
            }
            Message::Printk { line, .. } => writeln!(o, "{line}")?,
            Message::Ringbuf { pid, map, data } => {
                writeln!(o, "ringbuf {map} [pid {pid}]: {}", spaced_hex(&data))?
            }
            Message::Hits {
                pid,
                prog,
                hits,
                errors,
            } => writeln!(o, "prog {prog} [pid {pid}]: {hits} hits, {errors} errors")?,
            Message::MapHeader {
                pid,
                map,
                map_type,
                key_size,
                value_size,
            } => {
                writeln!(
                    o,
                    "map {map} [pid {pid}] ({map_type}, key {key_size} bytes, value {value_size} bytes):"
                )?;
                drop(o);
                self.open_map = Some((pid, map, 0));
            }
            Message::MapEntry {
                map, key, value, ..
            } => {
                match &mut self.open_map {
                    Some((_, open, n)) if *open == map => *n += 1,
                    _ => {}
                }
                if key.is_empty() {
                    writeln!(o, "value: {}", spaced_hex(&value))?
                } else {
                    writeln!(
                        o,
                        "key: {}  value: {}",
                        spaced_hex(&key),
                        spaced_hex(&value)
                    )?
                }
            }
            Message::Exit { pid } => eprintln!("pkbpf: pid {pid}: exited"),
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.close_map()?;
        std::io::stdout().flush()?;
        Ok(())
    }
}

/// `bpftool`-style hex: two digits per byte, space separated.
pub fn spaced_hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}
