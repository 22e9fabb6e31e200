//! Loading clang-compiled eBPF ELF objects (libbpf conventions).
//!
//! [`Object::parse`] is a pure function of the file's bytes: no syscalls, no
//! files, no keys — so it can be fuzzed. It returns programs ready for the
//! verifier (relocated, with their `.text` subprograms statically linked),
//! map definitions, BTF and the license.
//!
//! Supported:
//!
//! - **Program sections** (see [`ProgramKind::from_section`]): `uprobe[/PATH:FUNC[+OFF]]`,
//!   `uretprobe[/…]`, `tracepoint/CAT/NAME`, `tp/CAT/NAME`, `raw_tracepoint/NAME`,
//!   `raw_tp/NAME`; every other executable section except `.text` (for example
//!   `SEC("extension")`) is an embedded program. Each global function symbol of
//!   such a section is one program.
//! - **Maps**: BTF-defined `.maps` (`__uint(type|max_entries|map_flags|pinning|key_size|value_size)`,
//!   `__type(key|value)`, and `__array(values, ...)` initializers of prog
//!   arrays, from `R_BPF_64_ABS64` relocations in `.maps`), the legacy `maps` section (`struct bpf_map_def`,
//!   20 bytes + ignored extras), and `.data*`/`.rodata*`/`.bss*` sections as
//!   single-entry array maps named after the section ([`MapDef`]). Map order:
//!   legacy maps, BTF maps, then data sections in section order.
//! - **Relocations in code**: `R_BPF_64_64` (1) on an `lddw` against a map
//!   symbol (→ [`LdPseudo::MapIdx`], `imm` = map index), a data section or
//!   a variable in one (→ [`LdPseudo::MapIdxValue`], `next_imm` = offset), or a
//!   function (→ [`LdPseudo::Func`]); `R_BPF_64_32` (10) on a bpf-to-bpf
//!   `call`. `R_BPF_64_NONE` is ignored; relocations in other non-code
//!   sections (`R_BPF_64_ABS64`/`ABS32` in `.BTF`, `.BTF.ext`, debug info,
//!   pointer tables in `.rodata`) are ignored, as libbpf does.
//! - **CO-RE** field/type/enum relocations from `.BTF.ext`, against
//!   [`crate::btf::target_btf`].
//! - `license` and `version` sections.
//!
//! Rejected with an error naming the section or symbol: `.kconfig`, `.ksyms`
//! and other extern symbols, unknown map types, relocations against missing
//! symbols or in the wrong place.

mod link;
mod maps;
mod section;

use crate::btf::{Btf, BtfError, BtfExt, BtfType, CoreError, FuncInfo, LineInfo};
use goblin::elf::{section_header as sh, sym, Elf};
use pkbpf_verifier::isa::{DecodeError, Insn, LdPseudo};
use serde::Serialize;
use std::collections::HashMap;

pub use maps::{MapDef, MapKind, BPF_F_MMAPABLE, BPF_F_RDONLY_PROG};
pub use section::{AttachTarget, ProgramKind};

/// `EM_BPF`.
pub const EM_BPF: u16 = 247;

