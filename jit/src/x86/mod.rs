//! The x86-64 JIT: eBPF to native code with dynasm, gadget-free, W^X.
//!
//! Pipeline of [`JitProgram::compile`] (the JIT takes only programs the
//! verifier accepted, as [`VerifiedProgram`]):
//!
//! 1. **Emit** (`codegen`): one pass, eBPF registers mapped directly onto
//!    x86-64 registers (the mapping and frame layout are documented there),
//!    constants folded into instructions, compare-and-branch fused, no
//!    bounds checks (the verifier proved every access), `map_lookup_elem` on
//!    array maps the verifier marks inlined as a bounds check and a
//!    multiply-add when the env gives the array's layout.
//! 2. **Scan** ([`scan_gadgets`]): every byte offset is checked for WRPKRU,
//!    XRSTOR, SYSCALL, SYSENTER and `INT 0x80`. Constants that contain a
//!    gadget's lead byte are blinded already during emission (`mov r, v^k;
//!    xor r, k` with a random key); if the scan still finds something (a
//!    relative displacement, or bytes that line up across instructions), the
//!    units overlapping the hit are *hardened* (all their constants blinded
//!    with fresh keys, nops before and after it to move displacements) and
//!    the program is emitted again, up to [`MAX_ATTEMPTS`] times.
//! 3. **Map** (`code_mem`): copied into a read-write mapping, which becomes
//!    read-execute only after the clean scan; never writable and executable at
//!    once; unmapped on drop. [`JitProgram::make_execute_only`] is the hook
//!    the sandbox uses to drop read access under its protection key.
//!
//! The sandbox gate goes in one place per helper: the stub. Wrapping each
//! [`HelperFn`] of the [`JitEnv`] in a gate function before compiling is
//! enough; the code never calls a helper any other way.
//!
//! Helpers: every helper id has **one stub** at the end of the code; all
//! `call N` (and `callx` via a bounds-checked jump table in the code) go
//! through it. The stub is where the sandbox inserts its gate. A helper is a
//! [`HelperFn`]: `extern "C" fn(r1, r2, r3, r4, r5, env) -> HelperRet`; a
//! non-zero [`HelperRet::abort`] ends the program at once (with
//! [`HELPER_EXIT`], cleanly with `r0 = value`; any other code is a fault).

mod code_mem;
mod codegen;
mod dump;
mod gadget;

use std::collections::{BTreeMap, HashMap};
use std::ffi::c_void;

use pkbpf_verifier::isa::{Insn, LdPseudo};
use pkbpf_verifier::VerifiedProgram;
use rand::rngs::StdRng;
use rand::SeedableRng;

use code_mem::CodeMemory;
use codegen::Unit;
pub use gadget::{scan_gadgets, Gadget, GadgetKind};

/// `HelperRet::abort` value that ends the program cleanly with
/// `r0 = HelperRet::value` (bpf_conformance's "unwind").
pub const HELPER_EXIT: u64 = 1;
/// `HelperRet::abort` value of a successful `bpf_tail_call`: the program
/// ends at once and [`JitProgram::call_with_env`] returns
/// [`RunError::TailCall`] with `target = HelperRet::value` (e.g. the program
/// index from the prog array); the runtime then runs that program with the
/// same context, counting tail calls (at most 33, like the kernel). A failed
/// tail call (empty slot, index out of range, count exhausted) is an
/// ordinary return: the program goes on with the next instruction.
pub const HELPER_TAIL_CALL: u64 = 2;
/// Abort code of a `callx` whose helper id is not in the env.
pub const ABORT_BAD_CALLX: u64 = u64::MAX;
/// Abort code of execution running past the last instruction (verified
/// programs never do).
pub const ABORT_FELL_OFF: u64 = u64::MAX - 1;
/// Most emit-and-scan rounds before [`JitError::GadgetsRemain`].
pub const MAX_ATTEMPTS: u32 = 32;

