//! `pkbpf inspect OBJ`: what an object file holds — programs (section, kind,
//! attach target, instruction count), maps (type, key/value types and sizes
//! from BTF, max entries, flags) and global variables.

use anyhow::{Context, Result};
use pkbpf::object::{MapDef, MapKind, Object, ProgramDef};
use pkbpf::verifier::isa::Insn;
use serde_json::{json, Value};
use std::path::PathBuf;

/// Arguments of `pkbpf inspect`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The `.bpf.o` file.
    pub object: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Also print the BTF type table (bpftool's raw format; DATASEC sizes and
    /// offsets as the loader fixed them up).
    #[arg(long)]
    pub btf: bool,
}

/// Loads the object at `path` (with the path in the error).
pub fn load(path: &std::path::Path) -> Result<Object> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Object::parse(&bytes).with_context(|| format!("loading {}", path.display()))
}

/// Instructions of a program, counting `lddw` once (as llvm-objdump does).
fn insn_count(insns: &[Insn]) -> usize {
    insns.iter().filter(|i| **i != Insn::LdImm64Hi).count()
}

fn type_desc(obj: &Object, id: Option<u32>, size: u32) -> String {
    match (obj.btf(), id) {
        (Some(btf), Some(id)) => format!("{} ({size})", btf.type_name(id)),
        _ => size.to_string(),
    }
}

fn map_kind(m: &MapDef) -> &'static str {
    match m.kind {
        MapKind::Regular => "map",
        MapKind::Data { .. } => "data",
        MapKind::Rodata { .. } => "rodata",
        MapKind::Bss { .. } => "bss",
    }
}

fn program_json(p: &ProgramDef) -> Value {
    json!({
        "name": p.name,
        "section": p.section,
        "kind": p.kind,
        "target": p.kind.target_string(),
        "insns": insn_count(&p.insns),
        "own_insns": insn_count(&p.insns[..p.own_len]),
        "slots": p.insns.len(),
        "maps": p.map_refs(),
    })
}

/// The whole report as JSON.
pub fn to_json(obj: &Object) -> Value {
    let btf = obj.btf();
    let maps: Vec<Value> = obj
        .maps()
        .iter()
        .map(|m| {
            json!({
                "name": m.name,
                "type": m.map_type.name(),
                "kind": map_kind(m),
                "key_size": m.key_size,
                "value_size": m.value_size,
                "key_type": btf.zip(m.key_type_id).map(|(b, id)| b.type_name(id)),
                "value_type": btf.zip(m.value_type_id).map(|(b, id)| b.type_name(id)),
                "max_entries": m.max_entries,
                "flags": m.flags,
                "pinning": m.pinning,
                "initial_progs": m.initial_progs,
            })
        })
        .collect();
    let globals: Vec<Value> = obj
        .maps()
        .iter()
        .filter(|m| !matches!(m.kind, MapKind::Regular))
        .map(|m| json!({ "section": m.name, "size": m.value_size, "vars": obj.globals(m) }))
        .collect();
    json!({
        "license": obj.license(),
        "kernel_version": obj.kernel_version(),
        "programs": obj.programs().iter().map(program_json).collect::<Vec<_>>(),
        "maps": maps,
        "globals": globals,
    })
}

/// Pads columns to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        format!("  {}\n", s.join("  ").trim_end())
    };
    if rows.is_empty() {
        return "  (none)\n".into();
    }
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// The human-readable report.
pub fn to_text(obj: &Object) -> String {
    let mut out = format!(
        "license: {}\nversion: {}\n",
        if obj.license().is_empty() {
            "-"
        } else {
            obj.license()
        },
        obj.kernel_version()
            .map(|v| format!("{v:#x}"))
            .unwrap_or_else(|| "-".into())
    );
    out.push_str(&format!("\nprograms ({}):\n", obj.programs().len()));
    let rows: Vec<Vec<String>> = obj
        .programs()
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.section.clone(),
                p.kind.name().to_string(),
                p.kind.target_string(),
                insn_count(&p.insns).to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["NAME", "SECTION", "KIND", "TARGET", "INSNS"],
        &rows,
    ));
    out.push_str(&format!("\nmaps ({}):\n", obj.maps().len()));
    let rows: Vec<Vec<String>> = obj
        .maps()
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                m.map_type.name().to_string(),
                type_desc(obj, m.key_type_id, m.key_size),
                type_desc(obj, m.value_type_id, m.value_size),
                m.max_entries.to_string(),
                format!("{:#x}", m.flags),
            ]
        })
        .collect();
    out.push_str(&table(
        &["NAME", "TYPE", "KEY", "VALUE", "MAX_ENTRIES", "FLAGS"],
        &rows,
    ));
    let data: Vec<&MapDef> = obj
        .maps()
        .iter()
        .filter(|m| !matches!(m.kind, MapKind::Regular))
        .collect();
    if !data.is_empty() {
        out.push_str("\nglobals:\n");
        for m in data {
            out.push_str(&format!(
                "  {} ({}, {} bytes)\n",
                m.name,
                map_kind(m),
                m.value_size
            ));
            for g in obj.globals(m) {
                out.push_str(&format!(
                    "    +{:<4} {} {} ({} bytes)\n",
                    g.offset, g.type_name, g.name, g.size
                ));
            }
        }
    }
    out
}

/// Runs `pkbpf inspect`.
pub fn run(args: Args) -> Result<i32> {
    let obj = load(&args.object)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&obj))?);
    } else {
        print!("{}", to_text(&obj));
    }
    if args.btf {
        match obj.btf() {
            Some(b) => print!("\nbtf ({} types):\n{}", b.len(), b.dump_raw()),
            None => println!("\nbtf: none"),
        }
    }
    Ok(0)
}
