//! `pkbpf start [--session NAME] -- CMD ARGS…`: starts CMD with the preload
//! agent connected to a running `pkbpf load` (the only one running, or the
//! one named). The loader prints what the target's programs produce; this
//! command waits for CMD and exits with its status (128 + N when a signal
//! N ended it). It ignores SIGINT and SIGTERM while CMD runs, as
//! `pkbpf run` does: Ctrl-C reaches CMD.

use std::os::fd::AsRawFd;

use anyhow::{Context, Result};
use pkbpf::session;

use super::run::{agent_command, exit_code, ignore_stop_signals, AgentEnv};

/// Arguments of `pkbpf start`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The session (`pkbpf load --name`); needed when several run.
    #[arg(long)]
    pub session: Option<String>,
    /// The command to start, with its arguments (after `--`).
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

/// Runs the subcommand.
pub fn run(a: Args) -> Result<i32> {
    let s = session::find_session(&session::runtime_dir(), a.session.as_deref())?;
    let sock = session::connect(&s.socket)?;
    let env = AgentEnv {
        object: &s.object,
        sandbox: &s.sandbox,
        prog: s.prog.as_deref(),
    };
    let mut child = agent_command(&a.command, &env, sock.as_raw_fd())?
        .spawn()
        .with_context(|| format!("starting {}", a.command[0]))?;
    drop(sock);
    ignore_stop_signals();
    eprintln!(
        "pkbpf: started {} (pid {}) in session {}",
        a.command[0],
        child.id(),
        s.name
    );
    let status = child.wait().context("waiting for the target")?;
    Ok(exit_code(status))
}
