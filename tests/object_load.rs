//! Loading the clang-compiled test objects in `tests/bpf/`: program kinds,
//! attach targets, maps, relocations, static linking, CO-RE, line info.

mod common;

use pkbpf::object::{AttachTarget, MapKind, Object, ProgramKind};
use pkbpf::verifier::isa::{CallTarget, Insn, LdPseudo, MemSize, Reg};
use pkbpf_maps::MapType;

fn load(test: &str, name: &str) -> Option<Object> {
    let path = common::compile(test, name)?;
    let bytes = common::read(&path);
    Some(Object::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}")))
}

#[test]
fn every_test_object_loads() {
    for name in common::ALL {
        let Some(obj) = load("every_test_object_loads", name) else {
            return;
        };
        assert!(!obj.programs().is_empty(), "{name}: no programs");
        for p in obj.programs() {
            assert!(!p.insns.is_empty(), "{name}/{}: empty", p.name);
            assert!(p.own_len <= p.insns.len());
        }
        assert!(!obj.license().is_empty(), "{name}: no license");
    }
}

#[test]
fn bench_uprobe_kinds_and_targets() {
    let Some(obj) = load("bench_uprobe_kinds_and_targets", "bench_uprobe") else {
        return;
    };
    let t = |sym: &str| {
        Some(AttachTarget {
            path: "benchmark/test".into(),
            symbol: Some(sym.into()),
            offset: 0,
        })
    };
    let kinds: Vec<(&str, &ProgramKind)> = obj
        .programs()
        .iter()
        .map(|p| (p.name.as_str(), &p.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (
                "bench_uprobe",
                &ProgramKind::Uprobe {
                    target: t("__bench_uprobe")
                }
            ),
            (
                "bench_uretprobe",
                &ProgramKind::Uretprobe {
                    target: t("__bench_uretprobe")
                }
            ),
            (
                "bench_uprobe_both_entry",
                &ProgramKind::Uprobe {
                    target: t("__bench_uprobe_uretprobe")
                }
            ),
            (
                "bench_uprobe_both_exit",
                &ProgramKind::Uretprobe {
                    target: t("__bench_uprobe_uretprobe")
                }
            ),
        ]
    );
    assert_eq!(obj.license(), "GPL");
    assert!(obj.maps().is_empty());
}

#[test]
fn bench_maps_btf_definitions() {
    let Some(obj) = load("bench_maps_btf_definitions", "bench_maps") else {
        return;
    };
    let btf = obj.btf().expect("BTF");
    let expect = [
        ("bench_array", MapType::Array, 0),
        ("bench_hash", MapType::Hash, 0),
        ("bench_percpu_array", MapType::PerCpuArray, 0),
        ("bench_percpu_hash", MapType::PerCpuHash, 1), // BPF_F_NO_PREALLOC
    ];
    assert_eq!(obj.maps().len(), 4);
    for (m, (name, ty, flags)) in obj.maps().iter().zip(expect) {
        assert_eq!(m.name, name);
        assert_eq!(m.map_type, ty);
        assert_eq!(
            (m.key_size, m.value_size, m.max_entries, m.flags),
            (4, 8, 1024, flags)
        );
        assert_eq!(m.kind, MapKind::Regular);
        assert_eq!(btf.type_name(m.key_type_id.unwrap()), "__u32");
        assert_eq!(btf.type_name(m.value_type_id.unwrap()), "__u64");
    }
    // Each program references exactly its own map.
    for (i, p) in obj.programs().iter().enumerate() {
        assert_eq!(p.map_refs(), vec![i], "{}", p.name);
        assert!(
            p.insns
                .iter()
                .any(|x| matches!(x, Insn::Call(CallTarget::Helper(2)))),
            "update_elem"
        );
        assert!(
            p.insns
                .iter()
                .any(|x| matches!(x, Insn::Call(CallTarget::Helper(1)))),
            "lookup_elem"
        );
    }
    let hash = obj.program("bench_hash_map").unwrap();
    assert!(
        hash.insns
            .iter()
            .any(|x| matches!(x, Insn::Call(CallTarget::Helper(3)))),
        "delete_elem"
    );
}

