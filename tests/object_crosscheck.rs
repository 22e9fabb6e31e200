//! Cross-checks of the loader against LLVM and bpftool: instruction counts
//! per section (`llvm-objdump -d`), where relocations land (`llvm-objdump
//! -r`), and the BTF type table (`bpftool btf dump file`). Each check prints a
//! skip line when its tool is missing.

mod common;

use pkbpf::object::{MapKind, Object};
use pkbpf::verifier::isa::{CallTarget, Insn, LdPseudo};
use std::collections::HashMap;

fn objects(test: &str) -> Vec<(&'static str, std::path::PathBuf, Object)> {
    let mut v = Vec::new();
    for name in common::ALL {
        let Some(path) = common::compile(test, name) else {
            return Vec::new();
        };
        let obj = Object::parse(&common::read(&path)).unwrap_or_else(|e| panic!("{name}: {e}"));
        v.push((name, path, obj));
    }
    v
}

/// Instruction lines per section in `llvm-objdump -d` output.
fn objdump_counts(text: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        if let Some(s) = line.strip_prefix("Disassembly of section ") {
            cur = Some(s.trim_end_matches(':').to_string());
            counts.insert(cur.clone().unwrap(), 0);
        } else if let Some(sec) = &cur {
            let t = line.trim_start();
            let is_insn = t.split_once(':').is_some_and(|(n, rest)| {
                !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && rest.starts_with('\t')
            });
            if is_insn {
                *counts.get_mut(sec).unwrap() += 1;
            }
        }
    }
    counts
}

#[test]
fn instruction_counts_match_llvm_objdump() {
    if !common::have("llvm-objdump") {
        return common::skip(
            "instruction_counts_match_llvm_objdump",
            "llvm-objdump not found",
        );
    }
    for (name, path, obj) in objects("instruction_counts_match_llvm_objdump") {
        let counts = objdump_counts(&common::run(
            "llvm-objdump",
            &["-d", "--no-show-raw-insn"],
            &path,
        ));
        let mut ours: HashMap<&str, usize> = HashMap::new();
        for p in obj.programs() {
            *ours.entry(p.section.as_str()).or_default() += p.insns[..p.own_len]
                .iter()
                .filter(|i| **i != Insn::LdImm64Hi)
                .count();
        }
        for (sec, n) in &counts {
            if sec == ".text" {
                continue; // subprograms: counted inside the programs that call them
            }
            assert_eq!(ours.get(sec.as_str()), Some(n), "{name}: section {sec}");
        }
        assert_eq!(
            ours.len(),
            counts.keys().filter(|s| *s != ".text").count(),
            "{name}"
        );
    }
}

