//! Properties of the text forms and the byte encoding, and the assembler over
//! the bpf_conformance corpus.
//!
//! The corpus is found through `PKBPF_CONFORMANCE_DIR`, else at
//! `../shared/corpus/bpf_conformance` next to the workspace; when absent the
//! corpus tests print `skipped: <test>: corpus not found at <path>` and pass.

use std::fs;
use std::path::{Path, PathBuf};

use pkbpf_verifier::asm::{assemble, AsmErrorKind};
use pkbpf_verifier::disasm::{disassemble, insn_to_string};
use pkbpf_verifier::isa::{decode_program, encode_program, Insn, RawInsn};
use pkbpf_verifier::strategies::{
    any_bytes_program, any_insn, any_insn_sequence, any_program, any_raw_slot,
};
use proptest::prelude::*;

// ------------------------------------------------------------ properties ---

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(512)
}

proptest! {
    #![proptest_config(config())]

    /// Encoding a valid instruction and decoding it gives it back.
    #[test]
    fn decode_encode_identity(insn in any_insn()) {
        let mut raw = Vec::new();
        insn.encode_into(&mut raw);
        prop_assert_eq!(raw.len(), insn.slots());
        let back = Insn::decode(&raw, 0);
        prop_assert_eq!(back, Ok(insn));
    }

    /// Well-formed programs survive bytes and back, including the structural
    /// checks of `decode_program`.
    #[test]
    fn program_bytes_roundtrip(p in any_program(40)) {
        prop_assert_eq!(decode_program(&encode_program(&p)), Ok(p));
    }

    /// Printing a program and assembling the text gives the program back.
    #[test]
    fn assemble_disassemble_identity(p in any_program(40)) {
        let text = disassemble(&p);
        let back = assemble(&text);
        prop_assert_eq!(back, Ok(p), "text:\n{}", text);
    }

    /// Each instruction's text (without slot numbers) assembles back to it,
    /// whatever its offsets.
    #[test]
    fn insn_text_identity(insn in any_insn()) {
        let text = insn_to_string(&insn, 0);
        let back = assemble(&text).map(|p| p[0]);
        prop_assert_eq!(back, Ok(insn), "text: {}", text);
    }

    /// Arbitrary-jump sequences encode slot for slot and print one line per
    /// instruction.
    #[test]
    fn insn_sequence_layout(p in any_insn_sequence(30)) {
        let bytes = encode_program(&p);
        prop_assert_eq!(bytes.len(), p.len() * 8);
        let lines = disassemble(&p).lines().count();
        prop_assert_eq!(lines, p.iter().filter(|i| **i != Insn::LdImm64Hi).count());
        prop_assert_eq!(assemble(&disassemble(&p)), Ok(p));
    }

    /// Decoding arbitrary bytes never panics; whatever decodes re-encodes to
    /// the same bytes (no field is silently dropped).
    #[test]
    fn decode_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(p) = decode_program(&bytes) {
            prop_assert_eq!(encode_program(&p), bytes);
        }
    }

    /// Same on slots that look like instructions, so many of them decode;
    /// whatever decodes also survives the text round trip.
    #[test]
    fn decode_plausible_slots(bytes in any_bytes_program(12)) {
        if let Ok(p) = decode_program(&bytes) {
            prop_assert_eq!(encode_program(&p), bytes);
            let text = disassemble(&p);
            prop_assert_eq!(assemble(&text), Ok(p), "text:\n{}", text);
        }
    }

    /// Single slots decoded by `Insn::decode` (no target checks) print and
    /// reassemble to themselves.
    #[test]
    fn decoded_slot_text_identity(slot in any_raw_slot(), hi_imm in any::<i32>()) {
        let raw = [slot, RawInsn::new(0, 0, 0, 0, hi_imm)];
        if let Ok(insn) = Insn::decode(&raw, 0) {
            let text = insn_to_string(&insn, 0);
            let back = assemble(&text).map(|p| p[0]);
            prop_assert_eq!(back, Ok(insn), "text: {}", text);
        }
    }

    /// The assembler never panics on arbitrary text.
    #[test]
    fn assemble_arbitrary_text(text in "\\PC{0,80}(\n\\PC{0,40}){0,3}") {
        let _ = assemble(&text);
    }

    /// ... nor on text made of assembly-like pieces.
    #[test]
    fn assemble_token_soup(words in prop::collection::vec(prop::sample::select(vec![
        "r0", "w1", "%r2", "%r11", "r10", "=", "+=", "s>>=", "-", "+", "*", "(", ")", "[", "]",
        ",", ":", "#", "u32", "s8", "ll", "map", "id", "idx", "func", "pc", "goto", "gotol",
        "if", "call", "callx", "lock", "fetch", "add32", "cmpxchg", "xchg_64", "atomic_fetch_or",
        "skb", "exit", "ja", "jeq32", "lddw", "ldxdw", "stb", "mov32", "movsx832", "be16",
        "0", "1", "-1", "0x7fffffff", "0xffffffffffffffffff", "99999999999999999999999999999999999999999",
        "label:", "label", "\n", "1:", "next_imm", "btf_id", "kfunc", "local", "bpf_map_lookup_elem",
    ]), 0..24)) {
        let text = words.join(" ");
        let _ = assemble(&text);
    }
}

