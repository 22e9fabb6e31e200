//! `pkbpf verify OBJ [PROG] [-v]`: runs the verifier on each program of an
//! object file (or the one named) and prints the kernel-style log: the
//! failing path and the reason (or the statistics) by default, every
//! instruction with `-v`. Exit status 1 when a program is rejected.

use anyhow::{bail, Context, Result};
use pkbpf::object::{MapKind, Object, ProgramDef, ProgramKind};
use pkbpf::verifier::{CtxDesc, MapDesc, ProgramEnv, Verifier};
use std::path::PathBuf;

/// Arguments of `pkbpf verify`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The `.bpf.o` file.
    pub object: PathBuf,
    /// Only this program (by function name).
    pub program: Option<String>,
    /// Context size in bytes for embedded programs (`SEC("extension")`).
    #[arg(long, default_value_t = 4096)]
    pub ctx_size: u32,
}

/// The verifier's view of a program's surroundings: its context from the
/// program kind, the object's maps (in object order, as the loader's
/// `MapIdx` immediates count them), the source lines from BTF.ext.
pub fn program_env(obj: &Object, prog: &ProgramDef, ctx_size: u32) -> Result<ProgramEnv> {
    let ctx = match &prog.kind {
        ProgramKind::Uprobe { .. } | ProgramKind::Uretprobe { .. } => CtxDesc::PtRegs,
        ProgramKind::Tracepoint { category, name } if category == "syscalls" => {
            if name.starts_with("sys_enter") {
                CtxDesc::SyscallEnter
            } else if name.starts_with("sys_exit") {
                CtxDesc::SyscallExit
            } else {
                bail!("{}: unknown syscall tracepoint {name}", prog.name)
            }
        }
        ProgramKind::Tracepoint { category, name } => {
            bail!(
                "{}: tracepoint {category}/{name} has no known layout",
                prog.name
            )
        }
        ProgramKind::RawTracepoint { .. } => CtxDesc::RawSyscall,
        ProgramKind::Embedded => CtxDesc::Buffer {
            size: ctx_size,
            writable: std::iter::once(0..ctx_size).collect(),
        },
    };
    let mut env = ProgramEnv::new(ctx);
    for m in obj.maps() {
        env.maps.push(MapDesc {
            map_type: m.map_type as u32,
            key_size: m.key_size,
            value_size: m.value_size,
            max_entries: m.max_entries,
            read_only: matches!(m.kind, MapKind::Rodata { .. }),
        });
    }
    if let Some(btf) = obj.btf() {
        env.line_info = prog
            .line_info
            .iter()
            .map(|l| (l.insn as usize, btf.string(l.line_off).trim().to_string()))
            .filter(|(_, s)| !s.is_empty())
            .collect();
        env.line_info.sort_by_key(|(i, _)| *i);
        env.line_info.dedup_by_key(|(i, _)| *i);
    }
    Ok(env)
}

/// Runs the subcommand; `verbose` is the global `-v` count (log level 2 when set).
pub fn run(a: Args, verbose: u8) -> Result<i32> {
    let bytes =
        std::fs::read(&a.object).with_context(|| format!("reading {}", a.object.display()))?;
    let obj = Object::parse(&bytes).with_context(|| format!("loading {}", a.object.display()))?;
    let progs: Vec<&ProgramDef> = match &a.program {
        Some(name) => match obj.program(name) {
            Some(p) => vec![p],
            None => bail!("{}: no program named {name}", a.object.display()),
        },
        None => obj.programs().iter().collect(),
    };
    let level = if verbose > 0 { 2 } else { 1 };
    let mut rejected = 0;
    for p in progs {
        let env = program_env(&obj, p, a.ctx_size)?;
        let (res, log) = Verifier::new(&env).log_level(level).verify(&p.insns);
        println!("{} ({}):", p.name, p.kind.name());
        print!("{log}");
        match res {
            Ok(_) => println!("{}: accepted", p.name),
            Err(e) => {
                rejected += 1;
                println!(
                    "{}: rejected at insn {} ({}): {e}",
                    p.name, e.insn, e.category
                );
            }
        }
    }
    Ok(if rejected > 0 { 1 } else { 0 })
}
