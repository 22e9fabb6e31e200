//! Map definitions: BTF-defined `.maps`, the legacy `maps` section, and
//! global data sections as single-entry array maps.

use super::ObjectError;
use crate::btf::{Btf, BtfType};
use pkbpf_maps::MapType;
use serde::Serialize;

/// `BPF_F_RDONLY_PROG`: programs may only read the map.
pub const BPF_F_RDONLY_PROG: u32 = 1 << 7;
/// `BPF_F_MMAPABLE`: the value can be mapped by the host.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Where a map definition came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MapKind {
    /// A map declared by the program (`.maps` or legacy `maps`).
    Regular,
    /// A `.data*` section: writable globals with initial values.
    Data {
        /// The section name.
        section: String,
    },
    /// A `.rodata*` section: constants, frozen (read-only for programs).
    Rodata {
        /// The section name.
        section: String,
    },
    /// A `.bss*` section: zero-initialised globals.
    Bss {
        /// The section name.
        section: String,
    },
}

/// One map of an object.
///
/// Global data maps are named after their section (`.data`, `.rodata`,
/// `.bss`, `.rodata.str1.1`); libbpf prefixes an object name, but
/// [`super::Object::parse`] sees only bytes and has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapDef {
    /// The map's name (the C variable, or the data section's name).
    pub name: String,
    /// The map type.
    pub map_type: MapType,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Maximum number of entries.
    pub max_entries: u32,
    /// `map_flags`.
    pub flags: u32,
    /// `pinning` (0 none, 1 by name); accepted and reported only.
    pub pinning: u32,
    /// BTF type id of the key, when declared with `__type(key, T)`.
    pub key_type_id: Option<u32>,
    /// BTF type id of the value (`__type(value, T)`, or a data section's DATASEC).
    pub value_type_id: Option<u32>,
    /// What kind of definition this is.
    pub kind: MapKind,
    /// Initial contents of a `.data`/`.rodata` map value.
    pub initial_data: Option<Vec<u8>>,
    /// For a `PROG_ARRAY` declared with `__array(values, ...)` and an
    /// initializer: `(slot, program name)` pairs to fill in at load, as
    /// libbpf does.
    pub initial_progs: Vec<(u32, String)>,
}

fn map_type(name: &str, n: u32) -> Result<MapType, ObjectError> {
    MapType::from_kernel(n).ok_or_else(|| ObjectError::UnsupportedMapType {
        map: name.to_string(),
        type_num: n,
    })
}

/// A BTF-defined map with where its `values` array (`__array(values, ...)`)
/// starts inside the definition, for initializer relocations.
pub(super) struct BtfMap {
    pub(super) def: MapDef,
    pub(super) values_offset: Option<u32>,
}

/// Parses the `.maps` DATASEC of `btf`. Returns the maps in DATASEC order.
pub(super) fn parse_btf_maps(btf: &Btf) -> Result<Vec<BtfMap>, ObjectError> {
    let Some(sec_id) = btf.find_by_name(".maps", |t| matches!(t, BtfType::Datasec { .. })) else {
        return Err(ObjectError::BadMapDef {
            map: ".maps".into(),
            reason: "no DATASEC `.maps` in .BTF".into(),
        });
    };
    let Some(BtfType::Datasec { vars, .. }) = btf.type_by_id(sec_id) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for v in vars {
        let (name, var_type) = match btf.type_by_id(v.type_id) {
            Some(BtfType::Var {
                name_off, type_id, ..
            }) => (btf.string(*name_off).to_string(), *type_id),
            _ => {
                return Err(ObjectError::BadMapDef {
                    map: format!("type {}", v.type_id),
                    reason: "`.maps` entry is not a VAR".into(),
                })
            }
        };
        out.push(parse_btf_map(btf, &name, var_type)?);
    }
    Ok(out)
}

