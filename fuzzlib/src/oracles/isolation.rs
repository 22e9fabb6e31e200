//! `isolation`: random programs must not change memory that is not theirs.
//!
//! The setup models two extensions and the runtime in one process:
//!
//! - extension A (the one running) owns its context buffer and the values of
//!   its array map `a`;
//! - extension B owns a private buffer and the values of its hash map `b`;
//! - the runtime owns the maps region's header and every map's internals
//!   (buckets, locks, free lists).
//!
//! The program is *not* verified. It starts with `r1` = A's context and
//! `r2`–`r5` = forged pointers into B's buffer, B's map values, the region's
//! internals and its header; every `lddw` whose immediate has the top bit set
//! is rewritten to one of those addresses (plus the immediate's low byte), so
//! programs can also forge pointers themselves.
//!
//! What is checked where ([`IsolationMode`]):
//!
//! - [`IsolationMode::Checked`] (every machine): the program runs in the
//!   checked interpreter, whose only regions are A's; afterwards B's buffer,
//!   B's map values and everything of the region but A's values must be
//!   byte-for-byte unchanged. When the verifier accepts the forged program, it
//!   also runs on the JIT (verified code only: the JIT emits no checks) with
//!   the same post-condition.
//! - Under real protection keys (the MPK VM suite) the same post-condition
//!   would be enforced by the hardware for unverified JIT code; this oracle
//!   does not do that yet (see `fuzz/README.md`).

use pkbpf_jit::interp::{HelperTable, Interpreter, Memory, Options, Region, RegionKind};
use pkbpf_maps::{MapDef, MapType, MemRange, RegionBuilder};
use pkbpf_sandbox::PkuStatus;
use pkbpf_verifier::disasm::disassemble;
use pkbpf_verifier::isa::Insn;

use super::{first_difference, Finding};
use crate::gen::Case;

/// Budget of one isolation run.
pub const ISOLATION_BUDGET: u64 = 1 << 16;

/// How [`isolation`] enforces and checks the post-condition here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsolationMode {
    /// Checked interpreter (unverified programs) and JIT (verified ones),
    /// memory compared after each run.
    Checked,
}

impl IsolationMode {
    /// The mode on this machine, and whether protection keys exist (the
    /// hardware mode is not implemented yet, so the mode is always
    /// `Checked`; the flag says what the VM suite could add).
    pub fn detect() -> (IsolationMode, bool) {
        (
            IsolationMode::Checked,
            matches!(pkbpf_sandbox::detect(), PkuStatus::Available),
        )
    }
}

/// Bytes of B's private buffer.
const B_LEN: usize = 256;

/// Reads a byte range of the maps region.
fn snapshot(r: MemRange) -> Vec<u8> {
    if r.len == 0 {
        return Vec::new();
    }
    // SAFETY: `r` is a range of a live maps region mapping (readable for its
    // whole length); no program or helper runs while the copy is taken.
    unsafe { std::slice::from_raw_parts(r.addr as *const u8, r.len) }.to_vec()
}

/// The region's bytes minus A's values (which A may change), as two parts.
fn foreign_bytes(whole: MemRange, a_values: MemRange) -> (Vec<u8>, Vec<u8>) {
    let all = snapshot(whole);
    let start = a_values.addr - whole.addr;
    (all[..start].to_vec(), all[start + a_values.len..].to_vec())
}

