//! The protocol between `pkbpf run` (the loader) and the preload agent
//! (`libpkbpf_agent.so`) inside the target.
//!
//! The loader creates a `SOCK_SEQPACKET` socket pair and starts the target with the agent in
//! `LD_PRELOAD`; the environment names the object ([`ENV_OBJECT`]), the
//! program filter ([`ENV_PROG`]), the sandbox mode ([`ENV_SANDBOX`]) and the
//! target's end ([`ENV_FD`]). The agent (and every process forked or
//! exec'd from the target, which inherit the fd) sends [`Message`]s on it,
//! one line per packet of at most [`MAX_LINE`] bytes, so messages from
//! several processes never interleave.
//!
//! Text fields are escaped ([`escape`]) so a message stays on one line.
//!
//! # Sessions (`pkbpf load` / `start` / `attach` / `map`)
//!
//! `pkbpf load OBJ` registers a *session*: a directory `<root>/<NAME>/`
//! ([`runtime_dir`] is the root; NAME defaults to the object's stem) holding
//! a listening `SOCK_SEQPACKET` socket `sock` and a description file
//! `session` ([`SessionInfo`]: the loader's pid and start time, the object,
//! the sandbox mode, the program filter, the socket's path). The directory
//! is built under a hidden temporary name and renamed into place once the
//! socket listens, so a visible session is always complete; the loader
//! removes it when it exits, and [`list_sessions`] removes those whose
//! loader died (pid gone, or reused: the start time differs).
//!
//! Each connection to the socket is either an agent (its first packet is a
//! [`Message::Hello`], then the same stream as with `pkbpf run`) or a client
//! asking a [`Request`] (`pkbpf map ...`), answered with [`Reply`] packets.
//! `pkbpf start` connects and hands the connected fd to the target in
//! [`ENV_FD`]; `pkbpf attach` has the injected agent connect by itself to
//! the path in the session description it is given
//! (`pkbpf_agent_attach`, see the agent crate).

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// Environment variable: the object file the agent loads (absolute path).
pub const ENV_OBJECT: &str = "PKBPF_OBJECT";
/// Environment variable: only attach this program (absent: all).
pub const ENV_PROG: &str = "PKBPF_PROG";
/// Environment variable: the sandbox mode (`auto`, `mpk`, `none`).
pub const ENV_SANDBOX: &str = "PKBPF_SANDBOX";
/// Environment variable: the fd number of the socket to the loader.
pub const ENV_FD: &str = "PKBPF_AGENT_FD";
/// The longest line (one packet) a message may take.
pub const MAX_LINE: usize = 4096;

/// One message from the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// The agent started in process `pid` (parent `ppid`); `forked` when this
    /// process is a child forked from an instrumented one.
    Hello {
        /// The process.
        pid: u32,
        /// Its parent.
        ppid: u32,
        /// Whether the agent got here through `fork` (not a fresh start).
        forked: bool,
    },
    /// A program was attached at `addr`.
    Attached {
        /// The process.
        pid: u32,
        /// The program.
        prog: String,
        /// `uprobe` or `uretprobe`.
        kind: String,
        /// The probed address.
        addr: u64,
    },
    /// A program was not attached because pkbpf cannot attach its kind yet,
    /// or its section names no target.
    Skipped {
        /// The process.
        pid: u32,
        /// The program.
        prog: String,
        /// Why.
        reason: String,
    },
    /// Loading or attaching failed: `pkbpf run` exits non-zero.
    Error {
        /// The process.
        pid: u32,
        /// What failed (the whole error chain).
        text: String,
    },
    /// One `bpf_printk` line (trace_pipe format).
    Printk {
        /// The process.
        pid: u32,
        /// The line.
        line: String,
    },
    /// The packet carries the fd of the object's map region (`SCM_RIGHTS`):
    /// the loader dumps the maps from it after the process ends, however it
    /// ends.
    Region {
        /// The process that loaded the object.
        pid: u32,
    },
    /// A record of ring buffer `map`.
    Ringbuf {
        /// The process.
        pid: u32,
        /// The map.
        map: String,
        /// The record's bytes.
        data: Vec<u8>,
    },
    /// A record of perf event array `map`, from CPU `cpu`'s ring.
    Perf {
        /// The process.
        pid: u32,
        /// The map.
        map: String,
        /// The ring (CPU) it was written to.
        cpu: u32,
        /// The record's bytes.
        data: Vec<u8>,
    },
    /// At exit: how often an attached program ran.
    Hits {
        /// The process.
        pid: u32,
        /// The program.
        prog: String,
        /// Runs that returned normally.
        hits: u64,
        /// Runs that failed.
        errors: u64,
    },
    /// At exit: the header of map `map`'s dump.
    MapHeader {
        /// The process.
        pid: u32,
        /// The map.
        map: String,
        /// Its type name (`hash`, `array`, ...).
        map_type: String,
        /// Key size in bytes.
        key_size: u32,
        /// Value size in bytes.
        value_size: u32,
    },
    /// At exit: one entry of map `map`.
    MapEntry {
        /// The process.
        pid: u32,
        /// The map.
        map: String,
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// The agent in `pid` finished (its exit handler ran).
    Exit {
        /// The process.
        pid: u32,
    },
}

