//! BTF, the BPF Type Format: parsing of `.BTF` (every kind) and `.BTF.ext`
//! (func_info, line_info, CO-RE relocations), type names and sizes, and CO-RE
//! field relocation against pkbpf's built-in target types.
//!
//! Layout of `.BTF` (all integers in the object's byte order, little-endian
//! for `-target bpf` on x86):
//!
//! ```text
//! header: magic 0xeb9f (u16) version (u8) flags (u8) hdr_len (u32)
//!         type_off type_len str_off str_len (u32 each, relative to hdr end)
//! types:  { name_off, info (vlen:16 | kind:5 <<24 | kind_flag <<31), size/type }
//!         followed by kind-specific data; type ids count from 1 (0 is void)
//! strings: NUL-terminated, offset 0 is the empty string
//! ```

mod core;
mod dump;
mod ext;
mod types;

pub use self::core::{apply_core_relocations, target_btf, CoreError, CoreRelocKind};
pub use ext::{BtfExt, CoreReloc, FuncInfo, LineInfo, SectionInfos};
pub use types::{BtfType, DatasecVar, EnumValue, IntEncoding, Member, Param};

/// `.BTF` magic number.
pub const BTF_MAGIC: u16 = 0xeb9f;

/// Errors from parsing `.BTF` or `.BTF.ext`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BtfError {
    /// The data ends before a structure it announces.
    #[error("{section}: truncated at offset {offset} (need {need} bytes, have {have})")]
    Truncated {
        /// `.BTF` or `.BTF.ext`.
        section: &'static str,
        /// Where the read started.
        offset: usize,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The magic number is wrong.
    #[error("{section}: bad magic {found:#06x} (expected 0xeb9f)")]
    BadMagic {
        /// `.BTF` or `.BTF.ext`.
        section: &'static str,
        /// The magic found.
        found: u16,
    },
    /// An unsupported version.
    #[error("{section}: unsupported version {version}")]
    BadVersion {
        /// `.BTF` or `.BTF.ext`.
        section: &'static str,
        /// The version found.
        version: u8,
    },
    /// A header or sub-section lies outside the data.
    #[error("{section}: {what} range {offset}+{len} is outside the data ({size} bytes)")]
    BadRange {
        /// `.BTF` or `.BTF.ext`.
        section: &'static str,
        /// Which range.
        what: &'static str,
        /// Its start.
        offset: u64,
        /// Its length.
        len: u64,
        /// The size available.
        size: usize,
    },
    /// A type has a kind number BTF does not define.
    #[error(".BTF: type {id} has unknown kind {kind}")]
    UnknownKind {
        /// The type id.
        id: u32,
        /// The kind number.
        kind: u32,
    },
    /// A string offset points outside the string section or is unterminated.
    #[error("{section}: bad string offset {offset}")]
    BadString {
        /// `.BTF` or `.BTF.ext`.
        section: &'static str,
        /// The offset.
        offset: u32,
    },
    /// A type refers to a type id that does not exist.
    #[error(".BTF: type {id} refers to missing type {target}")]
    BadTypeRef {
        /// The referring type.
        id: u32,
        /// The missing id.
        target: u32,
    },
    /// A `.BTF.ext` record size is too small for its kind.
    #[error(".BTF.ext: {what} record size {size} is smaller than {min}")]
    BadRecordSize {
        /// `func_info`, `line_info` or `core_relo`.
        what: &'static str,
        /// The size found.
        size: u32,
        /// The minimum.
        min: u32,
    },
    /// A type chain is cyclic or too deep.
    #[error(".BTF: type {id} has a reference chain that is too deep or cyclic")]
    TooDeep {
        /// The type where resolution started.
        id: u32,
    },
}

/// Parsed `.BTF`: the type table and the string table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Btf {
    /// `types[i]` is type id `i + 1`.
    types: Vec<BtfType>,
    strings: Vec<u8>,
}

