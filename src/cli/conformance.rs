//! `pkbpf conformance` and `pkbpf conformance-plugin` (owned by the interpreter work).

use anyhow::{bail, Result};
use std::path::PathBuf;

/// Arguments of `pkbpf conformance`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory of `.data` files (or one file).
    pub dir: PathBuf,
}

/// Arguments of `pkbpf conformance-plugin`.
#[derive(clap::Args, Debug)]
pub struct PluginArgs {
    /// Input memory as hex.
    pub memory: Option<String>,
}

/// Runs the conformance suite.
pub fn run(_args: Args) -> Result<i32> {
    bail!("the conformance runner is being written")
}

/// Runs the plugin protocol.
pub fn run_plugin(_args: PluginArgs) -> Result<i32> {
    bail!("the conformance plugin is being written")
}
