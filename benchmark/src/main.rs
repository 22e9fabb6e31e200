//! `pkbpf-bench`: bpftime's benchmark suite (native, kernel, pkbpf) and the
//! engine benchmark (`pkbpf-bench engines`).
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use pkbpf_bench::chart::{write_png, write_svg, ChartData};
use pkbpf_bench::engines::{run_engines, EngineOptions};
use pkbpf_bench::suite::{run_suite, SuiteOptions};
use pkbpf_bench::sysinfo::SystemInfo;
use pkbpf_bench::verifier_bench::{
    default_corpus, run_verifier_bench, VerifierOptions, LOOP_PROGRAM_ROW,
};
use pkbpf_bench::workload::DEFAULT_ITERATIONS;

#[derive(Parser, Debug)]
#[command(
    name = "pkbpf-bench",
    about = "pkbpf benchmarks: bpftime's workloads side by side with the kernel, and the engine comparison"
)]
struct Cli {
    /// Runs per environment.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Calls per target function per run.
    #[arg(long, default_value_t = DEFAULT_ITERATIONS)]
    iterations: u64,
    /// CI smoke test: one run, few calls; checks the harness end to end.
    #[arg(long)]
    quick: bool,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG bar chart here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Write a PNG bar chart here.
    #[arg(long)]
    png: Option<PathBuf>,
    /// Build directory (and default place of report.json, chart.svg,
    /// chart.png); a temporary directory when not given.
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// The engine benchmark: pkbpf's interpreter and JIT, rbpf's interpreter
    /// and JIT, and native code on compute programs.
    Engines {
        /// Runs (samples) per cell.
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Workloads per sample.
        #[arg(long, default_value_t = 20)]
        reps: u64,
        /// One run of one workload: a correctness check.
        #[arg(long)]
        quick: bool,
        /// Write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Only the programs whose name contains this.
        #[arg(long)]
        only: Option<String>,
    },
    /// The verification benchmark: pkbpf's verifier on each program of the
    /// object corpus and on a 4,096-instruction nested-loop program.
    Verifier {
        /// Verifications per program (the median is reported).
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// One verification per program: a smoke test.
        #[arg(long)]
        quick: bool,
        /// Write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Directory of the `*.bpf.c` corpus (default: the repository's tests/bpf).
        #[arg(long)]
        corpus: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let workdir = cli.out.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&workdir).with_context(|| format!("creating {}", workdir.display()))?;
    if let Some(Cmd::Verifier {
        runs,
        quick,
        json,
        corpus,
    }) = &cli.cmd
    {
        let opts = VerifierOptions {
            runs: if *quick { 1 } else { (*runs).max(1) },
            corpus: corpus.clone().unwrap_or_else(default_corpus),
            workdir: workdir.clone(),
        };
        println!("{}", SystemInfo::collect().line());
        let rep = run_verifier_bench(&opts)?;
        print!("{}", rep.table());
        if let Some(path) = json {
            let text = serde_json::to_string_pretty(&rep)?;
            std::fs::write(path, text + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
        let generated = rep.get(LOOP_PROGRAM_ROW).map(|r| r.verdict.clone());
        if generated.as_deref() != Some("accepted") {
            bail!("the generated loop program was not accepted: {generated:?}");
        }
        return Ok(());
    }
    if let Some(Cmd::Engines {
        runs,
        reps,
        quick,
        json,
        only,
    }) = cli.cmd
    {
        let opts = if quick {
            EngineOptions {
                runs: 1,
                reps: 1,
                only,
            }
        } else {
            EngineOptions {
                runs: runs.max(1),
                reps: reps.max(1),
                only,
            }
        };
        println!("{}", SystemInfo::collect().line());
        let rep = run_engines(&workdir, opts)?;
        print!("{}", rep.table());
        if let Some(path) = json {
            let text = serde_json::to_string_pretty(&rep)?;
            std::fs::write(&path, text + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
        let failures = rep.failures();
        if !failures.is_empty() {
            bail!(
                "{} engine result(s) disagree with native or failed",
                failures.len()
            );
        }
        return Ok(());
    }
    let (runs, iterations) = if cli.quick {
        (1, 1000)
    } else {
        (cli.runs.max(1), cli.iterations.max(1))
    };
    let opts = SuiteOptions {
        runs,
        iterations,
        workdir: workdir.clone(),
        progress: !cli.no_progress,
    };
    let report = run_suite(&opts)?;
    print!("{}", report.text());
    let json = cli
        .json
        .or_else(|| cli.out.as_ref().map(|d| d.join("report.json")));
    let svg = cli
        .svg
        .or_else(|| cli.out.as_ref().map(|d| d.join("chart.svg")));
    let png = cli
        .png
        .or_else(|| cli.out.as_ref().map(|d| d.join("chart.png")));
    if let Some(p) = &json {
        report.write_json(p)?;
        println!("wrote {}", p.display());
    }
    let data = ChartData::from_report(&report);
    if let Some(p) = &svg {
        write_svg(&data, p)?;
        println!("wrote {}", p.display());
    }
    if let Some(p) = &png {
        write_png(&data, p)?;
        println!("wrote {}", p.display());
    }
    let failed: Vec<_> = report
        .records
        .iter()
        .filter(|r| r.status == "failed")
        .collect();
    if !failed.is_empty() {
        for r in &failed {
            eprintln!(
                "failed: {} on {}: {}",
                r.row,
                r.env,
                r.reason.clone().unwrap_or_default()
            );
        }
        bail!("{} row(s) failed", failed.len());
    }
    Ok(())
}
