//! `pkbpf disasm OBJ [PROG]`: each program's instructions after relocation
//! and linking, in kernel syntax, with `; <source line>` comments from the
//! BTF.ext line info (printed when the line changes, as the kernel's verifier
//! log does) and `<function>:` labels where linked subprograms start.

use anyhow::{bail, Result};
use pkbpf::object::{Object, ProgramDef};
use pkbpf::verifier::disasm::insn_to_string;
use pkbpf::verifier::isa::Insn;
use std::fmt::Write;
use std::path::PathBuf;

/// Arguments of `pkbpf disasm`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The `.bpf.o` file.
    pub object: PathBuf,
    /// Only this program (by function name).
    pub program: Option<String>,
}

/// Disassembles one program with source lines and function labels.
pub fn program_text(obj: &Object, p: &ProgramDef) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} (section {}, {} {}):",
        p.name,
        p.section,
        p.kind.name(),
        p.kind.target_string()
    );
    let btf = obj.btf();
    let mut li = p.line_info.iter().peekable();
    let mut fi = p.func_info.iter().peekable();
    let mut last_line: Option<&str> = None;
    for (pc, insn) in p.insns.iter().enumerate() {
        while let Some(f) = fi.next_if(|f| f.insn as usize <= pc) {
            if f.insn as usize == pc && pc != 0 {
                let name = btf.map(|b| b.name_of(f.type_id)).unwrap_or("?");
                let _ = writeln!(out, "<{name}>:");
            }
        }
        while let Some(l) = li.next_if(|l| l.insn as usize <= pc) {
            if let Some(b) = btf {
                let text = b.string(l.line_off).trim();
                if !text.is_empty() && last_line != Some(text) {
                    let _ = writeln!(out, "; {text}");
                    last_line = Some(text);
                }
            }
        }
        if *insn == Insn::LdImm64Hi {
            continue;
        }
        let _ = writeln!(out, "{pc:5}: {}", insn_to_string(insn, pc));
    }
    out
}

/// Runs `pkbpf disasm`.
pub fn run(args: Args) -> Result<i32> {
    let obj = super::inspect::load(&args.object)?;
    let progs: Vec<&ProgramDef> = match &args.program {
        Some(name) => match obj.program(name) {
            Some(p) => vec![p],
            None => {
                let names: Vec<&str> = obj.programs().iter().map(|p| p.name.as_str()).collect();
                bail!(
                    "no program `{name}` in {} (has: {})",
                    args.object.display(),
                    names.join(", ")
                );
            }
        },
        None => obj.programs().iter().collect(),
    };
    for (i, p) in progs.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print!("{}", program_text(&obj, p));
    }
    Ok(0)
}
