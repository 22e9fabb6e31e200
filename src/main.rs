//! The `pkbpf` command-line tool.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod cli;

/// pkbpf: run eBPF programs in userspace, inside MPK protection-key domains.
#[derive(Parser, Debug)]
#[command(name = "pkbpf", version, about, long_about = None)]
struct Cli {
    /// Sandbox mode: `auto` uses protection keys where the CPU has them and
    /// says which mode it chose, `mpk` requires them, `none` turns them off.
    #[arg(long, global = true, value_enum, default_value_t = cli::SandboxArg::Auto)]
    sandbox: cli::SandboxArg,

    /// Verbose logging (repeat for more).
    #[arg(short = 'v', long = "verbose", global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

// Each subcommand lives in its own module under `src/cli/`; add a variant here
// and a module there. Keep this enum the only shared edit point.
#[derive(Subcommand, Debug)]
enum Command {
    /// Run bpf_conformance `.data` tests.
    Conformance(cli::conformance::Args),
    /// Speak bpf_conformance's plugin protocol (program as hex on stdin).
    ConformancePlugin(cli::conformance::PluginArgs),
    /// Run a built-in program and print what it computed.
    Demo(cli::demo::Args),
    /// Show an object file's programs, maps and globals.
    Inspect(cli::inspect::Args),
    /// Disassemble an object file's programs, with source lines.
    Disasm(cli::disasm::Args),
    /// Verify an object file's programs and print the verifier log (`-v`: every instruction).
    Verify(cli::verify::Args),
    /// Start a command with an object's uprobes attached (preload agent) and show their output.
    Run(cli::run::Args),
    /// Load an object and serve targets (`start`, `attach`) in the foreground until Ctrl-C.
    Load(cli::load::Args),
    /// Start a command with the agent connected to a running `pkbpf load`.
    Start(cli::start::Args),
    /// Read the maps of a running `pkbpf load` session.
    Map(cli::map::Args),
    /// Inject the agent into a running process (ptrace + dlopen) and connect it to `pkbpf load`.
    Attach(cli::attach::Args),
}

fn main() {
    let cli = Cli::parse();
    cli::init_logging(cli.verbose);
    // `--sandbox`: `mpk` without PKU fails closed on every command; `auto`
    // says on stderr which mode it chose for commands that run programs.
    let mode = match pkbpf_sandbox::select(cli.sandbox.into()) {
        Ok(mode) => mode,
        Err(e) => {
            eprintln!("pkbpf: error: {e}");
            std::process::exit(1);
        }
    };
    // (`demo` prints the mode itself, on stdout.)
    let runs_programs = matches!(cli.command, Command::Conformance(_));
    if cli.sandbox == cli::SandboxArg::Auto && runs_programs {
        eprintln!("{mode}");
    }
    let result: Result<i32> = match cli.command {
        Command::Conformance(a) => cli::conformance::run(a),
        Command::ConformancePlugin(a) => cli::conformance::run_plugin(a),
        Command::Demo(a) => cli::demo::run(a, cli.sandbox.into()),
        Command::Inspect(a) => cli::inspect::run(a),
        Command::Disasm(a) => cli::disasm::run(a),
        Command::Verify(a) => cli::verify::run(a, cli.verbose),
        Command::Run(a) => cli::run::run(a, cli.sandbox),
        Command::Load(a) => cli::load::run(a, cli.sandbox),
        Command::Start(a) => cli::start::run(a),
        Command::Map(a) => cli::map::run(a),
        Command::Attach(a) => cli::attach::run(a),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("pkbpf: error: {e:#}");
            std::process::exit(1);
        }
    }
}