/// What a helper returns, in `rax:rdx`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HelperRet {
    /// The value `r0` gets.
    pub value: u64,
    /// Zero to continue; [`HELPER_EXIT`] to end the program with `r0 =
    /// value`; anything else aborts the run with that code.
    pub abort: u64,
}

/// A helper as JIT code calls it: `r1..=r5` and the env pointer given to
/// [`JitProgram::call_with_env`].
pub type HelperFn = unsafe extern "C" fn(u64, u64, u64, u64, u64, *mut c_void) -> HelperRet;

/// Addresses of one map, for `lddw` pseudo forms resolved at load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JitMap {
    /// What `lddw rX, map_idx N` yields (the map object's address).
    pub object: u64,
    /// Address of the value area (`map_idx_value N + off` yields this plus
    /// `off`); `None` for maps without a direct value area.
    pub value: Option<u64>,
    /// For array maps whose values are one contiguous area: its layout, so
    /// that `map_lookup_elem` calls the verifier marks inlinable become a
    /// bounds check and a multiply-add. `None`: always call the helper.
    pub array: Option<ArrayLayout>,
}

/// Layout of an array map's values: element `i` is at `values + i * stride`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArrayLayout {
    /// Address of element 0.
    pub values: u64,
    /// Bytes from one element to the next (at least the value size).
    pub stride: u32,
    /// Number of elements.
    pub max_entries: u32,
}

/// Layout of a per-CPU array map's values, for inlined lookups: element
/// `i`, CPU `c` is at `values + i * slot + c * stride`, and the calling
/// CPU's index is the `u32` at `fs:[cpu_id_offset]` (glibc's rseq `cpu_id`,
/// see `pkbpf_maps::cpu::rseq_cpu_id_offset`). An index of `ncpus` or more
/// (rseq not registered in this thread) makes the inlined code call the
/// `map_lookup_elem` helper instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerCpuArrayLayout {
    /// Address of element 0, CPU 0.
    pub values: u64,
    /// Bytes from one element to the next (`stride × ncpus`).
    pub slot: u32,
    /// Bytes from one CPU's value to the next (at least the value size).
    pub stride: u32,
    /// Number of CPU slots per element.
    pub ncpus: u32,
    /// Number of elements.
    pub max_entries: u32,
    /// Offset of rseq's `cpu_id` from the `fs` base.
    pub cpu_id_offset: i32,
}

/// What the JIT needs from the loader: helpers by id and maps by index.
#[derive(Clone, Debug, Default)]
pub struct JitEnv {
    /// Helpers by id; a program calling an id not here does not compile.
    pub helpers: BTreeMap<u32, HelperFn>,
    /// Maps by index (`BPF_PSEUDO_MAP_IDX`).
    pub maps: Vec<JitMap>,
    /// Per-CPU array maps whose lookups may be inlined, by map index
    /// (absent: always call the helper).
    pub percpu_arrays: BTreeMap<usize, PerCpuArrayLayout>,
    /// Helpers the code calls directly instead of through their stub, by
    /// id: no env, no abort check and no gate, so only for helpers that
    /// never abort, in code that runs without protection keys (the runtime
    /// offers the map operations here when the object gets no keys).
    pub direct_helpers: BTreeMap<u32, DirectHelperFn>,
}

/// A helper JIT code calls directly (see [`JitEnv::direct_helpers`]):
/// `r1..=r5` in, `r0` out.
pub type DirectHelperFn = unsafe extern "C" fn(u64, u64, u64, u64, u64) -> u64;

impl JitEnv {
    /// An env with no helpers and no maps.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) helper `id`.
    pub fn with_helper(mut self, id: u32, f: HelperFn) -> Self {
        self.helpers.insert(id, f);
        self
    }

    /// Appends a map; its index is the number of maps before it.
    pub fn with_map(mut self, map: JitMap) -> Self {
        self.maps.push(map);
        self
    }

