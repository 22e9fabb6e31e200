//! `lddw` map pseudo forms and inlined array lookups through the verifier.

use std::ffi::c_void;

use pkbpf_jit::x86::{ArrayLayout, HelperRet, JitEnv, JitMap, JitProgram, RunError};
use pkbpf_verifier::isa::{
    AluOp, CallTarget, Insn, JmpCond, LdPseudo, MemSize, Reg, Source, Width,
};
use pkbpf_verifier::{verify, MapDesc, ProgramEnv};

fn r(n: u8) -> Reg {
    Reg::new(n).unwrap()
}

/// `*(u32 *)(fp-4) = key; r0 = lookup(map 0, fp-4); return r0 ? *(u64 *)r0 : -1`
fn lookup_prog(key: i32) -> Vec<Insn> {
    vec![
        Insn::Store {
            size: MemSize::W,
            dst: Reg::R10,
            off: -4,
            src: Source::Imm(key),
        },
        Insn::LdPseudo {
            dst: r(1),
            kind: LdPseudo::MapIdx,
            imm: 0,
            next_imm: 0,
        },
        Insn::LdImm64Hi,
        Insn::Alu {
            width: Width::W64,
            op: AluOp::Mov,
            dst: r(2),
            src: Source::Reg(Reg::R10),
        },
        Insn::Alu {
            width: Width::W64,
            op: AluOp::Add,
            dst: r(2),
            src: Source::Imm(-4),
        },
        Insn::Call(CallTarget::Helper(1)),
        Insn::Jmp {
            width: Width::W64,
            cond: JmpCond::Eq,
            dst: Reg::R0,
            src: Source::Imm(0),
            off: 2,
        },
        Insn::Load {
            size: MemSize::DW,
            signed: false,
            dst: Reg::R0,
            src: Reg::R0,
            off: 0,
        },
        Insn::Exit,
        Insn::Alu {
            width: Width::W64,
            op: AluOp::Mov,
            dst: Reg::R0,
            src: Source::Imm(-1),
        },
        Insn::Exit,
    ]
}

/// Stands in for map_lookup_elem where inlining is expected: aborts.
extern "C" fn not_inlined(_: u64, _: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> HelperRet {
    HelperRet {
        value: 0,
        abort: 0xdead,
    }
}

#[test]
fn array_lookups_the_verifier_marks_are_inlined() {
    let mut penv = ProgramEnv::conformance(0);
    penv.maps = vec![MapDesc::new(MapDesc::ARRAY, 4, 8, 4)];
    let values: Vec<u64> = vec![10, 20, 30, 0x0f05_0f05];
    let env = JitEnv::new().with_helper(1, not_inlined).with_map(JitMap {
        object: 0x1000,
        value: Some(values.as_ptr() as u64),
        array: Some(ArrayLayout {
            values: values.as_ptr() as u64,
            stride: 8,
            max_entries: 4,
        }),
    });
    for (key, want) in [
        (0, 10u64),
        (2, 30),
        (3, 0x0f05_0f05),
        (4, u64::MAX),
        (-1, u64::MAX),
    ] {
        let prog = lookup_prog(key);
        let v = verify(&prog, &penv).unwrap();
        assert_eq!(v.inlinable_lookups(), &[(5, 0)]);
        let jit = JitProgram::compile(&v, &env).unwrap();
        // SAFETY: the program was verified with a map whose values are
        // `values` (alive for the call); r1/r2 are unused.
        let got = unsafe { jit.call_with_env(0, 0, std::ptr::null_mut()) };
        assert_eq!(got, Ok(want), "key {key}");
    }
    // Without a layout the helper is called (and here aborts).
    let env = JitEnv::new().with_helper(1, not_inlined).with_map(JitMap {
        object: 0x1000,
        value: None,
        array: None,
    });
    let v = verify(&lookup_prog(0), &penv).unwrap();
    let jit = JitProgram::compile(&v, &env).unwrap();
    // SAFETY: the helper aborts before anything is dereferenced.
    let got = unsafe { jit.call_with_env(0, 0, std::ptr::null_mut()) };
    assert_eq!(got, Err(RunError::HelperAbort { code: 0xdead }));
}

#[test]
fn programs_compile_for_display_with_placeholder_helpers_and_maps() {
    let mut penv = ProgramEnv::conformance(0);
    penv.maps = vec![MapDesc::new(MapDesc::ARRAY, 4, 8, 4)];
    let prog = lookup_prog(1);
    let v = verify(&prog, &penv).unwrap();
    let env = JitEnv::for_display(&v);
    assert_eq!(env.helpers.keys().copied().collect::<Vec<_>>(), vec![1]);
    assert_eq!(env.maps.len(), 1);
    let jit = JitProgram::compile(&v, &env).unwrap();
    let text = jit.dump(v.insns());
    assert!(text.contains("; helper 1 stub"), "{text}");
    assert!(
        text.contains("call 1") || text.contains("map_lookup_elem"),
        "{text}"
    );
}