/// Errors from [`Object::parse`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// The bytes are not a well-formed ELF file.
    #[error("malformed ELF: {reason}")]
    Elf {
        /// goblin's description.
        reason: String,
    },
    /// The ELF file is not for BPF.
    #[error("ELF machine is {machine}, not EM_BPF (247)")]
    WrongMachine {
        /// `e_machine`.
        machine: u16,
    },
    /// The ELF file's class, byte order or type is not what clang emits for BPF.
    #[error("unsupported ELF file: {reason}")]
    UnsupportedElf {
        /// What is unsupported.
        reason: String,
    },
    /// A section's data lies outside the file.
    #[error("section {section}: data {offset}+{size} is outside the file ({file_len} bytes)")]
    SectionOutOfBounds {
        /// Section name.
        section: String,
        /// `sh_offset`.
        offset: u64,
        /// `sh_size`.
        size: u64,
        /// File length.
        file_len: usize,
    },
    /// `.BTF` or `.BTF.ext` is malformed.
    #[error("section {section}: {source}")]
    Btf {
        /// `.BTF` or `.BTF.ext`.
        section: &'static str,
        /// The problem.
        #[source]
        source: BtfError,
    },
    /// A code section's size is not a multiple of 8.
    #[error("section {section}: code size {size} is not a multiple of 8")]
    BadCodeSize {
        /// Section name.
        section: String,
        /// Its size.
        size: u64,
    },
    /// A section pkbpf does not support.
    #[error("section {section} is not supported: {reason}")]
    UnsupportedSection {
        /// Section name.
        section: String,
        /// Why.
        reason: String,
    },
    /// An extern symbol (`.kconfig`, `.ksyms`, undefined functions/variables).
    #[error("extern symbol `{symbol}` is not supported (pkbpf has no .kconfig/.ksyms)")]
    ExternSymbol {
        /// Symbol name.
        symbol: String,
    },
    /// A map has a type number pkbpf does not support.
    #[error("map `{map}`: unsupported map type {type_num}")]
    UnsupportedMapType {
        /// Map name.
        map: String,
        /// Kernel map type number.
        type_num: u32,
    },
    /// A map definition is malformed.
    #[error("map `{map}`: {reason}")]
    BadMapDef {
        /// Map name.
        map: String,
        /// What is wrong.
        reason: String,
    },
    /// A relocation names a symbol index the symbol table does not have.
    #[error("section {section}: relocation at offset {offset:#x} names missing symbol #{index}")]
    MissingSymbol {
        /// The relocated section.
        section: String,
        /// Byte offset in it.
        offset: u64,
        /// The symbol index.
        index: usize,
    },
    /// A relocation cannot be applied.
    #[error("section {section}: relocation at offset {offset:#x} against `{symbol}`: {reason}")]
    BadRelocation {
        /// The relocated section.
        section: String,
        /// Byte offset in it.
        offset: u64,
        /// Symbol name (or its section's name for section symbols).
        symbol: String,
        /// What is wrong.
        reason: String,
    },
    /// A CO-RE relocation failed.
    #[error("program `{program}` (section {section}): {source}")]
    Core {
        /// Program name.
        program: String,
        /// Section name.
        section: String,
        /// The CO-RE problem (names the instruction and access string);
        /// boxed to keep `ObjectError` small.
        #[source]
        source: Box<CoreError>,
    },
    /// A linked program does not decode.
    #[error("program `{program}` (section {section}): {source}")]
    Decode {
        /// Program name.
        program: String,
        /// Section name.
        section: String,
        /// The decoding problem (names the instruction).
        #[source]
        source: DecodeError,
    },
    /// A bpf-to-bpf call or function reference leads outside the code.
    #[error("program `{program}`: call at instruction {insn} targets {target} outside section {section}")]
    BadCallTarget {
        /// Program name.
        program: String,
        /// Section of the calling instruction.
        section: String,
        /// Slot index in that section.
        insn: usize,
        /// The computed target slot.
        target: i64,
    },
    /// The `license` or `version` section is malformed.
    #[error("section {section}: {reason}")]
    BadMetadata {
        /// `license` or `version`.
        section: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// One program: relocated, linked and decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramDef {
    /// The function's name.
    pub name: String,
    /// The ELF section it came from.
    pub section: String,
    /// What the section name says the program is for.
    pub kind: ProgramKind,
    /// One instruction per slot (after relocation and static linking of the
    /// `.text` subprograms it calls, which follow the program's own code).
    pub insns: Vec<Insn>,
    /// Number of slots that are the program's own (before appended subprograms).
    pub own_len: usize,
    /// func_info with `insn` as indices into [`ProgramDef::insns`].
    pub func_info: Vec<FuncInfo>,
    /// line_info with `insn` as indices into [`ProgramDef::insns`].
    pub line_info: Vec<LineInfo>,
}

/// A parsed object file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    programs: Vec<ProgramDef>,
    maps: Vec<MapDef>,
    btf: Option<Btf>,
    btf_ext: Option<BtfExt>,
    license: String,
    kernel_version: Option<u32>,
}

/// A global variable of a data section, from the section's BTF DATASEC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GlobalVar {
    /// Variable name.
    pub name: String,
    /// C-like type name.
    pub type_name: String,
    /// Offset in the section.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

/// A section's basic facts, extracted once.
#[derive(Debug, Clone)]
pub(crate) struct Section<'a> {
    pub(crate) name: &'a str,
    pub(crate) sh_type: u32,
    pub(crate) flags: u64,
    pub(crate) size: u64,
    /// `sh_info` (for relocation sections: the section they apply to).
    pub(crate) info: u32,
    /// Empty for `SHT_NOBITS`.
    pub(crate) data: &'a [u8],
}