    /// Lets lookups in per-CPU array map `index` be inlined.
    pub fn with_percpu_array(mut self, index: usize, layout: PerCpuArrayLayout) -> Self {
        self.percpu_arrays.insert(index, layout);
        self
    }

    /// An env that lets `prog` compile for display only (`pkbpf disasm
    /// --jit`): a placeholder helper for every helper id it calls (it aborts
    /// the run if ever called) and placeholder addresses for its maps
    /// (`0x1000_0000 + 0x10_0000 * index`). Never run code compiled with it
    /// on real data: map pointers point nowhere.
    pub fn for_display(prog: &VerifiedProgram) -> Self {
        let mut env = Self::new();
        for &id in prog.helpers_used() {
            if let Ok(id) = u32::try_from(id) {
                env.helpers.insert(id, display_only_helper);
            }
        }
        for i in 0..prog.maps().len() as u64 {
            let addr = 0x1000_0000 + 0x10_0000 * i;
            env.maps.push(JitMap {
                object: addr,
                value: Some(addr),
                array: None,
            });
        }
        env
    }

    /// bpf_conformance's helpers: id 5, "unwind", returns `r1` and, when `r1`
    /// is 0, ends the program with result 0.
    pub fn conformance() -> Self {
        Self::new().with_helper(5, conformance_unwind)
    }
}

/// Abort code of [`JitEnv::for_display`]'s placeholder helpers.
pub const ABORT_DISPLAY_ONLY: u64 = u64::MAX - 2;

extern "C" fn display_only_helper(
    _: u64,
    _: u64,
    _: u64,
    _: u64,
    _: u64,
    _: *mut c_void,
) -> HelperRet {
    HelperRet {
        value: 0,
        abort: ABORT_DISPLAY_ONLY,
    }
}

extern "C" fn conformance_unwind(
    r1: u64,
    _: u64,
    _: u64,
    _: u64,
    _: u64,
    _: *mut c_void,
) -> HelperRet {
    HelperRet {
        value: r1,
        abort: if r1 == 0 { HELPER_EXIT } else { 0 },
    }
}

/// Why a program could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum JitError {
    /// An instruction the JIT does not run (legacy packet loads, kfuncs).
    #[error("instruction {pc}: {what} is not supported by the JIT")]
    Unsupported {
        /// Slot index.
        pc: usize,
        /// What it is.
        what: &'static str,
    },
    /// A call to a helper id the env does not provide.
    #[error("instruction {pc}: unknown helper {id}")]
    UnknownHelper {
        /// Slot index.
        pc: usize,
        /// The helper id.
        id: i32,
    },
    /// An `lddw` pseudo form the JIT cannot resolve.
    #[error("instruction {pc}: lddw pseudo form {kind:?} (imm {imm}) cannot be resolved")]
    Pseudo {
        /// Slot index.
        pc: usize,
        /// The form.
        kind: LdPseudo,
        /// Its immediate.
        imm: i32,
    },
    /// A map index beyond the env's maps.
    #[error("instruction {pc}: map index {index} out of range ({maps} maps)")]
    MapIndex {
        /// Slot index.
        pc: usize,
        /// The index.
        index: i32,
        /// Number of maps in the env.
        maps: usize,
    },
    /// `map_idx_value` on a map without a value area.
    #[error("instruction {pc}: map {index} has no direct value area")]
    NoMapValue {
        /// Slot index.
        pc: usize,
        /// The map index.
        index: i32,
    },
    /// A jump or call whose target is outside the program or inside an lddw.
    #[error("instruction {pc}: jump target {target} is not an instruction")]
    BadTarget {
        /// Slot index.
        pc: usize,
        /// The target slot.
        target: i64,
    },
    /// An invalid instruction field.
    #[error("instruction {pc}: invalid {field} {value}")]
    Invalid {
        /// Slot index.
        pc: usize,
        /// Which field.
        field: &'static str,
        /// Its value.
        value: i64,
    },
    /// The program is empty.
    #[error("the program is empty")]
    Empty,
    /// A helper id too large for the `callx` table.
    #[error("helper id {id} is too large for callx (at most {max})")]
    CallxTable {
        /// The helper id.
        id: u32,
        /// The largest id supported.
        max: usize,
    },
    /// The assembler failed (a JIT bug).
    #[error("assembler error: {reason}")]
    Assemble {
        /// dynasm's message.
        reason: String,
    },
    /// A JIT bug caught before it could run.
    #[error("instruction {pc}: internal JIT error: {what}")]
    Internal {
        /// Slot index.
        pc: usize,
        /// What went wrong.
        what: String,
    },
    /// Hardening could not remove every gadget.
    #[error("{first} still present after {attempts} hardening rounds")]
    GadgetsRemain {
        /// Rounds tried.
        attempts: u32,
        /// The first remaining gadget.
        first: Gadget,
    },
    /// Mapping or protecting the code memory failed.
    #[error("{op} of code memory failed")]
    CodeMemory {
        /// The failing call.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Why a run ended without reaching `exit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// A helper returned a non-zero abort code other than [`HELPER_EXIT`].
    #[error("helper aborted the program with code {code:#x}")]
    HelperAbort {
        /// The code.
        code: u64,
    },
    /// Not a failure: the program tail-called `target` (see
    /// [`HELPER_TAIL_CALL`]); the runtime runs it next.
    #[error("tail call to program {target}")]
    TailCall {
        /// What the tail-call helper returned as the target.
        target: u64,
    },
    /// `callx` with a helper id the env does not have.
    #[error("callx to an unknown helper id")]
    BadCallx,
    /// Execution ran past the last instruction.
    #[error("execution fell off the end of the program")]
    FellOff,
}