/// A little-endian cursor over a byte slice that fails instead of panicking.
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    section: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8], section: &'static str) -> Self {
        Reader {
            data,
            pos: 0,
            section,
        }
    }

    /// Reads the preamble `.BTF` and `.BTF.ext` share (magic, version 1,
    /// flags, header length) and returns the header length.
    pub(crate) fn preamble(&mut self) -> Result<u32, BtfError> {
        let magic = self.u16()?;
        if magic != BTF_MAGIC {
            return Err(BtfError::BadMagic {
                section: self.section,
                found: magic,
            });
        }
        let version = self.u8()?;
        if version != 1 {
            return Err(BtfError::BadVersion {
                section: self.section,
                version,
            });
        }
        let _flags = self.u8()?;
        self.u32()
    }

    pub(crate) fn at(data: &'a [u8], pos: usize, section: &'static str) -> Self {
        Reader { data, pos, section }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], BtfError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.data.len());
        match end {
            Some(end) => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(BtfError::Truncated {
                section: self.section,
                offset: self.pos,
                need: n,
                have: self.remaining(),
            }),
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8, BtfError> {
        Ok(self.bytes(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, BtfError> {
        let b = self.bytes(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, BtfError> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Returns `data[off..off+len]` or a range error.
pub(crate) fn sub<'a>(
    data: &'a [u8],
    section: &'static str,
    what: &'static str,
    off: u64,
    len: u64,
) -> Result<&'a [u8], BtfError> {
    let bad = || BtfError::BadRange {
        section,
        what,
        offset: off,
        len,
        size: data.len(),
    };
    let end = off.checked_add(len).ok_or_else(bad)?;
    if end > data.len() as u64 {
        return Err(bad());
    }
    Ok(&data[off as usize..end as usize])
}

/// The longest chain of modifiers/typedefs followed before giving up.
const MAX_CHAIN: usize = 64;

impl Btf {
    /// Parses a `.BTF` section.
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        const S: &str = ".BTF";
        let mut r = Reader::new(data, S);
        let hdr_len = r.preamble()?;
        let type_off = r.u32()?;
        let type_len = r.u32()?;
        let str_off = r.u32()?;
        let str_len = r.u32()?;
        if (hdr_len as usize) < 24 {
            return Err(BtfError::BadRange {
                section: S,
                what: "header",
                offset: 0,
                len: hdr_len.into(),
                size: data.len(),
            });
        }
        let body = sub(data, S, "header", 0, hdr_len.into()).map(|_| &data[hdr_len as usize..])?;
        let type_data = sub(body, S, "type section", type_off.into(), type_len.into())?;
        let strings = sub(body, S, "string section", str_off.into(), str_len.into())?;
        if !strings.is_empty() && strings[strings.len() - 1] != 0 {
            return Err(BtfError::BadString {
                section: S,
                offset: str_len,
            });
        }
        let mut btf = Btf {
            types: Vec::new(),
            strings: strings.to_vec(),
        };
        let mut tr = Reader::new(type_data, S);
        while tr.remaining() > 0 {
            let id = btf.types.len() as u32 + 1;
            let t = types::parse_type(&mut tr, id)?;
            btf.types.push(t);
        }
        btf.check()?;
        Ok(btf)
    }

    /// Checks that every name offset and referenced type id is valid.
    fn check(&self) -> Result<(), BtfError> {
        let n = self.types.len() as u32;
        for (i, t) in self.types.iter().enumerate() {
            let id = i as u32 + 1;
            for name in t.name_offsets() {
                self.string_checked(name)?;
            }
            for target in t.referenced_types() {
                if target > n {
                    return Err(BtfError::BadTypeRef { id, target });
                }
            }
        }
        Ok(())
    }

    /// An empty BTF (only `void`), for building descriptions in code.
    pub fn new() -> Btf {
        Btf {
            types: Vec::new(),
            strings: vec![0],
        }
    }

    /// Adds a string to the string table and returns its offset.
    pub fn add_string(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    /// Adds a type and returns its id. The caller builds `t` with name offsets
    /// from [`Btf::add_string`] and ids of types already added.
    pub fn add_type(&mut self, t: BtfType) -> u32 {
        self.types.push(t);
        self.types.len() as u32
    }

    /// Fills in what clang leaves 0 in a DATASEC of an object file, as libbpf
    /// does: the section size and each variable's offset (from its symbol).
    pub(crate) fn fixup_datasec(
        &mut self,
        section: &str,
        size: u32,
        offset_of: impl Fn(&str) -> Option<u32>,
    ) {
        let names: Vec<Option<String>> = match self
            .find_by_name(section, |t| matches!(t, BtfType::Datasec { .. }))
            .and_then(|id| self.type_by_id(id).map(|t| (id, t)))
        {
            Some((_, BtfType::Datasec { vars, .. })) => vars
                .iter()
                .map(|v| match self.type_by_id(v.type_id) {
                    Some(BtfType::Var { name_off, .. }) => Some(self.string(*name_off).to_string()),
                    _ => None,
                })
                .collect(),
            _ => return,
        };
        let Some(id) = self.find_by_name(section, |t| matches!(t, BtfType::Datasec { .. })) else {
            return;
        };
        if let Some(BtfType::Datasec {
            size: sec_size,
            vars,
            ..
        }) = self.types.get_mut(id as usize - 1)
        {
            *sec_size = size;
            for (v, name) in vars.iter_mut().zip(names) {
                if let Some(off) = name.as_deref().and_then(&offset_of) {
                    v.offset = off;
                }
            }
        }
    }

    /// Number of types, not counting `void` (so the largest id).
    pub fn len(&self) -> usize {
        self.types.len()
    }

    /// Whether there are no types besides `void`.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// The type with id `id` (`None` for 0 = void and out-of-range ids).
    pub fn type_by_id(&self, id: u32) -> Option<&BtfType> {
        if id == 0 {
            return None;
        }
        self.types.get(id as usize - 1)
    }

    /// Iterates `(id, type)` over every type.
    pub fn types(&self) -> impl Iterator<Item = (u32, &BtfType)> {
        self.types
            .iter()
            .enumerate()
            .map(|(i, t)| (i as u32 + 1, t))
    }

    fn string_checked(&self, off: u32) -> Result<&str, BtfError> {
        let bad = BtfError::BadString {
            section: ".BTF",
            offset: off,
        };
        let start = off as usize;
        if start >= self.strings.len() {
            return if start == 0 { Ok("") } else { Err(bad) };
        }
        let rest = &self.strings[start..];
        let end = rest.iter().position(|b| *b == 0).ok_or(bad.clone())?;
        std::str::from_utf8(&rest[..end]).map_err(|_| bad)
    }

    /// The string at `off` in the string table (`""` when invalid).
    pub fn string(&self, off: u32) -> &str {
        self.string_checked(off).unwrap_or("")
    }

    /// The string at `off`, or an error naming the offset.
    pub fn string_at(&self, off: u32) -> Result<&str, BtfError> {
        self.string_checked(off)
    }

    /// The name of type `id` (`""` for anonymous types and void).
    pub fn name_of(&self, id: u32) -> &str {
        self.type_by_id(id)
            .map(|t| self.string(t.name_off()))
            .unwrap_or("")
    }

    /// The first type with this kind name and name, e.g. `("struct", "pt_regs")`.
    pub fn find_by_name(&self, name: &str, pred: impl Fn(&BtfType) -> bool) -> Option<u32> {
        self.types()
            .find(|(_, t)| pred(t) && self.string(t.name_off()) == name)
            .map(|(id, _)| id)
    }

    /// Follows typedefs and modifiers (const, volatile, restrict, type tags)
    /// to the underlying type id.
    pub fn skip_mods_and_typedefs(&self, id: u32) -> Result<u32, BtfError> {
        let mut cur = id;
        for _ in 0..MAX_CHAIN {
            match self.type_by_id(cur) {
                Some(
                    BtfType::Typedef { type_id, .. }
                    | BtfType::Volatile { type_id }
                    | BtfType::Const { type_id }
                    | BtfType::Restrict { type_id }
                    | BtfType::TypeTag { type_id, .. },
                ) => cur = *type_id,
                _ => return Ok(cur),
            }
        }
        Err(BtfError::TooDeep { id })
    }

    /// Size in bytes of type `id`, as `sizeof` would give it. `None` for
    /// types without a size (void, functions, forward declarations).
    pub fn size_of(&self, id: u32) -> Result<Option<u64>, BtfError> {
        let mut cur = id;
        let mut mult: u64 = 1;
        for _ in 0..MAX_CHAIN {
            let Some(t) = self.type_by_id(cur) else {
                return Ok(None);
            };
            match t {
                BtfType::Int { size, .. }
                | BtfType::Float { size, .. }
                | BtfType::Struct { size, .. }
                | BtfType::Union { size, .. }
                | BtfType::Enum { size, .. }
                | BtfType::Enum64 { size, .. }
                | BtfType::Datasec { size, .. } => {
                    return Ok(Some(mult.saturating_mul(u64::from(*size))))
                }
                BtfType::Ptr { .. } => return Ok(Some(mult.saturating_mul(8))),
                BtfType::Array {
                    elem_type, nelems, ..
                } => {
                    mult = mult.saturating_mul(u64::from(*nelems));
                    cur = *elem_type;
                }
                BtfType::Typedef { type_id, .. }
                | BtfType::Volatile { type_id }
                | BtfType::Const { type_id }
                | BtfType::Restrict { type_id }
                | BtfType::TypeTag { type_id, .. }
                | BtfType::Var { type_id, .. } => cur = *type_id,
                BtfType::Fwd { .. }
                | BtfType::Func { .. }
                | BtfType::FuncProto { .. }
                | BtfType::DeclTag { .. } => return Ok(None),
            }
        }
        Err(BtfError::TooDeep { id })
    }

    /// A C-like name for type `id`: `u32`, `struct counts`, `char[16]`,
    /// `void *`, `const volatile u64`. Never fails; cycles print `...`.
    pub fn type_name(&self, id: u32) -> String {
        self.type_name_depth(id, 0)
    }

    fn type_name_depth(&self, id: u32, depth: usize) -> String {
        if depth > MAX_CHAIN {
            return "...".into();
        }
        let Some(t) = self.type_by_id(id) else {
            return "void".into();
        };
        let name = self.string(t.name_off());
        let named = |kw: &str| {
            if name.is_empty() {
                format!("{kw} (anon)")
            } else {
                format!("{kw} {name}")
            }
        };
        match t {
            BtfType::Int { .. } | BtfType::Float { .. } | BtfType::Typedef { .. } => {
                name.to_string()
            }
            BtfType::Struct { .. } => named("struct"),
            BtfType::Union { .. } => named("union"),
            BtfType::Enum { .. } | BtfType::Enum64 { .. } => named("enum"),
            BtfType::Fwd { is_union, .. } => named(if *is_union { "union" } else { "struct" }),
            BtfType::Ptr { type_id } => {
                let inner = self.type_name_depth(*type_id, depth + 1);
                if inner.ends_with('*') {
                    format!("{inner}*")
                } else {
                    format!("{inner} *")
                }
            }
            BtfType::Array {
                elem_type, nelems, ..
            } => format!("{}[{nelems}]", self.type_name_depth(*elem_type, depth + 1)),
            BtfType::Const { type_id } => {
                format!("const {}", self.type_name_depth(*type_id, depth + 1))
            }
            BtfType::Volatile { type_id } => {
                format!("volatile {}", self.type_name_depth(*type_id, depth + 1))
            }
            BtfType::Restrict { type_id } => {
                format!("{} restrict", self.type_name_depth(*type_id, depth + 1))
            }
            BtfType::TypeTag { type_id, .. } => self.type_name_depth(*type_id, depth + 1),
            BtfType::Func { .. } => format!("func {name}"),
            BtfType::FuncProto { .. } => "func_proto".into(),
            BtfType::Var { .. } => format!("var {name}"),
            BtfType::Datasec { .. } => format!("datasec {name}"),
            BtfType::DeclTag { .. } => format!("decl_tag {name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(type_len: u32, str_len: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        v.push(1);
        v.push(0);
        for x in [24u32, 0, type_len, type_len, str_len] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v
    }

    fn int_type(name_off: u32, size: u32, bits: u32, signed: bool) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&name_off.to_le_bytes());
        v.extend_from_slice(&(1u32 << 24).to_le_bytes());
        v.extend_from_slice(&size.to_le_bytes());
        let enc = if signed { 1u32 << 24 } else { 0 };
        v.extend_from_slice(&(enc | bits).to_le_bytes());
        v
    }

    #[test]
    fn parses_int_and_pointer() {
        let strings = b"\0int\0".to_vec();
        let mut types = int_type(1, 4, 32, true);
        // PTR to type 1
        types.extend_from_slice(&0u32.to_le_bytes());
        types.extend_from_slice(&(2u32 << 24).to_le_bytes());
        types.extend_from_slice(&1u32.to_le_bytes());
        let mut data = header(types.len() as u32, strings.len() as u32);
        data.extend_from_slice(&types);
        data.extend_from_slice(&strings);
        let btf = Btf::parse(&data).unwrap();
        assert_eq!(btf.len(), 2);
        assert_eq!(btf.type_name(1), "int");
        assert_eq!(btf.type_name(2), "int *");
        assert_eq!(btf.size_of(1).unwrap(), Some(4));
        assert_eq!(btf.size_of(2).unwrap(), Some(8));
        match btf.type_by_id(1).unwrap() {
            BtfType::Int { encoding, bits, .. } => {
                assert!(encoding.signed);
                assert_eq!(*bits, 32);
            }
            other => panic!("expected int, got {other:?}"),
        }
    }

    #[test]
    fn rejects_bad_magic_and_truncation() {
        let mut data = header(0, 1);
        data.push(0);
        data[0] = 0;
        assert!(matches!(
            Btf::parse(&data),
            Err(BtfError::BadMagic { found: 0xeb00, .. })
        ));
        let data = header(16, 1);
        assert!(matches!(Btf::parse(&data), Err(BtfError::BadRange { .. })));
        assert!(matches!(
            Btf::parse(&[0x9f, 0xeb, 1]),
            Err(BtfError::Truncated { .. })
        ));
    }

    #[test]
    fn rejects_dangling_type_reference() {
        let strings = b"\0".to_vec();
        let mut types = Vec::new();
        types.extend_from_slice(&0u32.to_le_bytes());
        types.extend_from_slice(&(2u32 << 24).to_le_bytes());
        types.extend_from_slice(&7u32.to_le_bytes());
        let mut data = header(types.len() as u32, strings.len() as u32);
        data.extend_from_slice(&types);
        data.extend_from_slice(&strings);
        assert_eq!(
            Btf::parse(&data),
            Err(BtfError::BadTypeRef { id: 1, target: 7 })
        );
    }

    #[test]
    fn parses_enum64_and_var_datasec() {
        let strings = b"\0big\0HUGE\0x\0.data\0".to_vec();
        let mut types = Vec::new();
        let mut w = |xs: &[u32]| {
            for x in xs {
                types.extend_from_slice(&x.to_le_bytes());
            }
        };
        // [1] ENUM64 'big' signed, size 8, one value -2^40.
        let v = (-(1i64 << 40)) as u64;
        w(&[
            1,
            (19 << 24) | (1 << 31) | 1,
            8,
            5,
            v as u32,
            (v >> 32) as u32,
        ]);
        // [2] VAR 'x' type 1, global.
        w(&[10, 14 << 24, 1, 1]);
        // [3] DATASEC '.data' size 8, one var at 0.
        w(&[12, (15 << 24) | 1, 8, 2, 0, 8]);
        let mut data = header(types.len() as u32, strings.len() as u32);
        data.extend_from_slice(&types);
        data.extend_from_slice(&strings);
        let btf = Btf::parse(&data).unwrap();
        match btf.type_by_id(1).unwrap() {
            BtfType::Enum64 { signed, values, .. } => {
                assert!(*signed);
                assert_eq!(values[0].value, -(1i64 << 40));
                assert_eq!(btf.string(values[0].name_off), "HUGE");
            }
            t => panic!("expected ENUM64, got {t:?}"),
        }
        assert_eq!(btf.type_name(1), "enum big");
        assert_eq!(btf.size_of(2).unwrap(), Some(8));
        let dump = btf.dump_raw();
        assert!(
            dump.contains(
                "[1] ENUM64 'big' encoding=SIGNED size=8 vlen=1\n\t'HUGE' val=-1099511627776"
            ),
            "{dump}"
        );
        assert!(
            dump.contains("[2] VAR 'x' type_id=1, linkage=global"),
            "{dump}"
        );
        assert!(
            dump.contains("\ttype_id=2 offset=0 size=8 (VAR 'x')"),
            "{dump}"
        );
    }

    #[test]
    fn huge_vlen_is_refused_before_allocating() {
        let strings = b"\0".to_vec();
        let mut types = Vec::new();
        // STRUCT with vlen 0xffff and no member data.
        for x in [0u32, (4 << 24) | 0xffff, 8] {
            types.extend_from_slice(&x.to_le_bytes());
        }
        let mut data = header(types.len() as u32, strings.len() as u32);
        data.extend_from_slice(&types);
        data.extend_from_slice(&strings);
        assert!(matches!(Btf::parse(&data), Err(BtfError::Truncated { .. })));
    }

    #[test]
    fn rejects_unknown_kind() {
        let strings = b"\0".to_vec();
        let mut types = Vec::new();
        types.extend_from_slice(&0u32.to_le_bytes());
        types.extend_from_slice(&(30u32 << 24).to_le_bytes());
        types.extend_from_slice(&0u32.to_le_bytes());
        let mut data = header(types.len() as u32, strings.len() as u32);
        data.extend_from_slice(&types);
        data.extend_from_slice(&strings);
        assert_eq!(
            Btf::parse(&data),
            Err(BtfError::UnknownKind { id: 1, kind: 30 })
        );
    }
}
