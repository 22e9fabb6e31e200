//! Subcommands of the `pkbpf` binary, one module each.

pub mod attach;
pub mod conformance;
pub mod demo;
pub mod disasm;
pub mod inspect;
pub mod load;
pub mod map;
pub mod run;
pub mod start;
pub mod verify;

/// The `--sandbox` flag.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SandboxArg {
    /// Use protection keys where available; say which mode was chosen.
    Auto,
    /// Require protection keys; fail with a clear error without them.
    Mpk,
    /// No protection keys.
    None,
}

impl From<SandboxArg> for pkbpf_sandbox::Sandbox {
    fn from(a: SandboxArg) -> Self {
        match a {
            SandboxArg::Auto => pkbpf_sandbox::Sandbox::Auto,
            SandboxArg::Mpk => pkbpf_sandbox::Sandbox::Mpk,
            SandboxArg::None => pkbpf_sandbox::Sandbox::None,
        }
    }
}

/// Sets up `tracing` output on stderr; `RUST_LOG` overrides the level.
pub fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
