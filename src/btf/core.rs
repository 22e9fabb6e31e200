//! CO-RE ("compile once, run everywhere") relocations against pkbpf's
//! built-in target types.
//!
//! A program built against a `vmlinux.h` with `preserve_access_index` carries,
//! in `.BTF.ext`, one record per context access: the instruction, the local
//! root type, an access string (`"0:3"` = element 0 of the root, then member
//! 3) and what to compute (a field's byte offset, size, existence, ...). The
//! loader resolves the same access by *names* in the target's types and
//! patches the instruction with the target's value.
//!
//! pkbpf has no kernel BTF: the target is [`target_btf`], a hand-written
//! description of what pkbpf's hooks pass as context — x86-64 `struct
//! pt_regs` (uprobes) and the syscall tracepoint records. Matching follows the
//! CO-RE rules: the root type's name with any `___flavor` suffix removed must
//! name a target type of the same kind; members match by name (searching
//! through anonymous members); arrays by index. A relocation that cannot be
//! satisfied is an error (libbpf would poison the instruction).

use super::{Btf, BtfError, BtfType, IntEncoding, Member};
use pkbpf_verifier::isa::{class, RawInsn};

/// `enum bpf_core_relo_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum CoreRelocKind {
    FieldByteOffset,
    FieldByteSize,
    FieldExists,
    FieldSigned,
    FieldLshiftU64,
    FieldRshiftU64,
    TypeIdLocal,
    TypeIdTarget,
    TypeExists,
    TypeSize,
    EnumvalExists,
    EnumvalValue,
    TypeMatches,
}

impl CoreRelocKind {
    /// The kind with number `n`.
    pub fn from_raw(n: u32) -> Option<Self> {
        use CoreRelocKind::*;
        Some(match n {
            0 => FieldByteOffset,
            1 => FieldByteSize,
            2 => FieldExists,
            3 => FieldSigned,
            4 => FieldLshiftU64,
            5 => FieldRshiftU64,
            6 => TypeIdLocal,
            7 => TypeIdTarget,
            8 => TypeExists,
            9 => TypeSize,
            10 => EnumvalExists,
            11 => EnumvalValue,
            12 => TypeMatches,
            _ => return None,
        })
    }

    /// libbpf's name for the kind.
    pub fn name(self) -> &'static str {
        use CoreRelocKind::*;
        match self {
            FieldByteOffset => "byte_off",
            FieldByteSize => "byte_sz",
            FieldExists => "field_exists",
            FieldSigned => "signed",
            FieldLshiftU64 => "lshift_u64",
            FieldRshiftU64 => "rshift_u64",
            TypeIdLocal => "local_type_id",
            TypeIdTarget => "target_type_id",
            TypeExists => "type_exists",
            TypeSize => "type_size",
            EnumvalExists => "enumval_exists",
            EnumvalValue => "enumval_value",
            TypeMatches => "type_matches",
        }
    }

    fn is_field(self) -> bool {
        use CoreRelocKind::*;
        matches!(
            self,
            FieldByteOffset
                | FieldByteSize
                | FieldExists
                | FieldSigned
                | FieldLshiftU64
                | FieldRshiftU64
        )
    }
}

/// Why a CO-RE relocation failed. `insn` is the section-relative slot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// The record's kind number is not defined.
    #[error("CO-RE relocation at insn {insn}: unknown kind {kind}")]
    UnknownKind {
        /// Slot index.
        insn: usize,
        /// The kind number.
        kind: u32,
    },
    /// The record points outside the section's code.
    #[error("CO-RE relocation at insn {insn} is outside the section ({len} slots)")]
    OutOfRange {
        /// Slot index.
        insn: usize,
        /// Section length in slots.
        len: usize,
    },
    /// The access string is malformed or does not fit the local type.
    #[error(
        "CO-RE relocation at insn {insn}: bad access string \"{access}\" for {type_name}: {reason}"
    )]
    BadAccess {
        /// Slot index.
        insn: usize,
        /// The access string.
        access: String,
        /// The local root type.
        type_name: String,
        /// What is wrong.
        reason: String,
    },
    /// The target has no matching type or field.
    #[error("CO-RE relocation at insn {insn} ({kind}): cannot resolve \"{access}\" of {type_name} against pkbpf's built-in types: {reason}")]
    Unresolved {
        /// Slot index.
        insn: usize,
        /// The relocation kind's name.
        kind: &'static str,
        /// The access string.
        access: String,
        /// The local root type.
        type_name: String,
        /// What did not match.
        reason: String,
    },
    /// The instruction cannot carry the relocated value.
    #[error("CO-RE relocation at insn {insn} (\"{access}\"): {reason}")]
    BadInstruction {
        /// Slot index.
        insn: usize,
        /// The access string.
        access: String,
        /// What is wrong.
        reason: String,
    },
    /// The local BTF is inconsistent.
    #[error("CO-RE relocation at insn {insn}: {source}")]
    Btf {
        /// Slot index.
        insn: usize,
        /// The BTF problem.
        #[source]
        source: BtfError,
    },
}

