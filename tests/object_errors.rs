//! Bad input to the object loader: truncated and corrupted ELF and BTF, the
//! wrong machine, relocations against missing symbols or in the wrong place,
//! unsupported map types, sections and externs, unsatisfiable CO-RE — each a
//! typed error — and a property test that mutated real objects never panic.

mod common;

use goblin::elf::Elf;
use pkbpf::btf::{BtfError, CoreError};
use pkbpf::object::{Object, ObjectError};
use proptest::prelude::*;

fn bytes(test: &str, name: &str) -> Option<Vec<u8>> {
    common::compile(test, name).map(|p| common::read(&p))
}

/// `(file offset, size)` of the named section.
fn section(bytes: &[u8], name: &str) -> (usize, usize) {
    let elf = Elf::parse(bytes).unwrap();
    let s = elf
        .section_headers
        .iter()
        .find(|s| elf.shdr_strtab.get_at(s.sh_name) == Some(name))
        .unwrap_or_else(|| panic!("no section {name}"));
    (s.sh_offset as usize, s.sh_size as usize)
}

#[test]
fn truncated_elf_is_an_error() {
    let Some(b) = bytes("truncated_elf_is_an_error", "bench_uprobe") else {
        return;
    };
    for len in [0, 4, 30, 63] {
        assert!(
            matches!(Object::parse(&b[..len]), Err(ObjectError::Elf { .. })),
            "len {len}"
        );
    }
    // Cut inside the section data: the headers survive, the data does not.
    let (off, _) = section(&b, ".BTF");
    let e = Object::parse(&b[..off + 8]).unwrap_err();
    assert!(
        matches!(
            e,
            ObjectError::Elf { .. } | ObjectError::SectionOutOfBounds { .. }
        ),
        "{e}"
    );
}

#[test]
fn wrong_machine_is_rejected() {
    let Some(mut b) = bytes("wrong_machine_is_rejected", "bench_uprobe") else {
        return;
    };
    b[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    assert_eq!(
        Object::parse(&b).unwrap_err(),
        ObjectError::WrongMachine { machine: 62 }
    );
}

#[test]
fn corrupted_btf_is_an_error() {
    let Some(orig) = bytes("corrupted_btf_is_an_error", "bench_maps") else {
        return;
    };
    let (off, size) = section(&orig, ".BTF");
    let mut b = orig.clone();
    b[off] = 0;
    assert!(matches!(
        Object::parse(&b).unwrap_err(),
        ObjectError::Btf {
            section: ".BTF",
            source: BtfError::BadMagic { .. }
        }
    ));
    // A string section that runs past the end of .BTF.
    let mut b = orig.clone();
    b[off + 20..off + 24].copy_from_slice(&(size as u32 * 2).to_le_bytes());
    assert!(matches!(
        Object::parse(&b).unwrap_err(),
        ObjectError::Btf {
            section: ".BTF",
            source: BtfError::BadRange {
                what: "string section",
                ..
            }
        }
    ));
    // First type's kind set to 31 (undefined).
    let mut b = orig.clone();
    let hdr = u32::from_le_bytes(b[off + 4..off + 8].try_into().unwrap()) as usize;
    b[off + hdr + 7] = 31;
    assert!(matches!(
        Object::parse(&b).unwrap_err(),
        ObjectError::Btf {
            section: ".BTF",
            source: BtfError::UnknownKind { id: 1, kind: 31 }
        }
    ));
    // .BTF.ext with a bad magic.
    let (xoff, _) = section(&orig, ".BTF.ext");
    let mut b = orig.clone();
    b[xoff + 1] = 0;
    assert!(matches!(
        Object::parse(&b).unwrap_err(),
        ObjectError::Btf {
            section: ".BTF.ext",
            source: BtfError::BadMagic { .. }
        }
    ));
}

/// Rewrites the first relocation of `.rel<section>` with `f(r_offset, r_info)`.
fn patch_first_reloc(b: &mut [u8], section_name: &str, f: impl Fn(u64, u64) -> (u64, u64)) {
    let (off, _) = section(b, &format!(".rel{section_name}"));
    let r_offset = u64::from_le_bytes(b[off..off + 8].try_into().unwrap());
    let r_info = u64::from_le_bytes(b[off + 8..off + 16].try_into().unwrap());
    let (o, i) = f(r_offset, r_info);
    b[off..off + 8].copy_from_slice(&o.to_le_bytes());
    b[off + 8..off + 16].copy_from_slice(&i.to_le_bytes());
}

#[test]
fn relocation_against_missing_symbol() {
    let Some(mut b) = bytes("relocation_against_missing_symbol", "bench_maps") else {
        return;
    };
    let sec = "uprobe/benchmark/test:__bench_array_map";
    patch_first_reloc(&mut b, sec, |o, info| {
        (o, (9999 << 32) | (info & 0xffff_ffff))
    });
    match Object::parse(&b).unwrap_err() {
        ObjectError::MissingSymbol { section, index, .. } => {
            assert_eq!((section.as_str(), index), (sec, 9999));
        }
        e => panic!("unexpected {e}"),
    }
}

#[test]
fn relocation_in_the_wrong_place() {
    let Some(mut b) = bytes("relocation_in_the_wrong_place", "bench_maps") else {
        return;
    };
    let sec = "uprobe/benchmark/test:__bench_array_map";
    // Point the map relocation at the program's last instruction (exit).
    let (_, size) = section(&b, sec);
    patch_first_reloc(&mut b, sec, |_, info| (size as u64 - 8, info));
    match Object::parse(&b).unwrap_err() {
        ObjectError::BadRelocation {
            section,
            symbol,
            reason,
            ..
        } => {
            assert_eq!(section, sec);
            assert_eq!(symbol, "bench_array");
            assert!(reason.contains("not lddw"), "{reason}");
        }
        e => panic!("unexpected {e}"),
    }
    // An unknown relocation type in code.
    let Some(mut b) = bytes("relocation_in_the_wrong_place", "bench_maps") else {
        return;
    };
    patch_first_reloc(&mut b, sec, |o, info| (o, (info & !0xffff_ffff) | 7));
    assert!(matches!(
        Object::parse(&b).unwrap_err(),
        ObjectError::BadRelocation { reason, .. } if reason.contains("type 7")
    ));
}

/// fuzz `object` timeout-2be6606c (found by the CI smoke): an `lddw`
/// function pointer (a bpf_loop callback's relocation) whose addend points
/// past the end of its code section made the linker copy functions for
/// ever. The slot is now checked like a call target's.
#[test]
fn function_pointer_outside_its_section_is_rejected() {
    let test = "function_pointer_outside_its_section_is_rejected";
    let Some(mut b) = bytes(test, "loop_callbacks") else {
        return;
    };
    let (rel, _) = section(&b, ".relextension");
    let r_offset = u64::from_le_bytes(b[rel..rel + 8].try_into().unwrap()) as usize;
    let (code, _) = section(&b, "extension");
    // The relocated lddw's imm (the addend into .text): far past its end.
    let imm = code + r_offset + 4;
    b[imm..imm + 4].copy_from_slice(&0x7fff_fff8i32.to_le_bytes());
    // In a thread: a regression would hang, not fail.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(match Object::parse(&b) {
            Ok(_) => Ok(()),
            Err(e) => Err((
                matches!(&e, ObjectError::BadRelocation { reason, .. } if reason.contains("outside the section")),
                e.to_string(),
            )),
        });
    });
    let got = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("Object::parse finishes");
    match got {
        Err((true, _)) => {}
        other => panic!("expected a BadRelocation outside the section, got {other:?}"),
    }
}

