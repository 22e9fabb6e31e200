//! The BTF type kinds and their decoding.

use super::{BtfError, Reader};

/// Encoding bits of a BTF `INT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IntEncoding {
    /// `BTF_INT_SIGNED`.
    pub signed: bool,
    /// `BTF_INT_CHAR`.
    pub char: bool,
    /// `BTF_INT_BOOL`.
    pub bool: bool,
}

/// A struct or union member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Name offset in the string table (0 for anonymous members).
    pub name_off: u32,
    /// Member type id.
    pub type_id: u32,
    /// Offset from the start of the struct, in bits.
    pub bit_offset: u32,
    /// Bitfield width in bits (0 when not a bitfield).
    pub bitfield_size: u32,
}

/// An enumerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnumValue {
    /// Name offset.
    pub name_off: u32,
    /// Value (sign- or zero-extended from the encoded width).
    pub value: i64,
}

/// A function prototype parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    /// Name offset (0 for unnamed, and for the `...` marker).
    pub name_off: u32,
    /// Parameter type (0 for the `...` marker).
    pub type_id: u32,
}

/// A variable placed in a data section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasecVar {
    /// The `VAR` (or `FUNC` for externs) type id.
    pub type_id: u32,
    /// Offset in the section.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

/// One BTF type.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // fields named as in linux/btf.h, documented per variant
pub enum BtfType {
    /// `BTF_KIND_INT`: an integer of `size` bytes, `bits` wide at `offset`.
    Int {
        name_off: u32,
        size: u32,
        encoding: IntEncoding,
        offset: u8,
        bits: u8,
    },
    /// `BTF_KIND_PTR`.
    Ptr { type_id: u32 },
    /// `BTF_KIND_ARRAY`.
    Array {
        elem_type: u32,
        index_type: u32,
        nelems: u32,
    },
    /// `BTF_KIND_STRUCT`.
    Struct {
        name_off: u32,
        size: u32,
        members: Vec<Member>,
    },
    /// `BTF_KIND_UNION`.
    Union {
        name_off: u32,
        size: u32,
        members: Vec<Member>,
    },
    /// `BTF_KIND_ENUM` (32-bit values).
    Enum {
        name_off: u32,
        size: u32,
        signed: bool,
        values: Vec<EnumValue>,
    },
    /// `BTF_KIND_FWD`.
    Fwd { name_off: u32, is_union: bool },
    /// `BTF_KIND_TYPEDEF`.
    Typedef { name_off: u32, type_id: u32 },
    /// `BTF_KIND_VOLATILE`.
    Volatile { type_id: u32 },
    /// `BTF_KIND_CONST`.
    Const { type_id: u32 },
    /// `BTF_KIND_RESTRICT`.
    Restrict { type_id: u32 },
    /// `BTF_KIND_FUNC`: `linkage` 0 static, 1 global, 2 extern.
    Func {
        name_off: u32,
        proto: u32,
        linkage: u32,
    },
    /// `BTF_KIND_FUNC_PROTO`.
    FuncProto { ret: u32, params: Vec<Param> },
    /// `BTF_KIND_VAR`: `linkage` 0 static, 1 global, 2 extern.
    Var {
        name_off: u32,
        type_id: u32,
        linkage: u32,
    },
    /// `BTF_KIND_DATASEC`.
    Datasec {
        name_off: u32,
        size: u32,
        vars: Vec<DatasecVar>,
    },
    /// `BTF_KIND_FLOAT`.
    Float { name_off: u32, size: u32 },
    /// `BTF_KIND_DECL_TAG`: `component_idx` -1 for the whole type.
    DeclTag {
        name_off: u32,
        type_id: u32,
        component_idx: i32,
    },
    /// `BTF_KIND_TYPE_TAG`.
    TypeTag { name_off: u32, type_id: u32 },
    /// `BTF_KIND_ENUM64`.
    Enum64 {
        name_off: u32,
        size: u32,
        signed: bool,
        values: Vec<EnumValue>,
    },
}

impl BtfType {
    /// The kind number (linux/btf.h `BTF_KIND_*`).
    pub fn kind(&self) -> u32 {
        match self {
            BtfType::Int { .. } => 1,
            BtfType::Ptr { .. } => 2,
            BtfType::Array { .. } => 3,
            BtfType::Struct { .. } => 4,
            BtfType::Union { .. } => 5,
            BtfType::Enum { .. } => 6,
            BtfType::Fwd { .. } => 7,
            BtfType::Typedef { .. } => 8,
            BtfType::Volatile { .. } => 9,
            BtfType::Const { .. } => 10,
            BtfType::Restrict { .. } => 11,
            BtfType::Func { .. } => 12,
            BtfType::FuncProto { .. } => 13,
            BtfType::Var { .. } => 14,
            BtfType::Datasec { .. } => 15,
            BtfType::Float { .. } => 16,
            BtfType::DeclTag { .. } => 17,
            BtfType::TypeTag { .. } => 18,
            BtfType::Enum64 { .. } => 19,
        }
    }