fn parse_btf_map(btf: &Btf, name: &str, var_type: u32) -> Result<BtfMap, ObjectError> {
    let bad = |reason: String| ObjectError::BadMapDef {
        map: name.to_string(),
        reason,
    };
    let sid = btf
        .skip_mods_and_typedefs(var_type)
        .map_err(|e| bad(e.to_string()))?;
    let Some(BtfType::Struct { members, .. }) = btf.type_by_id(sid) else {
        return Err(bad(format!(
            "definition is {}, not a struct",
            btf.type_name(sid)
        )));
    };
    let mut type_num = None;
    let (mut key_size, mut value_size, mut max_entries, mut flags, mut pinning) =
        (None, None, 0, 0, 0);
    let (mut key_type_id, mut value_type_id) = (None, None);
    let mut values_offset = None;
    for m in members {
        let field = btf.string(m.name_off);
        let mt = btf
            .skip_mods_and_typedefs(m.type_id)
            .map_err(|e| bad(e.to_string()))?;
        // `__uint(x, N)`: `int (*x)[N]`.
        let uint = || -> Result<u32, ObjectError> {
            if let Some(BtfType::Ptr { type_id }) = btf.type_by_id(mt) {
                let at = btf
                    .skip_mods_and_typedefs(*type_id)
                    .map_err(|e| bad(e.to_string()))?;
                if let Some(BtfType::Array { nelems, .. }) = btf.type_by_id(at) {
                    return Ok(*nelems);
                }
            }
            Err(bad(format!("`{field}` is not declared with __uint()")))
        };
        // `__type(x, T)`: `typeof(T) *x`.
        let pointee = || -> Result<u32, ObjectError> {
            match btf.type_by_id(mt) {
                Some(BtfType::Ptr { type_id }) => Ok(*type_id),
                _ => Err(bad(format!("`{field}` is not declared with __type()"))),
            }
        };
        let size_of = |t: u32| -> Result<u32, ObjectError> {
            btf.size_of(t)
                .map_err(|e| bad(e.to_string()))?
                .and_then(|s| u32::try_from(s).ok())
                .ok_or_else(|| bad(format!("`{field}` type {} has no size", btf.type_name(t))))
        };
        match field {
            "type" => type_num = Some(uint()?),
            "max_entries" => max_entries = uint()?,
            "map_flags" => flags = uint()?,
            "pinning" => pinning = uint()?,
            "key_size" => key_size = Some(uint()?),
            "value_size" => value_size = Some(uint()?),
            "key" => {
                let t = pointee()?;
                let s = size_of(t)?;
                if key_size.is_some_and(|k| k != s) {
                    return Err(bad(format!(
                        "key_size {key_size:?} disagrees with key type size {s}"
                    )));
                }
                key_size = Some(s);
                key_type_id = Some(t);
            }
            "value" => {
                let t = pointee()?;
                let s = size_of(t)?;
                if value_size.is_some_and(|v| v != s) {
                    return Err(bad(format!(
                        "value_size {value_size:?} disagrees with value type size {s}"
                    )));
                }
                value_size = Some(s);
                value_type_id = Some(t);
            }
            // `__array(values, T)`: initial values, set by relocations.
            "values" => values_offset = Some(m.bit_offset / 8),
            // Accepted, without effect in pkbpf.
            "numa_node" | "map_extra" => {}
            other => return Err(bad(format!("unknown map attribute `{other}`"))),
        }
    }
    let type_num = type_num.ok_or_else(|| bad("no `type` attribute".into()))?;
    let map_type = map_type(name, type_num)?;
    if values_offset.is_some() && map_type != MapType::ProgArray {
        return Err(bad(format!(
            "`values` initializers are only supported for prog_array, not {map_type}"
        )));
    }
    // A prog array's values are 4-byte program references.
    let value_size = match (value_size, values_offset) {
        (None, Some(_)) => Some(4),
        (v, _) => v,
    };
    // Ringbufs have no key/value.
    Ok(BtfMap {
        def: MapDef {
            name: name.to_string(),
            map_type,
            key_size: key_size.unwrap_or(0),
            value_size: value_size.unwrap_or(0),
            max_entries,
            flags,
            pinning,
            key_type_id,
            value_type_id,
            kind: MapKind::Regular,
            initial_data: None,
            initial_progs: Vec::new(),
        },
        values_offset,
    })
}

/// Parses one legacy `struct bpf_map_def` (type, key_size, value_size,
/// max_entries, map_flags; extra trailing fields ignored).
pub(super) fn parse_legacy_map(name: &str, def: &[u8]) -> Result<MapDef, ObjectError> {
    if def.len() < 20 {
        return Err(ObjectError::BadMapDef {
            map: name.to_string(),
            reason: format!("legacy map definition is {} bytes, need 20", def.len()),
        });
    }
    let f =
        |i: usize| u32::from_le_bytes([def[i * 4], def[i * 4 + 1], def[i * 4 + 2], def[i * 4 + 3]]);
    Ok(MapDef {
        name: name.to_string(),
        map_type: map_type(name, f(0))?,
        key_size: f(1),
        value_size: f(2),
        max_entries: f(3),
        flags: f(4),
        pinning: 0,
        key_type_id: None,
        value_type_id: None,
        kind: MapKind::Regular,
        initial_data: None,
        initial_progs: Vec::new(),
    })
}

/// A global data section as a single-entry array map.
pub(super) fn data_map(section: &str, size: u32, data: Option<&[u8]>, btf: Option<&Btf>) -> MapDef {
    let kind = if section.starts_with(".rodata") {
        MapKind::Rodata {
            section: section.into(),
        }
    } else if section.starts_with(".bss") {
        MapKind::Bss {
            section: section.into(),
        }
    } else {
        MapKind::Data {
            section: section.into(),
        }
    };
    let flags = match kind {
        MapKind::Rodata { .. } => BPF_F_MMAPABLE | BPF_F_RDONLY_PROG,
        _ => BPF_F_MMAPABLE,
    };
    let value_type_id =
        btf.and_then(|b| b.find_by_name(section, |t| matches!(t, BtfType::Datasec { .. })));
    MapDef {
        name: section.to_string(),
        map_type: MapType::Array,
        key_size: 4,
        value_size: size,
        max_entries: 1,
        flags,
        pinning: 0,
        key_type_id: None,
        value_type_id,
        initial_data: match kind {
            MapKind::Bss { .. } => None,
            _ => Some(
                data.map(<[u8]>::to_vec)
                    .unwrap_or_else(|| vec![0; size as usize]),
            ),
        },
        kind,
        initial_progs: Vec::new(),
    }
}
