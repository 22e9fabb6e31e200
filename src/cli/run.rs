//! `pkbpf run OBJ [--prog NAME] -- CMD ARGS…`: loads and verifies an
//! object, starts CMD with the preload agent (`libpkbpf_agent.so`) which
//! attaches the object's uprobe/uretprobe programs inside it, and streams
//! what the programs produce.
//!
//! Output (stdout): `bpf_printk` lines in the kernel's `trace_pipe` format as
//! they come, ring buffer and perf event array records in hex
//! (`ringbuf MAP [pid P]: BYTES`, `perf MAP [pid P cpu C]: BYTES`), and when the
//! target exits each program's hit count and (read by the loader from the
//! map region the agent passed it, so also after a crash or `_exit`) each
//! map's contents in the
//! shape of `bpftool map dump`: decoded with the object's BTF when it names
//! the key and value types (`key: 42  value: {"mallocs": 3, "frees": 2}`),
//! else (or with `--hex`) as hex bytes. Progress and problems
//! go to stderr. The exit status is the target's, or 1 when the object is
//! bad (the target is not started) or the agent reported an error (a failed
//! load or attach; the target still ran). `pkbpf run` ignores SIGINT and
//! SIGTERM while the target runs: Ctrl-C stops the target, and the maps are
//! still printed.
//!
//! The agent library is found next to the `pkbpf` binary, or at
//! `$PKBPF_AGENT_LIB`.