    /// The kind's name as bpftool prints it (`INT`, `STRUCT`, ...).
    pub fn kind_name(&self) -> &'static str {
        match self {
            BtfType::Int { .. } => "INT",
            BtfType::Ptr { .. } => "PTR",
            BtfType::Array { .. } => "ARRAY",
            BtfType::Struct { .. } => "STRUCT",
            BtfType::Union { .. } => "UNION",
            BtfType::Enum { .. } => "ENUM",
            BtfType::Fwd { .. } => "FWD",
            BtfType::Typedef { .. } => "TYPEDEF",
            BtfType::Volatile { .. } => "VOLATILE",
            BtfType::Const { .. } => "CONST",
            BtfType::Restrict { .. } => "RESTRICT",
            BtfType::Func { .. } => "FUNC",
            BtfType::FuncProto { .. } => "FUNC_PROTO",
            BtfType::Var { .. } => "VAR",
            BtfType::Datasec { .. } => "DATASEC",
            BtfType::Float { .. } => "FLOAT",
            BtfType::DeclTag { .. } => "DECL_TAG",
            BtfType::TypeTag { .. } => "TYPE_TAG",
            BtfType::Enum64 { .. } => "ENUM64",
        }
    }

    /// The type's own name offset (0 for kinds without names).
    pub fn name_off(&self) -> u32 {
        match self {
            BtfType::Int { name_off, .. }
            | BtfType::Struct { name_off, .. }
            | BtfType::Union { name_off, .. }
            | BtfType::Enum { name_off, .. }
            | BtfType::Fwd { name_off, .. }
            | BtfType::Typedef { name_off, .. }
            | BtfType::Func { name_off, .. }
            | BtfType::Var { name_off, .. }
            | BtfType::Datasec { name_off, .. }
            | BtfType::Float { name_off, .. }
            | BtfType::DeclTag { name_off, .. }
            | BtfType::TypeTag { name_off, .. }
            | BtfType::Enum64 { name_off, .. } => *name_off,
            _ => 0,
        }
    }

    /// Members of a struct or union (empty for other kinds).
    pub fn members(&self) -> &[Member] {
        match self {
            BtfType::Struct { members, .. } | BtfType::Union { members, .. } => members,
            _ => &[],
        }
    }

    /// Whether this is a struct or union.
    pub fn is_composite(&self) -> bool {
        matches!(self, BtfType::Struct { .. } | BtfType::Union { .. })
    }

    /// Every string offset the type uses (own name, member names, ...).
    pub(crate) fn name_offsets(&self) -> Vec<u32> {
        let mut v = vec![self.name_off()];
        match self {
            BtfType::Struct { members, .. } | BtfType::Union { members, .. } => {
                v.extend(members.iter().map(|m| m.name_off))
            }
            BtfType::Enum { values, .. } | BtfType::Enum64 { values, .. } => {
                v.extend(values.iter().map(|e| e.name_off))
            }
            BtfType::FuncProto { params, .. } => v.extend(params.iter().map(|p| p.name_off)),
            _ => {}
        }
        v
    }

    /// Every type id the type refers to.
    pub(crate) fn referenced_types(&self) -> Vec<u32> {
        match self {
            BtfType::Ptr { type_id }
            | BtfType::Typedef { type_id, .. }
            | BtfType::Volatile { type_id }
            | BtfType::Const { type_id }
            | BtfType::Restrict { type_id }
            | BtfType::Var { type_id, .. }
            | BtfType::DeclTag { type_id, .. }
            | BtfType::TypeTag { type_id, .. } => vec![*type_id],
            BtfType::Func { proto, .. } => vec![*proto],
            BtfType::Array {
                elem_type,
                index_type,
                ..
            } => vec![*elem_type, *index_type],
            BtfType::Struct { members, .. } | BtfType::Union { members, .. } => {
                members.iter().map(|m| m.type_id).collect()
            }
            BtfType::FuncProto { ret, params } => std::iter::once(*ret)
                .chain(params.iter().map(|p| p.type_id))
                .collect(),
            BtfType::Datasec { vars, .. } => vars.iter().map(|v| v.type_id).collect(),
            _ => Vec::new(),
        }
    }
}