impl Object {
    /// Parses an object file from its bytes.
    ///
    /// ```no_run
    /// use pkbpf::object::Object;
    ///
    /// let bytes = std::fs::read("prog.bpf.o")?;
    /// let obj = Object::parse(&bytes)?;
    /// for p in obj.programs() {
    ///     println!("{}: {} ({} slots)", p.name, p.kind.name(), p.insns.len());
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn parse(bytes: &[u8]) -> Result<Object, ObjectError> {
        let elf = Elf::parse(bytes).map_err(|e| ObjectError::Elf {
            reason: e.to_string(),
        })?;
        if elf.header.e_machine != EM_BPF {
            return Err(ObjectError::WrongMachine {
                machine: elf.header.e_machine,
            });
        }
        if !elf.is_64 || !elf.little_endian {
            return Err(ObjectError::UnsupportedElf {
                reason: "only 64-bit little-endian BPF objects are supported".into(),
            });
        }
        if elf.header.e_type != goblin::elf::header::ET_REL {
            return Err(ObjectError::UnsupportedElf {
                reason: format!("e_type {} is not ET_REL (relocatable)", elf.header.e_type),
            });
        }
        let mut sections = Vec::with_capacity(elf.section_headers.len());
        for (i, s) in elf.section_headers.iter().enumerate() {
            let name = elf.shdr_strtab.get_at(s.sh_name).unwrap_or("");
            let data = if s.sh_type == sh::SHT_NOBITS || s.sh_type == sh::SHT_NULL {
                &[][..]
            } else {
                let end = s.sh_offset.checked_add(s.sh_size);
                match end {
                    Some(end) if end <= bytes.len() as u64 => {
                        &bytes[s.sh_offset as usize..end as usize]
                    }
                    _ => {
                        return Err(ObjectError::SectionOutOfBounds {
                            section: if name.is_empty() {
                                format!("#{i}")
                            } else {
                                name.to_string()
                            },
                            offset: s.sh_offset,
                            size: s.sh_size,
                            file_len: bytes.len(),
                        })
                    }
                }
            };
            sections.push(Section {
                name,
                sh_type: s.sh_type,
                flags: s.sh_flags,
                size: s.sh_size,
                info: s.sh_info,
                data,
            });
        }

        let find = |n: &str| sections.iter().position(|s| s.name == n);
        for bad in [".kconfig", ".ksyms"] {
            if find(bad).is_some() {
                return Err(ObjectError::UnsupportedSection {
                    section: bad.into(),
                    reason: "kernel config and kernel symbol externs do not exist in userspace"
                        .into(),
                });
            }
        }
        for s in elf.syms.iter() {
            if s.st_shndx == sh::SHN_UNDEF as usize
                && s.st_bind() != sym::STB_LOCAL
                && s.st_name != 0
            {
                return Err(ObjectError::ExternSymbol {
                    symbol: elf.strtab.get_at(s.st_name).unwrap_or("?").to_string(),
                });
            }
        }

        let mut btf = match find(".BTF") {
            Some(i) => Some(
                Btf::parse(sections[i].data).map_err(|source| ObjectError::Btf {
                    section: ".BTF",
                    source,
                })?,
            ),
            None => None,
        };
        if let Some(btf) = btf.as_mut() {
            for (i, s) in sections.iter().enumerate() {
                if s.flags & u64::from(sh::SHF_ALLOC) == 0 || s.name.is_empty() {
                    continue;
                }
                let size = u32::try_from(s.size).unwrap_or(u32::MAX);
                btf.fixup_datasec(s.name, size, |var| {
                    elf.syms
                        .iter()
                        .find(|y| {
                            y.st_shndx == i
                                && y.st_type() != sym::STT_SECTION
                                && elf.strtab.get_at(y.st_name) == Some(var)
                        })
                        .and_then(|y| u32::try_from(y.st_value).ok())
                });
            }
        }
        let btf_ext = match (find(".BTF.ext"), &btf) {
            (Some(i), Some(_)) => {
                Some(
                    BtfExt::parse(sections[i].data).map_err(|source| ObjectError::Btf {
                        section: ".BTF.ext",
                        source,
                    })?,
                )
            }
            _ => None,
        };

        let license = match find("license") {
            Some(i) => {
                let d = sections[i].data;
                let end = d.iter().position(|b| *b == 0).unwrap_or(d.len());
                std::str::from_utf8(&d[..end])
                    .map_err(|_| ObjectError::BadMetadata {
                        section: "license",
                        reason: "license is not UTF-8".into(),
                    })?
                    .to_string()
            }
            None => String::new(),
        };
        let kernel_version = match find("version") {
            Some(i) => {
                let d = sections[i].data;
                let b: [u8; 4] = d.try_into().map_err(|_| ObjectError::BadMetadata {
                    section: "version",
                    reason: format!("version is {} bytes, expected 4", d.len()),
                })?;
                Some(u32::from_le_bytes(b))
            }
            None => None,
        };

        // Maps: legacy, BTF-defined, then data sections.
        let mut maps = Vec::new();
        // (section index, symbol offset) -> map index, for relocations.
        let mut map_by_sym: HashMap<(usize, u64), usize> = HashMap::new();
        let mut data_maps: HashMap<usize, usize> = HashMap::new();
        let syms: Vec<goblin::elf::Sym> = elf.syms.iter().collect();
        let sym_name = |s: &goblin::elf::Sym| elf.strtab.get_at(s.st_name).unwrap_or("");

        if let Some(mi) = find("maps") {
            let mut defs: Vec<&goblin::elf::Sym> = syms
                .iter()
                .filter(|s| s.st_shndx == mi && s.st_type() != sym::STT_SECTION && s.st_name != 0)
                .collect();
            defs.sort_by_key(|s| s.st_value);
            if !defs.is_empty() {
                let def_size = sections[mi].data.len() as u64 / defs.len() as u64;
                for s in defs {
                    let name = sym_name(s);
                    let start = s.st_value;
                    let d = start
                        .checked_add(def_size)
                        .filter(|e| *e <= sections[mi].data.len() as u64)
                        .map(|e| &sections[mi].data[start as usize..e as usize])
                        .ok_or_else(|| ObjectError::BadMapDef {
                            map: name.to_string(),
                            reason: format!("symbol offset {start} is outside section maps"),
                        })?;
                    map_by_sym.insert((mi, s.st_value), maps.len());
                    maps.push(maps::parse_legacy_map(name, d)?);
                }
            }
        }
        if let Some(mi) = find(".maps") {
            let btf = btf
                .as_ref()
                .ok_or_else(|| ObjectError::UnsupportedSection {
                    section: ".maps".into(),
                    reason: "BTF-defined maps need a .BTF section".into(),
                })?;
            let mut btf_maps = Vec::new();
            for m in maps::parse_btf_maps(btf)? {
                let s = syms
                    .iter()
                    .find(|s| s.st_shndx == mi && sym_name(s) == m.def.name)
                    .ok_or_else(|| ObjectError::BadMapDef {
                        map: m.def.name.clone(),
                        reason: "no symbol in section .maps".into(),
                    })?;
                map_by_sym.insert((mi, s.st_value), maps.len());
                btf_maps.push((maps.len(), s.st_value, m.values_offset));
                maps.push(m.def);
            }
            // Initializers of `values` (prog arrays): ABS64 relocations in
            // `.maps` against the programs' function symbols.
            for (rel_idx, rs) in &elf.shdr_relocs {
                if sections.get(*rel_idx).map(|s| s.info as usize) != Some(mi) {
                    continue;
                }
                for r in rs.iter() {
                    let bad = |symbol: String, reason: String| ObjectError::BadRelocation {
                        section: ".maps".into(),
                        offset: r.r_offset,
                        symbol,
                        reason,
                    };
                    let s = syms
                        .get(r.r_sym)
                        .ok_or_else(|| ObjectError::MissingSymbol {
                            section: ".maps".into(),
                            offset: r.r_offset,
                            index: r.r_sym,
                        })?;
                    let target = sym_name(s).to_string();
                    let Some(&(idx, start, values)) = btf_maps
                        .iter()
                        .filter(|(_, start, _)| *start <= r.r_offset)
                        .max_by_key(|(_, start, _)| *start)
                    else {
                        return Err(bad(target, "not inside a map definition".into()));
                    };
                    let Some(values) = values else {
                        return Err(bad(
                            target,
                            format!("map `{}` has no `values` array", maps[idx].name),
                        ));
                    };
                    let rel = r.r_offset - start;
                    let first = u64::from(values);
                    if rel < first || (rel - first) % 8 != 0 {
                        return Err(bad(target, "not at an element of `values`".into()));
                    }
                    let slot = (rel - first) / 8;
                    if slot >= u64::from(maps[idx].max_entries) {
                        return Err(bad(target, format!("slot {slot} beyond max_entries")));
                    }
                    if s.st_type() != sym::STT_FUNC {
                        return Err(bad(target, "prog_array values must be programs".into()));
                    }
                    maps[idx].initial_progs.push((slot as u32, target));
                }
            }
        }
        for (i, s) in sections.iter().enumerate() {
            let is_data = [".data", ".rodata", ".bss"]
                .iter()
                .any(|p| s.name == *p || s.name.starts_with(&format!("{p}.")));
            if is_data && s.flags & u64::from(sh::SHF_ALLOC) != 0 && s.size > 0 {
                let size = u32::try_from(s.size).map_err(|_| ObjectError::UnsupportedSection {
                    section: s.name.into(),
                    reason: "data section larger than 4 GiB".into(),
                })?;
                let data = (s.sh_type != sh::SHT_NOBITS).then_some(s.data);
                data_maps.insert(i, maps.len());
                maps.push(maps::data_map(s.name, size, data, btf.as_ref()));
            }
        }

        let ctx = link::Ctx {
            sections: &sections,
            syms: &syms,
            strtab: &elf.strtab,
            relocs: &elf.shdr_relocs,
            map_by_sym: &map_by_sym,
            data_maps: &data_maps,
            btf: btf.as_ref(),
            btf_ext: btf_ext.as_ref(),
        };
        let programs = link::build_programs(&ctx)?;

        Ok(Object {
            programs,
            maps,
            btf,
            btf_ext,
            license,
            kernel_version,
        })
    }