#[test]
fn relocations_land_where_llvm_objdump_says() {
    if !common::have("llvm-objdump") {
        return common::skip(
            "relocations_land_where_llvm_objdump_says",
            "llvm-objdump not found",
        );
    }
    let mut checked = 0;
    for (name, path, obj) in objects("relocations_land_where_llvm_objdump_says") {
        let text = common::run("llvm-objdump", &["-r"], &path);
        let mut sec = String::new();
        for line in text.lines() {
            if let Some(s) = line.strip_prefix("RELOCATION RECORDS FOR [") {
                sec = s.trim_end_matches("]:").to_string();
                continue;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() != 3 || !f[1].starts_with("R_BPF_64_") {
                continue;
            }
            let progs: Vec<_> = obj.programs().iter().filter(|p| p.section == sec).collect();
            if progs.len() != 1 {
                continue; // .text and debug sections
            }
            let p = progs[0];
            let slot = usize::from_str_radix(f[0], 16).unwrap() / 8;
            let insn = p.insns[slot];
            match (f[1], f[2]) {
                ("R_BPF_64_64", sym) => {
                    if let Some(m) = obj.maps().iter().position(|m| m.name == sym) {
                        let regular = obj.maps()[m].kind == MapKind::Regular;
                        let want = if regular {
                            LdPseudo::MapIdx
                        } else {
                            LdPseudo::MapIdxValue
                        };
                        assert!(
                            matches!(insn, Insn::LdPseudo { kind, imm, .. } if kind == want && imm as usize == m),
                            "{name}: {sec}+{slot} against {sym}: {insn:?}"
                        );
                    } else if let Insn::LdPseudo {
                        kind: LdPseudo::Func,
                        ..
                    } = insn
                    {
                        // A function pointer (bpf_loop callback) into .text.
                        let t = insn.branch_target(slot).unwrap() as usize;
                        assert!(t >= p.own_len && t < p.insns.len(), "{name}: {sym}");
                    } else {
                        // A variable in a data section.
                        let Insn::LdPseudo {
                            kind: LdPseudo::MapIdxValue,
                            imm,
                            next_imm,
                            ..
                        } = insn
                        else {
                            panic!("{name}: {sec}+{slot} against {sym}: {insn:?}");
                        };
                        let map = &obj.maps()[imm as usize];
                        let var = obj
                            .globals(map)
                            .into_iter()
                            .find(|g| g.name == sym)
                            .unwrap();
                        assert_eq!(next_imm as u32, var.offset, "{name}: {sym}");
                    }
                }
                ("R_BPF_64_32", _) => {
                    let Insn::Call(CallTarget::Local(_)) = insn else {
                        panic!("{name}: {sec}+{slot}: {insn:?}");
                    };
                    let t = insn.branch_target(slot).unwrap() as usize;
                    assert!(
                        t >= p.own_len && t < p.insns.len(),
                        "{name}: call into appended code"
                    );
                }
                (other, _) => panic!("{name}: unexpected relocation {other} in {sec}"),
            }
            checked += 1;
        }
    }
    if checked > 0 {
        assert!(checked >= 20, "only {checked} relocations checked");
    }
}

#[test]
fn btf_matches_bpftool() {
    if !common::have("bpftool")
        && std::process::Command::new("bpftool")
            .arg("version")
            .output()
            .is_err()
    {
        return common::skip("btf_matches_bpftool", "bpftool not found");
    }
    for (name, path, obj) in objects("btf_matches_bpftool") {
        let text = common::run("bpftool", &["btf", "dump", "file"], &path);
        let btf = obj.btf().expect("BTF");
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with('[')).collect();
        assert_eq!(lines.len(), btf.len(), "{name}: type count");
        for (line, (id, t)) in lines.iter().zip(btf.types()) {
            let want_name = match btf.string(t.name_off()) {
                "" => "(anon)",
                s => s,
            };
            let expect = format!("[{id}] {} '{want_name}'", t.kind_name());
            assert!(line.starts_with(&expect), "{name}: `{line}` vs `{expect}`");
        }
    }
}

#[test]
fn btf_dump_matches_bpftool_line_for_line() {
    if std::process::Command::new("bpftool")
        .arg("version")
        .output()
        .is_err()
    {
        return common::skip(
            "btf_dump_matches_bpftool_line_for_line",
            "bpftool not found",
        );
    }
    for (name, path, _) in objects("btf_dump_matches_bpftool_line_for_line") {
        // bpftool shows the file's BTF as written (DATASEC sizes still 0), so
        // compare the raw section, not the loader's fixed-up copy.
        let bytes = common::read(&path);
        let elf = goblin::elf::Elf::parse(&bytes).unwrap();
        let sh = elf
            .section_headers
            .iter()
            .find(|s| elf.shdr_strtab.get_at(s.sh_name) == Some(".BTF"))
            .unwrap();
        let raw = &bytes[sh.sh_offset as usize..(sh.sh_offset + sh.sh_size) as usize];
        let ours = pkbpf::btf::Btf::parse(raw).unwrap().dump_raw();
        let theirs = common::run("bpftool", &["btf", "dump", "file"], &path);
        for (i, (a, b)) in ours.lines().zip(theirs.lines()).enumerate() {
            assert_eq!(a, b, "{name}: line {}", i + 1);
        }
        assert_eq!(ours.lines().count(), theirs.lines().count(), "{name}");
    }
}