/// Decodes one type (header and kind-specific data) at the reader's position.
pub(crate) fn parse_type(r: &mut Reader<'_>, id: u32) -> Result<BtfType, BtfError> {
    let name_off = r.u32()?;
    let info = r.u32()?;
    let size_or_type = r.u32()?;
    let vlen = (info & 0xffff) as usize;
    let kind = (info >> 24) & 0x1f;
    let kflag = info >> 31 == 1;
    // Each vlen record is at least 4 bytes: refuse counts the data cannot hold
    // before allocating for them.
    let check_vlen = |r: &Reader<'_>, rec: usize| -> Result<(), BtfError> {
        if vlen.saturating_mul(rec) > r.remaining() {
            Err(BtfError::Truncated {
                section: ".BTF",
                offset: r.pos(),
                need: vlen * rec,
                have: r.remaining(),
            })
        } else {
            Ok(())
        }
    };
    Ok(match kind {
        1 => {
            let data = r.u32()?;
            let enc = (data >> 24) & 0x0f;
            BtfType::Int {
                name_off,
                size: size_or_type,
                encoding: IntEncoding {
                    signed: enc & 1 != 0,
                    char: enc & 2 != 0,
                    bool: enc & 4 != 0,
                },
                offset: ((data >> 16) & 0xff) as u8,
                bits: (data & 0xff) as u8,
            }
        }
        2 => BtfType::Ptr {
            type_id: size_or_type,
        },
        3 => {
            let elem_type = r.u32()?;
            let index_type = r.u32()?;
            let nelems = r.u32()?;
            BtfType::Array {
                elem_type,
                index_type,
                nelems,
            }
        }
        4 | 5 => {
            check_vlen(r, 12)?;
            let mut members = Vec::with_capacity(vlen);
            for _ in 0..vlen {
                let m_name = r.u32()?;
                let m_type = r.u32()?;
                let off = r.u32()?;
                let (bit_offset, bitfield_size) = if kflag {
                    (off & 0x00ff_ffff, off >> 24)
                } else {
                    (off, 0)
                };
                members.push(Member {
                    name_off: m_name,
                    type_id: m_type,
                    bit_offset,
                    bitfield_size,
                });
            }
            if kind == 4 {
                BtfType::Struct {
                    name_off,
                    size: size_or_type,
                    members,
                }
            } else {
                BtfType::Union {
                    name_off,
                    size: size_or_type,
                    members,
                }
            }
        }
        6 => {
            check_vlen(r, 8)?;
            let mut values = Vec::with_capacity(vlen);
            for _ in 0..vlen {
                let n = r.u32()?;
                let v = r.u32()?;
                let value = if kflag {
                    i64::from(v as i32)
                } else {
                    i64::from(v)
                };
                values.push(EnumValue { name_off: n, value });
            }
            BtfType::Enum {
                name_off,
                size: size_or_type,
                signed: kflag,
                values,
            }
        }
        7 => BtfType::Fwd {
            name_off,
            is_union: kflag,
        },
        8 => BtfType::Typedef {
            name_off,
            type_id: size_or_type,
        },
        9 => BtfType::Volatile {
            type_id: size_or_type,
        },
        10 => BtfType::Const {
            type_id: size_or_type,
        },
        11 => BtfType::Restrict {
            type_id: size_or_type,
        },
        12 => BtfType::Func {
            name_off,
            proto: size_or_type,
            linkage: vlen as u32,
        },
        13 => {
            check_vlen(r, 8)?;
            let mut params = Vec::with_capacity(vlen);
            for _ in 0..vlen {
                let n = r.u32()?;
                let t = r.u32()?;
                params.push(Param {
                    name_off: n,
                    type_id: t,
                });
            }
            BtfType::FuncProto {
                ret: size_or_type,
                params,
            }
        }
        14 => BtfType::Var {
            name_off,
            type_id: size_or_type,
            linkage: r.u32()?,
        },
        15 => {
            check_vlen(r, 12)?;
            let mut vars = Vec::with_capacity(vlen);
            for _ in 0..vlen {
                let type_id = r.u32()?;
                let offset = r.u32()?;
                let size = r.u32()?;
                vars.push(DatasecVar {
                    type_id,
                    offset,
                    size,
                });
            }
            BtfType::Datasec {
                name_off,
                size: size_or_type,
                vars,
            }
        }
        16 => BtfType::Float {
            name_off,
            size: size_or_type,
        },
        17 => BtfType::DeclTag {
            name_off,
            type_id: size_or_type,
            component_idx: r.u32()? as i32,
        },
        18 => BtfType::TypeTag {
            name_off,
            type_id: size_or_type,
        },
        19 => {
            check_vlen(r, 12)?;
            let mut values = Vec::with_capacity(vlen);
            for _ in 0..vlen {
                let n = r.u32()?;
                let lo = r.u32()?;
                let hi = r.u32()?;
                let value = ((u64::from(hi) << 32) | u64::from(lo)) as i64;
                values.push(EnumValue { name_off: n, value });
            }
            BtfType::Enum64 {
                name_off,
                size: size_or_type,
                signed: kflag,
                values,
            }
        }
        _ => return Err(BtfError::UnknownKind { id, kind }),
    })
}