/// One step of an access path after the root index.
#[derive(Debug, Clone, Copy)]
enum Step {
    Member(u32),
    Index(u32),
}

/// Where a resolved field lies.
#[derive(Debug, Clone, Copy)]
struct FieldPos {
    bit_offset: u64,
    bitfield_size: u32,
    type_id: u32,
}

/// Strips a `___flavor` suffix: `pt_regs___mini` → `pt_regs`.
pub(crate) fn essential_name(name: &str) -> &str {
    match name.find("___") {
        Some(i) => &name[..i],
        None => name,
    }
}

/// Builds pkbpf's target description: the context types its hooks provide.
///
/// - `struct pt_regs`, x86-64 layout (168 bytes): r15 r14 r13 r12 bp bx r11
///   r10 r9 r8 ax cx dx si di orig_ax ip cs flags sp ss, all `unsigned long`.
/// - `struct trace_entry` (8 bytes: type u16, flags u8, preempt_count u8, pid int).
/// - `struct trace_event_raw_sys_enter { ent; long id; unsigned long args[6]; }` (64 bytes).
/// - `struct trace_event_raw_sys_exit { ent; long id; long ret; }` (24 bytes).
pub fn target_btf() -> Btf {
    let mut b = Btf::new();
    let int = |b: &mut Btf, name: &str, size: u32, signed: bool| {
        let name_off = b.add_string(name);
        b.add_type(BtfType::Int {
            name_off,
            size,
            encoding: IntEncoding {
                signed,
                ..IntEncoding::default()
            },
            offset: 0,
            bits: (size * 8) as u8,
        })
    };
    let ulong = int(&mut b, "unsigned long", 8, false);
    let long = int(&mut b, "long", 8, true);
    let ushort = int(&mut b, "unsigned short", 2, false);
    let uchar = int(&mut b, "unsigned char", 1, false);
    let sint = int(&mut b, "int", 4, true);
    let strukt = |b: &mut Btf, name: &str, size: u32, fields: &[(&str, u32, u32)]| {
        let members = fields
            .iter()
            .map(|(n, t, byte_off)| Member {
                name_off: b.add_string(n),
                type_id: *t,
                bit_offset: byte_off * 8,
                bitfield_size: 0,
            })
            .collect();
        let name_off = b.add_string(name);
        b.add_type(BtfType::Struct {
            name_off,
            size,
            members,
        })
    };
    const PT_REGS: [&str; 21] = [
        "r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax", "cx", "dx", "si",
        "di", "orig_ax", "ip", "cs", "flags", "sp", "ss",
    ];
    let regs: Vec<(&str, u32, u32)> = PT_REGS
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, ulong, i as u32 * 8))
        .collect();
    strukt(&mut b, "pt_regs", 168, &regs);
    let ent = strukt(
        &mut b,
        "trace_entry",
        8,
        &[
            ("type", ushort, 0),
            ("flags", uchar, 2),
            ("preempt_count", uchar, 3),
            ("pid", sint, 4),
        ],
    );
    let args = b.add_type(BtfType::Array {
        elem_type: ulong,
        index_type: sint,
        nelems: 6,
    });
    strukt(
        &mut b,
        "trace_event_raw_sys_enter",
        64,
        &[("ent", ent, 0), ("id", long, 8), ("args", args, 16)],
    );
    strukt(
        &mut b,
        "trace_event_raw_sys_exit",
        24,
        &[("ent", ent, 0), ("id", long, 8), ("ret", long, 16)],
    );
    b
}

fn parse_access(s: &str) -> Option<Vec<u32>> {
    if s.is_empty() {
        return None;
    }
    s.split(':').map(|p| p.parse::<u32>().ok()).collect()
}