#[test]
fn malloc_free_struct_value() {
    let Some(obj) = load("malloc_free_struct_value", "malloc_free") else {
        return;
    };
    let m = obj.map("malloc_counts").unwrap();
    assert_eq!(
        (m.map_type, m.key_size, m.value_size, m.max_entries),
        (MapType::Hash, 4, 16, 1024)
    );
    let btf = obj.btf().unwrap();
    assert_eq!(btf.type_name(m.value_type_id.unwrap()), "struct counts");
    let p = obj.program("count_malloc").unwrap();
    assert_eq!(
        p.kind,
        ProgramKind::Uprobe {
            target: Some(AttachTarget {
                path: "libc.so.6".into(),
                symbol: Some("malloc".into()),
                offset: 0
            })
        }
    );
    // The counter update is an atomic add.
    assert!(p.insns.iter().any(|x| matches!(x, Insn::Atomic { .. })));
}

#[test]
fn syscount_tracepoint_kinds() {
    let Some(obj) = load("syscount_tracepoint_kinds", "syscount") else {
        return;
    };
    assert_eq!(
        obj.program("count_syscalls").unwrap().kind,
        ProgramKind::RawTracepoint {
            name: "sys_enter".into()
        }
    );
    assert_eq!(
        obj.program("count_openat").unwrap().kind,
        ProgramKind::Tracepoint {
            category: "syscalls".into(),
            name: "sys_enter_openat".into()
        }
    );
    let counts = obj.map("syscall_counts").unwrap();
    assert_eq!((counts.max_entries, counts.pinning), (512, 1));
    assert_eq!(obj.map("openat_count").unwrap().pinning, 0);
}

#[test]
fn ringbuf_map_and_tp_alias() {
    let Some(obj) = load("ringbuf_map_and_tp_alias", "ringbuf_opensnoop") else {
        return;
    };
    let m = obj.map("events").unwrap();
    assert_eq!(
        (m.map_type, m.max_entries, m.key_size, m.value_size),
        (MapType::RingBuf, 256 * 1024, 0, 0)
    );
    assert_eq!(
        obj.program("trace_openat_exit").unwrap().kind,
        ProgramKind::Tracepoint {
            category: "syscalls".into(),
            name: "sys_exit_openat".into()
        }
    );
}

#[test]
fn calls_are_statically_linked() {
    let Some(obj) = load("calls_are_statically_linked", "calls_globals") else {
        return;
    };
    // calls_main: 23 own slots, then add_scaled (4) and scale (5) appended.
    let main = obj.program("calls_main").unwrap();
    assert_eq!(main.own_len, 23);
    assert_eq!(main.insns.len(), 23 + 4 + 5);
    // Follow the local calls: main -> add_scaled -> scale.
    let calls: Vec<(usize, i64)> = main
        .insns
        .iter()
        .enumerate()
        .filter(|(_, i)| matches!(i, Insn::Call(CallTarget::Local(_))))
        .map(|(pc, i)| (pc, i.branch_target(pc).unwrap()))
        .collect();
    assert_eq!(calls, vec![(2, 23), (24, 27)]);
    // scale reads the .rodata constant: lddw MapIdxValue, then a load from it.
    let rodata = obj.maps().iter().position(|m| m.name == ".rodata").unwrap();
    assert!(matches!(
        main.insns[27],
        Insn::LdPseudo { kind: LdPseudo::MapIdxValue, imm, next_imm: 0, .. } if imm as usize == rodata
    ));
    // calls_second calls only scale, which lands right after its 4 slots.
    let second = obj.program("calls_second").unwrap();
    assert_eq!((second.own_len, second.insns.len()), (4, 9));
    assert_eq!(second.insns[1].branch_target(1), Some(4));
    // func_info: one record per function, at the remapped starts.
    let starts: Vec<u32> = main.func_info.iter().map(|f| f.insn).collect();
    assert_eq!(starts, vec![0, 23, 27]);
    let btf = obj.btf().unwrap();
    let names: Vec<&str> = main
        .func_info
        .iter()
        .map(|f| btf.name_of(f.type_id))
        .collect();
    assert_eq!(names, vec!["calls_main", "add_scaled", "scale"]);
}

