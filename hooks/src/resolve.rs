//! Probe targets: from `BINARY:SYMBOL[+OFFSET]` or `BINARY:OFFSET` to an address
//! in this process.
//!
//! The syntax is libbpf's uprobe section syntax without the `uprobe/` prefix
//! (`uprobe//lib/x86_64-linux-gnu/libc.so.6:malloc` names the target
//! `/lib/x86_64-linux-gnu/libc.so.6:malloc`); [`ProbeTarget::parse_section`]
//! accepts the whole section name. `BINARY` is an absolute path, a bare
//! soname such as `libc.so.6` (looked up first among the files this process
//! has mapped, then in the usual library directories), or `/proc/self/exe`.
//! A numeric `OFFSET` without a symbol is a **file offset**, as in the
//! kernel's uprobe interface and `perf probe -x`.
//!
//! Resolution has two halves: [`ElfIndex`] is a pure function of the ELF bytes (goblin over `.symtab` and `.dynsym`,
//! defined `STT_FUNC` symbols with a size); [`file_offset_to_runtime`] maps a
//! file offset to an address through `/proc/self/maps`, matching the file by
//! device and inode (or by path when the inode is unknown), which gives the
//! load bias of PIE executables and shared libraries alike.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use goblin::elf::program_header::PT_LOAD;
use goblin::elf::sym::{STT_FUNC, STT_GNU_IFUNC};
use goblin::elf::Elf;

use crate::{HookError, Result};

/// What inside the binary: a symbol (plus offset) or a raw file offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SymbolSpec {
    /// `SYMBOL[+OFFSET]`: a function and a byte offset into it.
    Symbol {
        /// The function's name as in the symbol table (no version suffix).
        name: String,
        /// Bytes from the function's start.
        offset: u64,
    },
    /// `OFFSET`: a file offset in the binary.
    FileOffset(u64),
}

/// A parsed probe target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    /// The binary as written: a path, a bare soname or `/proc/self/exe`.
    pub binary: String,
    /// What to probe in it.
    pub spec: SymbolSpec,
}

/// A target resolved to an address in this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTarget {
    /// The file the symbol came from (canonical path).
    pub binary: PathBuf,
    /// The runtime address to patch.
    pub address: usize,
    /// The ELF virtual address (before load bias).
    pub vaddr: u64,
    /// The file offset.
    pub file_offset: u64,
    /// The load bias (`address - vaddr`).
    pub bias: usize,
    /// The function's start address and size, when the target was a symbol:
    /// the patcher uses them to stay inside the function.
    pub function: Option<(usize, u64)>,
}

fn parse_number(text: &str) -> Option<u64> {
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()
    } else {
        text.parse().ok()
    }
}

impl ProbeTarget {
    /// Parses `BINARY:SYMBOL`, `BINARY:SYMBOL+OFFSET` or `BINARY:OFFSET`.
    pub fn parse(text: &str) -> Result<Self> {
        let invalid = |reason| HookError::InvalidTarget {
            target: text.to_string(),
            reason,
        };
        let (binary, what) = text
            .rsplit_once(':')
            .ok_or_else(|| invalid("missing `:`"))?;
        if binary.is_empty() {
            return Err(invalid("empty binary"));
        }
        if what.is_empty() {
            return Err(invalid("empty symbol or offset"));
        }
        let spec = if what.as_bytes()[0].is_ascii_digit() {
            SymbolSpec::FileOffset(parse_number(what).ok_or_else(|| invalid("bad offset"))?)
        } else {
            let (name, offset) = match what.split_once('+') {
                Some((name, off)) => (
                    name,
                    parse_number(off).ok_or_else(|| invalid("bad offset"))?,
                ),
                None => (what, 0),
            };
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'$')
            {
                return Err(invalid("bad symbol name"));
            }
            SymbolSpec::Symbol {
                name: name.to_string(),
                offset,
            }
        };
        Ok(ProbeTarget {
            binary: binary.to_string(),
            spec,
        })
    }

    /// Parses a libbpf section name, `uprobe/TARGET` or `uretprobe/TARGET`;
    /// returns the target and whether it is a return probe.
    pub fn parse_section(section: &str) -> Result<(Self, bool)> {
        if let Some(rest) = section.strip_prefix("uretprobe/") {
            Ok((Self::parse(rest)?, true))
        } else if let Some(rest) = section.strip_prefix("uprobe/") {
            Ok((Self::parse(rest)?, false))
        } else {
            Err(HookError::InvalidTarget {
                target: section.to_string(),
                reason: "section is neither uprobe/ nor uretprobe/",
            })
        }
    }
}