// ---------------------------------------------------------------- corpus ---

fn corpus_dir() -> PathBuf {
    match std::env::var_os("PKBPF_CONFORMANCE_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/corpus/bpf_conformance"
        )),
    }
}

/// The corpus directory, or `None` after printing the skip line.
fn corpus(test: &str) -> Option<PathBuf> {
    let d = corpus_dir();
    if d.is_dir() {
        Some(d)
    } else {
        println!("skipped: {test}: corpus not found at {}", d.display());
        None
    }
}

/// The `.data` files of a directory, sorted.
fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "data"))
        .collect();
    v.sort();
    v
}

/// A section (`-- name` up to the next `-- ` line) of a `.data` file.
fn section(text: &str, name: &str) -> Option<String> {
    let mut out: Option<String> = None;
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("-- ") {
            if out.is_some() {
                break;
            }
            if h.trim() == name {
                out = Some(String::new());
            }
            continue;
        }
        if let Some(s) = out.as_mut() {
            s.push_str(line);
            s.push('\n');
        }
    }
    out
}

/// A `-- raw` section as bytes: one `0x<u64>` per slot (the slot read as a
/// little-endian integer) or 8 hex bytes per line.
fn raw_bytes(raw: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in raw
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if let Some(h) = line.strip_prefix("0x") {
            let v = u64::from_str_radix(h, 16).unwrap_or_else(|e| panic!("{line}: {e}"));
            out.extend_from_slice(&v.to_le_bytes());
        } else {
            for b in line.split_whitespace() {
                out.push(u8::from_str_radix(b, 16).unwrap_or_else(|e| panic!("{line}: {e}")));
            }
        }
    }
    out
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn corpus_positive_files_assemble() {
    let Some(dir) = corpus("corpus_positive_files_assemble") else {
        return;
    };
    let files = data_files(&dir);
    assert!(
        files.len() >= 313,
        "only {} files in {}",
        files.len(),
        dir.display()
    );
    let mut failures = Vec::new();
    for f in &files {
        let text = read(f);
        let Some(asm) = section(&text, "asm") else {
            failures.push(format!("{}: no -- asm section", f.display()));
            continue;
        };
        if let Err(e) = assemble(&asm) {
            failures.push(format!("{}: {e}", f.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn corpus_raw_sections_equal_assembly() {
    let Some(dir) = corpus("corpus_raw_sections_equal_assembly") else {
        return;
    };
    let mut checked = 0;
    for f in data_files(&dir) {
        let text = read(&f);
        let (Some(asm), Some(raw)) = (section(&text, "asm"), section(&text, "raw")) else {
            continue;
        };
        let p = assemble(&asm).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(encode_program(&p), raw_bytes(&raw), "{}", f.display());
        checked += 1;
    }
    assert!(checked >= 1, "no file has both -- asm and -- raw");
}

/// Every positive program prints and reassembles to itself.
#[test]
fn corpus_disassembly_reassembles() {
    let Some(dir) = corpus("corpus_disassembly_reassembles") else {
        return;
    };
    for f in data_files(&dir) {
        let Some(asm) = section(&read(&f), "asm") else {
            continue;
        };
        let p = assemble(&asm).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let text = disassemble(&p);
        assert_eq!(assemble(&text).as_ref(), Ok(&p), "{}:\n{text}", f.display());
    }
}

#[test]
fn corpus_invalid_files_fail_to_assemble() {
    let Some(dir) = corpus("corpus_invalid_files_fail_to_assemble") else {
        return;
    };
    let mut seen = 0;
    for f in data_files(&dir.join("negative")) {
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if !name.starts_with("invalid_") {
            continue;
        }
        let asm = section(&read(&f), "asm").unwrap_or_default();
        match assemble(&asm) {
            Ok(p) => panic!("{name}: assembled to {p:?}"),
            Err(e) => println!("{name}: {e}"),
        }
        seen += 1;
    }
    assert!(seen >= 11, "only {seen} invalid_* files");
}

/// The specific errors the negative corpus is about.
#[test]
fn corpus_invalid_files_give_the_right_error() {
    let Some(dir) = corpus("corpus_invalid_files_give_the_right_error") else {
        return;
    };
    let neg = dir.join("negative");
    let kind = |name: &str| {
        let asm = section(&read(&neg.join(name)), "asm").unwrap_or_default();
        assemble(&asm).expect_err(name).kind
    };
    assert!(matches!(
        kind("invalid_imm32_dec_range.data"),
        AsmErrorKind::OutOfRange { .. }
    ));
    assert!(matches!(
        kind("invalid_imm32_hex_range.data"),
        AsmErrorKind::OutOfRange { .. }
    ));
    assert!(matches!(
        kind("invalid_label.data"),
        AsmErrorKind::UnknownLabel { .. }
    ));
    assert!(matches!(
        kind("invalid_lock.data"),
        AsmErrorKind::OperandCount { .. }
    ));
    assert!(matches!(
        kind("invalid_lock2.data"),
        AsmErrorKind::OperandCount { .. }
    ));
    assert!(matches!(
        kind("invalid_mnemonic.data"),
        AsmErrorKind::UnknownMnemonic { .. }
    ));
    assert!(matches!(
        kind("invalid_offset.data"),
        AsmErrorKind::Syntax { .. }
    ));
    assert!(matches!(
        kind("invalid_offset_range.data"),
        AsmErrorKind::OutOfRange { .. }
    ));
    assert!(matches!(
        kind("invalid_operand_count.data"),
        AsmErrorKind::OperandCount { .. }
    ));
    assert!(matches!(
        kind("invalid_register.data"),
        AsmErrorKind::InvalidRegister { .. }
    ));
    // The asm section is empty (the next line opens an unknown section).
    assert_eq!(
        kind("invalid_unknown_directive.data"),
        AsmErrorKind::EmptyProgram
    );
}

/// `error.data` is a runtime error (`or %r0, %r10` is valid text), and the
/// `unused-*` files have raw bytes with a non-zero reserved field: they
/// must fail to decode.
#[test]
fn corpus_negative_raw_sections_fail_to_decode() {
    let Some(dir) = corpus("corpus_negative_raw_sections_fail_to_decode") else {
        return;
    };
    let neg = dir.join("negative");
    let error_asm = section(&read(&neg.join("error.data")), "asm").unwrap_or_default();
    assert!(assemble(&error_asm).is_ok());
    let mut seen = 0;
    for f in data_files(&neg) {
        let text = read(&f);
        let (None, Some(raw)) = (section(&text, "asm"), section(&text, "raw")) else {
            continue;
        };
        let r = decode_program(&raw_bytes(&raw));
        assert!(r.is_err(), "{}: decoded to {r:?}", f.display());
        seen += 1;
    }
    assert!(seen >= 40, "only {seen} raw negative files");
}
