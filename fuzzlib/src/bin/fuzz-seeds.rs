//! Writes the fuzz targets' seed corpora (see `pkbpf_fuzzlib::seeds`).
//!
//! Usage: `fuzz-seeds OUT_DIR CONFORMANCE_DIR [OBJECT.bpf.o ...]`

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [out, conf, objects @ ..] = args.as_slice() else {
        eprintln!("usage: fuzz-seeds OUT_DIR CONFORMANCE_DIR [OBJECT.bpf.o ...]");
        return ExitCode::from(2);
    };
    match pkbpf_fuzzlib::seeds::write_corpora(out, conf, objects) {
        Ok(s) => {
            println!(
                "seeds: {} conformance cases ({} skipped), {} objects under {}",
                s.cases,
                s.skipped,
                s.objects,
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("fuzz-seeds: {msg}");
            ExitCode::FAILURE
        }
    }
}
