//! A text dump of a BTF type table in bpftool's raw format
//! (`bpftool btf dump file X`), so that the two can be compared line by line.

use super::{Btf, BtfType};
use std::fmt::Write;

fn linkage(l: u32) -> &'static str {
    match l {
        0 => "static",
        1 => "global",
        2 => "extern",
        _ => "(unknown)",
    }
}

impl Btf {
    fn quoted(&self, off: u32) -> String {
        match self.string(off) {
            "" => "'(anon)'".into(),
            s => format!("'{s}'"),
        }
    }

    /// Every type, one `[id] KIND 'name' ...` line each (members, enumerators,
    /// parameters and section variables on tab-indented lines below), as
    /// bpftool prints them.
    pub fn dump_raw(&self) -> String {
        let mut out = String::new();
        for (id, t) in self.types() {
            let _ = write!(
                out,
                "[{id}] {} {}",
                t.kind_name(),
                self.quoted(t.name_off())
            );
            match t {
                BtfType::Int {
                    size,
                    encoding,
                    offset,
                    bits,
                    ..
                } => {
                    let enc = if encoding.signed {
                        "SIGNED"
                    } else if encoding.char {
                        "CHAR"
                    } else if encoding.bool {
                        "BOOL"
                    } else {
                        "(none)"
                    };
                    let _ = write!(
                        out,
                        " size={size} bits_offset={offset} nr_bits={bits} encoding={enc}"
                    );
                }
                BtfType::Ptr { type_id }
                | BtfType::Typedef { type_id, .. }
                | BtfType::Volatile { type_id }
                | BtfType::Const { type_id }
                | BtfType::Restrict { type_id }
                | BtfType::TypeTag { type_id, .. } => {
                    let _ = write!(out, " type_id={type_id}");
                }
                BtfType::Array {
                    elem_type,
                    index_type,
                    nelems,
                } => {
                    let _ = write!(
                        out,
                        " type_id={elem_type} index_type_id={index_type} nr_elems={nelems}"
                    );
                }
                BtfType::Struct { size, members, .. } | BtfType::Union { size, members, .. } => {
                    let _ = write!(out, " size={size} vlen={}", members.len());
                    for m in members {
                        let _ = write!(
                            out,
                            "\n\t{} type_id={} bits_offset={}",
                            self.quoted(m.name_off),
                            m.type_id,
                            m.bit_offset
                        );
                        if m.bitfield_size != 0 {
                            let _ = write!(out, " bitfield_size={}", m.bitfield_size);
                        }
                    }
                }
                BtfType::Enum {
                    size,
                    signed,
                    values,
                    ..
                }
                | BtfType::Enum64 {
                    size,
                    signed,
                    values,
                    ..
                } => {
                    let enc = if *signed { "SIGNED" } else { "UNSIGNED" };
                    let _ = write!(out, " encoding={enc} size={size} vlen={}", values.len());
                    let is64 = matches!(t, BtfType::Enum64 { .. });
                    for v in values {
                        let val = match (is64, signed) {
                            (_, true) => v.value.to_string(),
                            (true, false) => (v.value as u64).to_string(),
                            (false, false) => (v.value as u32).to_string(),
                        };
                        let _ = write!(out, "\n\t{} val={val}", self.quoted(v.name_off));
                    }
                }
                BtfType::Fwd { is_union, .. } => {
                    let k = if *is_union { "union" } else { "struct" };
                    let _ = write!(out, " fwd_kind={k}");
                }
                BtfType::Func {
                    proto, linkage: l, ..
                } => {
                    let _ = write!(out, " type_id={proto} linkage={}", linkage(*l));
                }
                BtfType::FuncProto { ret, params } => {
                    let _ = write!(out, " ret_type_id={ret} vlen={}", params.len());
                    for p in params {
                        let _ =
                            write!(out, "\n\t{} type_id={}", self.quoted(p.name_off), p.type_id);
                    }
                }
                BtfType::Var {
                    type_id,
                    linkage: l,
                    ..
                } => {
                    let _ = write!(out, " type_id={type_id}, linkage={}", linkage(*l));
                }
                BtfType::Datasec { size, vars, .. } => {
                    let _ = write!(out, " size={size} vlen={}", vars.len());
                    for v in vars {
                        let (kind, name) = self
                            .type_by_id(v.type_id)
                            .map(|t| (t.kind_name(), self.quoted(t.name_off())))
                            .unwrap_or(("UNKN", "'(anon)'".into()));
                        let _ = write!(
                            out,
                            "\n\ttype_id={} offset={} size={} ({kind} {name})",
                            v.type_id, v.offset, v.size
                        );
                    }
                }
                BtfType::Float { size, .. } => {
                    let _ = write!(out, " size={size}");
                }
                BtfType::DeclTag {
                    type_id,
                    component_idx,
                    ..
                } => {
                    let _ = write!(out, " type_id={type_id} component_idx={component_idx}");
                }
            }
            out.push('\n');
        }
        out
    }
}