/// A line that is not a [`Message`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad agent message {line:?}: {reason}")]
pub struct ParseError {
    /// The line.
    pub line: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Escapes `\`, newline and carriage return so `s` fits on one line and
/// splits on spaces only where fields end (space becomes `\s`).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            ' ' => out.push_str("\\s"),
            c => out.push(c),
        }
    }
    out
}

/// Undoes [`escape`]; `None` on a dangling or unknown escape.
pub fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match it.next()? {
            '\\' => '\\',
            'n' => '\n',
            'r' => '\r',
            's' => ' ',
            _ => return None,
        });
    }
    Some(out)
}

/// Lowercase hex of `b`, no separators (`-` for no bytes).
pub fn hex(b: &[u8]) -> String {
    if b.is_empty() {
        return "-".to_string();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Undoes [`hex`].
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s == "-" {
        return Some(Vec::new());
    }
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

impl Message {
    /// The process the message is from.
    pub fn pid(&self) -> u32 {
        match self {
            Message::Hello { pid, .. }
            | Message::Attached { pid, .. }
            | Message::Skipped { pid, .. }
            | Message::Error { pid, .. }
            | Message::Region { pid }
            | Message::Printk { pid, .. }
            | Message::Ringbuf { pid, .. }
            | Message::Perf { pid, .. }
            | Message::Hits { pid, .. }
            | Message::MapHeader { pid, .. }
            | Message::MapEntry { pid, .. }
            | Message::Exit { pid } => *pid,
        }
    }

    /// The message as one line with its newline, at most [`MAX_LINE`]
    /// bytes: a longer line is cut (meant for long printk and error texts;
    /// the agent sends map entries too big for one line as an error).
    pub fn encode(&self) -> String {
        let mut line = match self {
            Message::Hello { pid, ppid, forked } => {
                format!("hello {pid} {ppid} {}", u8::from(*forked))
            }
            Message::Attached {
                pid,
                prog,
                kind,
                addr,
            } => format!("attached {pid} {} {} {addr:#x}", escape(prog), escape(kind)),
            Message::Skipped { pid, prog, reason } => {
                format!("skipped {pid} {} {}", escape(prog), escape(reason))
            }
            Message::Error { pid, text } => format!("error {pid} {}", escape(text)),
            Message::Region { pid } => format!("region {pid}"),
            Message::Printk { pid, line } => format!("printk {pid} {}", escape(line)),
            Message::Ringbuf { pid, map, data } => {
                format!("ringbuf {pid} {} {}", escape(map), hex(data))
            }
            Message::Perf {
                pid,
                map,
                cpu,
                data,
            } => format!("perf {pid} {} {cpu} {}", escape(map), hex(data)),
            Message::Hits {
                pid,
                prog,
                hits,
                errors,
            } => format!("hits {pid} {} {hits} {errors}", escape(prog)),
            Message::MapHeader {
                pid,
                map,
                map_type,
                key_size,
                value_size,
            } => format!(
                "map {pid} {} {} {key_size} {value_size}",
                escape(map),
                escape(map_type)
            ),
            Message::MapEntry {
                pid,
                map,
                key,
                value,
            } => format!("entry {pid} {} {} {}", escape(map), hex(key), hex(value)),
            Message::Exit { pid } => format!("exit {pid}"),
        };
        if line.len() >= MAX_LINE {
            let mut cut = MAX_LINE - 1;
            while !line.is_char_boundary(cut) || line[..cut].ends_with('\\') {
                cut -= 1;
            }
            line.truncate(cut);
        }
        line.push('\n');
        line
    }

    /// Parses one line (without its newline).
    pub fn decode(line: &str) -> Result<Message, ParseError> {
        let bad = |reason| ParseError {
            line: line.to_string(),
            reason,
        };
        let f: Vec<&str> = line.split(' ').collect();
        let num = |i: usize| -> Result<u64, ParseError> {
            let s = f.get(i).ok_or_else(|| bad("missing field"))?;
            match s.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => s.parse(),
            }
            .map_err(|_| bad("bad number"))
        };
        let text = |i: usize| -> Result<String, ParseError> {
            unescape(f.get(i).ok_or_else(|| bad("missing field"))?).ok_or_else(|| bad("bad escape"))
        };
        let bytes = |i: usize| -> Result<Vec<u8>, ParseError> {
            unhex(f.get(i).ok_or_else(|| bad("missing field"))?).ok_or_else(|| bad("bad hex"))
        };
        let arity = |n: usize| {
            if f.len() == n {
                Ok(())
            } else {
                Err(bad("wrong number of fields"))
            }
        };
        let pid = || -> Result<u32, ParseError> {
            u32::try_from(num(1)?).map_err(|_| bad("pid out of range"))
        };
        let u32f = |i: usize| u32::try_from(num(i)?).map_err(|_| bad("size out of range"));
        match f[0] {
            "hello" => {
                arity(4)?;
                Ok(Message::Hello {
                    pid: pid()?,
                    ppid: u32f(2)?,
                    forked: num(3)? != 0,
                })
            }
            "attached" => {
                arity(5)?;
                Ok(Message::Attached {
                    pid: pid()?,
                    prog: text(2)?,
                    kind: text(3)?,
                    addr: num(4)?,
                })
            }
            "skipped" => {
                arity(4)?;
                Ok(Message::Skipped {
                    pid: pid()?,
                    prog: text(2)?,
                    reason: text(3)?,
                })
            }
            "error" => {
                arity(3)?;
                Ok(Message::Error {
                    pid: pid()?,
                    text: text(2)?,
                })
            }
            "printk" => {
                arity(3)?;
                Ok(Message::Printk {
                    pid: pid()?,
                    line: text(2)?,
                })
            }
            "ringbuf" => {
                arity(4)?;
                Ok(Message::Ringbuf {
                    pid: pid()?,
                    map: text(2)?,
                    data: bytes(3)?,
                })
            }
            "perf" => {
                arity(5)?;
                Ok(Message::Perf {
                    pid: pid()?,
                    map: text(2)?,
                    cpu: u32f(3)?,
                    data: bytes(4)?,
                })
            }
            "hits" => {
                arity(5)?;
                Ok(Message::Hits {
                    pid: pid()?,
                    prog: text(2)?,
                    hits: num(3)?,
                    errors: num(4)?,
                })
            }
            "map" => {
                arity(6)?;
                Ok(Message::MapHeader {
                    pid: pid()?,
                    map: text(2)?,
                    map_type: text(3)?,
                    key_size: u32f(4)?,
                    value_size: u32f(5)?,
                })
            }
            "entry" => {
                arity(5)?;
                Ok(Message::MapEntry {
                    pid: pid()?,
                    map: text(2)?,
                    key: bytes(3)?,
                    value: bytes(4)?,
                })
            }
            "region" => {
                arity(2)?;
                Ok(Message::Region { pid: pid()? })
            }
            "exit" => {
                arity(2)?;
                Ok(Message::Exit { pid: pid()? })
            }
            _ => Err(bad("unknown message kind")),
        }
    }
}

/// Sends `m` as one packet on `sock`, with `fd` attached (`SCM_RIGHTS`)
/// when given. Never raises `SIGPIPE` (a loader that went away is an error
/// the caller may ignore).
pub fn send(sock: BorrowedFd<'_>, m: &Message, fd: Option<BorrowedFd<'_>>) -> std::io::Result<()> {
    send_line(sock, &m.encode(), fd)
}

fn send_line(sock: BorrowedFd<'_>, line: &str, fd: Option<BorrowedFd<'_>>) -> std::io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: line.as_ptr() as *mut libc::c_void,
        iov_len: line.len(),
    };
    // Room for one fd's control message, aligned for cmsghdr.
    let mut cbuf = [0u64; 4];
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
        debug_assert!(space <= std::mem::size_of_val(&cbuf));
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: msg_control points at `space` zeroed, aligned bytes, so
        // CMSG_FIRSTHDR is non-null and CMSG_DATA has room for one fd.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd.as_raw_fd());
        }
    }
    loop {
        // SAFETY: `msg` points at live buffers (`line`, `cbuf`) for the call.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// What [`recv`] got.
#[derive(Debug)]
pub enum Received {
    /// A packet's text (without its newline), and the fd it carried.
    Packet(String, Option<OwnedFd>),
    /// Nothing waiting (non-blocking).
    Empty,
    /// Every sender has closed the socket.
    Closed,
}

/// Receives one packet from `sock` without blocking.
pub fn recv(sock: BorrowedFd<'_>) -> std::io::Result<Received> {
    let mut buf = vec![0u8; MAX_LINE + 1];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: `msg` points at live buffers of the sizes it states.
    let n = unsafe {
        libc::recvmsg(
            sock.as_raw_fd(),
            &mut msg,
            libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(Received::Empty),
            _ => Err(e),
        };
    }
    if n == 0 {
        return Ok(Received::Closed);
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `msg`'s control buffer; the CMSG macros
    // walk it within msg_controllen, and each SCM_RIGHTS payload holds
    // (cmsg_len - CMSG_LEN(0)) / 4 new fds that are ours to own.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*c).cmsg_len - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let text = String::from_utf8_lossy(&buf[..n as usize])
        .trim_end_matches('\n')
        .to_string();
    // One fd at most is expected; extra ones are closed when dropped.
    Ok(Received::Packet(text, fds.into_iter().next()))
}

/// Environment variable: the directory holding the sessions (overrides
/// the default of [`runtime_dir`]).
pub const ENV_RUNTIME_DIR: &str = "PKBPF_RUNTIME_DIR";

/// Where sessions live: `$PKBPF_RUNTIME_DIR`, else
/// `$XDG_RUNTIME_DIR/pkbpf`, else `/run/pkbpf` for root, else
/// `/tmp/pkbpf-<uid>`.
pub fn runtime_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(ENV_RUNTIME_DIR).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("pkbpf");
    }
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        PathBuf::from("/run/pkbpf")
    } else {
        PathBuf::from(format!("/tmp/pkbpf-{uid}"))
    }
}

/// Errors of the session registry.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No loader is running.
    #[error("no pkbpf session is running (none in {}; start one with `pkbpf load OBJ`)", dir.display())]
    NoSessions {
        /// The sessions directory.
        dir: PathBuf,
    },
    /// No session of that name.
    #[error(
        "no pkbpf session named {name:?} is running (running: {})",
        list(running)
    )]
    NotFound {
        /// The name asked for.
        name: String,
        /// The sessions that are running.
        running: Vec<String>,
    },
    /// Several loaders run and none was named.
    #[error("{} pkbpf sessions are running ({}): choose one with --session NAME", running.len(), list(running))]
    Ambiguous {
        /// The sessions that are running.
        running: Vec<String>,
    },
    /// A live loader already holds the name.
    #[error(
        "pkbpf session {name:?} is already running (loader pid {pid}); choose another with --name"
    )]
    Exists {
        /// The name.
        name: String,
        /// Its loader.
        pid: u32,
    },
    /// The name cannot be a directory name.
    #[error(
        "bad session name {name:?}: use letters, digits, `-`, `_` and `.`, not starting with `.`"
    )]
    BadName {
        /// The name.
        name: String,
    },
    /// The socket's path does not fit a `sockaddr_un`.
    #[error("socket path {} is too long for a unix socket (108 bytes); set {ENV_RUNTIME_DIR} to a shorter directory", path.display())]
    PathTooLong {
        /// The path.
        path: PathBuf,
    },
    /// A description file that does not parse.
    #[error("bad session description {}: {reason}", path.display())]
    BadDescription {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The sessions directory belongs to another user (who could plant
    /// sockets in it).
    #[error("sessions directory {} belongs to uid {owner}, not to us; set {ENV_RUNTIME_DIR} to a directory of ours", path.display())]
    NotOurs {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
    },
    /// A file system or socket operation failed.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// A running loader, as its description file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session's name.
    pub name: String,
    /// The loader's pid.
    pub pid: u32,
    /// The loader's start time (clock ticks since boot, `/proc/PID/stat`
    /// field 22): tells a live loader from a reused pid.
    pub start_time: u64,
    /// The object file (absolute).
    pub object: PathBuf,
    /// The sandbox mode (`auto`, `mpk`, `none`).
    pub sandbox: String,
    /// Only this program is attached (absent: all).
    pub prog: Option<String>,
    /// The loader's listening socket.
    pub socket: PathBuf,
}

impl SessionInfo {
    /// The description as `key=value` lines (values [`escape`]d).
    pub fn encode(&self) -> String {
        let mut s = format!(
            "name={}\npid={}\nstart_time={}\nobject={}\nsandbox={}\nsocket={}\n",
            escape(&self.name),
            self.pid,
            self.start_time,
            escape(&self.object.to_string_lossy()),
            escape(&self.sandbox),
            escape(&self.socket.to_string_lossy()),
        );
        if let Some(p) = &self.prog {
            s.push_str(&format!("prog={}\n", escape(p)));
        }
        s
    }

    /// Parses [`encode`](Self::encode)'s text; the error says what is wrong.
    pub fn decode(text: &str) -> Result<SessionInfo, String> {
        let mut fields = std::collections::HashMap::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("line {line:?} is not key=value"))?;
            let v = unescape(v).ok_or_else(|| format!("bad escape in {k}"))?;
            fields.insert(k.to_string(), v);
        }
        let mut take = |k: &str| fields.remove(k).ok_or_else(|| format!("no {k}"));
        let num = |k: &str, v: String| v.parse::<u64>().map_err(|_| format!("bad {k} {v:?}"));
        let name = take("name")?;
        let pid = u32::try_from(num("pid", take("pid")?)?).map_err(|_| "pid out of range")?;
        let start_time = num("start_time", take("start_time")?)?;
        let object = PathBuf::from(take("object")?);
        let sandbox = take("sandbox")?;
        let socket = PathBuf::from(take("socket")?);
        let prog = take("prog").ok();
        Ok(SessionInfo {
            name,
            pid,
            start_time,
            object,
            sandbox,
            prog,
            socket,
        })
    }

    /// Whether the loader is still the process that wrote the description.
    pub fn alive(&self) -> bool {
        process_start_time(self.pid) == Some(self.start_time)
    }
}

/// A process's start time (`/proc/PID/stat` field 22), `None` when it does
/// not exist (or is a zombie).
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields
    // count from the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_ascii_whitespace();
    if f.next()? == "Z" {
        return None;
    }
    // `rest` starts at field 3; field 22 is 19 further.
    f.nth(18)?.parse().ok()
}

fn io_err<'p>(
    op: &'static str,
    path: &'p Path,
) -> impl FnOnce(std::io::Error) -> SessionError + 'p {
    move |source| SessionError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Every running session under `root`, by name. Sessions whose loader is
/// gone are removed (and so are the leftovers of loaders that died while
/// registering).
pub fn list_sessions(root: &Path) -> Result<Vec<SessionInfo>, SessionError> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("reading", root)(e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        if let Some(tmp) = name.strip_prefix('.') {
            // `.NAME.PID`: a loader registering (or one that died doing so).
            let pid = tmp.rsplit('.').next().and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|p| process_start_time(p).is_none()) {
                let _ = std::fs::remove_dir_all(&dir);
            }
            continue;
        }
        let desc = dir.join("session");
        let Ok(text) = std::fs::read_to_string(&desc) else {
            continue;
        };
        match SessionInfo::decode(&text) {
            Ok(info) if info.alive() => out.push(info),
            // A dead loader's (or a garbled) description: stale.
            _ => {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The session named `name`, or the only one running when `name` is `None`.
pub fn find_session(root: &Path, name: Option<&str>) -> Result<SessionInfo, SessionError> {
    let all = list_sessions(root)?;
    let names = || all.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    match name {
        Some(n) => {
            all.iter()
                .find(|s| s.name == n)
                .cloned()
                .ok_or_else(|| SessionError::NotFound {
                    name: n.to_string(),
                    running: names(),
                })
        }
        None => match all.len() {
            0 => Err(SessionError::NoSessions {
                dir: root.to_path_buf(),
            }),
            1 => Ok(all[0].clone()),
            _ => Err(SessionError::Ambiguous { running: names() }),
        },
    }
}

/// Whether `name` can name a session directory.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn sockaddr(path: &Path) -> Result<(libc::sockaddr_un, libc::socklen_t), SessionError> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(SessionError::PathTooLong {
            path: path.to_path_buf(),
        });
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

fn seqpacket() -> std::io::Result<OwnedFd> {
    // SAFETY: socket has no memory preconditions.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor, ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Connects to a loader's socket (close-on-exec).
pub fn connect(path: &Path) -> Result<OwnedFd, SessionError> {
    let (addr, len) = sockaddr(path)?;
    let fd = seqpacket().map_err(io_err("creating a socket for", path))?;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    };
    if r != 0 {
        return Err(io_err("connecting to", path)(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(fd)
}

/// A registered session: the listening socket, and the directory, removed
/// when this is dropped.
#[derive(Debug)]
pub struct Registration {
    /// What the description file says.
    pub info: SessionInfo,
    /// The session directory.
    pub dir: PathBuf,
    /// The listening socket (non-blocking, close-on-exec).
    pub listener: OwnedFd,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!("removing session directory {}: {e}", self.dir.display());
        }
    }
}

/// Registers session `info.name` under `root` for this process: creates
/// the directory with a listening socket and the description (whose
/// `pid`, `start_time` and `socket` fields are filled in here). A stale
/// session of the same name is replaced; a live one is an error.
pub fn register(root: &Path, mut info: SessionInfo) -> Result<Registration, SessionError> {
    use std::os::unix::fs::DirBuilderExt;
    if !valid_name(&info.name) {
        return Err(SessionError::BadName { name: info.name });
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(root)
        .map_err(io_err("creating", root))?;
    let root = std::fs::canonicalize(root).map_err(io_err("resolving", root))?;
    {
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(&root)
            .map_err(io_err("reading", &root))?
            .uid();
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        if owner != uid && uid != 0 {
            return Err(SessionError::NotOurs { path: root, owner });
        }
    }
    let me = std::process::id();
    info.pid = me;
    info.start_time = process_start_time(me).unwrap_or(0);
    let dir = root.join(&info.name);
    info.socket = dir.join("sock");
    let tmp = root.join(format!(".{}.{me}", info.name));
    let (addr, len) = sockaddr(&tmp.join("sock"))?;
    sockaddr(&info.socket)?;
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&tmp)
        .map_err(io_err("creating", &tmp))?;
    let cleanup = |e: SessionError| {
        let _ = std::fs::remove_dir_all(&tmp);
        e
    };
    let listener = seqpacket()
        .map_err(io_err("creating a socket for", &tmp))
        .map_err(cleanup)?;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes; listen and
    // fcntl take only the fd.
    let r = unsafe {
        if libc::bind(
            listener.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        ) != 0
            || libc::listen(listener.as_raw_fd(), 64) != 0
        {
            -1
        } else {
            let fl = libc::fcntl(listener.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(listener.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK)
        }
    };
    if r < 0 {
        return Err(cleanup(io_err("listening on", &tmp)(
            std::io::Error::last_os_error(),
        )));
    }
    let desc = tmp.join("session");
    std::fs::write(&desc, info.encode())
        .map_err(io_err("writing", &desc))
        .map_err(cleanup)?;
    // Into place: at most two tries (the second after removing a stale one).
    for _ in 0..2 {
        match std::fs::rename(&tmp, &dir) {
            Ok(()) => {
                return Ok(Registration {
                    info,
                    dir,
                    listener,
                })
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST) | Some(libc::ENOTEMPTY)) => {
                let old = std::fs::read_to_string(dir.join("session"))
                    .ok()
                    .and_then(|t| SessionInfo::decode(&t).ok());
                match old {
                    Some(o) if o.alive() => {
                        return Err(cleanup(SessionError::Exists {
                            name: info.name.clone(),
                            pid: o.pid,
                        }))
                    }
                    _ => {
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                }
            }
            Err(e) => return Err(cleanup(io_err("renaming into", &dir)(e))),
        }
    }
    Err(cleanup(SessionError::Exists {
        name: info.name.clone(),
        pid: 0,
    }))
}

/// Accepts one pending connection on a [`Registration`]'s listener
/// (non-blocking; `None` when none is waiting). The new socket is
/// close-on-exec.
pub fn accept(listener: BorrowedFd<'_>) -> std::io::Result<Option<OwnedFd>> {
    // SAFETY: null address arguments are allowed; accept4 returns a new fd.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: a new descriptor, ours alone.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// A client's request to a loader (the first packet of a connection that
/// is not an agent's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Send the map region of every process that loaded the object: one
    /// [`Reply::Region`] each (with the memfd), then [`Reply::Done`].
    Regions,
}

impl Request {
    /// The request as one packet's text.
    pub fn encode(&self) -> &'static str {
        match self {
            Request::Regions => "request regions",
        }
    }

    /// Parses a packet; `None` when it is not a request.
    pub fn decode(line: &str) -> Option<Request> {
        match line {
            "request regions" => Some(Request::Regions),
            _ => None,
        }
    }
}

/// A loader's answer to a [`Request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The packet carries the map region of the object loaded in `pid`
    /// (`SCM_RIGHTS`); `alive` tells whether that process still runs.
    Region {
        /// The process.
        pid: u32,
        /// Whether it still runs.
        alive: bool,
    },
    /// No more regions.
    Done,
}