/// Runs `data` (a [`Case`] in its byte form) as extension A. Only the
/// checked-interpreter mode exists ([`IsolationMode::detect`]).
pub fn isolation(data: &[u8]) -> Result<(), Finding> {
    let Some(case) = Case::from_bytes(data) else {
        return Ok(());
    };
    let mut b = RegionBuilder::new();
    let maps = b
        .add(MapDef::new("a", MapType::Array, 4, 16, 4))
        .and_then(|_| b.add(MapDef::new("b", MapType::Hash, 4, 16, 8)))
        .and_then(|_| b.build());
    let Ok(region) = maps else {
        return Ok(());
    };
    let (Ok(map_b), Some(a_values), Some(b_values), Some(b_internals)) = (
        region.map("b"),
        region.values_range(0),
        region.values_range(1),
        region.internals_range(1),
    ) else {
        return Ok(());
    };
    for k in 0u32..4 {
        let _ = map_b.update(&k.to_ne_bytes(), &[k as u8 ^ 0x5a; 16], 0);
    }
    let whole = region.as_range();
    let mut b_buf: Vec<u8> = (0..B_LEN).map(|i| (i as u8).wrapping_mul(7)).collect();
    let b_before = b_buf.clone();
    let forged = [
        b_buf.as_mut_ptr() as u64,
        b_values.addr as u64,
        b_internals.addr as u64,
        whole.addr as u64,
    ];
    let insns: Vec<Insn> = case
        .insns
        .iter()
        .map(|&i| match i {
            Insn::LdImm64 { dst, imm } if imm >> 63 == 1 => Insn::LdImm64 {
                dst,
                imm: forged[(imm >> 8) as usize % forged.len()] + (imm & 0xff),
            },
            other => other,
        })
        .collect();
    let region_before = foreign_bytes(whole, a_values);

    let mut ctx = case.mem.clone();
    let outcome = {
        let mut memory = Memory::new();
        let addr = if ctx.is_empty() {
            0
        } else {
            memory.add_slice_mut(&mut ctx, RegionKind::Ctx)
        };
        // SAFETY: A's values lie inside the live maps region, readable and
        // writable for its lifetime; no Rust reference to them is used while
        // the program runs.
        unsafe {
            memory.add_region(Region {
                start: a_values.addr as u64,
                len: a_values.len as u64,
                writable: true,
                kind: RegionKind::MapValue { map: 0 },
            })
        };
        let opts = Options {
            budget: ISOLATION_BUDGET,
            check_uninit: true,
        };
        let args = [addr, forged[0], forged[1], forged[2], forged[3]];
        Interpreter::new(&insns).with_options(opts).run(
            &mut memory,
            &mut HelperTable::conformance(),
            args,
        )
    };
    let outcome = match outcome {
        Ok(o) => format!("r0 = {:#x}", o.r0),
        Err(e) => e.to_string(),
    };
    check_unchanged(
        &b_before,
        &b_buf,
        &region_before,
        whole,
        a_values,
        &insns,
        &outcome,
    )?;

    #[cfg(all(target_arch = "x86_64", unix))]
    jit_run(
        &insns,
        &case.mem,
        &b_before,
        &b_buf,
        &region_before,
        whole,
        a_values,
    )?;
    Ok(())
}

fn check_unchanged(
    b_before: &[u8],
    b_now: &[u8],
    region_before: &(Vec<u8>, Vec<u8>),
    whole: MemRange,
    a_values: MemRange,
    insns: &[Insn],
    outcome: &str,
) -> Result<(), Finding> {
    let breach = |what, offset| Finding::IsolationBreach {
        what,
        offset,
        outcome: outcome.to_string(),
        listing: disassemble(insns),
    };
    if let Some(off) = first_difference(b_before, b_now) {
        return Err(breach("extension B's buffer", off));
    }
    let now = foreign_bytes(whole, a_values);
    if let Some(off) = first_difference(&region_before.0, &now.0) {
        return Err(breach(
            "the maps region (runtime internals or B's values)",
            off,
        ));
    }
    if let Some(off) = first_difference(&region_before.1, &now.1) {
        let base = a_values.addr - whole.addr + a_values.len;
        return Err(breach(
            "the maps region (runtime internals or B's values)",
            base + off,
        ));
    }
    Ok(())
}

/// When the verifier accepts the forged program, runs it on the JIT too.
#[cfg(all(target_arch = "x86_64", unix))]
fn jit_run(
    insns: &[Insn],
    mem: &[u8],
    b_before: &[u8],
    b_now: &[u8],
    region_before: &(Vec<u8>, Vec<u8>),
    whole: MemRange,
    a_values: MemRange,
) -> Result<(), Finding> {
    use pkbpf_jit::x86::{JitEnv, JitProgram};
    use pkbpf_verifier::verify;

    let Ok(v) = verify(insns, &super::case_env(mem.len())) else {
        return Ok(());
    };
    // The verifier accepted it: the checked interpreter must also find it
    // sound before native code runs it (a soundness bug is `soundness`'s
    // finding, reported there).
    let case = Case {
        insns: insns.to_vec(),
        mem: mem.to_vec(),
    };
    match super::soundness(&case) {
        Ok(super::Verdict::Accepted { r0: Ok(_) }) => {}
        Ok(_) => return Ok(()),
        Err(f) => return Err(f),
    }
    let Ok(jit) = JitProgram::compile_with_seed(&v, &JitEnv::conformance(), 7) else {
        return Ok(());
    };
    let mut ctx = mem.to_vec();
    let addr = if ctx.is_empty() {
        0
    } else {
        ctx.as_mut_ptr() as u64
    };
    // SAFETY: verified for exactly `ctx.len()` bytes at r1 and their size in
    // r2, and the checked interpreter ran it on the same input without a
    // fault; the conformance helpers ignore the null env.
    let r = unsafe { jit.call_with_env(addr, ctx.len() as u64, std::ptr::null_mut()) };
    check_unchanged(
        b_before,
        b_now,
        region_before,
        whole,
        a_values,
        insns,
        &format!("JIT: {r:?}"),
    )
}
