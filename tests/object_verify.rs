//! The loader's output is what the verifier consumes: every program of every
//! test object, with its maps and the context its kind implies, verifies.

mod common;

use pkbpf::object::{MapKind, Object, ProgramDef, ProgramKind};
use pkbpf::verifier::verifier::{verify, CtxDesc, MapDesc, ProgramEnv};

/// The verifier environment a program's kind and maps imply.
fn env_for(obj: &Object, p: &ProgramDef) -> ProgramEnv {
    let ctx = match &p.kind {
        ProgramKind::Uprobe { .. } | ProgramKind::Uretprobe { .. } => CtxDesc::PtRegs,
        ProgramKind::Tracepoint { name, .. } if name.starts_with("sys_exit") => {
            CtxDesc::SyscallExit
        }
        ProgramKind::Tracepoint { .. } => CtxDesc::SyscallEnter,
        ProgramKind::RawTracepoint { .. } => CtxDesc::RawSyscall,
        ProgramKind::Embedded => CtxDesc::Buffer {
            size: 72,
            writable: std::iter::once(0..72).collect(),
        },
    };
    let mut env = ProgramEnv::new(ctx);
    for m in obj.maps() {
        let mut d = MapDesc::new(m.map_type as u32, m.key_size, m.value_size, m.max_entries);
        d.read_only = matches!(m.kind, MapKind::Rodata { .. });
        env = env.with_map(d);
    }
    env.with_line_info(p.source_lines(obj.btf()))
}

/// Programs the verifier does not accept yet, with the reason; reported,
/// not failed, so this test guards the loader's side. Remove entries as the
/// verifier learns them (the test prints when one starts verifying).
const KNOWN_VERIFIER_GAPS: [(&str, &str); 0] = [];

#[test]
fn every_test_program_verifies() {
    let mut failures = Vec::new();
    for name in common::ALL {
        let Some(path) = common::compile("every_test_program_verifies", name) else {
            return;
        };
        let obj = Object::parse(&common::read(&path)).unwrap();
        for p in obj.programs() {
            let gap = KNOWN_VERIFIER_GAPS.iter().find(|(n, _)| *n == p.name);
            match (verify(&p.insns, &env_for(&obj, p)), gap) {
                (Ok(_), None) => {}
                (Err(e), None) => failures.push(format!("{name}/{}: {e}", p.name)),
                (Err(e), Some((_, why))) => println!("known gap: {name}/{}: {why}: {e}", p.name),
                (Ok(_), Some(_)) => println!(
                    "{name}/{} verifies now: drop it from KNOWN_VERIFIER_GAPS",
                    p.name
                ),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
