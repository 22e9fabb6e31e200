//! Seed corpora, generated (never stored in the repository) from the
//! bpf_conformance programs and from compiled example objects.
//!
//! [`write_corpora`] fills one directory per fuzz target under `out`:
//!
//! - `verifier/`: each conformance program's bytes after a selector byte
//!   (conformance environment, log levels 0 and 2);
//! - `soundness/`, `jit_diff/`, `isolation/`: each conformance program with
//!   its memory, in [`Case`]'s raw byte form;
//! - `object/`: the given object files, byte for byte.

use std::fs;
use std::path::{Path, PathBuf};

use pkbpf::conformance::TestFile;
use pkbpf_verifier::isa::encode_program;

use crate::gen::Case;

/// Why seeds could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// A directory could not be listed or created, or a file read or written.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SeedError {
    let path = path.to_path_buf();
    move |source| SeedError::Io { op, path, source }
}

/// What [`write_corpora`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeedStats {
    /// Conformance files turned into cases.
    pub cases: usize,
    /// Conformance files skipped (unparseable or not assemblable).
    pub skipped: usize,
    /// Object files copied.
    pub objects: usize,
}

/// The `.data` files of `dir` and of `dir/negative`, sorted; none when `dir`
/// does not exist.
pub fn data_files(dir: &Path) -> Result<Vec<PathBuf>, SeedError> {
    let mut out = Vec::new();
    for d in [dir.to_path_buf(), dir.join("negative")] {
        if !d.is_dir() {
            continue;
        }
        for e in fs::read_dir(&d).map_err(io("list", &d))? {
            let p = e.map_err(io("list", &d))?.path();
            if p.extension().is_some_and(|x| x == "data") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The conformance programs of `dir` as cases (file stem, case); files that
/// do not parse or assemble are counted in the second value.
pub fn conformance_cases(dir: &Path) -> Result<(Vec<(String, Case)>, usize), SeedError> {
    let mut cases = Vec::new();
    let mut skipped = 0;
    for path in data_files(dir)? {
        let case = TestFile::load(&path)
            .ok()
            .and_then(|t| Some((t.insns().ok()?, t.mem)));
        match case {
            Some((insns, mem)) => {
                let stem = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let neg = path.parent().is_some_and(|p| p.ends_with("negative"));
                let name = if neg { format!("neg-{stem}") } else { stem };
                cases.push((name, Case { insns, mem }));
            }
            None => skipped += 1,
        }
    }
    Ok((cases, skipped))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), SeedError> {
    let p = dir.join(name);
    fs::write(&p, bytes).map_err(io("write", &p))
}

/// Writes the seed corpora under `out` (see the module documentation).
pub fn write_corpora(
    out: &Path,
    conformance_dir: &Path,
    objects: &[PathBuf],
) -> Result<SeedStats, SeedError> {
    let dirs = [
        "verifier",
        "soundness",
        "jit_diff",
        "isolation",
        "object",
        "maps_model",
    ];
    for d in dirs {
        let p = out.join(d);
        fs::create_dir_all(&p).map_err(io("create", &p))?;
    }
    let (cases, skipped) = conformance_cases(conformance_dir)?;
    for (name, case) in &cases {
        let prog = encode_program(&case.insns);
        for sel in [0u8, 8] {
            let mut v = vec![sel];
            v.extend_from_slice(&prog);
            write(&out.join("verifier"), &format!("{name}-{sel}"), &v)?;
        }
        let raw = case.to_raw_bytes();
        for d in ["soundness", "jit_diff", "isolation"] {
            write(&out.join(d), name, &raw)?;
        }
    }
    let mut n_obj = 0;
    for o in objects {
        let bytes = fs::read(o).map_err(io("read", o))?;
        let name = o
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("object{n_obj}"));
        write(&out.join("object"), &name, &bytes)?;
        n_obj += 1;
    }
    Ok(SeedStats {
        cases: cases.len(),
        skipped,
        objects: n_obj,
    })
}