#[test]
fn global_data_maps_and_offsets() {
    let Some(obj) = load("global_data_maps_and_offsets", "calls_globals") else {
        return;
    };
    let names: Vec<&str> = obj.maps().iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, vec![".data", ".rodata", ".bss"]);
    let data = obj.map(".data").unwrap();
    assert_eq!(
        data.kind,
        MapKind::Data {
            section: ".data".into()
        }
    );
    assert_eq!(data.initial_data.as_deref(), Some(&7u64.to_le_bytes()[..]));
    let rodata = obj.map(".rodata").unwrap();
    assert!(matches!(rodata.kind, MapKind::Rodata { .. }));
    assert_ne!(rodata.flags & pkbpf::object::BPF_F_RDONLY_PROG, 0);
    let ro = rodata.initial_data.as_ref().unwrap();
    assert_eq!(&ro[..8], &3u64.to_le_bytes());
    assert_eq!(&ro[8..15], b"r=%llu\0");
    let bss = obj.map(".bss").unwrap();
    assert_eq!((bss.value_size, bss.initial_data.is_none()), (24, true));
    let globals: Vec<(String, u32)> = obj
        .globals(bss)
        .into_iter()
        .map(|g| (g.name, g.offset))
        .collect();
    assert_eq!(
        globals,
        vec![("last_value".into(), 0), ("scratch".into(), 8)]
    );
    // Relocations: hits at .data+0, last_value at .bss+0, scratch at .bss+8,
    // the printk format at .rodata+8 (section symbol + addend).
    let main = obj.program("calls_main").unwrap();
    let idx = |n: &str| obj.maps().iter().position(|m| m.name == n).unwrap() as i32;
    let loads: Vec<(usize, i32, i32)> = main.insns[..main.own_len]
        .iter()
        .enumerate()
        .filter_map(|(pc, i)| match i {
            Insn::LdPseudo {
                kind: LdPseudo::MapIdxValue,
                imm,
                next_imm,
                ..
            } => Some((pc, *imm, *next_imm)),
            _ => None,
        })
        .collect();
    assert_eq!(
        loads,
        vec![
            (4, idx(".data"), 0),
            (9, idx(".bss"), 0),
            (12, idx(".bss"), 8),
            (15, idx(".rodata"), 8)
        ]
    );
}

#[test]
fn core_pt_regs_offsets_are_relocated() {
    let Some(obj) = load("core_pt_regs_offsets_are_relocated", "core_probe") else {
        return;
    };
    let p = obj.program("core_uprobe").unwrap();
    assert_eq!(p.kind, ProgramKind::Uprobe { target: None });
    let ctx_loads: Vec<i16> = p
        .insns
        .iter()
        .filter_map(|i| match i {
            Insn::Load {
                size: MemSize::DW,
                src,
                off,
                ..
            } if *src == Reg::R1 || *src == Reg::new(6).unwrap() => Some(*off),
            _ => None,
        })
        .collect();
    // PARM1 = di (112), PARM2 = si (104), IP (128), SP (152), bx (40).
    for off in [112, 104, 128, 152, 40] {
        assert!(
            ctx_loads.contains(&off),
            "offset {off} missing in {ctx_loads:?}"
        );
    }
    // None of the header's (wrong) offsets survive: di was at 24, si at 32.
    for off in [24, 32, 0, 8] {
        assert!(
            !ctx_loads.contains(&off),
            "unrelocated offset {off} in {ctx_loads:?}"
        );
    }
    // bpf_core_type_size(struct pt_regs) = 168 on x86-64 (72 in the header).
    assert!(p.insns.iter().any(|i| matches!(
        i,
        Insn::Alu {
            src: pkbpf::verifier::isa::Source::Imm(168),
            ..
        }
    )));
    let ret = obj.program("core_uretprobe").unwrap();
    assert!(
        ret.insns
            .iter()
            .any(|i| matches!(i, Insn::Load { off: 80, .. })),
        "RC = ax at 80"
    );
    let enter = obj.program("core_sys_enter").unwrap();
    let offs: Vec<i16> = enter
        .insns
        .iter()
        .filter_map(|i| match i {
            Insn::Load { off, .. } => Some(*off),
            _ => None,
        })
        .collect();
    assert!(
        offs.contains(&8) && offs.contains(&32),
        "id at 8, args[2] at 32: {offs:?}"
    );
    // The header's layout has id at 16 and args[2] at 40: relocated away.
    assert!(!offs.contains(&16) && !offs.contains(&40), "{offs:?}");
    let macros = obj.program("core_read_macros").unwrap();
    let imms: Vec<i32> = macros
        .insns
        .iter()
        .filter_map(|i| match i {
            Insn::Alu {
                op: pkbpf::verifier::isa::AluOp::Mov,
                src: pkbpf::verifier::isa::Source::Imm(v),
                ..
            } => Some(*v),
            _ => None,
        })
        .collect();
    // offsetof(args[1]) = 24 on the target (32 in the header), sizeof(id) = 8,
    // type_exists(sys_exit) = 1.
    assert!(imms.contains(&24) && !imms.contains(&32), "{imms:?}");
    assert!(imms.contains(&8) && imms.contains(&1), "{imms:?}");
    let exit = obj.program("core_sys_exit").unwrap();
    assert!(
        exit.insns
            .iter()
            .any(|i| matches!(i, Insn::Load { off: 16, .. })),
        "ret at 16"
    );
}

