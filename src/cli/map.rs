//! `pkbpf map list|dump|lookup [--session NAME]`: reads the maps of a
//! running `pkbpf load` session.
//!
//! The loader holds the map region of every target process that loaded the
//! object (each process has its own region; see `pkbpf load`). These
//! commands ask it for them over its socket (the memfds come back with
//! `SCM_RIGHTS`) and read them directly: the targets are neither stopped
//! nor slowed, and no value is changed. Entries print as with `pkbpf run`'s
//! dump at exit (BTF-decoded where the object's BTF names the types, else
//! hex; per-CPU values one line per CPU), or as bpftool's JSON with
//! `--json` (`[{"key": K, "value": V}]`, per-CPU maps
//! `[{"key": K, "values": [{"cpu": N, "value": V}]}]`).
//!
//! Queues and stacks are not dumped from a running session (reading them
//! takes their values); ring buffers and perf event arrays stream through
//! the loader instead.

use std::os::fd::AsFd;

use anyhow::{bail, Context, Result};
use pkbpf::maps::{MapType, Region};
use pkbpf::session::{self, Reply, Request, SessionInfo};

use super::run::{dumpable, found, map_header, spaced_hex, MapTypes};

/// Arguments of `pkbpf map`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// List the maps of every target of the session.
    #[command(alias = "show")]
    List {
        /// The session (`pkbpf load --name`); needed when several run.
        #[arg(long)]
        session: Option<String>,
    },
    /// Print a map's entries.
    Dump {
        /// The map's name.
        name: String,
        /// The session (`pkbpf load --name`); needed when several run.
        #[arg(long)]
        session: Option<String>,
        /// Only the map of this target process (needed for `--json` when
        /// several targets hold the map).
        #[arg(long)]
        pid: Option<u32>,
        /// bpftool's JSON.
        #[arg(long)]
        json: bool,
        /// Hex even where BTF names the types.
        #[arg(long)]
        hex: bool,
    },
    /// Print one entry (KEY: a decimal integer of the key's size, or hex
    /// bytes as bpftool takes them, `01 00 00 00` or `0x01 0x00 0x00 0x00`).
    Lookup {
        /// The map's name.
        name: String,
        /// The key.
        key: String,
        /// The session (`pkbpf load --name`); needed when several run.
        #[arg(long)]
        session: Option<String>,
        /// Only the map of this target process.
        #[arg(long)]
        pid: Option<u32>,
    },
}

/// One target's region, as the loader reported it.
struct Target {
    pid: u32,
    alive: bool,
    region: Region,
}

/// Asks the session's loader for the targets' map regions (the latest
/// region of each pid: an `exec` replaces the image and its maps).
fn targets(s: &SessionInfo) -> Result<Vec<Target>> {
    let sock = session::connect(&s.socket)?;
    session::send_text(sock.as_fd(), Request::Regions.encode(), None)
        .with_context(|| format!("asking the loader of session {}", s.name))?;
    let mut out: Vec<Target> = Vec::new();
    loop {
        if !session::wait_readable(sock.as_fd(), 30_000)? {
            bail!(
                "the loader of session {} (pid {}) did not answer",
                s.name,
                s.pid
            );
        }
        let (line, fd) = match session::recv(sock.as_fd())? {
            session::Received::Empty => continue,
            session::Received::Closed => bail!("the loader of session {} went away", s.name),
            session::Received::Packet(line, fd) => (line, fd),
        };
        match Reply::decode(&line) {
            Some(Reply::Done) => break,
            Some(Reply::Region { pid, alive }) => {
                let fd = fd.with_context(|| format!("region of pid {pid} came without its fd"))?;
                let region = Region::open(fd)
                    .with_context(|| format!("opening the map region of pid {pid}"))?;
                out.retain(|t| t.pid != pid);
                out.push(Target { pid, alive, region });
            }
            None => bail!("unexpected answer from the loader: {line:?}"),
        }
    }
    Ok(out)
}

/// Runs the subcommand.
pub fn run(a: Args) -> Result<i32> {
    let root = session::runtime_dir();
    match a.cmd {
        Cmd::List { session: name } => {
            let s = session::find_session(&root, name.as_deref())?;
            let ts = targets(&s)?;
            if ts.is_empty() {
                eprintln!(
                    "pkbpf: session {}: no target has loaded {} yet",
                    s.name,
                    s.object.display()
                );
            }
            for t in &ts {
                println!("pid {}{}:", t.pid, if t.alive { "" } else { " (exited)" });
                for (i, d) in t.region.defs().enumerate() {
                    println!(
                        "{i}: {}  name {}  flags {:#x}\n\tkey {}B  value {}B  max_entries {}",
                        d.map_type.name(),
                        d.name,
                        d.flags,
                        d.key_size,
                        d.value_size,
                        d.max_entries
                    );
                }
            }
            Ok(0)
        }
        Cmd::Dump {
            name,
            session: sname,
            pid,
            json,
            hex,
        } => {
            let s = session::find_session(&root, sname.as_deref())?;
            let ts = select(&s, targets(&s)?, &name, pid)?;
            if json && ts.len() > 1 {
                let pids: Vec<String> = ts.iter().map(|t| t.pid.to_string()).collect();
                bail!(
                    "map {name} is held by {} targets (pids {}): choose one with --pid for --json",
                    ts.len(),
                    pids.join(", ")
                );
            }
            let types = if hex {
                MapTypes::default()
            } else {
                MapTypes::from_object(&s.object)
            };
            for t in &ts {
                dump(&types, t, &name, json)?;
            }
            Ok(0)
        }
        Cmd::Lookup {
            name,
            key,
            session: sname,
            pid,
        } => {
            let s = session::find_session(&root, sname.as_deref())?;
            let ts = select(&s, targets(&s)?, &name, pid)?;
            let types = MapTypes::from_object(&s.object);
            let mut missing = 0;
            for t in &ts {
                let map = t.region.map(&name)?;
                let k = parse_key(&key, map.def().key_size)?;
                let per_cpu = map.map_type().is_per_cpu().then_some(map.def().value_size);
                println!("pid {}:", t.pid);
                match map.lookup(&k)? {
                    Some(v) => {
                        for line in types.entry_lines(&name, &k, &v, per_cpu) {
                            println!("{line}");
                        }
                    }
                    None => {
                        println!("key: {}  not found", spaced_hex(&k));
                        missing += 1;
                    }
                }
            }
            Ok(if missing == ts.len() { 1 } else { 0 })
        }
    }
}