/// The per-run context the code keeps in `r12` (layout fixed: the code
/// reads it at offsets 0, 8, 16). Only needed by callers of
/// [`JitProgram::entry`], such as a sandbox entry gate that switches stacks;
/// [`JitProgram::call_with_env`] builds one itself.
#[repr(C)]
#[derive(Debug)]
pub struct RunCtx {
    /// Passed to every helper as its sixth argument.
    pub env: *mut c_void,
    /// Written by the code on entry (its frame's stack pointer, used to
    /// unwind on abort); any value on input.
    pub saved_rsp: u64,
    /// Set to the abort code when a helper aborts (0 otherwise); must be 0
    /// on input.
    pub abort: u64,
}

impl RunCtx {
    /// A context for one run with helper env `env`.
    #[inline]
    pub fn new(env: *mut c_void) -> RunCtx {
        RunCtx {
            env,
            saved_rsp: 0,
            abort: 0,
        }
    }

    /// How the run that returned `r0` with this context ended: `Ok(r0)`
    /// when `abort` is 0 or [`HELPER_EXIT`], else the [`RunError`] its
    /// code stands for. The normal case is one compare; decoding the others
    /// is out of line.
    #[inline]
    pub fn outcome(&self, r0: u64) -> Result<u64, RunError> {
        if self.abort <= HELPER_EXIT {
            Ok(r0)
        } else {
            Err(abort_error(self.abort, r0))
        }
    }
}

#[cold]
#[inline(never)]
fn abort_error(abort: u64, r0: u64) -> RunError {
    match abort {
        HELPER_TAIL_CALL => RunError::TailCall { target: r0 },
        ABORT_BAD_CALLX => RunError::BadCallx,
        ABORT_FELL_OFF => RunError::FellOff,
        code => RunError::HelperAbort { code },
    }
}

/// The machine-code entry point: `r0 = entry(r1, r2, ctx)` (SysV C ABI).
/// The code needs about 5 KiB of stack (eight 512-byte frames plus saved
/// registers) on whatever stack it is called on.
pub type Entry = unsafe extern "C" fn(u64, u64, *mut RunCtx) -> u64;