/// A defined function symbol found in an ELF file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoundSymbol {
    /// Its virtual address (`st_value`).
    pub vaddr: u64,
    /// Its size in bytes (`st_size`, never 0).
    pub size: u64,
}

/// What resolution needs from one ELF file, extracted once: defined function
/// symbols with a size (`.symtab` first, then `.dynsym`), IFUNC names, and the
/// `PT_LOAD` segments. Building it is a pure function of the bytes.
#[derive(Debug, Clone, Default)]
pub struct ElfIndex {
    funcs: HashMap<String, FoundSymbol>,
    ifuncs: HashSet<String>,
    /// `(p_vaddr, p_offset, p_filesz)` of each `PT_LOAD`.
    loads: Vec<(u64, u64, u64)>,
}

impl ElfIndex {
    /// Indexes the ELF image `bytes`; `binary` only names the file in errors.
    pub fn parse(binary: &Path, bytes: &[u8]) -> Result<Self> {
        let elf = Elf::parse(bytes).map_err(|source| HookError::ParseElf {
            binary: binary.to_path_buf(),
            source,
        })?;
        let mut index = ElfIndex::default();
        let tables = [(&elf.syms, &elf.strtab), (&elf.dynsyms, &elf.dynstrtab)];
        for (syms, strtab) in tables {
            for sym in syms.iter() {
                if sym.st_shndx == 0 {
                    continue;
                }
                let Some(name) = strtab.get_at(sym.st_name) else {
                    continue;
                };
                match sym.st_type() {
                    STT_FUNC if sym.st_size > 0 => {
                        index.funcs.entry(name.to_string()).or_insert(FoundSymbol {
                            vaddr: sym.st_value,
                            size: sym.st_size,
                        });
                    }
                    STT_GNU_IFUNC => {
                        index.ifuncs.insert(name.to_string());
                    }
                    _ => {}
                }
            }
        }
        index.loads = elf
            .program_headers
            .iter()
            .filter(|ph| ph.p_type == PT_LOAD)
            .map(|ph| (ph.p_vaddr, ph.p_offset, ph.p_filesz))
            .collect();
        Ok(index)
    }

    /// The defined function `name`.
    pub fn symbol(&self, binary: &Path, name: &str) -> Result<FoundSymbol> {
        if let Some(sym) = self.funcs.get(name) {
            return Ok(*sym);
        }
        if self.ifuncs.contains(name) {
            return Err(HookError::IfuncSymbol {
                binary: binary.to_path_buf(),
                symbol: name.to_string(),
            });
        }
        Err(HookError::SymbolNotFound {
            binary: binary.to_path_buf(),
            symbol: name.to_string(),
        })
    }

    /// Virtual address to file offset through the `PT_LOAD` segments.
    pub fn vaddr_to_file_offset(&self, binary: &Path, vaddr: u64) -> Result<u64> {
        self.loads
            .iter()
            .find(|&&(v, _, size)| vaddr >= v && vaddr - v < size)
            .map(|&(v, off, _)| vaddr - v + off)
            .ok_or_else(|| HookError::NotInSegment {
                binary: binary.to_path_buf(),
                vaddr,
            })
    }

    /// File offset to virtual address through the `PT_LOAD` segments.
    pub fn file_offset_to_vaddr(&self, binary: &Path, offset: u64) -> Result<u64> {
        self.loads
            .iter()
            .find(|&&(_, off, size)| offset >= off && offset - off < size)
            .map(|&(v, off, _)| offset - off + v)
            .ok_or_else(|| HookError::NotInSegment {
                binary: binary.to_path_buf(),
                vaddr: offset,
            })
    }
}