/// Kind-level compatibility of two (mods-skipped) types, as CO-RE checks a
/// field's final type: ints/enums with each other, pointers, same composite
/// kind, arrays.
fn compatible(local: &Btf, l: u32, target: &Btf, t: u32) -> bool {
    let (Some(lt), Some(tt)) = (local.type_by_id(l), target.type_by_id(t)) else {
        return l == 0 && t == 0;
    };
    let scalar = |x: &BtfType| {
        matches!(
            x,
            BtfType::Int { .. } | BtfType::Enum { .. } | BtfType::Enum64 { .. }
        )
    };
    (scalar(lt) && scalar(tt))
        || matches!(
            (lt, tt),
            (BtfType::Ptr { .. }, BtfType::Ptr { .. })
                | (BtfType::Struct { .. }, BtfType::Struct { .. })
                | (BtfType::Union { .. }, BtfType::Union { .. })
                | (BtfType::Array { .. }, BtfType::Array { .. })
                | (BtfType::Float { .. }, BtfType::Float { .. })
        )
}

/// Finds a member named `name` in composite `id`, looking through anonymous
/// struct/union members. Returns its bit offset (relative to `id`) and type.
fn find_member(btf: &Btf, id: u32, name: &str, depth: usize) -> Option<(u64, Member)> {
    if depth > 16 {
        return None;
    }
    let t = btf.type_by_id(id)?;
    for m in t.members() {
        let mname = btf.string(m.name_off);
        if mname == name {
            return Some((u64::from(m.bit_offset), *m));
        }
        if mname.is_empty() {
            let inner = btf.skip_mods_and_typedefs(m.type_id).ok()?;
            if let Some((off, found)) = find_member(btf, inner, name, depth + 1) {
                return Some((u64::from(m.bit_offset) + off, found));
            }
        }
    }
    None
}

/// Walks the local access path. Returns the steps' member names (None for
/// array indices) and the field position.
fn local_spec(
    btf: &Btf,
    root: u32,
    access: &[u32],
) -> Result<(Vec<Option<String>>, FieldPos), String> {
    let root = btf
        .skip_mods_and_typedefs(root)
        .map_err(|e| e.to_string())?;
    let root_size = btf
        .size_of(root)
        .map_err(|e| e.to_string())?
        .ok_or("root type has no size")?;
    let mut pos = FieldPos {
        bit_offset: u64::from(access[0]) * root_size * 8,
        bitfield_size: 0,
        type_id: root,
    };
    let mut names = Vec::new();
    for &a in &access[1..] {
        let cur = btf
            .skip_mods_and_typedefs(pos.type_id)
            .map_err(|e| e.to_string())?;
        let step = match btf.type_by_id(cur) {
            Some(t) if t.is_composite() => Step::Member(a),
            Some(BtfType::Array { .. }) => Step::Index(a),
            _ => return Err(format!("step {a} into {}", btf.type_name(cur))),
        };
        match (step, btf.type_by_id(cur)) {
            (Step::Member(i), Some(t)) => {
                let m = t
                    .members()
                    .get(i as usize)
                    .ok_or_else(|| format!("{} has no member {i}", btf.type_name(cur)))?;
                names.push(Some(btf.string(m.name_off).to_string()));
                pos.bit_offset += u64::from(m.bit_offset);
                pos.bitfield_size = m.bitfield_size;
                pos.type_id = m.type_id;
            }
            (Step::Index(i), Some(BtfType::Array { elem_type, .. })) => {
                let sz = btf
                    .size_of(*elem_type)
                    .map_err(|e| e.to_string())?
                    .ok_or("array element has no size")?;
                names.push(None);
                pos.bit_offset += u64::from(i) * sz * 8;
                pos.bitfield_size = 0;
                pos.type_id = *elem_type;
            }
            _ => return Err("inconsistent type".into()),
        }
    }
    Ok((names, pos))
}

/// Resolves the same path in the target, starting from candidate `root`.
fn target_spec(
    local: &Btf,
    local_field: u32,
    target: &Btf,
    root: u32,
    access: &[u32],
    names: &[Option<String>],
) -> Result<FieldPos, String> {
    let size = target
        .size_of(root)
        .map_err(|e| e.to_string())?
        .ok_or("target root has no size")?;
    let mut pos = FieldPos {
        bit_offset: u64::from(access[0]) * size * 8,
        bitfield_size: 0,
        type_id: root,
    };
    for (step, name) in access[1..].iter().zip(names) {
        let cur = target
            .skip_mods_and_typedefs(pos.type_id)
            .map_err(|e| e.to_string())?;
        match name {
            Some(name) => {
                if name.is_empty() {
                    return Err("anonymous member in access path".into());
                }
                let (off, m) = find_member(target, cur, name, 0)
                    .ok_or_else(|| format!("{} has no field `{name}`", target.type_name(cur)))?;
                pos.bit_offset += off;
                pos.bitfield_size = m.bitfield_size;
                pos.type_id = m.type_id;
            }
            None => match target.type_by_id(cur) {
                Some(BtfType::Array {
                    elem_type, nelems, ..
                }) => {
                    if *nelems != 0 && *step >= *nelems {
                        return Err(format!("index {step} beyond {} elements", nelems));
                    }
                    let sz = target
                        .size_of(*elem_type)
                        .map_err(|e| e.to_string())?
                        .ok_or("array element has no size")?;
                    pos.bit_offset += u64::from(*step) * sz * 8;
                    pos.bitfield_size = 0;
                    pos.type_id = *elem_type;
                }
                _ => return Err(format!("{} is not an array", target.type_name(cur))),
            },
        }
    }
    let l = local
        .skip_mods_and_typedefs(local_field)
        .map_err(|e| e.to_string())?;
    let t = target
        .skip_mods_and_typedefs(pos.type_id)
        .map_err(|e| e.to_string())?;
    if !compatible(local, l, target, t) {
        return Err(format!(
            "field type {} is incompatible with {}",
            local.type_name(l),
            target.type_name(t)
        ));
    }
    Ok(pos)
}