#[test]
fn unsupported_map_type_names_the_map() {
    let Some(mut b) = bytes("unsupported_map_type_names_the_map", "embedded") else {
        return;
    };
    let (off, _) = section(&b, "maps");
    b[off..off + 4].copy_from_slice(&99u32.to_le_bytes());
    let e = Object::parse(&b).unwrap_err();
    assert_eq!(
        e,
        ObjectError::UnsupportedMapType {
            map: "legacy_counts".into(),
            type_num: 99
        }
    );
    assert_eq!(
        e.to_string(),
        "map `legacy_counts`: unsupported map type 99"
    );
}

#[test]
fn malformed_uprobe_section_is_rejected() {
    let Some(mut b) = bytes("malformed_uprobe_section_is_rejected", "bench_uprobe") else {
        return;
    };
    let old = b"uprobe/benchmark/test:__bench_uprobe\0";
    let new = b"uprobe/benchmark/test___bench_uprobe\0";
    let mut n = 0;
    for i in 0..b.len() - old.len() {
        if &b[i..i + old.len()] == old {
            b[i..i + old.len()].copy_from_slice(new);
            n += 1;
        }
    }
    assert!(n > 0);
    match Object::parse(&b).unwrap_err() {
        ObjectError::UnsupportedSection { section, reason } => {
            assert_eq!(section, "uprobe/benchmark/test___bench_uprobe");
            assert!(reason.contains("PATH:FUNC"), "{reason}");
        }
        e => panic!("unexpected {e}"),
    }
}

#[test]
fn kconfig_extern_is_rejected() {
    let Some(b) = bytes("kconfig_extern_is_rejected", "bad/kconfig_extern") else {
        return;
    };
    assert_eq!(
        Object::parse(&b).unwrap_err(),
        ObjectError::ExternSymbol {
            symbol: "LINUX_KERNEL_VERSION".into()
        }
    );
}

#[test]
fn unsatisfiable_core_relocation_names_program_and_access() {
    let Some(b) = bytes(
        "unsatisfiable_core_relocation_names_program_and_access",
        "bad/core_unknown_type",
    ) else {
        return;
    };
    let e = Object::parse(&b).unwrap_err();
    let ObjectError::Core {
        program,
        section,
        source,
    } = &e
    else {
        panic!("unexpected {e}");
    };
    assert_eq!(
        (program.as_str(), section.as_str()),
        ("read_task", "uprobe")
    );
    match source.as_ref() {
        CoreError::Unresolved {
            insn,
            access,
            type_name,
            ..
        } => {
            assert_eq!(*insn, 0);
            assert_eq!(access, "0:1");
            assert_eq!(type_name, "struct task_struct");
        }
        other => panic!("unexpected {other}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("read_task") && msg.contains("\"0:1\"") && msg.contains("insn 0"),
        "{msg}"
    );
}