impl Reply {
    /// The reply as one packet's text.
    pub fn encode(&self) -> String {
        match self {
            Reply::Region { pid, alive } => format!("reply region {pid} {}", u8::from(*alive)),
            Reply::Done => "reply done".into(),
        }
    }

    /// Parses a packet; `None` when it is not a reply.
    pub fn decode(line: &str) -> Option<Reply> {
        let f: Vec<&str> = line.split(' ').collect();
        match f.as_slice() {
            ["reply", "done"] => Some(Reply::Done),
            ["reply", "region", pid, alive] => Some(Reply::Region {
                pid: pid.parse().ok()?,
                alive: *alive == "1",
            }),
            _ => None,
        }
    }
}

/// Sends a raw text packet (requests and replies), with `fd` attached when
/// given.
pub fn send_text(
    sock: BorrowedFd<'_>,
    text: &str,
    fd: Option<BorrowedFd<'_>>,
) -> std::io::Result<()> {
    send_line(sock, &format!("{text}\n"), fd)
}

/// Waits up to `timeout_ms` (-1: forever) for `sock` to be readable or hung up.
pub fn wait_readable(sock: BorrowedFd<'_>, timeout_ms: i32) -> std::io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::fd::AsFd;

    fn arb_text() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[a-z \\\\\n\rA-Z0-9:/_%.-]{0,40}").unwrap()
    }

    fn arb_msg() -> impl Strategy<Value = Message> {
        let pid = any::<u32>();
        let bytes = proptest::collection::vec(any::<u8>(), 0..64);
        prop_oneof![
            (pid, any::<u32>(), any::<bool>()).prop_map(|(pid, ppid, forked)| Message::Hello {
                pid,
                ppid,
                forked
            }),
            (pid, arb_text(), arb_text(), any::<u64>()).prop_map(|(pid, prog, kind, addr)| {
                Message::Attached {
                    pid,
                    prog,
                    kind,
                    addr,
                }
            }),
            (pid, arb_text(), arb_text()).prop_map(|(pid, prog, reason)| Message::Skipped {
                pid,
                prog,
                reason
            }),
            (pid, arb_text()).prop_map(|(pid, text)| Message::Error { pid, text }),
            (pid, arb_text()).prop_map(|(pid, line)| Message::Printk { pid, line }),
            (pid, arb_text(), bytes.clone()).prop_map(|(pid, map, data)| Message::Ringbuf {
                pid,
                map,
                data
            }),
            (pid, arb_text(), any::<u64>(), any::<u64>()).prop_map(|(pid, prog, hits, errors)| {
                Message::Hits {
                    pid,
                    prog,
                    hits,
                    errors,
                }
            }),
            (pid, arb_text(), arb_text(), any::<u32>(), any::<u32>()).prop_map(
                |(pid, map, map_type, key_size, value_size)| Message::MapHeader {
                    pid,
                    map,
                    map_type,
                    key_size,
                    value_size
                }
            ),
            (pid, arb_text(), bytes.clone(), bytes).prop_map(|(pid, map, key, value)| {
                Message::MapEntry {
                    pid,
                    map,
                    key,
                    value,
                }
            }),
            pid.prop_map(|pid| Message::Exit { pid }),
            pid.prop_map(|pid| Message::Region { pid }),
            (
                pid,
                arb_text(),
                any::<u32>(),
                proptest::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|(pid, map, cpu, data)| Message::Perf {
                    pid,
                    map,
                    cpu,
                    data
                }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn message_round_trips(m in arb_msg()) {
            let line = m.encode();
            prop_assert!(line.ends_with('\n'));
            prop_assert_eq!(line.matches('\n').count(), 1);
            prop_assert_eq!(Message::decode(line.trim_end_matches('\n')), Ok(m.clone()));
            prop_assert_eq!(Message::decode(&line[..line.len() - 1]).unwrap().pid(), m.pid());
        }

        #[test]
        fn escape_round_trips(s in ".{0,64}") {
            let e = escape(&s);
            prop_assert!(!e.contains(' ') && !e.contains('\n'));
            prop_assert_eq!(unescape(&e), Some(s));
        }
    }

    #[test]
    fn long_printk_is_cut_to_one_line() {
        let m = Message::Printk {
            pid: 1,
            line: "x\\".repeat(5000),
        };
        let line = m.encode();
        assert!(line.len() <= MAX_LINE);
        let back = Message::decode(line.trim_end_matches('\n')).unwrap();
        let Message::Printk { line: text, .. } = back else {
            panic!("not printk: {back:?}");
        };
        assert!(text.len() > 1000 && "x\\".repeat(5000).starts_with(&text));
    }

    #[test]
    fn packets_carry_text_and_an_fd() {
        use std::io::{Read, Seek, Write};
        let mut fds = [0; 2];
        // SAFETY: room for two fds.
        let r =
            unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0, fds.as_mut_ptr()) };
        assert_eq!(r, 0);
        // SAFETY: both fds are new and ours.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        assert!(matches!(recv(b.as_fd()).unwrap(), Received::Empty));
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"region bytes").unwrap();
        send(a.as_fd(), &Message::Region { pid: 42 }, Some(file.as_fd())).unwrap();
        send(a.as_fd(), &Message::Exit { pid: 42 }, None).unwrap();
        let Received::Packet(text, Some(fd)) = recv(b.as_fd()).unwrap() else {
            panic!("no fd");
        };
        assert_eq!(Message::decode(&text), Ok(Message::Region { pid: 42 }));
        let mut got = std::fs::File::from(fd);
        got.rewind().unwrap();
        let mut s = String::new();
        got.read_to_string(&mut s).unwrap();
        assert_eq!(s, "region bytes");
        let Received::Packet(text, None) = recv(b.as_fd()).unwrap() else {
            panic!("expected a plain packet");
        };
        assert_eq!(Message::decode(&text), Ok(Message::Exit { pid: 42 }));
        drop(a);
        assert!(matches!(recv(b.as_fd()).unwrap(), Received::Closed));
    }

    fn info(name: &str) -> SessionInfo {
        SessionInfo {
            name: name.into(),
            pid: 0,
            start_time: 0,
            object: PathBuf::from("/x/a b.bpf.o"),
            sandbox: "none".into(),
            prog: Some("p\nq".into()),
            socket: PathBuf::new(),
        }
    }

    #[test]
    fn descriptions_round_trip() {
        let mut i = info("one");
        i.pid = 7;
        i.socket = PathBuf::from("/run/pkbpf/one/sock");
        assert_eq!(SessionInfo::decode(&i.encode()), Ok(i.clone()));
        i.prog = None;
        assert_eq!(SessionInfo::decode(&i.encode()), Ok(i));
        assert!(SessionInfo::decode("name=x\npid=y\n").is_err());
        assert!(SessionInfo::decode("garbage").is_err());
    }

    #[test]
    fn sessions_register_list_and_clean_up() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        assert!(matches!(
            find_session(r, None),
            Err(SessionError::NoSessions { .. })
        ));
        let a = register(r, info("a")).unwrap();
        assert_eq!(a.info.pid, std::process::id());
        assert!(a.info.alive());
        // The same name again: refused while the first is alive.
        assert!(matches!(
            register(r, info("a")),
            Err(SessionError::Exists { .. })
        ));
        assert!(matches!(
            register(r, info(".bad")),
            Err(SessionError::BadName { .. })
        ));
        assert_eq!(find_session(r, None).unwrap().name, "a");
        let b = register(r, info("b")).unwrap();
        let e = find_session(r, None).unwrap_err();
        assert!(e.to_string().contains("a, b"), "{e}");
        assert_eq!(find_session(r, Some("b")).unwrap().socket, b.info.socket);
        let e = find_session(r, Some("c")).unwrap_err();
        assert!(e.to_string().contains("running: a, b"), "{e}");
        // A client reaches the listener.
        let c = connect(&b.info.socket).unwrap();
        send_text(c.as_fd(), Request::Regions.encode(), None).unwrap();
        let mut accepted = None;
        for _ in 0..100 {
            accepted = accept(b.listener.as_fd()).unwrap();
            if accepted.is_some() {
                break;
            }
            wait_readable(b.listener.as_fd(), 100).unwrap();
        }
        let s = accepted.expect("a connection");
        wait_readable(s.as_fd(), 10_000).unwrap();
        let Received::Packet(text, None) = recv(s.as_fd()).unwrap() else {
            panic!("no request");
        };
        assert_eq!(Request::decode(&text), Some(Request::Regions));
        // Dropping the registration removes the directory.
        let dir = b.dir.clone();
        drop(b);
        assert!(!dir.exists());
        // A dead loader's session is stale: removed when listed.
        let mut dead = a.info.clone();
        dead.name = "dead".into();
        dead.start_time += 1;
        std::fs::create_dir(r.join("dead")).unwrap();
        std::fs::write(r.join("dead/session"), dead.encode()).unwrap();
        let names: Vec<String> = list_sessions(r)
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["a"]);
        assert!(!r.join("dead").exists());
        drop(a);
    }

    #[test]
    fn replies_round_trip() {
        for r in [
            Reply::Done,
            Reply::Region {
                pid: 9,
                alive: true,
            },
            Reply::Region {
                pid: 1,
                alive: false,
            },
        ] {
            assert_eq!(Reply::decode(r.encode().as_str()), Some(r));
        }
        assert_eq!(Reply::decode("reply region x 1"), None);
        assert_eq!(Request::decode("hello 1 2 0"), None);
    }

    #[test]
    fn bad_lines_are_typed_errors() {
        for l in [
            "",
            "hello 1 2",
            "hello x 2 0",
            "entry 1 m 0g 00",
            "error 1 a\\q",
            "bogus 1",
            "exit 99999999999",
        ] {
            assert!(Message::decode(l).is_err(), "{l:?} parsed");
        }
    }
}
