//! Unit tests of the emitter's internals (the behaviour tests live in
//! `jit/tests/jit_*.rs`).

use pkbpf_verifier::asm::assemble;

use super::*;

#[test]
fn every_insn_has_its_own_unit_and_hi_halves_are_empty() {
    let prog = assemble("lddw %r0, 0x1122334455667788\nadd %r0, 1\nexit").unwrap();
    let jit = JitProgram::compile_seeded(&prog, &JitEnv::new(), 1).unwrap();
    assert!(!jit.insn_code(0).is_empty());
    assert!(jit.insn_code(1).is_empty());
    assert!(!jit.insn_code(2).is_empty());
    // SAFETY: straight-line arithmetic, no memory access.
    assert_eq!(unsafe { jit.call(0, 0) }, 0x1122334455667789);
}

#[test]
fn risky_constants_are_blinded_at_first_emission() {
    // 0x050f is SYSCALL's bytes; 0xef01_0f00 contains WRPKRU.
    let prog = assemble("mov %r0, 0x050f\nadd %r0, 0x00ef010f\nlddw %r1, 0xcd80cd80050f0f05\nxor %r0, %r1\nexit").unwrap();
    let jit = JitProgram::compile_seeded(&prog, &JitEnv::new(), 7).unwrap();
    assert_eq!(scan_gadgets(jit.code()), vec![]);
    assert_eq!(jit.attempts(), 1);
    // SAFETY: straight-line arithmetic, no memory access.
    let r0 = unsafe { jit.call(0, 0) };
    assert_eq!(r0, (0x050f_u64 + 0x00ef_010f) ^ 0xcd80cd80050f0f05);
}

#[test]
fn units_overlapping_finds_neighbours() {
    let out = codegen::Output {
        code: vec![0; 10],
        units: vec![(0, Unit::Prologue), (4, Unit::Insn(0)), (6, Unit::Tail)],
        stubs: BTreeMap::new(),
    };
    assert_eq!(out.units_overlapping(5, 2), vec![Unit::Insn(0), Unit::Tail]);
    assert_eq!(out.units_overlapping(0, 2), vec![Unit::Prologue]);
}