#[test]
fn code_size_not_multiple_of_eight() {
    let Some(mut b) = bytes("code_size_not_multiple_of_eight", "embedded") else {
        return;
    };
    // Shrink the `extension` section header's sh_size by 4.
    let elf = Elf::parse(&b).unwrap();
    let shoff = elf.header.e_shoff as usize;
    let idx = elf
        .section_headers
        .iter()
        .position(|s| elf.shdr_strtab.get_at(s.sh_name) == Some("extension"))
        .unwrap();
    let size_at = shoff + idx * 64 + 32;
    let size = u64::from_le_bytes(b[size_at..size_at + 8].try_into().unwrap());
    b[size_at..size_at + 8].copy_from_slice(&(size - 4).to_le_bytes());
    assert_eq!(
        Object::parse(&b).unwrap_err(),
        ObjectError::BadCodeSize {
            section: "extension".into(),
            size: size - 4
        }
    );
}

/// The test objects' bytes, compiled once per process.
fn corpus() -> &'static [Vec<u8>] {
    static C: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        [
            "calls_globals",
            "core_probe",
            "embedded",
            "bench_maps",
            "btf_kinds",
        ]
        .iter()
        .filter_map(|n| bytes("mutated_objects_never_panic", n))
        .collect()
    })
}

/// Offsets of the sections the loader reads most (.BTF, .BTF.ext, code,
/// relocations, maps), so that mutations hit parsed bytes, not DWARF.
fn hot_ranges(b: &[u8]) -> Vec<(usize, usize)> {
    let elf = Elf::parse(b).unwrap();
    let mut v: Vec<(usize, usize)> = elf
        .section_headers
        .iter()
        .filter(|s| {
            let n = elf.shdr_strtab.get_at(s.sh_name).unwrap_or("");
            s.sh_size > 0
                && s.sh_type != goblin::elf::section_header::SHT_NOBITS
                && !n.contains("debug")
        })
        .map(|s| (s.sh_offset as usize, s.sh_size as usize))
        .collect();
    // The ELF header and the section header table themselves.
    v.push((0, 64));
    v.push((elf.header.e_shoff as usize, elf.section_headers.len() * 64));
    v
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Set { at: usize, value: u8 },
    Truncate { len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        4 => (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Set { at, value }),
        1 => any::<usize>().prop_map(|len| Mutation::Truncate { len }),
    ]
}

proptest! {
    // PKBPF_OBJECT_FUZZ_CASES raises the count for a longer local run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PKBPF_OBJECT_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(768),
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_objects_never_panic(
        which in any::<usize>(),
        hot in any::<bool>(),
        range_pick in any::<usize>(),
        muts in prop::collection::vec(mutation(), 1..8),
    ) {
        let c = corpus();
        if c.is_empty() {
            return Ok(());
        }
        let orig = &c[which % c.len()];
        let (base, span) = if hot {
            let r = hot_ranges(orig);
            r[range_pick % r.len()]
        } else {
            (0, orig.len())
        };
        let mut b = orig.clone();
        for m in &muts {
            match *m {
                Mutation::Flip { at, bit } => {
                    let i = base + at % span;
                    if i < b.len() { b[i] ^= 1 << bit; }
                }
                Mutation::Set { at, value } => {
                    let i = base + at % span;
                    if i < b.len() { b[i] = value; }
                }
                Mutation::Truncate { len } => {
                    let l = len % (b.len() + 1);
                    b.truncate(l);
                }
            }
        }
        // Must return, Ok or Err, without panicking; what it accepts must be
        // printable (cyclic or dangling BTF included).
        if let Ok(obj) = Object::parse(&b) {
            if let Some(btf) = obj.btf() {
                let _ = btf.dump_raw();
                for (id, _) in btf.types() {
                    let _ = btf.type_name(id);
                    let _ = btf.size_of(id);
                }
            }
            for m in obj.maps() {
                let _ = obj.globals(m);
            }
            for p in obj.programs() {
                let _ = p.source_lines(obj.btf());
                let _ = p.map_refs();
            }
        }
    }
}

#[test]
fn prog_array_initializer_outside_values_is_rejected() {
    let Some(mut b) = bytes(
        "prog_array_initializer_outside_values_is_rejected",
        "tail_calls",
    ) else {
        return;
    };
    // Move the first initializer onto the definition's `max_entries` field.
    patch_first_reloc(&mut b, ".maps", |_, info| (8, info));
    match Object::parse(&b).unwrap_err() {
        ObjectError::BadRelocation {
            section,
            symbol,
            reason,
            ..
        } => {
            assert_eq!(
                (section.as_str(), symbol.as_str()),
                (".maps", "tail_double")
            );
            assert!(reason.contains("not at an element"), "{reason}");
        }
        e => panic!("unexpected {e}"),
    }
}
