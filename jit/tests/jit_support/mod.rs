//! Shared by the JIT integration tests: runs one program on the reference
//! interpreter and on the JIT (after verification) and compares r0, the
//! error-or-not outcome and the final memory; plus a generator of random
//! valid programs.
#![allow(dead_code)]

pub mod gen;

use pkbpf_jit::interp::{HelperTable, Interpreter, Memory, RegionKind};
use pkbpf_jit::x86::{JitEnv, JitProgram, RunError};
use pkbpf_verifier::asm::assemble;
use pkbpf_verifier::disasm::disassemble;
use pkbpf_verifier::isa::Insn;
use pkbpf_verifier::{verify, ProgramEnv, VerifiedProgram};

/// Verifies `prog` for the conformance context (r1 = `mem_len` bytes, r2 =
/// their size, helper 5 = unwind); panics with the verifier's reason.
pub fn verified(prog: &[Insn], mem_len: usize) -> VerifiedProgram {
    verify(prog, &ProgramEnv::conformance(mem_len as u32))
        .unwrap_or_else(|e| panic!("verifier rejected the program: {e}\n{}", disassemble(prog)))
}

/// Runs `prog` on the interpreter over `mem`.
pub fn run_interp(prog: &[Insn], mem: &mut [u8]) -> Result<u64, String> {
    let len = mem.len() as u64;
    let mut memory = Memory::new();
    let addr = if mem.is_empty() {
        0
    } else {
        memory.add_slice_mut(mem, RegionKind::Input)
    };
    let mut helpers = HelperTable::conformance();
    Interpreter::new(prog)
        .run(&mut memory, &mut helpers, [addr, len, 0, 0, 0])
        .map(|o| o.r0)
        .map_err(|e| e.to_string())
}

/// Compiles a verified program with the conformance helpers.
pub fn compile(v: &VerifiedProgram) -> JitProgram {
    JitProgram::compile(v, &JitEnv::conformance())
        .unwrap_or_else(|e| panic!("JIT failed: {e}\n{}", disassemble(v.insns())))
}

/// Runs a compiled program over `mem` (verified for `mem.len()` bytes).
pub fn run_jit(jit: &JitProgram, mem: &mut [u8]) -> Result<u64, RunError> {
    let addr = if mem.is_empty() {
        0
    } else {
        mem.as_mut_ptr() as u64
    };
    // SAFETY: every program given to this harness was verified for exactly
    // `mem.len()` bytes at r1 and their size in r2; `mem` outlives the call.
    unsafe { jit.call_with_env(addr, mem.len() as u64, std::ptr::null_mut()) }
}

/// Runs `prog` on both engines, each on its own copy of `mem`; asserts they
/// agree on r0 (or both fail) and on the final memory. Returns the
/// interpreter's outcome and memory.
pub fn both(prog: &[Insn], mem: &[u8]) -> (Result<u64, String>, Vec<u8>) {
    both_verified(prog, &verified(prog, mem.len()), mem)
}

/// The verified program, or `None` when the verifier rejects it (property
/// tests skip those: they test the engines, not the verifier).
pub fn try_verified(prog: &[Insn], mem_len: usize) -> Option<VerifiedProgram> {
    verify(prog, &ProgramEnv::conformance(mem_len as u32)).ok()
}

/// [`both`] for an already verified program (`v` verified from `prog`).
pub fn both_verified(
    prog: &[Insn],
    v: &VerifiedProgram,
    mem: &[u8],
) -> (Result<u64, String>, Vec<u8>) {
    let jit = compile(v);
    let mut m_i = mem.to_vec();
    let mut m_j = mem.to_vec();
    let r_i = run_interp(prog, &mut m_i);
    let r_j = run_jit(&jit, &mut m_j);
    let agree = match (&r_i, &r_j) {
        (Ok(a), Ok(b)) => a == b,
        (Err(_), Err(_)) => true,
        _ => false,
    };
    if !agree || m_i != m_j {
        panic!(
            "engines disagree\ninterp: {r_i:?}\njit:    {r_j:?}\ninterp mem: {m_i:02x?}\njit mem:    {m_j:02x?}\n{}\n{}",
            disassemble(prog),
            jit.dump(prog)
        );
    }
    (r_i, m_i)
}

/// [`both`] on assembly text; returns r0 (panics when the program fails).
pub fn both_asm(src: &str, mem: &[u8]) -> u64 {
    let prog = assemble(src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    match both(&prog, mem).0 {
        Ok(r0) => r0,
        Err(e) => panic!("program failed: {e}\n{src}"),
    }
}

/// Runs assembly text on both engines and asserts r0 == `expected`.
#[macro_export]
macro_rules! check {
    ($src:expr => $expected:expr) => {
        check!($src, &[] => $expected)
    };
    ($src:expr, $mem:expr => $expected:expr) => {{
        let r0 = $crate::jit_support::both_asm(&$src, $mem);
        assert_eq!(r0, $expected as u64, "program:\n{}", $src);
    }};
}

/// `*(u32 *)(fp-4) = key; r0 = lookup(map 0, fp-4); return r0 ? *(u64 *)r0 : -1`
/// (the map tests' program: array and per-CPU array lookups, inlined or not).
pub fn lookup_prog(key: i32) -> Vec<Insn> {
    assemble(&format!(
        "*(u32 *)(r10 - 4) = {key}
         r1 = map[idx:0]
         r2 = r10
         r2 += -4
         call 1
         if r0 == 0 goto +2
         r0 = *(u64 *)(r0 + 0)
         exit
         r0 = -1
         exit"
    ))
    .expect("the lookup program assembles")
}