/// The value a field relocation computes for a field at `pos` in `btf`.
fn field_value(btf: &Btf, kind: CoreRelocKind, pos: FieldPos) -> Result<u64, String> {
    let ty = btf
        .skip_mods_and_typedefs(pos.type_id)
        .map_err(|e| e.to_string())?;
    let mut byte_sz = btf
        .size_of(ty)
        .map_err(|e| e.to_string())?
        .ok_or("field has no size")?;
    let bit_off = pos.bit_offset;
    let (byte_off, bit_sz) = if pos.bitfield_size == 0 {
        if !bit_off.is_multiple_of(8) {
            return Err("unaligned field".into());
        }
        (bit_off / 8, byte_sz * 8)
    } else {
        let bit_sz = u64::from(pos.bitfield_size);
        if byte_sz == 0 {
            return Err("bitfield of zero size".into());
        }
        let mut byte_off = bit_off / 8 / byte_sz * byte_sz;
        while bit_off + bit_sz - byte_off * 8 > byte_sz * 8 {
            if byte_sz >= 8 {
                return Err("bitfield too wide".into());
            }
            byte_sz *= 2;
            byte_off = bit_off / 8 / byte_sz * byte_sz;
        }
        (byte_off, bit_sz)
    };
    Ok(match kind {
        CoreRelocKind::FieldByteOffset => byte_off,
        CoreRelocKind::FieldByteSize => byte_sz,
        CoreRelocKind::FieldExists => 1,
        CoreRelocKind::FieldSigned => match btf.type_by_id(ty) {
            Some(BtfType::Int { encoding, .. }) => u64::from(encoding.signed),
            Some(BtfType::Enum { signed, .. } | BtfType::Enum64 { signed, .. }) => {
                u64::from(*signed)
            }
            _ => 0,
        },
        CoreRelocKind::FieldLshiftU64 => {
            (64u64).wrapping_sub(bit_off + bit_sz - byte_off * 8) & 0xffff_ffff
        }
        CoreRelocKind::FieldRshiftU64 => (64u64).wrapping_sub(bit_sz) & 0xffff_ffff,
        _ => return Err("not a field relocation".into()),
    })
}

/// Computed values of one relocation.
struct Resolved {
    local: u64,
    target: u64,
    /// For byte offsets: (local size, target size) of the field, to fix loads.
    sizes: Option<(u64, u64)>,
}

/// Applies every CO-RE record of one section to its raw slots.
///
/// `slots` is the section's code; records name section-relative slots.
pub fn apply_core_relocations(
    local: &Btf,
    target: &Btf,
    relos: &[super::CoreReloc],
    slots: &mut [RawInsn],
) -> Result<(), CoreError> {
    for rec in relos {
        let insn = rec.insn as usize;
        if insn >= slots.len() {
            return Err(CoreError::OutOfRange {
                insn,
                len: slots.len(),
            });
        }
        let kind = CoreRelocKind::from_raw(rec.kind).ok_or(CoreError::UnknownKind {
            insn,
            kind: rec.kind,
        })?;
        let access = local
            .string_at(rec.access_str_off)
            .map_err(|source| CoreError::Btf { insn, source })?
            .to_string();
        let resolved = resolve(local, target, rec.type_id, &access, kind, insn)?;
        patch(slots, insn, &access, kind, &resolved)?;
    }
    Ok(())
}