/// One line of `/proc/self/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    /// First address.
    pub start: usize,
    /// One past the last address.
    pub end: usize,
    /// `rwxp` as printed.
    pub perms: String,
    /// File offset of `start`.
    pub offset: u64,
    /// Device, `major:minor` as printed (hex).
    pub dev: (u64, u64),
    /// Inode (0 for anonymous mappings).
    pub inode: u64,
    /// The path, when there is one.
    pub path: Option<String>,
}

impl MapEntry {
    /// Whether the mapping is executable.
    pub fn executable(&self) -> bool {
        self.perms.as_bytes().get(2) == Some(&b'x')
    }
}

/// Parses the text of a `/proc/PID/maps` file; malformed lines are skipped.
pub fn parse_maps(text: &str) -> Vec<MapEntry> {
    text.lines().filter_map(parse_maps_line).collect()
}

fn parse_maps_line(line: &str) -> Option<MapEntry> {
    let mut fields = line.split_ascii_whitespace();
    let range = fields.next()?;
    let perms = fields.next()?.to_string();
    let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let dev = (
        u64::from_str_radix(major, 16).ok()?,
        u64::from_str_radix(minor, 16).ok()?,
    );
    let inode = fields.next()?.parse().ok()?;
    let rest: Vec<&str> = fields.collect();
    let path = if rest.is_empty() {
        None
    } else {
        Some(rest.join(" "))
    };
    let (start, end) = range.split_once('-')?;
    Some(MapEntry {
        start: usize::from_str_radix(start, 16).ok()?,
        end: usize::from_str_radix(end, 16).ok()?,
        perms,
        offset,
        dev,
        inode,
        path,
    })
}

/// Reads and parses this process's mappings: `/proc/thread-self/maps`
/// (the calling thread's view of the shared address space, which stays
/// readable after the main thread has exited, when `/proc/self` names a
/// zombie whose maps file is empty), else `/proc/self/maps` (kernels before
/// 3.17).
pub fn read_self_maps() -> Result<Vec<MapEntry>> {
    std::fs::read_to_string("/proc/thread-self/maps")
        .or_else(|_| std::fs::read_to_string("/proc/self/maps"))
        .map(|text| parse_maps(&text))
        .map_err(|source| HookError::ProcMaps { source })
}

/// Identity of a file: device and inode, as `/proc/self/maps` prints them.
fn file_identity(path: &Path) -> Option<((u64, u64), u64)> {
    let meta = std::fs::metadata(path).ok()?;
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev) as u64, libc::minor(dev) as u64);
    Some(((major, minor), meta.ino()))
}

/// Whether a mapping is of the file at `path` (identity by dev+inode, else by path).
fn maps_file(entry: &MapEntry, path: &Path, identity: Option<((u64, u64), u64)>) -> bool {
    match identity {
        Some((dev, ino)) if entry.inode != 0 => entry.inode == ino && entry.dev == dev,
        _ => entry.path.as_deref().map(Path::new) == Some(path),
    }
}

/// The runtime address of `file_offset` in the mapping of `binary` among `maps`.
pub fn file_offset_to_runtime(maps: &[MapEntry], binary: &Path, file_offset: u64) -> Result<usize> {
    let identity = file_identity(binary);
    maps.iter()
        .filter(|e| maps_file(e, binary, identity))
        .find(|e| file_offset >= e.offset && file_offset - e.offset < (e.end - e.start) as u64)
        .map(|e| e.start + (file_offset - e.offset) as usize)
        .ok_or_else(|| HookError::NotMapped {
            binary: binary.to_path_buf(),
            file_offset,
        })
}

const LIBRARY_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
    "/usr/local/lib",
];

