//! `pkbpf verify OBJ [PROG] [-v]`: runs the verifier on each program of an
//! object file (or the one named) and prints the kernel-style log: the
//! failing path and the reason (or the statistics) by default, every
//! instruction with `-v`. Exit status 1 when a program is rejected.

use anyhow::{bail, Context, Result};
use pkbpf::object::{Object, ProgramDef};
use pkbpf::verifier::Verifier;
use pkbpf::verify_env::program_env;
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