fn resolve(
    local: &Btf,
    target: &Btf,
    type_id: u32,
    access_str: &str,
    kind: CoreRelocKind,
    insn: usize,
) -> Result<Resolved, CoreError> {
    let type_name = local.type_name(type_id);
    let bad = |reason: String| CoreError::BadAccess {
        insn,
        access: access_str.to_string(),
        type_name: type_name.clone(),
        reason,
    };
    let unresolved = |reason: String| CoreError::Unresolved {
        insn,
        kind: kind.name(),
        access: access_str.to_string(),
        type_name: type_name.clone(),
        reason,
    };
    let access = parse_access(access_str).ok_or_else(|| bad("not a list of numbers".into()))?;
    let root = local
        .skip_mods_and_typedefs(type_id)
        .map_err(|source| CoreError::Btf { insn, source })?;
    let root_t = local
        .type_by_id(root)
        .ok_or_else(|| bad("root type is void".into()))?;
    let name = essential_name(local.string(root_t.name_off())).to_string();
    // Candidates: same kind (enums match enums of either width) and name.
    let root_kind = root_t.kind();
    let same_kind = |t: &BtfType| {
        t.kind() == root_kind
            || matches!(
                (root_t, t),
                (BtfType::Enum { .. }, BtfType::Enum64 { .. })
                    | (BtfType::Enum64 { .. }, BtfType::Enum { .. })
            )
    };
    let candidates: Vec<u32> = if name.is_empty() {
        Vec::new()
    } else {
        target
            .types()
            .filter(|(_, t)| same_kind(t) && essential_name(target.string(t.name_off())) == name)
            .map(|(id, _)| id)
            .collect()
    };

    if kind.is_field() {
        let (names, lpos) = local_spec(local, type_id, &access).map_err(bad)?;
        let local_val = field_value(local, kind, lpos).map_err(bad)?;
        let mut result: Option<(u64, FieldPos)> = None;
        let mut last_err = format!("no target type named `{name}`");
        for cand in candidates {
            match target_spec(local, lpos.type_id, target, cand, &access, &names) {
                Ok(tpos) => {
                    let v = field_value(target, kind, tpos).map_err(&unresolved)?;
                    if let Some((prev, _)) = result {
                        if prev != v {
                            return Err(unresolved(format!(
                                "ambiguous: candidates give {prev} and {v}"
                            )));
                        }
                    }
                    result = Some((v, tpos));
                }
                Err(e) => last_err = e,
            }
        }
        return match (result, kind) {
            (Some((v, tpos)), _) => {
                let sizes = if kind == CoreRelocKind::FieldByteOffset {
                    let ls = field_value(local, CoreRelocKind::FieldByteSize, lpos).map_err(bad)?;
                    let ts = field_value(target, CoreRelocKind::FieldByteSize, tpos)
                        .map_err(&unresolved)?;
                    Some((ls, ts))
                } else {
                    None
                };
                Ok(Resolved {
                    local: local_val,
                    target: v,
                    sizes,
                })
            }
            (None, CoreRelocKind::FieldExists) => Ok(Resolved {
                local: local_val,
                target: 0,
                sizes: None,
            }),
            (None, _) => Err(unresolved(last_err)),
        };
    }

    match kind {
        CoreRelocKind::TypeIdLocal => Ok(Resolved {
            local: u64::from(type_id),
            target: u64::from(type_id),
            sizes: None,
        }),
        CoreRelocKind::TypeIdTarget | CoreRelocKind::TypeExists | CoreRelocKind::TypeSize => {
            let local_val = match kind {
                CoreRelocKind::TypeIdTarget => u64::from(type_id),
                CoreRelocKind::TypeExists => 1,
                _ => local
                    .size_of(root)
                    .map_err(|source| CoreError::Btf { insn, source })?
                    .ok_or_else(|| bad("type has no size".into()))?,
            };
            let found = candidates.first().copied();
            let target_val = match (kind, found) {
                (CoreRelocKind::TypeExists, f) => u64::from(f.is_some()),
                (CoreRelocKind::TypeIdTarget, Some(id)) => u64::from(id),
                (_, Some(id)) => target
                    .size_of(id)
                    .ok()
                    .flatten()
                    .ok_or_else(|| unresolved("target type has no size".into()))?,
                (_, None) => return Err(unresolved(format!("no target type named `{name}`"))),
            };
            Ok(Resolved {
                local: local_val,
                target: target_val,
                sizes: None,
            })
        }
        CoreRelocKind::EnumvalExists | CoreRelocKind::EnumvalValue => {
            let idx = access[0] as usize;
            let values = match root_t {
                BtfType::Enum { values, .. } | BtfType::Enum64 { values, .. } => values,
                _ => return Err(bad("root is not an enum".into())),
            };
            let ev = values
                .get(idx)
                .ok_or_else(|| bad(format!("enum has no value {idx}")))?;
            let ev_name = local.string(ev.name_off);
            let local_val = if kind == CoreRelocKind::EnumvalExists {
                1
            } else {
                ev.value as u64
            };
            let found = candidates
                .iter()
                .find_map(|id| match target.type_by_id(*id) {
                    Some(BtfType::Enum { values, .. } | BtfType::Enum64 { values, .. }) => values
                        .iter()
                        .find(|v| target.string(v.name_off) == ev_name)
                        .map(|v| v.value),
                    _ => None,
                });
            let target_val = match (kind, found) {
                (CoreRelocKind::EnumvalExists, f) => u64::from(f.is_some()),
                (_, Some(v)) => v as u64,
                (_, None) => {
                    return Err(unresolved(format!(
                        "no enumerator `{ev_name}` in a target enum `{name}`"
                    )))
                }
            };
            Ok(Resolved {
                local: local_val,
                target: target_val,
                sizes: None,
            })
        }
        _ => Err(unresolved("relocation kind not supported".into())),
    }
}

