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

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

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
    let line = m.encode();
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        use std::os::fd::AsFd;
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
