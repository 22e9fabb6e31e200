//! `pkbpf disasm OBJ [PROG]`: each program's instructions after relocation
//! and linking, in kernel syntax, with `; <source line>` comments from the
//! BTF.ext line info (printed when the line changes, as the kernel's verifier
//! log does) and `<function>:` labels where linked subprograms start.
//!
//! With `--jit` each program is verified and compiled by the x86-64 JIT (with
//! placeholder helpers and map addresses, see `JitEnv::for_display`) and the
//! machine code is printed under each eBPF instruction.

use anyhow::{bail, Context, Result};
use pkbpf::object::{Object, ProgramDef};
use pkbpf::verifier::disasm::insn_to_string;
use pkbpf::verifier::isa::Insn;
use pkbpf_jit::x86::{JitEnv, JitProgram};
use std::fmt::Write;
use std::path::PathBuf;

/// Arguments of `pkbpf disasm`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The `.bpf.o` file.
    pub object: PathBuf,
    /// Only this program (by function name).
    pub program: Option<String>,
    /// Also compile each program with the JIT and print its x86-64 code
    /// under each instruction.
    #[arg(long)]
    pub jit: bool,
    /// Context size in bytes for embedded programs (`SEC("extension")`),
    /// used to verify them for `--jit`.
    #[arg(long, default_value_t = 4096)]
    pub ctx_size: u32,
}

/// Verifies and JIT-compiles one program; its machine code next to its
/// instructions.
pub fn jit_text(obj: &Object, p: &ProgramDef, ctx_size: u32) -> Result<String> {
    let env = pkbpf::verify_env::program_env(obj, p, ctx_size)?;
    let v =
        pkbpf::verifier::verify(&p.insns, &env).with_context(|| format!("verifying {}", p.name))?;
    let jit = JitProgram::compile(&v, &JitEnv::for_display(&v))
        .with_context(|| format!("compiling {}", p.name))?;
    Ok(format!(
        "{} (section {}, {} bytes of x86-64):\n{}",
        p.name,
        p.section,
        jit.code().len(),
        jit.dump(v.insns())
    ))
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
        if args.jit {
            print!("{}", jit_text(&obj, p, args.ctx_size)?);
        } else {
            print!("{}", program_text(&obj, p));
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// `tests/bpf/bench_uprobe.bpf.c` compiled with clang into a temporary
    /// directory; `None` without clang.
    fn bench_uprobe() -> Option<Object> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = std::env::temp_dir().join(format!("pkbpf-disasm-jit-{}.o", std::process::id()));
        let status = Command::new("clang")
            .args(["-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86"])
            .arg("-I/usr/include/x86_64-linux-gnu")
            .arg("-I")
            .arg(root.join("tests/bpf/include"))
            .arg("-c")
            .arg(root.join("tests/bpf/bench_uprobe.bpf.c"))
            .arg("-o")
            .arg(&out)
            .output();
        let Ok(status) = status else {
            println!("skipped: clang not found");
            return None;
        };
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        let bytes = std::fs::read(&out).unwrap();
        let _ = std::fs::remove_file(&out);
        Some(Object::parse(&bytes).unwrap())
    }

    #[test]
    fn jit_text_shows_machine_code_under_each_instruction() {
        let Some(obj) = bench_uprobe() else { return };
        let p = obj.program("bench_uprobe").unwrap();
        let text = jit_text(&obj, p, 4096).unwrap();
        assert!(text.starts_with("bench_uprobe (section "), "{text}");
        assert!(text.contains("; prologue"), "{text}");
        // Every eBPF instruction is listed, followed by x86 (hex + Intel).
        for pc in 0..p.insns.len() {
            assert!(
                text.contains(&format!("{pc:4}: ")),
                "slot {pc} missing:\n{text}"
            );
        }
        assert!(text.contains("ret"), "{text}");
        // `r1 = *(u64 *)(r1 + 112)` loads through rdi.
        assert!(text.contains("mov rdi,[rdi+70h]"), "{text}");
    }
}