/// Finds the file a binary name stands for: a path as is (`/proc/self/exe`
/// followed), a bare name among this process's mapped files by file name,
/// then in `LD_LIBRARY_PATH` and the usual library directories.
pub fn locate_binary(binary: &str, maps: &[MapEntry]) -> Result<PathBuf> {
    let not_found = || HookError::BinaryNotFound {
        binary: binary.to_string(),
    };
    if binary.contains('/') {
        let path = Path::new(binary);
        return std::fs::canonicalize(path).map_err(|source| HookError::ReadBinary {
            binary: path.to_path_buf(),
            source,
        });
    }
    for entry in maps {
        if let Some(path) = entry.path.as_deref() {
            if Path::new(path).file_name().and_then(|n| n.to_str()) == Some(binary) {
                return Ok(PathBuf::from(path));
            }
        }
    }
    let env_dirs = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    let dirs = env_dirs
        .split(':')
        .filter(|d| !d.is_empty())
        .chain(LIBRARY_DIRS.iter().copied());
    for dir in dirs {
        let candidate = Path::new(dir).join(binary);
        if candidate.is_file() {
            return std::fs::canonicalize(&candidate).map_err(|_| not_found());
        }
    }
    Err(not_found())
}

/// Resolves a target against an ELF image already read (`bytes` of `binary`)
/// and the given mappings.
pub fn resolve_in(
    binary: &Path,
    bytes: &[u8],
    spec: &SymbolSpec,
    maps: &[MapEntry],
) -> Result<ResolvedTarget> {
    resolve_with(binary, &ElfIndex::parse(binary, bytes)?, spec, maps)
}

/// Resolves a target against an indexed ELF file and the given mappings.
pub fn resolve_with(
    binary: &Path,
    index: &ElfIndex,
    spec: &SymbolSpec,
    maps: &[MapEntry],
) -> Result<ResolvedTarget> {
    let (vaddr, function) = match spec {
        SymbolSpec::Symbol { name, offset } => {
            let sym = index.symbol(binary, name)?;
            if *offset >= sym.size {
                return Err(HookError::OffsetOutsideSymbol {
                    binary: binary.to_path_buf(),
                    symbol: name.clone(),
                    offset: *offset,
                    size: sym.size,
                });
            }
            (sym.vaddr + offset, Some(sym))
        }
        SymbolSpec::FileOffset(off) => (index.file_offset_to_vaddr(binary, *off)?, None),
    };
    let file_offset = index.vaddr_to_file_offset(binary, vaddr)?;
    let address = file_offset_to_runtime(maps, binary, file_offset)?;
    let bias = address.wrapping_sub(vaddr as usize);
    Ok(ResolvedTarget {
        binary: binary.to_path_buf(),
        address,
        vaddr,
        file_offset,
        bias,
        function: function.map(|s| ((s.vaddr as usize).wrapping_add(bias), s.size)),
    })
}

/// Key of the index cache: a file's identity and version.
type CacheKey = (PathBuf, u64, u64, i64, i64, u64);

fn cached_index(binary: &Path) -> Result<Arc<ElfIndex>> {
    static CACHE: OnceLock<Mutex<HashMap<CacheKey, Arc<ElfIndex>>>> = OnceLock::new();
    let read_err = |source| HookError::ReadBinary {
        binary: binary.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(binary).map_err(read_err)?;
    let key = (
        binary.to_path_buf(),
        meta.dev(),
        meta.ino(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.size(),
    );
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(index) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(index.clone());
    }
    let bytes = std::fs::read(binary).map_err(read_err)?;
    let index = Arc::new(ElfIndex::parse(binary, &bytes)?);
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, index.clone());
    Ok(index)
}

