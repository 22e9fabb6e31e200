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

/// Loads and verifies the object here, so a bad one fails before the
/// target starts (with the verifier's log).
pub(crate) fn check_object(path: &Path, prog: Option<&str>, sandbox: Sandbox) -> Result<()> {
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

/// The sandbox mode as the agent's environment spells it.
pub(crate) fn sandbox_name(s: SandboxArg) -> &'static str {
    match s {
        SandboxArg::Auto => "auto",
        SandboxArg::Mpk => "mpk",
        SandboxArg::None => "none",
    }
}

/// What the agent in a started target needs: the object, the sandbox mode,
/// the program filter.
pub(crate) struct AgentEnv<'a> {
    /// The object file (absolute).
    pub object: &'a Path,
    /// `auto`, `mpk` or `none`.
    pub sandbox: &'a str,
    /// Only this program.
    pub prog: Option<&'a str>,
}

/// `command` set up to start with the agent preloaded, its environment
/// naming the object and `fd` (which the child inherits; the caller's copy
/// may be close-on-exec) as its socket to the loader.
pub(crate) fn agent_command(command: &[String], env: &AgentEnv<'_>, fd: RawFd) -> Result<Command> {
    let agent = agent_path()?;
    let preload = match std::env::var_os("LD_PRELOAD") {
        Some(old) if !old.is_empty() => {
            let mut p = agent.clone().into_os_string();
            p.push(":");
            p.push(old);
            p
        }
        _ => agent.clone().into_os_string(),
    };
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .env("LD_PRELOAD", preload)
        .env(session::ENV_OBJECT, env.object)
        .env(session::ENV_SANDBOX, env.sandbox)
        .env(session::ENV_FD, fd.to_string());
    match env.prog {
        Some(p) => cmd.env(session::ENV_PROG, p),
        None => cmd.env_remove(session::ENV_PROG),
    };
    // SAFETY: the closure only calls fcntl (async-signal-safe) on an fd that
    // is open in the child.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}

/// Ctrl-C goes to the whole foreground group: let the target handle it and
/// end, then print what it left (call after the spawn, so the target keeps
/// the default disposition).
pub(crate) fn ignore_stop_signals() {
    // SAFETY: ignoring SIGINT/SIGTERM installs no handler code.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
}

/// The shell-style exit code of a finished process.
pub(crate) fn exit_code(status: std::process::ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Runs the subcommand.
pub fn run(a: Args, sandbox: SandboxArg) -> Result<i32> {
    let object = std::fs::canonicalize(&a.object)
        .with_context(|| format!("reading {}", a.object.display()))?;
    check_object(&object, a.prog.as_deref(), sandbox.into())?;
    let (ours, theirs) = socket_pair()?;
    let env = AgentEnv {
        object: &object,
        sandbox: sandbox_name(sandbox),
        prog: a.prog.as_deref(),
    };
    let mut child = agent_command(&a.command, &env, theirs.as_raw_fd())?
        .spawn()
        .with_context(|| format!("starting {}", a.command[0]))?;
    drop(theirs);
    ignore_stop_signals();

    let mut out = Output::new(&object, a.hex);
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

    let code = exit_code(status);
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

/// Prints what the agents send (shared by `pkbpf run` and `pkbpf load`).
#[derive(Default)]
pub(crate) struct Output {
    /// The errors agents reported.
    pub errors: Vec<String>,
    /// How many agents said hello.
    pub hellos: usize,
    /// Every process holding the socket has closed it.
    pub eof: bool,
    /// BTF of the maps (empty with `--hex`).
    types: MapTypes,
    /// The map regions of the processes that loaded the object.
    pub regions: Vec<(u32, pkbpf::maps::Region)>,
    /// The map whose entries are being printed: (name, entries so far,
    /// its type, value size).
    open_map: Option<(String, usize, String, u32)>,
}

impl Output {
    /// Output for `object`'s agents; `hex`: never decode with BTF.
    pub fn new(object: &Path, hex: bool) -> Output {
        Output {
            types: if hex {
                MapTypes::default()
            } else {
                MapTypes::from_object(object)
            },
            ..Output::default()
        }
    }

    /// Receives and prints what is there, waiting up to `timeout_ms` for the
    /// first packet; false when nothing came (or the socket reached EOF).
    fn receive(&mut self, fd: RawFd, timeout_ms: i32) -> Result<bool> {
        // SAFETY: `fd` is the loader's socket, open for this whole call.
        let sock = unsafe { BorrowedFd::borrow_raw(fd) };
        if !session::wait_readable(sock, timeout_ms)? {
            return Ok(false);
        }
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
                    self.packet(&line, fd)?;
                }
            }
        }
    }

    /// Handles one packet from an agent.
    pub fn packet(&mut self, line: &str, fd: Option<OwnedFd>) -> Result<()> {
        match Message::decode(line) {
            Ok(Message::Region { pid }) => self.region(pid, fd),
            Ok(m) => self.show(m)?,
            Err(e) => eprintln!("pkbpf: warning: {e}"),
        }
        Ok(())
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
    pub fn dump_maps(&mut self) -> Result<()> {
        let regions = std::mem::take(&mut self.regions);
        for (pid, region) in &regions {
            for def in region.defs() {
                if !dumpable(def.map_type) {
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

    /// Ends the map being printed with bpftool's `Found N elements`.
    pub fn close_map(&mut self) -> Result<()> {
        if let Some((_, n, _, _)) = self.open_map.take() {
            let mut o = std::io::stdout().lock();
            writeln!(o, "{}", found(n))?;
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
                    "{}",
                    map_header(&map, pid, &map_type, key_size, value_size)
                )?;
                drop(o);
                self.open_map = Some((map, 0, map_type, value_size));
            }
            Message::MapEntry {
                map, key, value, ..
            } => {
                let mut per_cpu = None;
                if let Some((open, n, ty, vs)) = &mut self.open_map {
                    if *open == map {
                        *n += 1;
                        per_cpu = MapType::ALL
                            .iter()
                            .any(|t| t.is_per_cpu() && t.name() == ty)
                            .then_some(*vs);
                    }
                }
                for line in self.types.entry_lines(&map, &key, &value, per_cpu) {
                    writeln!(o, "{line}")?;
                }
            }
            Message::Exit { pid } => eprintln!("pkbpf: pid {pid}: exited"),
            // Handled in `packet` (it carries an fd).
            Message::Region { .. } => {}
        }
        Ok(())
    }

    /// Closes the last map and flushes stdout.
    pub fn finish(&mut self) -> Result<()> {
        self.close_map()?;
        std::io::stdout().flush()?;
        Ok(())
    }
}

/// Whether `pkbpf` dumps maps of type `t` (rings stream instead, and a
/// program array holds program indices).
pub(crate) fn dumpable(t: MapType) -> bool {
    !matches!(
        t,
        MapType::RingBuf | MapType::PerfEventArray | MapType::ProgArray
    )
}

/// The header line of a map's dump.
pub(crate) fn map_header(map: &str, pid: u32, ty: &str, key_size: u32, value_size: u32) -> String {
    format!("map {map} [pid {pid}] ({ty}, key {key_size} bytes, value {value_size} bytes):")
}

/// bpftool's closing line of a dump.
pub(crate) fn found(n: usize) -> String {
    format!("Found {n} element{}", if n == 1 { "" } else { "s" })
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
pub(crate) struct MapTypes {
    btf: Option<pkbpf::btf::Btf>,
    /// Map name → (key type, value type).
    types: std::collections::HashMap<String, (Option<u32>, Option<u32>)>,
}

impl MapTypes {
    /// The BTF of `path`'s maps (none when it cannot be read).
    pub fn from_object(path: &Path) -> MapTypes {
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

    /// Map `map`'s key (`key: true`) or value bytes decoded with BTF, when
    /// the type is known and every part of it can be printed.
    pub fn decode(&self, map: &str, key: bool, bytes: &[u8]) -> Option<BtfValue> {
        let btf = self.btf.as_ref()?;
        let &(kt, vt) = self.types.get(map)?;
        btf_value(btf, if key { kt? } else { vt? }, bytes, 0)
    }

    /// The lines of one entry: `key: K  value: V`, decoded with BTF where
    /// both decode, else hex; for a per-CPU map (`per_cpu`: its value size)
    /// `key: K` then one `value (CPU NN): V` line per CPU, as bpftool
    /// prints them. Queue and stack values have no key.
    pub fn entry_lines(
        &self,
        map: &str,
        key: &[u8],
        value: &[u8],
        per_cpu: Option<u32>,
    ) -> Vec<String> {
        let text = |key: bool, b: &[u8]| self.decode(map, key, b).map(|v| v.text());
        let k = (!key.is_empty()).then(|| text(true, key).unwrap_or_else(|| spaced_hex(key)));
        if let Some(vs) = per_cpu {
            let mut lines = vec![format!("key: {}", k.unwrap_or_default())];
            for (cpu, v) in per_cpu_values(value, vs).enumerate() {
                let v = text(false, v).unwrap_or_else(|| spaced_hex(v));
                lines.push(format!("value (CPU {cpu:02}): {v}"));
            }
            return lines;
        }
        // Decoded only when both halves decode (one style per line).
        let (k, v) = match (
            (!key.is_empty()).then(|| text(true, key)),
            text(false, value),
        ) {
            (None, Some(v)) => (None, v),
            (Some(Some(k)), Some(v)) => (Some(k), v),
            _ => (k.map(|_| spaced_hex(key)), spaced_hex(value)),
        };
        vec![match k {
            Some(k) => format!("key: {k}  value: {v}"),
            None => format!("value: {v}"),
        }]
    }

    /// One entry as bpftool's JSON: `{"key": K, "value": V}`, or for a
    /// per-CPU map `{"key": K, "values": [{"cpu": N, "value": V}, ...]}`;
    /// parts BTF cannot decode are arrays of `"0x.."` byte strings.
    pub fn entry_json(&self, map: &str, key: &[u8], value: &[u8], per_cpu: Option<u32>) -> String {
        let json = |key: bool, b: &[u8]| {
            self.decode(map, key, b)
                .map(|v| v.json())
                .unwrap_or_else(|| hex_json(b))
        };
        let mut s = String::from("{");
        if !key.is_empty() {
            s.push_str(&format!("\"key\": {}, ", json(true, key)));
        }
        match per_cpu {
            Some(vs) => {
                let vals: Vec<String> = per_cpu_values(value, vs)
                    .enumerate()
                    .map(|(cpu, v)| format!("{{\"cpu\": {cpu}, \"value\": {}}}", json(false, v)))
                    .collect();
                s.push_str(&format!("\"values\": [{}]", vals.join(", ")));
            }
            None => s.push_str(&format!("\"value\": {}", json(false, value))),
        }
        s.push('}');
        s
    }
}

/// A per-CPU value buffer cut into each CPU's `value_size` bytes (every
/// CPU's slot is rounded up to 8 bytes, as the kernel's buffers are).
fn per_cpu_values(buf: &[u8], value_size: u32) -> impl Iterator<Item = &[u8]> {
    let vs = value_size as usize;
    let stride = vs.div_ceil(8).max(1) * 8;
    buf.chunks(stride).map(move |c| &c[..vs.min(c.len())])
}

/// bytes as bpftool's JSON hex array: `["0x01", "0x00"]`.
fn hex_json(b: &[u8]) -> String {
    let items: Vec<String> = b.iter().map(|x| format!("\"{x:#04x}\"")).collect();
    format!("[{}]", items.join(", "))
}

/// A value decoded with BTF.
#[derive(Debug, Clone, PartialEq)]
pub enum BtfValue {
    /// `_Bool`.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// `float`.
    F32(f32),
    /// `double`.
    F64(f64),
    /// A char array, up to its first NUL.
    Str(String),
    /// An enumerator's name.
    Enum(String),
    /// A pointer.
    Ptr(u64),
    /// Struct or section members in order.
    Struct(Vec<(String, BtfValue)>),
    /// Array elements.
    Array(Vec<BtfValue>),
}

impl BtfValue {
    /// As bpftool prints it in a plain dump: integers in decimal, structs as
    /// `{"field": value}`, arrays as `[..]`, strings and enumerators quoted,
    /// pointers in hex.
    pub fn text(&self) -> String {
        match self {
            BtfValue::Bool(b) => b.to_string(),
            BtfValue::Int(v) => v.to_string(),
            BtfValue::UInt(v) => v.to_string(),
            BtfValue::F32(v) => v.to_string(),
            BtfValue::F64(v) => v.to_string(),
            BtfValue::Str(s) => format!("{s:?}"),
            BtfValue::Enum(s) => format!("\"{s}\""),
            BtfValue::Ptr(p) => format!("{p:#x}"),
            BtfValue::Struct(m) => {
                let parts: Vec<String> = m
                    .iter()
                    .map(|(n, v)| format!("\"{n}\": {}", v.text()))
                    .collect();
                format!("{{{}}}", parts.join(", "))
            }
            BtfValue::Array(a) => {
                let parts: Vec<String> = a.iter().map(BtfValue::text).collect();
                format!("[{}]", parts.join(", "))
            }
        }
    }

    /// As JSON (members in declaration order; pointers and non-finite
    /// floats as strings).
    pub fn json(&self) -> String {
        let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
        match self {
            BtfValue::F32(v) if v.is_finite() => v.to_string(),
            BtfValue::F64(v) if v.is_finite() => v.to_string(),
            BtfValue::F32(_) | BtfValue::F64(_) | BtfValue::Ptr(_) => quote(&self.text()),
            BtfValue::Str(s) | BtfValue::Enum(s) => quote(s),
            BtfValue::Struct(m) => {
                let parts: Vec<String> = m
                    .iter()
                    .map(|(n, v)| format!("{}: {}", quote(n), v.json()))
                    .collect();
                format!("{{{}}}", parts.join(", "))
            }
            BtfValue::Array(a) => {
                let parts: Vec<String> = a.iter().map(BtfValue::json).collect();
                format!("[{}]", parts.join(", "))
            }
            BtfValue::Bool(_) | BtfValue::Int(_) | BtfValue::UInt(_) => self.text(),
        }
    }
}

#[cfg(test)]
/// `bytes` as a value of BTF type `id` printed as bpftool does
/// ([`BtfValue::text`]). `None` when the type is not printable this way
/// (unions, bitfields, a size mismatch).
pub fn format_btf(btf: &pkbpf::btf::Btf, id: u32, bytes: &[u8], depth: u32) -> Option<String> {
    btf_value(btf, id, bytes, depth).map(|v| v.text())
}

/// `bytes` decoded as a value of BTF type `id`; `None` when the type is not
/// printable (unions, bitfields, a size mismatch).
pub fn btf_value(btf: &pkbpf::btf::Btf, id: u32, bytes: &[u8], depth: u32) -> Option<BtfValue> {
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
                BtfValue::Bool(v != 0)
            } else if encoding.signed {
                BtfValue::Int(sext(v, size))
            } else {
                BtfValue::UInt(v)
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
                    Some(e) => BtfValue::Enum(btf.string(e.name_off).to_string()),
                    None => BtfValue::UInt(v),
                },
            )
        }
        T::Ptr { .. } => Some(BtfValue::Ptr(uint(bytes).filter(|_| bytes.len() == 8)?)),
        T::Float { size, .. } => match (*size, bytes.len()) {
            (4, 4) => Some(BtfValue::F32(f32::from_ne_bytes(bytes.try_into().ok()?))),
            (8, 8) => Some(BtfValue::F64(f64::from_ne_bytes(bytes.try_into().ok()?))),
            _ => None,
        },
        T::Typedef { type_id, .. }
        | T::Volatile { type_id }
        | T::Const { type_id }
        | T::Restrict { type_id }
        | T::TypeTag { type_id, .. }
        | T::Var { type_id, .. } => btf_value(btf, *type_id, bytes, depth + 1),
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
                parts.push((name, btf_value(btf, m.type_id, field, depth + 1)?));
            }
            Some(BtfValue::Struct(parts))
        }
        T::Datasec { vars, .. } => {
            let mut parts = Vec::new();
            for v in vars {
                let (start, len) = (v.offset as usize, v.size as usize);
                let field = bytes.get(start..start.checked_add(len)?)?;
                let name = btf.name_of(v.type_id).to_string();
                parts.push((name, btf_value(btf, v.type_id, field, depth + 1)?));
            }
            Some(BtfValue::Struct(parts))
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
                return Some(BtfValue::Str(
                    String::from_utf8_lossy(&bytes[..end]).into_owned(),
                ));
            }
            let items: Option<Vec<BtfValue>> = bytes
                .chunks(elem.max(1))
                .take(n)
                .map(|c| btf_value(btf, *elem_type, c, depth + 1))
                .collect();
            Some(BtfValue::Array(items?))
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
