//! Relocation and static linking of programs, like libbpf's: each program's
//! own code comes first, then every subprogram it calls (transitively), each
//! copied once per program; call and function-pointer immediates are rewritten
//! to the new positions; map and global-data `lddw`s become map-index pseudo
//! loads; func_info/line_info follow their instructions.

use super::{ObjectError, ProgramDef, ProgramKind, Section};
use crate::btf::{apply_core_relocations, target_btf, Btf, BtfExt, FuncInfo, LineInfo};
use goblin::elf::{reloc::RelocSection, section_header as sh, sym, Sym};
use goblin::strtab::Strtab;
use pkbpf_verifier::isa::{decode_slots, pseudo, RawInsn, INSN_SIZE};
use std::collections::{BTreeMap, HashMap};

/// `R_BPF_NONE`.
const R_BPF_NONE: u32 = 0;
/// `R_BPF_64_64`: lddw against a map, global or function.
const R_BPF_64_64: u32 = 1;
/// `R_BPF_64_32`: call against a function.
const R_BPF_64_32: u32 = 10;
/// Opcode of `lddw`.
const LDDW: u8 = 0x18;
/// Opcode of `call`.
const CALL: u8 = 0x85;

pub(super) struct Ctx<'a, 'b> {
    pub(super) sections: &'b [Section<'a>],
    pub(super) syms: &'b [Sym],
    pub(super) strtab: &'b Strtab<'a>,
    pub(super) relocs: &'b [(usize, RelocSection<'a>)],
    pub(super) map_by_sym: &'b HashMap<(usize, u64), usize>,
    pub(super) data_maps: &'b HashMap<usize, usize>,
    pub(super) btf: Option<&'b Btf>,
    pub(super) btf_ext: Option<&'b BtfExt>,
}

/// What a relocated slot turns into.
#[derive(Debug, Clone, Copy)]
enum Target {
    Map(usize),
    Data { map: usize, offset: i64 },
    Call { sec: usize, slot: usize },
    FuncPtr { sec: usize, slot: usize },
}

/// A code section, CO-RE-relocated, with its functions and relocations.
struct Code {
    name: String,
    slots: Vec<RawInsn>,
    /// `(start, end, name)` slot ranges of its function symbols, sorted.
    funcs: Vec<(usize, usize, String, bool)>,
    relocs: BTreeMap<usize, Target>,
    func_info: Vec<FuncInfo>,
    line_info: Vec<LineInfo>,
}

impl Code {
    /// The function containing `slot` (or the whole section without symbols).
    fn func_at(&self, slot: usize) -> (usize, usize, String) {
        self.funcs
            .iter()
            .find(|(s, e, _, _)| *s <= slot && slot < *e)
            .map(|(s, e, n, _)| (*s, *e, n.clone()))
            .unwrap_or_else(|| (0, self.slots.len(), self.name.clone()))
    }
}

fn is_code(s: &Section<'_>) -> bool {
    s.sh_type == sh::SHT_PROGBITS
        && s.flags & u64::from(sh::SHF_EXECINSTR) != 0
        && s.flags & u64::from(sh::SHF_ALLOC) != 0
}

fn sym_display(ctx: &Ctx<'_, '_>, s: &Sym) -> String {
    if s.st_type() == sym::STT_SECTION {
        ctx.sections
            .get(s.st_shndx)
            .map(|x| x.name.to_string())
            .unwrap_or_else(|| format!("section #{}", s.st_shndx))
    } else {
        ctx.strtab.get_at(s.st_name).unwrap_or("?").to_string()
    }
}

