//! Every positive bpf_conformance program verifies in the conformance
//! environment (`r1` = input memory of the `-- mem` size, `r2` = its size,
//! the unwind helper as id 5), except the few listed below with their reason.

use pkbpf_verifier::asm::assemble;
use pkbpf_verifier::{verify, ProgramEnv, Reason};
use std::path::PathBuf;

/// Programs the verifier rejects on purpose, with the reason variant expected.
const ALLOWED_REJECTIONS: &[(&str, &str)] = &[];

fn corpus_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("PKBPF_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/corpus/bpf_conformance"
            ))
        });
    dir.is_dir().then_some(dir)
}

/// The `-- asm` section and the byte length of the `-- mem` section.
fn parse(text: &str) -> (String, u32) {
    let mut section = "";
    let mut asm = String::new();
    let mut mem = 0u32;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("-- ") {
            section = name.trim();
            continue;
        }
        match section {
            "asm" => {
                asm.push_str(line);
                asm.push('\n');
            }
            "mem" => {
                mem += line
                    .split_whitespace()
                    .filter(|t| u8::from_str_radix(t, 16).is_ok())
                    .count() as u32
            }
            _ => {}
        }
    }
    (asm, mem)
}

fn reason_name(r: &Reason) -> String {
    format!("{r:?}")
        .split([' ', '{', '('])
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn conformance_programs_verify() {
    let Some(dir) = corpus_dir() else {
        println!("skipped: conformance_programs_verify: corpus not found");
        return;
    };
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "data"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 300,
        "expected the 313 positive programs, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    let mut accepted = 0;
    for f in &files {
        let name = f.file_stem().unwrap().to_string_lossy().to_string();
        let (asm, mem) = parse(&std::fs::read_to_string(f).unwrap());
        let prog = assemble(&asm).unwrap_or_else(|e| panic!("{name}: {e}"));
        let env = ProgramEnv::conformance(mem);
        let allowed = ALLOWED_REJECTIONS.iter().find(|(n, _)| *n == name);
        match (verify(&prog, &env), allowed) {
            (Ok(_), None) => accepted += 1,
            (Ok(_), Some(_)) => failures.push(format!("{name}: accepted but listed as rejected")),
            (Err(e), Some((_, want))) if reason_name(&e.reason) == *want => {}
            (Err(e), _) => failures.push(format!("{name}: insn {}: {e}", e.insn)),
        }
    }
    println!("accepted {accepted} of {}", files.len());
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