/// Resolves a target in this process: locates the binary, reads its symbols
/// (indexed once per file version and cached), and finds its mapping in
/// `/proc/self/maps`.
pub fn resolve_target(target: &ProbeTarget) -> Result<ResolvedTarget> {
    let maps = read_self_maps()?;
    let binary = locate_binary(&target.binary, &maps)?;
    let index = cached_index(&binary)?;
    resolve_with(&binary, &index, &target.spec, &maps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libbpf_forms() {
        let t = ProbeTarget::parse("/lib/x86_64-linux-gnu/libc.so.6:malloc").unwrap();
        assert_eq!(t.binary, "/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!(
            t.spec,
            SymbolSpec::Symbol {
                name: "malloc".into(),
                offset: 0
            }
        );
        let (t, ret) = ProbeTarget::parse_section("uretprobe//bin/bash:readline+0x10").unwrap();
        assert!(ret);
        assert_eq!(
            t.spec,
            SymbolSpec::Symbol {
                name: "readline".into(),
                offset: 16
            }
        );
        let t = ProbeTarget::parse("libc.so.6:0x1234").unwrap();
        assert_eq!(t.spec, SymbolSpec::FileOffset(0x1234));
        let t = ProbeTarget::parse("libc.so.6:4660").unwrap();
        assert_eq!(t.spec, SymbolSpec::FileOffset(0x1234));
    }

    #[test]
    fn rejects_bad_targets() {
        for bad in [
            "nocolon",
            ":sym",
            "lib:",
            "lib:sym+zz",
            "lib:0xzz",
            "lib:a-b",
        ] {
            match ProbeTarget::parse(bad) {
                Err(HookError::InvalidTarget { target, .. }) => assert_eq!(target, bad),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(ProbeTarget::parse_section("kprobe/foo").is_err());
    }

    #[test]
    fn parses_maps_lines() {
        let text = "55d0c0a00000-55d0c0a21000 r-xp 00002000 fd:01 1234 /usr/bin/my prog\n\
                    7ffd1000-7ffd2000 rw-p 00000000 00:00 0 \n\
                    garbage\n";
        let maps = parse_maps(text);
        assert_eq!(maps.len(), 2);
        assert_eq!(maps[0].start, 0x55d0c0a00000);
        assert_eq!(maps[0].offset, 0x2000);
        assert_eq!(maps[0].dev, (0xfd, 1));
        assert_eq!(maps[0].inode, 1234);
        assert_eq!(maps[0].path.as_deref(), Some("/usr/bin/my prog"));
        assert!(maps[0].executable());
        assert_eq!(maps[1].path, None);
        assert!(!maps[1].executable());
    }

    #[test]
    fn runtime_address_from_mapping_offset() {
        let maps = parse_maps("1000-3000 r-xp 00004000 00:00 0 /x/lib.so\n");
        let p = Path::new("/x/lib.so");
        assert_eq!(file_offset_to_runtime(&maps, p, 0x4010).unwrap(), 0x1010);
        match file_offset_to_runtime(&maps, p, 0x6000) {
            Err(HookError::NotMapped {
                binary,
                file_offset,
            }) => {
                assert_eq!(binary, p);
                assert_eq!(file_offset, 0x6000);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_elf_is_a_typed_error() {
        let r = resolve_in(
            Path::new("/x"),
            b"not an elf at all",
            &SymbolSpec::FileOffset(0),
            &[],
        );
        assert!(matches!(r, Err(HookError::ParseElf { .. })), "{r:?}");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn sample_elf() -> Vec<u8> {
            std::fs::read("/usr/bin/true").unwrap_or_default()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn target_parsing_never_panics(text in "\\PC{0,40}") {
                if let Ok(t) = ProbeTarget::parse(&text) {
                    prop_assert!(!t.binary.is_empty());
                }
            }

            #[test]
            fn maps_parsing_never_panics(text in "[0-9a-f: /x.rwp-]{0,120}") {
                let _ = parse_maps(&text);
            }

            #[test]
            fn elf_index_never_panics_on_mutated_elf(
                cut in 0usize..70_000,
                edits in proptest::collection::vec((0usize..70_000, any::<u8>()), 0..16),
                name in "[a-z_]{1,8}",
                off in 0u64..0x20_000,
            ) {
                let mut bytes = sample_elf();
                bytes.truncate(cut.max(64));
                let len = bytes.len();
                for (i, b) in edits {
                    if len > 0 {
                        bytes[i % len] = b;
                    }
                }
                let p = Path::new("/mutated");
                if let Ok(index) = ElfIndex::parse(p, &bytes) {
                    let _ = index.symbol(p, &name);
                    let _ = index.file_offset_to_vaddr(p, off);
                    let _ = index.vaddr_to_file_offset(p, off);
                    let _ = resolve_with(p, &index, &SymbolSpec::FileOffset(off), &[]);
                }
            }
        }
    }
}