pub(super) fn build_programs(ctx: &Ctx<'_, '_>) -> Result<Vec<ProgramDef>, ObjectError> {
    let mut codes: HashMap<usize, Code> = HashMap::new();
    let target = target_btf();
    for (i, s) in ctx.sections.iter().enumerate() {
        if !is_code(s) || s.data.is_empty() {
            continue;
        }
        if s.data.len() % INSN_SIZE != 0 {
            return Err(ObjectError::BadCodeSize {
                section: s.name.into(),
                size: s.size,
            });
        }
        let slots: Vec<RawInsn> = s
            .data
            .chunks_exact(INSN_SIZE)
            .map(|c| {
                let mut b = [0u8; INSN_SIZE];
                b.copy_from_slice(c);
                RawInsn::from_bytes(b)
            })
            .collect();
        let mut funcs: Vec<(usize, usize, String, bool)> = ctx
            .syms
            .iter()
            .filter(|y| y.st_shndx == i && y.st_type() == sym::STT_FUNC)
            .map(|y| {
                let start = (y.st_value / INSN_SIZE as u64) as usize;
                let len = (y.st_size / INSN_SIZE as u64) as usize;
                let end = start.saturating_add(len.max(1)).min(slots.len());
                (
                    start,
                    end,
                    ctx.strtab.get_at(y.st_name).unwrap_or("").to_string(),
                    y.st_bind() != sym::STB_LOCAL,
                )
            })
            .filter(|(s, e, _, _)| s < e)
            .collect();
        funcs.sort();
        let (func_info, line_info) = ext_records(ctx, s.name);
        codes.insert(
            i,
            Code {
                name: s.name.to_string(),
                slots,
                funcs,
                relocs: BTreeMap::new(),
                func_info,
                line_info,
            },
        );
    }

    // CO-RE first: the records name section-relative slots.
    if let (Some(btf), Some(ext)) = (ctx.btf, ctx.btf_ext) {
        for sec in &ext.core_relo {
            let name = btf.string(sec.sec_name_off);
            let Some((_, code)) = codes.iter_mut().find(|(_, c)| c.name == name) else {
                continue;
            };
            if let Err(source) = apply_core_relocations(btf, &target, &sec.records, &mut code.slots)
            {
                let insn = match &source {
                    crate::btf::CoreError::UnknownKind { insn, .. }
                    | crate::btf::CoreError::OutOfRange { insn, .. }
                    | crate::btf::CoreError::BadAccess { insn, .. }
                    | crate::btf::CoreError::Unresolved { insn, .. }
                    | crate::btf::CoreError::BadInstruction { insn, .. }
                    | crate::btf::CoreError::Btf { insn, .. } => *insn,
                };
                return Err(ObjectError::Core {
                    program: code.func_at(insn).2,
                    section: code.name.clone(),
                    source: Box::new(source),
                });
            }
        }
    }

    // Relocations of code sections, validated up front.
    for (rel_idx, rs) in ctx.relocs {
        // goblin gives the index of the SHT_REL section; sh_info names the
        // section it applies to.
        let Some(rel_sec) = ctx.sections.get(*rel_idx) else {
            continue;
        };
        let target_idx = &(rel_sec.info as usize);
        let Some(sec) = ctx.sections.get(*target_idx) else {
            continue;
        };
        if !codes.contains_key(target_idx) {
            continue; // .BTF, .BTF.ext, debug info, data: nothing to do.
        }
        for r in rs.iter() {
            if r.r_type == R_BPF_NONE {
                continue;
            }
            let slot = (r.r_offset / INSN_SIZE as u64) as usize;
            let code = &codes[target_idx];
            let s = ctx
                .syms
                .get(r.r_sym)
                .ok_or_else(|| ObjectError::MissingSymbol {
                    section: sec.name.into(),
                    offset: r.r_offset,
                    index: r.r_sym,
                })?;
            let bad = |reason: String| ObjectError::BadRelocation {
                section: sec.name.into(),
                offset: r.r_offset,
                symbol: sym_display(ctx, s),
                reason,
            };
            if r.r_offset % INSN_SIZE as u64 != 0 || slot >= code.slots.len() {
                return Err(bad("offset is not an instruction of the section".into()));
            }
            let insn = code.slots[slot];
            let shndx = s.st_shndx;
            if shndx == sh::SHN_UNDEF as usize {
                return Err(bad("symbol is undefined (extern)".into()));
            }
            let t = match r.r_type {
                R_BPF_64_64 => {
                    if insn.code != LDDW || slot + 1 >= code.slots.len() {
                        return Err(bad(format!(
                            "R_BPF_64_64 on instruction {:#04x}, not lddw",
                            insn.code
                        )));
                    }
                    if let Some(m) = ctx.map_by_sym.get(&(shndx, s.st_value)) {
                        if s.st_type() == sym::STT_SECTION && insn.imm != 0 {
                            return Err(bad("map reference with an addend".into()));
                        }
                        Target::Map(*m)
                    } else if let Some(m) = ctx.data_maps.get(&shndx) {
                        Target::Data {
                            map: *m,
                            offset: s.st_value as i64 + i64::from(insn.imm),
                        }
                    } else if codes.contains_key(&shndx) {
                        let byte = s.st_value as i64 + i64::from(insn.imm);
                        if byte < 0 || byte % INSN_SIZE as i64 != 0 {
                            return Err(bad(format!("function offset {byte} is not a slot")));
                        }
                        if byte / INSN_SIZE as i64 >= codes[&shndx].slots.len() as i64 {
                            return Err(bad(format!(
                                "function offset {byte} is outside the section"
                            )));
                        }
                        Target::FuncPtr {
                            sec: shndx,
                            slot: (byte / INSN_SIZE as i64) as usize,
                        }
                    } else {
                        let secname = ctx.sections.get(shndx).map(|x| x.name).unwrap_or("?");
                        return Err(bad(format!(
                            "symbol is in section `{secname}`, which is not a map, global data or code section"
                        )));
                    }
                }
                R_BPF_64_32 => {
                    if insn.code != CALL || insn.src != pseudo::CALL {
                        return Err(bad(format!(
                            "R_BPF_64_32 on instruction {:#04x} (src {}), not a bpf-to-bpf call",
                            insn.code, insn.src
                        )));
                    }
                    if !codes.contains_key(&shndx) {
                        let secname = ctx.sections.get(shndx).map(|x| x.name).unwrap_or("?");
                        return Err(bad(format!(
                            "call target is in non-code section `{secname}`"
                        )));
                    }
                    let t = (s.st_value / INSN_SIZE as u64) as i64 + i64::from(insn.imm) + 1;
                    if t < 0 || t as usize >= codes[&shndx].slots.len() {
                        return Err(bad(format!("call target slot {t} is outside the section")));
                    }
                    Target::Call {
                        sec: shndx,
                        slot: t as usize,
                    }
                }
                other => return Err(bad(format!("unsupported relocation type {other} in code"))),
            };
            codes
                .get_mut(target_idx)
                .expect("checked above")
                .relocs
                .insert(slot, t);
        }
    }

    // Programs: function symbols of non-.text code sections, in section order.
    let mut order: Vec<usize> = codes.keys().copied().collect();
    order.sort_unstable();
    let mut programs = Vec::new();
    for sec in order {
        let code = &codes[&sec];
        if code.name == ".text" {
            continue;
        }
        let kind = ProgramKind::from_section(&code.name).map_err(|reason| {
            ObjectError::UnsupportedSection {
                section: code.name.clone(),
                reason,
            }
        })?;
        let mut entries: Vec<(usize, usize, String)> = code
            .funcs
            .iter()
            .filter(|f| f.3)
            .map(|(s, e, n, _)| (*s, *e, n.clone()))
            .collect();
        if entries.is_empty() {
            entries.push((0, code.slots.len(), code.name.clone()));
        }
        for (start, end, name) in entries {
            programs.push(link_program(&codes, sec, start, end, name, kind.clone())?);
        }
    }
    Ok(programs)
}