    /// The programs, in section order.
    pub fn programs(&self) -> &[ProgramDef] {
        &self.programs
    }

    /// The program called `name`.
    pub fn program(&self, name: &str) -> Option<&ProgramDef> {
        self.programs.iter().find(|p| p.name == name)
    }

    /// The maps; `LdPseudo::MapIdx` immediates index this slice.
    pub fn maps(&self) -> &[MapDef] {
        &self.maps
    }

    /// The map called `name`.
    pub fn map(&self, name: &str) -> Option<&MapDef> {
        self.maps.iter().find(|m| m.name == name)
    }

    /// `.BTF`, when present.
    pub fn btf(&self) -> Option<&Btf> {
        self.btf.as_ref()
    }

    /// `.BTF.ext`, when present (section-relative records, before linking).
    pub fn btf_ext(&self) -> Option<&BtfExt> {
        self.btf_ext.as_ref()
    }

    /// The `license` section's string (empty when absent).
    pub fn license(&self) -> &str {
        &self.license
    }

    /// The `version` section's value, when present.
    pub fn kernel_version(&self) -> Option<u32> {
        self.kernel_version
    }

    /// The variables of a global data map, from its DATASEC (empty without BTF).
    pub fn globals(&self, map: &MapDef) -> Vec<GlobalVar> {
        let (Some(btf), Some(id)) = (&self.btf, map.value_type_id) else {
            return Vec::new();
        };
        if matches!(map.kind, MapKind::Regular) {
            return Vec::new();
        }
        let Some(BtfType::Datasec { vars, .. }) = btf.type_by_id(id) else {
            return Vec::new();
        };
        vars.iter()
            .map(|v| {
                let (name, ty) = match btf.type_by_id(v.type_id) {
                    Some(BtfType::Var {
                        name_off, type_id, ..
                    }) => (btf.string(*name_off).to_string(), btf.type_name(*type_id)),
                    _ => (btf.name_of(v.type_id).to_string(), String::new()),
                };
                GlobalVar {
                    name,
                    type_name: ty,
                    offset: v.offset,
                    size: v.size,
                }
            })
            .collect()
    }
}

impl ProgramDef {
    /// The line_info record that covers slot `pc` (the last one at or before
    /// it), for `; <source line>` annotations.
    pub fn line_at(&self, pc: usize) -> Option<&LineInfo> {
        let i = self.line_info.partition_point(|l| l.insn as usize <= pc);
        i.checked_sub(1).map(|i| &self.line_info[i])
    }

    /// `(slot, source text)` for every line_info record, sorted by slot: the
    /// form the verifier's `ProgramEnv::with_line_info` takes. Empty
    /// without BTF.
    pub fn source_lines(&self, btf: Option<&Btf>) -> Vec<(usize, String)> {
        let Some(btf) = btf else {
            return Vec::new();
        };
        self.line_info
            .iter()
            .map(|l| (l.insn as usize, btf.string(l.line_off).trim().to_string()))
            .collect()
    }

    /// The map indices this program references (`MapIdx`/`MapIdxValue`), sorted.
    pub fn map_refs(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .insns
            .iter()
            .filter_map(|i| match i {
                Insn::LdPseudo {
                    kind: LdPseudo::MapIdx | LdPseudo::MapIdxValue,
                    imm,
                    ..
                } => Some(*imm as usize),
                _ => None,
            })
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}