/// The targets holding map `name` (only `pid`'s when given); an error that
/// says why when there are none.
fn select(s: &SessionInfo, ts: Vec<Target>, name: &str, pid: Option<u32>) -> Result<Vec<Target>> {
    if ts.is_empty() {
        bail!(
            "session {}: no target has loaded {} yet (start one with `pkbpf start` or `pkbpf attach`)",
            s.name,
            s.object.display()
        );
    }
    let names: Vec<String> = ts[0].region.defs().map(|d| d.name.clone()).collect();
    if !names.iter().any(|n| n == name) {
        bail!(
            "session {} has no map named {name} (maps: {})",
            s.name,
            names.join(", ")
        );
    }
    let pids: Vec<String> = ts.iter().map(|t| t.pid.to_string()).collect();
    let ts: Vec<Target> = ts
        .into_iter()
        .filter(|t| pid.is_none_or(|p| p == t.pid))
        .collect();
    if ts.is_empty() {
        bail!(
            "session {}: pid {} has not loaded the object (targets: {})",
            s.name,
            pid.unwrap_or(0),
            pids.join(", ")
        );
    }
    Ok(ts)
}

/// Prints one target's map `name`.
fn dump(types: &MapTypes, t: &Target, name: &str, json: bool) -> Result<()> {
    let map = t.region.map(name)?;
    let def = map.def().clone();
    if !dumpable(def.map_type) {
        bail!(
            "map {name} is a {}: its records stream through the loader, there is nothing to dump",
            def.map_type.name()
        );
    }
    if matches!(def.map_type, MapType::Queue | MapType::Stack) {
        bail!(
            "map {name} is a {}: reading it takes its values, so a running session's is not dumped",
            def.map_type.name()
        );
    }
    if !t.alive {
        eprintln!(
            "pkbpf: pid {} has exited: its maps are as it left them",
            t.pid
        );
    }
    let per_cpu = def.map_type.is_per_cpu().then_some(def.value_size);
    let mut entries = Vec::new();
    for e in map.iter() {
        entries.push(e.with_context(|| format!("reading map {name} of pid {}", t.pid))?);
    }
    if json {
        let items: Vec<String> = entries
            .iter()
            .map(|(k, v)| types.entry_json(name, k, v, per_cpu))
            .collect();
        println!("[{}]", items.join(",\n "));
        return Ok(());
    }
    println!(
        "{}",
        map_header(
            name,
            t.pid,
            def.map_type.name(),
            def.key_size,
            def.value_size
        )
    );
    for (k, v) in &entries {
        for line in types.entry_lines(name, k, v, per_cpu) {
            println!("{line}");
        }
    }
    println!("{}", found(entries.len()));
    Ok(())
}

/// A key from the command line: a decimal integer stored in `size`
/// native-endian bytes, or (when it holds spaces or `0x`) hex bytes, exactly
/// `size` of them.
fn parse_key(text: &str, size: u32) -> Result<Vec<u8>> {
    let size = size as usize;
    if let Ok(n) = text.trim().parse::<u64>() {
        if matches!(size, 1 | 2 | 4 | 8) && (size == 8 || n >> (8 * size) == 0) {
            return Ok(n.to_ne_bytes()[..size].to_vec());
        }
        anyhow::bail!("key {text}: does not fit the map's {size}-byte key");
    }
    let digits: String = text
        .split_whitespace()
        .map(|b| b.trim_start_matches("0x"))
        .collect();
    let bytes = pkbpf::session::unhex(&digits)
        .filter(|b| b.len() == size)
        .with_context(|| format!("key {text:?}: expected {size} hex bytes or a decimal integer"))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_as_decimal_or_hex() {
        assert_eq!(parse_key("7", 4).unwrap(), 7u32.to_ne_bytes());
        assert_eq!(parse_key("01 00 00 00", 4).unwrap(), [1, 0, 0, 0]);
        assert_eq!(parse_key("0x01 0x02", 2).unwrap(), [1, 2]);
        assert!(parse_key("70000", 2).is_err());
        assert!(parse_key("zz", 1).is_err());
    }
}