use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use pkbpf::maps::MapType;
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
    /// Print map entries in hex even when BTF names their types.
    #[arg(long)]
    pub hex: bool,
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
        Err(RuntimeError::Verify {
            program,
            source,
            log,
        }) => bail!(
            "{}: program {program} rejected by the verifier: {source}\nverifier log:\n{log}",
            path.display()
        ),
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
    // Ctrl-C goes to the whole foreground group: let the target handle it
    // and end, then print what it left (set after the spawn, so the target
    // keeps the default disposition).
    // SAFETY: ignoring SIGINT/SIGTERM installs no handler code.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }

    let mut out = Output {
        types: if a.hex {
            MapTypes::default()
        } else {
            MapTypes::from_object(&object)
        },
        ..Output::default()
    };
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
    out.close_map()?;
    out.dump_maps()?;
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
    /// BTF of the maps (empty with `--hex`).
    types: MapTypes,
    /// The map regions of the processes that loaded the object.
    regions: Vec<(u32, pkbpf::maps::Region)>,
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
        if n <= 0 || pfd.revents & (libc::POLLIN | libc::POLLHUP) == 0 {
            return Ok(false);
        }
        // SAFETY: `fd` is the loader's socket, open for this whole call.
        let sock = unsafe { BorrowedFd::borrow_raw(fd) };
        let mut got = false;
        loop {
            match session::recv(sock).context("reading from the agent")? {
                session::Received::Empty => return Ok(got),
                session::Received::Closed => {
                    // Every agent closed its end.
                    self.eof = true;
                    return Ok(got);
                }
                session::Received::Packet(line, fd) => {
                    got = true;
                    match Message::decode(&line) {
                        Ok(Message::Region { pid }) => self.region(pid, fd),
                        Ok(m) => self.show(m)?,
                        Err(e) => eprintln!("pkbpf: warning: {e}"),
                    }
                }
            }
        }
    }

    /// Keeps the map region of the object loaded in `pid`.
    fn region(&mut self, pid: u32, fd: Option<OwnedFd>) {
        let Some(fd) = fd else {
            eprintln!("pkbpf: warning: pid {pid}: region message without an fd");
            return;
        };
        match pkbpf::maps::Region::open(fd) {
            Ok(r) => self.regions.push((pid, r)),
            Err(e) => {
                let text = format!("opening the map region of pid {pid}: {e}");
                eprintln!("pkbpf: error: {text}");
                self.errors.push(text);
            }
        }
    }

    /// Prints every map of every region, as `bpftool map dump` would.
    fn dump_maps(&mut self) -> Result<()> {
        let regions = std::mem::take(&mut self.regions);
        for (pid, region) in &regions {
            for def in region.defs() {
                if matches!(
                    def.map_type,
                    MapType::RingBuf | MapType::PerfEventArray | MapType::ProgArray
                ) {
                    continue;
                }
                self.show(Message::MapHeader {
                    pid: *pid,
                    map: def.name.clone(),
                    map_type: def.map_type.name().to_string(),
                    key_size: def.key_size,
                    value_size: def.value_size,
                })?;
                let map = region
                    .map(&def.name)
                    .with_context(|| format!("map {}", def.name))?;
                let entries: Box<dyn Iterator<Item = _>> = match def.map_type {
                    // Reading a queue or stack takes its values; nobody
                    // else uses them any more.
                    MapType::Queue | MapType::Stack => Box::new(
                        std::iter::from_fn(|| map.pop().transpose())
                            .map(|v| v.map(|v| (Vec::new(), v))),
                    ),
                    _ => Box::new(map.iter()),
                };
                for e in entries {
                    let (key, value) =
                        e.with_context(|| format!("dumping map {} of pid {pid}", def.name))?;
                    self.show(Message::MapEntry {
                        pid: *pid,
                        map: def.name.clone(),
                        key,
                        value,
                    })?;
                }
            }
        }
        Ok(())
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
            Message::Perf {
                pid,
                map,
                cpu,
                data,
            } => writeln!(o, "perf {map} [pid {pid} cpu {cpu}]: {}", spaced_hex(&data))?,
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
                if let Some(line) = self.types.entry(&map, &key, &value) {
                    writeln!(o, "{line}")?
                } else if key.is_empty() {
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
            // Handled in `receive` (it carries an fd).
            Message::Region { .. } => {}
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

/// Map key/value types from the object's BTF, for printing entries the way
/// `bpftool map dump` does.
#[derive(Default)]
struct MapTypes {
    btf: Option<pkbpf::btf::Btf>,
    /// Map name → (key type, value type).
    types: std::collections::HashMap<String, (Option<u32>, Option<u32>)>,
}

impl MapTypes {
    fn from_object(path: &Path) -> MapTypes {
        let Ok(bytes) = std::fs::read(path) else {
            return MapTypes::default();
        };
        let Ok(obj) = pkbpf::object::Object::parse(&bytes) else {
            return MapTypes::default();
        };
        MapTypes {
            btf: obj.btf().cloned(),
            types: obj
                .maps()
                .iter()
                .map(|m| (m.name.clone(), (m.key_type_id, m.value_type_id)))
                .collect(),
        }
    }

    /// `key: K  value: V` with both decoded by BTF, when the map's types
    /// are known and every part of them can be printed.
    fn entry(&self, map: &str, key: &[u8], value: &[u8]) -> Option<String> {
        let btf = self.btf.as_ref()?;
        let &(kt, vt) = self.types.get(map)?;
        let v = format_btf(btf, vt?, value, 0)?;
        if key.is_empty() {
            return Some(format!("value: {v}"));
        }
        Some(format!(
            "key: {}  value: {v}",
            format_btf(btf, kt?, key, 0)?
        ))
    }
}

/// `bytes` as a value of BTF type `id` (JSON-like, as bpftool prints):
/// integers in decimal, structs as `{"field": value}`, arrays as `[..]`,
/// char arrays as strings. `None` when the type is not printable this way
/// (unions, bitfields, a size mismatch).
pub fn format_btf(btf: &pkbpf::btf::Btf, id: u32, bytes: &[u8], depth: u32) -> Option<String> {
    use pkbpf::btf::BtfType as T;
    if depth > 16 {
        return None;
    }
    let uint = |b: &[u8]| -> Option<u64> {
        let mut buf = [0u8; 8];
        buf.get_mut(..b.len())?.copy_from_slice(b);
        Some(u64::from_ne_bytes(buf))
    };
    let sext = |v: u64, size: usize| -> i64 {
        let shift = 64 - 8 * size as u32;
        ((v << shift) as i64) >> shift
    };
    match btf.type_by_id(id)? {
        T::Int {
            size,
            encoding,
            offset,
            bits,
            ..
        } => {
            let size = *size as usize;
            if bytes.len() != size || !matches!(size, 1 | 2 | 4 | 8) {
                return None;
            }
            if *offset != 0 || u32::from(*bits) != 8 * size as u32 {
                return None;
            }
            let v = uint(bytes)?;
            Some(if encoding.bool {
                (v != 0).to_string()
            } else if encoding.signed {
                sext(v, size).to_string()
            } else {
                v.to_string()
            })
        }
        T::Enum { size, values, .. } | T::Enum64 { size, values, .. } => {
            let size = *size as usize;
            if bytes.len() != size || !matches!(size, 1 | 2 | 4 | 8) {
                return None;
            }
            let v = uint(bytes)?;
            Some(
                match values
                    .iter()
                    .find(|e| e.value as u64 == v || e.value == sext(v, size))
                {
                    Some(e) => format!("\"{}\"", btf.string(e.name_off)),
                    None => v.to_string(),
                },
            )
        }
        T::Ptr { .. } => Some(format!("{:#x}", uint(bytes).filter(|_| bytes.len() == 8)?)),
        T::Float { size, .. } => match (*size, bytes.len()) {
            (4, 4) => Some(f32::from_ne_bytes(bytes.try_into().ok()?).to_string()),
            (8, 8) => Some(f64::from_ne_bytes(bytes.try_into().ok()?).to_string()),
            _ => None,
        },
        T::Typedef { type_id, .. }
        | T::Volatile { type_id }
        | T::Const { type_id }
        | T::Restrict { type_id }
        | T::TypeTag { type_id, .. }
        | T::Var { type_id, .. } => format_btf(btf, *type_id, bytes, depth + 1),
        T::Struct { size, members, .. } => {
            if bytes.len() != *size as usize {
                return None;
            }
            let mut parts = Vec::new();
            for (i, m) in members.iter().enumerate() {
                if m.bitfield_size != 0 || m.bit_offset % 8 != 0 {
                    return None;
                }
                let start = (m.bit_offset / 8) as usize;
                let len = btf.size_of(m.type_id).ok()?? as usize;
                let field = bytes.get(start..start.checked_add(len)?)?;
                let name = match btf.string(m.name_off) {
                    "" => format!("_{i}"),
                    n => n.to_string(),
                };
                parts.push(format!(
                    "\"{name}\": {}",
                    format_btf(btf, m.type_id, field, depth + 1)?
                ));
            }
            Some(format!("{{{}}}", parts.join(", ")))
        }
        T::Datasec { vars, .. } => {
            let mut parts = Vec::new();
            for v in vars {
                let (start, len) = (v.offset as usize, v.size as usize);
                let field = bytes.get(start..start.checked_add(len)?)?;
                let name = btf.name_of(v.type_id).to_string();
                parts.push(format!(
                    "\"{name}\": {}",
                    format_btf(btf, v.type_id, field, depth + 1)?
                ));
            }
            Some(format!("{{{}}}", parts.join(", ")))
        }
        T::Array {
            elem_type, nelems, ..
        } => {
            let n = *nelems as usize;
            let elem = btf.size_of(*elem_type).ok()?? as usize;
            if elem.checked_mul(n)? != bytes.len() {
                return None;
            }
            let is_char = matches!(
                btf.type_by_id(btf.skip_mods_and_typedefs(*elem_type).ok()?)?,
                T::Int { size: 1, encoding, name_off, .. }
                    if encoding.char || btf.string(*name_off) == "char"
            );
            if is_char {
                let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                return Some(format!("{:?}", String::from_utf8_lossy(&bytes[..end])));
            }
            let items: Option<Vec<String>> = bytes
                .chunks(elem.max(1))
                .take(n)
                .map(|c| format_btf(btf, *elem_type, c, depth + 1))
                .collect();
            Some(format!("[{}]", items?.join(", ")))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pkbpf::btf::{Btf, BtfType, IntEncoding, Member};

    fn int(btf: &mut Btf, name: &str, size: u32, signed: bool) -> u32 {
        let name_off = btf.add_string(name);
        btf.add_type(BtfType::Int {
            name_off,
            size,
            encoding: IntEncoding {
                signed,
                ..IntEncoding::default()
            },
            offset: 0,
            bits: (8 * size) as u8,
        })
    }

    fn member(btf: &mut Btf, name: &str, type_id: u32, byte: u32) -> Member {
        Member {
            name_off: btf.add_string(name),
            type_id,
            bit_offset: byte * 8,
            bitfield_size: 0,
        }
    }

    /// struct s { u32 a; s16 b; char name[4]; u64 c[2]; } (32 bytes)
    fn sample() -> (Btf, u32) {
        let mut btf = Btf::new();
        let u32_t = int(&mut btf, "unsigned int", 4, false);
        let s16 = int(&mut btf, "short", 2, true);
        let chr = int(&mut btf, "char", 1, true);
        let u64_t = int(&mut btf, "unsigned long long", 8, false);
        let name_t = btf.add_type(BtfType::Array {
            elem_type: chr,
            index_type: u32_t,
            nelems: 4,
        });
        let c_t = btf.add_type(BtfType::Array {
            elem_type: u64_t,
            index_type: u32_t,
            nelems: 2,
        });
        let members = vec![
            member(&mut btf, "a", u32_t, 0),
            member(&mut btf, "b", s16, 4),
            member(&mut btf, "name", name_t, 6),
            member(&mut btf, "c", c_t, 16),
        ];
        let name_off = btf.add_string("s");
        let id = btf.add_type(BtfType::Struct {
            name_off,
            size: 32,
            members,
        });
        (btf, id)
    }

    #[test]
    fn struct_with_ints_chars_and_arrays_prints_like_bpftool() {
        let (btf, id) = sample();
        let mut b = Vec::new();
        b.extend_from_slice(&7u32.to_ne_bytes());
        b.extend_from_slice(&(-2i16).to_ne_bytes());
        b.extend_from_slice(b"hi\0\0");
        b.extend_from_slice(&[0xee; 6]); // padding
        b.extend_from_slice(&1u64.to_ne_bytes());
        b.extend_from_slice(&u64::MAX.to_ne_bytes());
        assert_eq!(
            format_btf(&btf, id, &b, 0).as_deref(),
            Some(r#"{"a": 7, "b": -2, "name": "hi", "c": [1, 18446744073709551615]}"#)
        );
    }

    #[test]
    fn unprintable_types_fall_back_to_hex() {
        let (mut btf, id) = sample();
        // Wrong size for the type.
        assert_eq!(format_btf(&btf, id, &[0; 31], 0), None);
        // Unions and unknown ids are not decoded.
        let union = btf.add_type(BtfType::Union {
            name_off: 0,
            size: 4,
            members: Vec::new(),
        });
        assert_eq!(format_btf(&btf, union, &[0; 4], 0), None);
        assert_eq!(format_btf(&btf, 999, &[0; 4], 0), None);
        // A typedef loop ends at the depth limit instead of recursing forever.
        let loop_id = btf.add_type(BtfType::Typedef {
            name_off: 0,
            type_id: union + 1,
        });
        assert_eq!(format_btf(&btf, loop_id, &[0; 4], 0), None);
    }

    #[test]
    fn spaced_hex_is_two_digits_per_byte() {
        assert_eq!(spaced_hex(&[0, 0xab, 7]), "00 ab 07");
        assert_eq!(spaced_hex(&[]), "");
    }
}