#[test]
fn embedded_and_legacy_maps() {
    let Some(obj) = load("embedded_and_legacy_maps", "embedded") else {
        return;
    };
    assert_eq!(
        obj.program("add_inputs").unwrap().kind,
        ProgramKind::Embedded
    );
    assert_eq!(obj.program("add_inputs").unwrap().section, "extension");
    assert_eq!(obj.program("custom").unwrap().kind, ProgramKind::Embedded);
    let a = obj.map("legacy_counts").unwrap();
    assert_eq!(
        (a.map_type, a.key_size, a.value_size, a.max_entries, a.flags),
        (MapType::Array, 4, 8, 16, 0)
    );
    let h = obj.map("legacy_hash").unwrap();
    assert_eq!(
        (h.map_type, h.key_size, h.value_size, h.max_entries, h.flags),
        (MapType::Hash, 8, 16, 64, 1)
    );
    assert_eq!(obj.program("add_inputs").unwrap().map_refs(), vec![0]);
    // Two programs in one section, each with only its own code.
    let names: Vec<(&str, &str)> = obj
        .programs()
        .iter()
        .map(|p| (p.name.as_str(), p.section.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("add_inputs", "extension"),
            ("mul_inputs", "extension"),
            ("custom", "my_custom_hook")
        ]
    );
    let mul = obj.program("mul_inputs").unwrap();
    assert_eq!(mul.insns.last(), Some(&Insn::Exit));
    assert!(mul.insns.len() < 8, "{:?}", mul.insns);
    assert!(mul.map_refs().is_empty());
    assert_eq!(obj.program("custom").unwrap().map_refs(), vec![1]);
    assert_eq!(obj.kernel_version(), Some(0x050a00));
}

#[test]
fn line_info_maps_to_source() {
    let Some(obj) = load("line_info_maps_to_source", "calls_globals") else {
        return;
    };
    let btf = obj.btf().unwrap();
    let p = obj.program("calls_main").unwrap();
    assert!(!p.line_info.is_empty());
    assert!(p.line_info.windows(2).all(|w| w[0].insn <= w[1].insn));
    let texts: Vec<&str> = p.line_info.iter().map(|l| btf.string(l.line_off)).collect();
    assert!(texts.iter().any(|t| t.contains("hits++")), "{texts:?}");
    // Lines of the appended subprogram `scale` point past the program's own code.
    let scale = p
        .line_info
        .iter()
        .find(|l| btf.string(l.line_off).contains("x * multiplier"))
        .unwrap();
    assert!(scale.insn as usize >= 27);
    assert!(btf
        .string(scale.file_name_off)
        .ends_with("calls_globals.bpf.c"));
}