fn ext_records(ctx: &Ctx<'_, '_>, section: &str) -> (Vec<FuncInfo>, Vec<LineInfo>) {
    let (Some(btf), Some(ext)) = (ctx.btf, ctx.btf_ext) else {
        return (Vec::new(), Vec::new());
    };
    let fi = ext
        .func_info
        .iter()
        .filter(|s| btf.string(s.sec_name_off) == section)
        .flat_map(|s| s.records.iter().copied())
        .collect();
    let li = ext
        .line_info
        .iter()
        .filter(|s| btf.string(s.sec_name_off) == section)
        .flat_map(|s| s.records.iter().copied())
        .collect();
    (fi, li)
}

/// A copied range: `(section, start, end, placement)`.
type Chunk = (usize, usize, usize, usize);

fn link_program(
    codes: &HashMap<usize, Code>,
    sec: usize,
    start: usize,
    end: usize,
    name: String,
    kind: ProgramKind,
) -> Result<ProgramDef, ObjectError> {
    let section = codes[&sec].name.clone();
    let mut out: Vec<RawInsn> = Vec::new();
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut func_info = Vec::new();
    let mut line_info = Vec::new();

    let place = |out: &mut Vec<RawInsn>,
                 chunks: &mut Vec<Chunk>,
                 fi: &mut Vec<FuncInfo>,
                 li: &mut Vec<LineInfo>,
                 s: usize,
                 a: usize,
                 b: usize| {
        let at = out.len();
        let code = &codes[&s];
        out.extend_from_slice(&code.slots[a..b]);
        chunks.push((s, a, b, at));
        let shift = |insn: u32| (insn as usize - a + at) as u32;
        fi.extend(
            code.func_info
                .iter()
                .filter(|f| (a..b).contains(&(f.insn as usize)))
                .map(|f| FuncInfo {
                    insn: shift(f.insn),
                    ..*f
                }),
        );
        li.extend(
            code.line_info
                .iter()
                .filter(|l| (a..b).contains(&(l.insn as usize)))
                .map(|l| LineInfo {
                    insn: shift(l.insn),
                    ..*l
                }),
        );
    };
    place(
        &mut out,
        &mut chunks,
        &mut func_info,
        &mut line_info,
        sec,
        start,
        end,
    );
    let own_len = out.len();

    // Where (section, slot) lives in `out`, copying its function if needed.
    let resolve = |out: &mut Vec<RawInsn>,
                   chunks: &mut Vec<Chunk>,
                   fi: &mut Vec<FuncInfo>,
                   li: &mut Vec<LineInfo>,
                   s: usize,
                   slot: usize|
     -> usize {
        if let Some((_, a, _, at)) = chunks
            .iter()
            .find(|(cs, a, b, _)| *cs == s && (*a..*b).contains(&slot))
        {
            return at + slot - a;
        }
        let (a, b, _) = codes[&s].func_at(slot);
        let at = out.len();
        place(out, chunks, fi, li, s, a, b);
        at + slot - a
    };

    let mut ci = 0;
    while ci < chunks.len() {
        let (s, a, b, at) = chunks[ci];
        let code = &codes[&s];
        for k in a..b {
            let pos = at + k - a;
            let raw = out[pos];
            let rel = code.relocs.get(&k).copied();
            let new_target = match rel {
                Some(Target::Map(_) | Target::Data { .. }) if pos + 1 >= out.len() => {
                    return Err(ObjectError::BadRelocation {
                        section: code.name.clone(),
                        offset: (k * INSN_SIZE) as u64,
                        symbol: name,
                        reason: "lddw split across functions".into(),
                    })
                }
                Some(Target::Map(m)) => {
                    out[pos].src = pseudo::MAP_IDX;
                    out[pos].imm = m as i32;
                    out[pos + 1].imm = 0;
                    None
                }
                Some(Target::Data { map, offset }) => {
                    let off = i32::try_from(offset).map_err(|_| ObjectError::BadRelocation {
                        section: code.name.clone(),
                        offset: (k * INSN_SIZE) as u64,
                        symbol: format!("map #{map}"),
                        reason: format!("global data offset {offset} out of range"),
                    })?;
                    out[pos].src = pseudo::MAP_IDX_VALUE;
                    out[pos].imm = map as i32;
                    out[pos + 1].imm = off;
                    None
                }
                Some(Target::Call { sec: ts, slot }) => Some((ts, slot, false)),
                Some(Target::FuncPtr { sec: ts, slot }) => Some((ts, slot, true)),
                None if raw.code == CALL && raw.src == pseudo::CALL => {
                    let t = k as i64 + 1 + i64::from(raw.imm);
                    if t < 0 || t as usize >= code.slots.len() {
                        return Err(ObjectError::BadCallTarget {
                            program: name,
                            section: code.name.clone(),
                            insn: k,
                            target: t,
                        });
                    }
                    if (a..b).contains(&(t as usize)) {
                        None // stays pc-relative inside the copied function
                    } else {
                        Some((s, t as usize, false))
                    }
                }
                None => None,
            };
            if let Some((ts, slot, is_ptr)) = new_target {
                let dest = resolve(
                    &mut out,
                    &mut chunks,
                    &mut func_info,
                    &mut line_info,
                    ts,
                    slot,
                );
                let rel_off = dest as i64 - (pos as i64 + 1);
                out[pos].imm = rel_off as i32;
                if is_ptr {
                    out[pos].src = pseudo::FUNC;
                    if let Some(hi) = out.get_mut(pos + 1) {
                        hi.imm = 0;
                    }
                }
            }
        }
        ci += 1;
    }
    func_info.sort_by_key(|f| f.insn);
    line_info.sort_by_key(|l| l.insn);
    let insns = decode_slots(&out).map_err(|source| ObjectError::Decode {
        program: name.clone(),
        section: section.clone(),
        source,
    })?;
    Ok(ProgramDef {
        name,
        section,
        kind,
        insns,
        own_len,
        func_info,
        line_info,
    })
}
