//! Running bpftime's suite in every environment, N times, into a [`Report`].

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};

use crate::embedded::{load_embed_object, time_calls, EMBED_ENGINES};
use crate::engines::error_chain;
use crate::env::{
    mpk_unavailable_reason, Cell, Environment, Native, PkbpfSandbox, Readiness, Setup,
};
use crate::inproc::PkbpfInProcess;
use crate::kernel::Kernel;
use crate::report::{Record, Report, SCHEMA};
use crate::stats::Summary;
use crate::sysinfo::SystemInfo;
use crate::tools::build_target;
use crate::workload::EMBED_ROW;
use crate::BenchError;

/// What to run.
#[derive(Clone, Debug)]
pub struct SuiteOptions {
    /// Runs per environment.
    pub runs: usize,
    /// Calls per target function per run.
    pub iterations: u64,
    /// Scratch directory for built files.
    pub workdir: PathBuf,
    /// Show a progress bar (only drawn when stderr is a terminal).
    pub progress: bool,
}

/// The environments of the suite, in column order.
pub fn environments() -> Vec<Box<dyn Environment>> {
    vec![
        Box::new(Native),
        Box::new(Kernel::new()),
        Box::new(PkbpfInProcess::new(PkbpfSandbox::None)),
        Box::new(PkbpfInProcess::new(PkbpfSandbox::Mpk)),
    ]
}

fn progress_bar(total: u64, want: bool) -> ProgressBar {
    if want && std::io::stderr().is_terminal() {
        let pb = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} [{elapsed}]") {
            pb.set_style(style);
        }
        pb
    } else {
        ProgressBar::hidden()
    }
}

/// One record from a row's cells over the runs.
fn record(row: &str, env: &str, cells: &[Cell]) -> Record {
    let mut samples = Vec::new();
    for c in cells {
        match c {
            Cell::Ns(v) => samples.push(*v),
            Cell::NotRun(why) => {
                return Record {
                    row: row.into(),
                    env: env.into(),
                    status: "not_run".into(),
                    reason: Some(why.clone()),
                    samples_ns: Vec::new(),
                    summary: None,
                }
            }
        }
    }
    match Summary::of(&samples) {
        Ok(s) => Record {
            row: row.into(),
            env: env.into(),
            status: "ok".into(),
            reason: None,
            samples_ns: samples,
            summary: Some(s),
        },
        Err(e) => Record {
            row: row.into(),
            env: env.into(),
            status: "failed".into(),
            reason: Some(e.to_string()),
            samples_ns: samples,
            summary: None,
        },
    }
}

/// Runs the whole suite: the victim in every environment, then the
/// embedded-call row on each of pkbpf's engines.
pub fn run_suite(opts: &SuiteOptions) -> Result<Report, BenchError> {
    std::fs::create_dir_all(&opts.workdir).map_err(|source| BenchError::Io {
        path: opts.workdir.clone(),
        source,
    })?;
    let target = build_target(&opts.workdir)?;
    let setup = Setup {
        workdir: opts.workdir.clone(),
        target,
        iterations: opts.iterations,
    };
    let mut envs = environments();
    let total = ((envs.len() + EMBED_ENGINES.len()) * opts.runs) as u64;
    let pb = progress_bar(total, opts.progress);
    let mut records = Vec::new();
    for env in envs.iter_mut() {
        pb.set_message(format!("{}: preparing", env.name()));
        let ready = env.prepare(&setup);
        if ready != Readiness::Ready {
            for row in env.rows() {
                records.push(Record {
                    row,
                    env: env.name().into(),
                    status: ready.status().into(),
                    reason: ready.reason().map(String::from),
                    samples_ns: Vec::new(),
                    summary: None,
                });
            }
            pb.inc(opts.runs as u64);
            continue;
        }
        let mut per_row: BTreeMap<String, Vec<Cell>> = BTreeMap::new();
        let mut failure = None;
        for run in 0..opts.runs {
            pb.set_message(format!("{}: run {}/{}", env.name(), run + 1, opts.runs));
            match env.run_once(&setup) {
                Ok(cells) => {
                    for (row, c) in cells {
                        per_row.entry(row).or_default().push(c);
                    }
                }
                Err(e) => {
                    failure = Some(error_chain(&e));
                    break;
                }
            }
            pb.inc(1);
        }
        env.finish();
        for row in env.rows() {
            let rec = match (&failure, per_row.get(&row)) {
                (Some(why), _) => Record {
                    row: row.clone(),
                    env: env.name().into(),
                    status: "failed".into(),
                    reason: Some(why.clone()),
                    samples_ns: Vec::new(),
                    summary: None,
                },
                (None, Some(cells)) => record(&row, env.name(), cells),
                (None, None) => Record {
                    row: row.clone(),
                    env: env.name().into(),
                    status: "failed".into(),
                    reason: Some("no result for this row".into()),
                    samples_ns: Vec::new(),
                    summary: None,
                },
            };
            records.push(rec);
        }
    }
    records.extend(embedded_records(opts, &pb));
    pb.finish_and_clear();
    Ok(Report {
        schema: SCHEMA.into(),
        system: SystemInfo::collect(),
        iterations: opts.iterations,
        runs: opts.runs,
        records,
    })
}

fn failed(env: &str, why: String) -> Record {
    Record {
        row: EMBED_ROW.into(),
        env: env.into(),
        status: "failed".into(),
        reason: Some(why),
        samples_ns: Vec::new(),
        summary: None,
    }
}

/// The embedded-call row: the uprobe program, expected to return 1 for an
/// argument of 42, called `iterations` times per run through the embedding
/// API, on each of [`EMBED_ENGINES`].
fn embedded_records(opts: &SuiteOptions, pb: &ProgressBar) -> Vec<Record> {
    pb.set_message("embedded call");
    let mut out = Vec::new();
    for cfg in EMBED_ENGINES {
        if cfg.mpk {
            if let Some(reason) = mpk_unavailable_reason() {
                out.push(Record {
                    row: EMBED_ROW.into(),
                    env: cfg.name.into(),
                    status: "unavailable".into(),
                    reason: Some(reason),
                    samples_ns: Vec::new(),
                    summary: None,
                });
                continue;
            }
        }
        let obj = match load_embed_object(&opts.workdir, &cfg) {
            Ok(o) => o,
            Err(e) => {
                out.push(failed(cfg.name, error_chain(&e)));
                continue;
            }
        };
        let mut cells = Vec::new();
        for _ in 0..opts.runs {
            match time_calls(&obj, opts.iterations) {
                Ok(t) if t.r0 == 1 => cells.push(Cell::Ns(t.ns)),
                Ok(t) => {
                    cells = vec![Cell::NotRun(format!(
                        "returned {} for argument 42, expected 1",
                        t.r0
                    ))];
                    break;
                }
                Err(e) => {
                    cells = vec![Cell::NotRun(error_chain(&e))];
                    break;
                }
            }
            pb.inc(1);
        }
        let mut rec = record(EMBED_ROW, cfg.name, &cells);
        if rec.status == "not_run" {
            rec.status = "failed".into();
        }
        out.push(rec);
    }
    out
}
