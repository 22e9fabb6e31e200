//! The bpf_conformance corpus on both engines: every positive test must give
//! its expected r0 on the interpreter and the JIT, with the same memory.

mod jit_support;

use std::path::PathBuf;

use jit_support::both;
use pkbpf_verifier::asm::assemble;

fn corpus_dir() -> PathBuf {
    match std::env::var_os("PKBPF_CONFORMANCE_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/bpf_conformance")
        }
    }
}

/// `(asm, mem, expected r0)` of one `.data` file.
fn parse(text: &str) -> (String, Vec<u8>, u64) {
    let mut section = "";
    let (mut asm, mut mem, mut result) = (String::new(), Vec::new(), None);
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
            "mem" => mem.extend(
                line.split_whitespace()
                    .map(|b| u8::from_str_radix(b, 16).expect("mem byte")),
            ),
            "result" if !line.trim().is_empty() => {
                let t = line.trim();
                result = Some(match t.strip_prefix("0x") {
                    Some(h) => u64::from_str_radix(h, 16).expect("hex result"),
                    None => t.parse::<i64>().expect("decimal result") as u64,
                });
            }
            _ => {}
        }
    }
    (asm, mem, result.expect("a result section"))
}

#[test]
fn every_positive_corpus_program_agrees_and_gives_its_result() {
    let dir = corpus_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        println!(
            "skipped: every_positive_corpus_program_agrees_and_gives_its_result: no corpus at {}",
            dir.display()
        );
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "data"))
        .collect();
    files.sort();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let (asm, mem, want) = parse(&text);
        let prog = assemble(&asm).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (r0, _) = both(&prog, &mem);
        assert_eq!(r0, Ok(want), "{}", path.display());
    }
    assert_eq!(files.len(), 313, "corpus size changed");
}