#[test]
fn btf_kinds_and_function_pointers() {
    use pkbpf::btf::BtfType;
    let Some(obj) = load("btf_kinds_and_function_pointers", "btf_kinds") else {
        return;
    };
    let btf = obj.btf().unwrap();
    let mut kinds: Vec<&str> = btf.types().map(|(_, t)| t.kind_name()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    for k in [
        "INT",
        "PTR",
        "ARRAY",
        "STRUCT",
        "UNION",
        "ENUM",
        "FWD",
        "TYPEDEF",
        "VOLATILE",
        "CONST",
        "RESTRICT",
        "FUNC",
        "FUNC_PROTO",
        "VAR",
        "DATASEC",
        "FLOAT",
        "DECL_TAG",
        "TYPE_TAG",
    ] {
        assert!(kinds.contains(&k), "kind {k} missing from {kinds:?}");
    }
    let rec = btf
        .find_by_name("record", |t| matches!(t, BtfType::Struct { .. }))
        .unwrap();
    let members: Vec<(String, String, u32)> = btf
        .type_by_id(rec)
        .unwrap()
        .members()
        .iter()
        .map(|m| {
            (
                btf.string(m.name_off).to_string(),
                btf.type_name(m.type_id),
                m.bit_offset,
            )
        })
        .collect();
    let names: Vec<(&str, &str)> = members
        .iter()
        .map(|(n, t, _)| (n.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("color", "enum color"),
            ("flags", "struct flags"),
            ("v", "union value"),
            ("opaque", "struct opaque *"),
            ("name", "const char *"),
            ("tagged", "int *"),
            ("counts", "u32_t[4]"),
        ]
    );
    assert_eq!(btf.size_of(rec).unwrap(), Some(72));
    // Bitfields: a:3 at bit 0, b:5 at 3, c:12 at 8.
    let flags = btf
        .find_by_name("flags", |t| matches!(t, BtfType::Struct { .. }))
        .unwrap();
    let bits: Vec<(u32, u32)> = btf.type_by_id(flags).unwrap().members()[..3]
        .iter()
        .map(|m| (m.bit_offset, m.bitfield_size))
        .collect();
    assert_eq!(bits, vec![(0, 3), (3, 5), (8, 12)]);
    let color = btf
        .find_by_name("color", |t| matches!(t, BtfType::Enum { .. }))
        .unwrap();
    let BtfType::Enum { values, .. } = btf.type_by_id(color).unwrap() else {
        unreachable!()
    };
    let vals: Vec<(&str, i64)> = values
        .iter()
        .map(|v| (btf.string(v.name_off), v.value))
        .collect();
    assert_eq!(vals, vec![("RED", 1), ("GREEN", 2), ("BLUE", 4)]);
    // The bpf_loop callback: an lddw function pointer into appended code.
    let p = obj.program("btf_kinds").unwrap();
    let (pc, insn) = p
        .insns
        .iter()
        .enumerate()
        .find(|(_, i)| {
            matches!(
                i,
                Insn::LdPseudo {
                    kind: LdPseudo::Func,
                    ..
                }
            )
        })
        .expect("function pointer");
    let target = insn.branch_target(pc).unwrap() as usize;
    assert!(target >= p.own_len);
    let fname: Vec<&str> = p
        .func_info
        .iter()
        .filter(|f| f.insn as usize == target)
        .map(|f| btf.name_of(f.type_id))
        .collect();
    assert_eq!(fname, vec!["add_index"]);
}

#[test]
fn core_and_uapi_builds_read_the_same_registers() {
    // bench_uprobe uses the UAPI pt_regs (no CO-RE); core_probe's vmlinux.h
    // has a wrong layout that CO-RE fixes. Both must read PARM1 from di (112)
    // and the uretprobe's return value from ax (80).
    let (Some(uapi), Some(core)) = (
        load(
            "core_and_uapi_builds_read_the_same_registers",
            "bench_uprobe",
        ),
        load("core_and_uapi_builds_read_the_same_registers", "core_probe"),
    ) else {
        return;
    };
    let first_ctx_load = |p: &pkbpf::object::ProgramDef| {
        p.insns.iter().find_map(|i| match i {
            Insn::Load { src, off, .. } if *src == Reg::R1 => Some(*off),
            _ => None,
        })
    };
    assert_eq!(
        first_ctx_load(uapi.program("bench_uprobe").unwrap()),
        Some(112)
    );
    assert_eq!(
        first_ctx_load(uapi.program("bench_uretprobe").unwrap()),
        Some(80)
    );
    let core_offs: Vec<i16> = core
        .program("core_uprobe")
        .unwrap()
        .insns
        .iter()
        .filter_map(|i| match i {
            Insn::Load { off, .. } => Some(*off),
            _ => None,
        })
        .collect();
    assert!(core_offs.contains(&112));
    assert_eq!(
        first_ctx_load(core.program("core_uretprobe").unwrap()),
        Some(80)
    );
}

#[test]
fn prog_array_initializers() {
    let Some(obj) = load("prog_array_initializers", "tail_calls") else {
        return;
    };
    let m = obj.map("jump_table").unwrap();
    assert_eq!(
        (m.map_type, m.key_size, m.value_size, m.max_entries),
        (MapType::ProgArray, 4, 4, 4)
    );
    assert_eq!(
        m.initial_progs,
        vec![
            (1, "tail_double".to_string()),
            (3, "tail_square".to_string())
        ]
    );
    let entry = obj.program("tail_entry").unwrap();
    assert_eq!(entry.map_refs(), vec![0]);
    assert!(entry
        .insns
        .iter()
        .any(|i| matches!(i, Insn::Call(CallTarget::Helper(12)))));
}