fn patch(
    slots: &mut [RawInsn],
    insn: usize,
    access: &str,
    kind: CoreRelocKind,
    r: &Resolved,
) -> Result<(), CoreError> {
    let err = |reason: String| CoreError::BadInstruction {
        insn,
        access: access.to_string(),
        reason,
    };
    let raw = slots[insn];
    match raw.class() {
        class::ALU | class::ALU64 => {
            if raw.code & 0x08 != 0 {
                return Err(err("ALU instruction with a register operand".into()));
            }
            if raw.imm as i64 as u64 != r.local && raw.imm as u32 as u64 != r.local {
                return Err(err(format!(
                    "immediate {} does not match the local value {}",
                    raw.imm, r.local
                )));
            }
            let v = i32::try_from(r.target as i64)
                .or_else(|_| u32::try_from(r.target).map(|v| v as i32))
                .map_err(|_| err(format!("value {} does not fit in 32 bits", r.target)))?;
            slots[insn].imm = v;
        }
        class::LDX | class::ST | class::STX => {
            if kind != CoreRelocKind::FieldByteOffset {
                return Err(err(format!(
                    "{} relocation on a memory instruction",
                    kind.name()
                )));
            }
            if i64::from(raw.off) as u64 != r.local {
                return Err(err(format!(
                    "offset {} does not match the local value {}",
                    raw.off, r.local
                )));
            }
            let off = i16::try_from(r.target)
                .map_err(|_| err(format!("offset {} does not fit in 16 bits", r.target)))?;
            slots[insn].off = off;
            if let Some((ls, ts)) = r.sizes {
                let mem_size = match raw.code & 0x18 {
                    0x10 => 1,
                    0x08 => 2,
                    0x00 => 4,
                    _ => 8,
                };
                if ls != ts && raw.class() == class::LDX && mem_size == ls {
                    let bits = match ts {
                        1 => 0x10,
                        2 => 0x08,
                        4 => 0x00,
                        8 => 0x18,
                        _ => return Err(err(format!("target field size {ts} cannot be loaded"))),
                    };
                    slots[insn].code = (raw.code & !0x18) | bits;
                } else if ls != ts {
                    return Err(err(format!(
                        "field is {ls} bytes locally but {ts} bytes in the target"
                    )));
                }
            }
        }
        class::LD if raw.code == 0x18 => {
            let Some(next) = slots.get_mut(insn + 1) else {
                return Err(err("lddw without its second half".into()));
            };
            next.imm = (r.target >> 32) as i32;
            slots[insn].imm = r.target as u32 as i32;
        }
        _ => {
            return Err(err(format!(
                "instruction {:#04x} cannot take a relocated value",
                raw.code
            )))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_pt_regs_offsets() {
        let t = target_btf();
        let id = t
            .find_by_name("pt_regs", |t| matches!(t, BtfType::Struct { .. }))
            .unwrap();
        assert_eq!(t.size_of(id).unwrap(), Some(168));
        let off = |n: &str| find_member(&t, id, n, 0).unwrap().0 / 8;
        assert_eq!(off("di"), 112);
        assert_eq!(off("si"), 104);
        assert_eq!(off("ax"), 80);
        assert_eq!(off("ip"), 128);
        assert_eq!(off("sp"), 152);
        let enter = t
            .find_by_name("trace_event_raw_sys_enter", |t| t.is_composite())
            .unwrap();
        assert_eq!(t.size_of(enter).unwrap(), Some(64));
    }

    #[test]
    fn flavor_suffix_is_stripped() {
        assert_eq!(essential_name("pt_regs___mini"), "pt_regs");
        assert_eq!(essential_name("pt_regs"), "pt_regs");
    }

    use crate::btf::CoreReloc;

    /// A local BTF builder for tests.
    struct Local {
        btf: Btf,
        ulong: u32,
        uint: u32,
    }

    impl Local {
        fn new() -> Local {
            let mut btf = Btf::new();
            let n = btf.add_string("unsigned long");
            let ulong = btf.add_type(BtfType::Int {
                name_off: n,
                size: 8,
                encoding: IntEncoding::default(),
                offset: 0,
                bits: 64,
            });
            let n = btf.add_string("unsigned int");
            let uint = btf.add_type(BtfType::Int {
                name_off: n,
                size: 4,
                encoding: IntEncoding::default(),
                offset: 0,
                bits: 32,
            });
            Local { btf, ulong, uint }
        }

        /// `(name, type, bit offset, bitfield size)` members.
        fn strukt(&mut self, name: &str, size: u32, fields: &[(&str, u32, u32, u32)]) -> u32 {
            let members = fields
                .iter()
                .map(|(n, t, off, bits)| Member {
                    name_off: self.btf.add_string(n),
                    type_id: *t,
                    bit_offset: *off,
                    bitfield_size: *bits,
                })
                .collect();
            let name_off = self.btf.add_string(name);
            self.btf.add_type(BtfType::Struct {
                name_off,
                size,
                members,
            })
        }

        fn reloc(&mut self, insn: u32, type_id: u32, access: &str, kind: u32) -> CoreReloc {
            CoreReloc {
                insn,
                type_id,
                access_str_off: self.btf.add_string(access),
                kind,
            }
        }
    }

    const LDX_DW: u8 = 0x79;
    const LDX_W: u8 = 0x61;
    const MOV64_K: u8 = 0xb7;

    #[test]
    fn pt_regs_flavor_fields_move_to_x86_offsets() {
        let mut l = Local::new();
        let (ul, ui) = (l.ulong, l.uint);
        let regs = l.strukt(
            "pt_regs___test",
            24,
            &[("di", ul, 0, 0), ("si", ui, 64, 0), ("nothere", ul, 128, 0)],
        );
        let relos = [
            l.reloc(0, regs, "0:0", 0), // di
            l.reloc(1, regs, "0:1", 0), // si, declared 4 bytes locally
            l.reloc(2, regs, "0:2", 2), // exists(nothere)
            l.reloc(3, regs, "0:0", 2), // exists(di)
            l.reloc(4, regs, "0", 9),   // sizeof
            l.reloc(5, regs, "0", 8),   // type exists
        ];
        let mut slots = vec![
            RawInsn::new(LDX_DW, 2, 1, 0, 0),
            RawInsn::new(LDX_W, 3, 1, 8, 0),
            RawInsn::new(MOV64_K, 4, 0, 0, 1),
            RawInsn::new(MOV64_K, 5, 0, 0, 1),
            RawInsn::new(MOV64_K, 6, 0, 0, 24),
            RawInsn::new(MOV64_K, 7, 0, 0, 1),
        ];
        apply_core_relocations(&l.btf, &target_btf(), &relos, &mut slots).unwrap();
        assert_eq!(slots[0], RawInsn::new(LDX_DW, 2, 1, 112, 0));
        // The 4-byte local load of an 8-byte target field becomes 8 bytes.
        assert_eq!(slots[1], RawInsn::new(LDX_DW, 3, 1, 104, 0));
        assert_eq!(slots[2].imm, 0);
        assert_eq!(slots[3].imm, 1);
        assert_eq!(slots[4].imm, 168);
        assert_eq!(slots[5].imm, 1);
    }

    #[test]
    fn missing_field_offset_is_an_error() {
        let mut l = Local::new();
        let ul = l.ulong;
        let regs = l.strukt("pt_regs", 8, &[("rdi", ul, 0, 0)]);
        let relos = [l.reloc(0, regs, "0:0", 0)];
        let mut slots = vec![RawInsn::new(LDX_DW, 2, 1, 0, 0)];
        let e = apply_core_relocations(&l.btf, &target_btf(), &relos, &mut slots).unwrap_err();
        match e {
            CoreError::Unresolved {
                insn,
                access,
                reason,
                ..
            } => {
                assert_eq!((insn, access.as_str()), (0, "0:0"));
                assert!(reason.contains("rdi"), "{reason}");
            }
            e => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn mismatched_instruction_is_an_error() {
        let mut l = Local::new();
        let ul = l.ulong;
        let regs = l.strukt("pt_regs", 16, &[("ax", ul, 0, 0), ("bx", ul, 64, 0)]);
        let relos = [l.reloc(0, regs, "0:1", 0)];
        // The compiler would have put 8 here; 4 means the record is not ours.
        let mut slots = vec![RawInsn::new(LDX_DW, 2, 1, 4, 0)];
        assert!(matches!(
            apply_core_relocations(&l.btf, &target_btf(), &relos, &mut slots),
            Err(CoreError::BadInstruction { insn: 0, .. })
        ));
    }

    #[test]
    fn tracepoint_array_element() {
        let mut l = Local::new();
        let ul = l.ulong;
        let ent = l.strukt("trace_entry", 8, &[]);
        let arr = l.btf.add_type(BtfType::Array {
            elem_type: ul,
            index_type: l.uint,
            nelems: 6,
        });
        // Locally `args` sits at 24 (a made-up layout); the target has 16.
        let enter = l.strukt(
            "trace_event_raw_sys_enter",
            72,
            &[
                ("ent", ent, 0, 0),
                ("id", ul, 128, 0),
                ("args", arr, 192, 0),
            ],
        );
        let relos = [l.reloc(0, enter, "0:2:3", 0), l.reloc(1, enter, "0:1", 0)];
        let mut slots = vec![
            RawInsn::new(LDX_DW, 2, 1, 24 + 24, 0),
            RawInsn::new(LDX_DW, 3, 1, 16, 0),
        ];
        apply_core_relocations(&l.btf, &target_btf(), &relos, &mut slots).unwrap();
        assert_eq!(slots[0].off, 16 + 24);
        assert_eq!(slots[1].off, 8);
    }

    #[test]
    fn bitfield_shifts_follow_the_target() {
        // Target: struct bits { u32 pad; u32 a:5 (bit 35), ... }.
        let mut t = Local::new();
        let tu = t.uint;
        t.strukt("bits", 8, &[("pad", tu, 0, 0), ("a", tu, 35, 5)]);
        let mut l = Local::new();
        let lu = l.uint;
        let local = l.strukt("bits___v1", 4, &[("a", lu, 2, 5)]);
        let relos = [
            l.reloc(0, local, "0:0", 0), // byte offset of the containing word
            l.reloc(1, local, "0:0", 1), // its size
            l.reloc(2, local, "0:0", 4), // lshift
            l.reloc(3, local, "0:0", 5), // rshift
        ];
        // Local values: offset 0, size 4, lshift 64-(2+5)=57, rshift 59.
        let mut slots = vec![
            RawInsn::new(LDX_W, 2, 1, 0, 0),
            RawInsn::new(MOV64_K, 3, 0, 0, 4),
            RawInsn::new(MOV64_K, 4, 0, 0, 57),
            RawInsn::new(MOV64_K, 5, 0, 0, 59),
        ];
        apply_core_relocations(&l.btf, &t.btf, &relos, &mut slots).unwrap();
        assert_eq!(slots[0].off, 4);
        assert_eq!(slots[1].imm, 4);
        assert_eq!(slots[2].imm, 64 - (35 + 5 - 32));
        assert_eq!(slots[3].imm, 59);
    }

    #[test]
    fn enum_values_relocate_by_name() {
        let enm = |b: &mut Btf, vals: &[(&str, i64)]| {
            let values = vals
                .iter()
                .map(|(n, v)| super::super::EnumValue {
                    name_off: b.add_string(n),
                    value: *v,
                })
                .collect();
            let name_off = b.add_string("mode");
            b.add_type(BtfType::Enum {
                name_off,
                size: 4,
                signed: false,
                values,
            })
        };
        let mut t = Btf::new();
        enm(&mut t, &[("OFF", 0), ("ON", 7)]);
        let mut l = Local::new();
        let e = enm(&mut l.btf, &[("ON", 1), ("GONE", 2)]);
        let relos = [
            l.reloc(0, e, "0", 11),
            l.reloc(1, e, "1", 10),
            l.reloc(2, e, "0", 10),
        ];
        let mut slots = vec![
            RawInsn::new(MOV64_K, 1, 0, 0, 1),
            RawInsn::new(MOV64_K, 2, 0, 0, 1),
            RawInsn::new(MOV64_K, 3, 0, 0, 1),
        ];
        apply_core_relocations(&l.btf, &t, &relos, &mut slots).unwrap();
        assert_eq!((slots[0].imm, slots[1].imm, slots[2].imm), (7, 0, 1));
    }

    #[test]
    fn access_strings_parse() {
        assert_eq!(parse_access("0:14"), Some(vec![0, 14]));
        assert_eq!(parse_access("0:x"), None);
        assert_eq!(parse_access(""), None);
    }
}