/// A compiled program: read-execute machine code, freed on drop.
#[derive(Debug)]
pub struct JitProgram {
    code: CodeMemory,
    /// A copy of the code, for [`JitProgram::code`] and dumps.
    bytes: Vec<u8>,
    /// Start offset of each unit, in order.
    units: Vec<(usize, Unit)>,
    /// Helper stub offsets by id.
    stubs: BTreeMap<u32, usize>,
    /// Emit-and-scan rounds it took.
    attempts: u32,
}

impl JitProgram {
    /// Compiles a verified program. `env` gives the helpers the program
    /// calls (by id) and the addresses of the maps it was verified against
    /// (by index).
    ///
    /// The JIT relies on what the verifier proved: every memory access is in
    /// bounds (no runtime checks are emitted), execution never falls off the
    /// end, bpf-to-bpf calls nest at most 8 deep.
    pub fn compile(prog: &VerifiedProgram, env: &JitEnv) -> Result<JitProgram, JitError> {
        Self::compile_with_seed(prog, env, rand::random())
    }

    /// Compiles a verified program with a fixed blinding seed (reproducible
    /// code, for tests and benchmarks).
    pub fn compile_with_seed(
        prog: &VerifiedProgram,
        env: &JitEnv,
        seed: u64,
    ) -> Result<JitProgram, JitError> {
        let inline: BTreeMap<usize, u32> = prog
            .inlinable_lookups()
            .iter()
            .chain(prog.inlinable_percpu_lookups())
            .copied()
            .collect();
        Self::compile_inner(prog.insns(), env, seed, &inline)
    }

    /// Compiles `insns` (one [`Insn`] per slot) with a fixed blinding seed,
    /// without verification: running the result is only sound for programs
    /// the verifier would accept.
    #[cfg(test)]
    pub(crate) fn compile_seeded(
        insns: &[Insn],
        env: &JitEnv,
        seed: u64,
    ) -> Result<JitProgram, JitError> {
        Self::compile_inner(insns, env, seed, &BTreeMap::new())
    }

    /// [`JitProgram::compile_seeded`] with the `map_lookup_elem` call sites
    /// (slot → map index) that may be inlined.
    pub(crate) fn compile_inner(
        insns: &[Insn],
        env: &JitEnv,
        seed: u64,
        inline: &BTreeMap<usize, u32>,
    ) -> Result<JitProgram, JitError> {
        if insns.is_empty() {
            return Err(JitError::Empty);
        }
        let has_callx = insns.iter().any(|i| matches!(i, Insn::CallX { .. }));
        let table_len = if has_callx {
            let max = env.helpers.keys().next_back().copied().unwrap_or(0);
            if max as usize >= codegen::MAX_CALLX_TABLE {
                return Err(JitError::CallxTable {
                    id: max,
                    max: codegen::MAX_CALLX_TABLE - 1,
                });
            }
            max as usize + 1
        } else {
            0
        };
        let mut rng = StdRng::seed_from_u64(seed);
        let mut hard: HashMap<Unit, u32> = HashMap::new();
        let mut first = None;
        for attempt in 1..=MAX_ATTEMPTS {
            let out = codegen::emit(insns, env, &hard, &mut rng, table_len, inline)?;
            let hits = scan_gadgets(&out.code);
            if let Some(&g) = hits.first() {
                first = Some(g);
                for h in hits {
                    for u in out.units_overlapping(h.offset, h.kind.pattern_len()) {
                        *hard.entry(u).or_insert(0) += 1;
                    }
                }
                continue;
            }
            let code = CodeMemory::new(&out.code)?;
            return Ok(JitProgram {
                code,
                bytes: out.code,
                units: out.units,
                stubs: out.stubs,
                attempts: attempt,
            });
        }
        Err(JitError::GadgetsRemain {
            attempts: MAX_ATTEMPTS,
            first: first.expect("a failed round records its first gadget"),
        })
    }

    /// Runs the program with `r1`, `r2` (e.g. the context pointer and its
    /// length), a null helper env; returns `r0`. A helper abort or a bad
    /// `callx` gives 0; use [`JitProgram::call_with_env`] to see them.
    ///
    /// # Safety
    ///
    /// `r1`/`r2` must be what the program was verified for (pointers valid
    /// for the accesses the verifier allowed), and its helpers must accept a
    /// null env.
    pub unsafe fn call(&self, r1: u64, r2: u64) -> u64 {
        // SAFETY: forwarded contract (see above).
        unsafe { self.call_with_env(r1, r2, std::ptr::null_mut()) }.unwrap_or(0)
    }

    /// Runs the program with `r1`, `r2` and `env` passed to every helper.
    ///
    /// # Safety
    ///
    /// As [`JitProgram::call`]; `env` must be what the env's helpers expect.
    #[inline]
    pub unsafe fn call_with_env(
        &self,
        r1: u64,
        r2: u64,
        env: *mut c_void,
    ) -> Result<u64, RunError> {
        let mut ctx = RunCtx::new(env);
        // SAFETY: the caller guarantees the program is safe to run on these
        // arguments; `ctx` outlives the call; the code stays mapped while
        // `self` is borrowed.
        let r0 = unsafe { (self.entry())(r1, r2, &mut ctx) };
        ctx.outcome(r0)
    }

    /// The entry point, valid while `self` lives. Calling it has the
    /// contract of [`JitProgram::call_with_env`]; the result is `r0`, and
    /// `ctx.abort` tells how the run ended (0 or [`HELPER_EXIT`]: normally;
    /// [`HELPER_TAIL_CALL`], [`ABORT_BAD_CALLX`], [`ABORT_FELL_OFF`] or a
    /// helper's code otherwise).
    #[inline]
    pub fn entry(&self) -> Entry {
        // SAFETY: offset 0 of the code is the entry prologue, emitted with
        // exactly the `Entry` signature (SysV C ABI).
        unsafe { std::mem::transmute::<*const u8, Entry>(self.code.base()) }
    }

    /// The machine code (a copy kept beside the mapping, so it stays
    /// readable after [`JitProgram::make_execute_only`]).
    pub fn code(&self) -> &[u8] {
        &self.bytes
    }

    /// Makes the code pages execute-only: `pkey_mprotect(PROT_EXEC, pkey)`
    /// with the sandbox's key, or with `None` a plain `mprotect(PROT_EXEC)`
    /// (Linux gives such pages its execute-only key where the CPU has PKU;
    /// without PKU x86 pages stay readable). The code still runs; data
    /// reads of it fault once the key's access is disabled in PKRU.
    pub fn make_execute_only(&self, pkey: Option<i32>) -> Result<(), JitError> {
        self.code.make_execute_only(pkey)
    }

    /// Start and length (whole pages) of the code mapping, for the sandbox
    /// to `pkey_mprotect` it execute-only.
    pub fn code_range(&self) -> (*const u8, usize) {
        self.code.range()
    }

    /// Offsets of the per-helper stubs (the one place each helper is
    /// called from), by helper id.
    pub fn helper_stubs(&self) -> &BTreeMap<u32, usize> {
        &self.stubs
    }

    /// How many emit-and-scan rounds compilation took (1 = clean at once).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Machine code of slot `pc` (empty for the second half of an `lddw`).
    pub fn insn_code(&self, pc: usize) -> &[u8] {
        let code = self.code();
        let Some(i) = self.units.iter().position(|&(_, u)| u == Unit::Insn(pc)) else {
            return &[];
        };
        let start = self.units[i].0;
        let end = self.units.get(i + 1).map_or(code.len(), |u| u.0);
        &code[start..end]
    }

    /// The machine code disassembled (Intel syntax, iced-x86) under each
    /// eBPF instruction of `insns` (the program this was compiled from), then
    /// the prologue, epilogue and helper stubs.
    pub fn dump(&self, insns: &[Insn]) -> String {
        dump::dump(self, insns)
    }
}

#[cfg(test)]
mod tests;
