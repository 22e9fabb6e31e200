//! Instruction selection: one pass over the program, emitting x86-64 with
//! dynasm into a position-independent byte vector.
//!
//! Register mapping (eBPF → x86-64), chosen so that a helper call needs no
//! argument shuffling (r1–r5 already sit in SysV argument registers) and
//! r6–r9 survive calls for free (callee-saved):
//!
//! | eBPF | x86 | why                                   |
//! |------|-----|---------------------------------------|
//! | r0   | rax | return value                          |
//! | r1   | rdi | 1st argument                          |
//! | r2   | rsi | 2nd argument                          |
//! | r3   | rdx | 3rd argument                          |
//! | r4   | rcx | 4th argument                          |
//! | r5   | r8  | 5th argument                          |
//! | r6   | rbx | callee-saved                          |
//! | r7   | r13 | callee-saved                          |
//! | r8   | r14 | callee-saved                          |
//! | r9   | r15 | callee-saved                          |
//! | r10  | rbp | frame pointer (top of the 512-byte frame) |
//!
//! `r12` holds the run context ([`RunCtx`](super::RunCtx): helper env, the
//! entry stack pointer, the abort code); `r9`, `r10`, `r11` are scratch
//! (`r9` carries the helper env as the sixth argument).
//!
//! Native frames. Entry (`extern "C" fn(r1, r2, ctx) -> r0`): push rbp, rbx,
//! r12–r15, reserve 512 + 8 bytes (keeps `rsp` 16-byte aligned), `rbp` =
//! top of the eBPF stack. A bpf-to-bpf call is a native `call` to the
//! callee's entry, which pushes rbx, r13–r15 and rbp (r6–r9 and r10 are thus
//! preserved as the ISA requires) and reserves its own 512 bytes; its `exit`
//! undoes that and `ret`s.
//!
//! Helper calls: every `call N` is a native `call` to the **per-helper stub
//! for N**, emitted once after the program body. The stub aligns the stack,
//! loads the env into `r9`, calls the helper, and on a non-zero `abort`
//! (returned in `rdx`) unwinds to the entry frame. That stub is the one place
//! the sandbox turns into a gate. `callx` bounds-checks the id against a
//! jump table (in the code: one `jmp stub` per id, so execute-only pages
//! work) and lands in the same stub, so it goes through the same gate.
//! The one exception: helpers in `JitEnv::direct_helpers` (the map
//! operations, offered only for code that runs without protection keys)
//! are plain calls from the body (`direct`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use dynasmrt::x64::X64Relocation;
use dynasmrt::{dynasm, DynamicLabel, DynasmApi, DynasmLabelApi, VecAssembler};
use pkbpf_verifier::isa::{
    AluOp, AtomicOp, ByteOrder, CallTarget, Insn, JmpCond, LdPseudo, MemSize, Reg, Source, Width,
    STACK_SIZE,
};
use rand::Rng;

use super::gadget::risky;
use super::{ArrayLayout, JitEnv, JitError, ABORT_BAD_CALLX, ABORT_FELL_OFF};

/// `bpf_map_lookup_elem`'s helper id.
const MAP_LOOKUP_ELEM: i32 = 1;
/// `bpf_loop`'s helper id (compiled in line: its callback is program code).
const BPF_LOOP: i32 = 181;

/// eBPF register number → x86-64 register number.
const MAP: [u8; 11] = [0, 7, 6, 2, 1, 8, 3, 13, 14, 15, 5];
const RAX: u8 = 0;
const RCX: u8 = 1;
const RDX: u8 = 2;
const S9: u8 = 9;
const S10: u8 = 10;
const S11: u8 = 11;

/// Offsets inside `RunCtx`.
const CTX_ENV: i32 = 0;
const CTX_RSP: i32 = 8;
const CTX_ABORT: i32 = 16;

/// Bytes reserved below the saved registers in the entry frame.
const MAIN_FRAME: i32 = STACK_SIZE as i32 + 8;
const SUB_FRAME: i32 = STACK_SIZE as i32;

/// Most helper ids a `callx` table may cover.
pub(crate) const MAX_CALLX_TABLE: usize = 4096;
/// Bytes per `callx` jump-table entry.
const CALLX_ENTRY: usize = 8;

fn x(r: Reg) -> u8 {
    MAP[r.idx()]
}

/// A piece of the output that can be hardened on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Unit {
    /// Entry prologue.
    Prologue,
    /// The code of one eBPF slot.
    Insn(usize),
    /// Fall-off guard, abort path and epilogue.
    Tail,
    /// The stub of one helper.
    Stub(u32),
    /// The `callx` dispatcher.
    Callx,
}

/// What one emission pass produced.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) code: Vec<u8>,
    /// `(start offset, unit)` in emission order.
    pub(crate) units: Vec<(usize, Unit)>,
    /// Helper id → stub offset.
    pub(crate) stubs: BTreeMap<u32, usize>,
}

impl Output {
    /// Units whose bytes overlap `[start, start + len)`.
    pub(crate) fn units_overlapping(&self, start: usize, len: usize) -> Vec<Unit> {
        let end = start + len;
        let mut out = Vec::new();
        for (i, &(s, u)) in self.units.iter().enumerate() {
            let e = self.units.get(i + 1).map_or(self.code.len(), |n| n.0);
            if s < end && start < e.max(s + 1) {
                out.push(u);
            }
        }
        out
    }
}

/// Per-unit hardening levels: level `L > 0` blinds every immediate and
/// displacement of the unit with a fresh random key and puts `L` one-byte
/// nops in front of it (shifting the relative displacements around it).
pub(crate) type Hardening = HashMap<Unit, u32>;

macro_rules! asm {
    ($ops:expr; $($t:tt)*) => {
        dynasm!($ops ; .arch x64 ; $($t)*)
    };
}

mod direct;
mod liveness;
mod percpu;

/// Emits `op d, s` at 64 or 32 bits.
macro_rules! rr {
    ($self:ident, $w64:expr, $op:ident, $d:expr, $s:expr) => {
        if $w64 {
            asm!($self.ops; $op Rq($d), Rq($s))
        } else {
            asm!($self.ops; $op Rd($d), Rd($s))
        }
    };
}

/// Emits `op d, imm` at 64 or 32 bits, with the sign-extended 8-bit
/// immediate form when the value fits.
macro_rules! ri {
    ($self:ident, $w64:expr, $op:ident, $d:expr, $i:expr) => {{
        let i: i32 = $i;
        match (i8::try_from(i), $w64) {
            (Ok(b), w64) => $self.alu_imm8(w64, imm8_digit(stringify!($op)), $d, b),
            (Err(_), true) => asm!($self.ops; $op Rq($d), DWORD i),
            (Err(_), false) => asm!($self.ops; $op Rd($d), DWORD i),
        }
    }};
}

/// The `/digit` of the `83 /digit ib` (ALU op, sign-extended 8-bit
/// immediate) encoding of `op`.
fn imm8_digit(op: &str) -> u8 {
    match op {
        "add" => 0,
        "or" => 1,
        "and" => 4,
        "sub" => 5,
        "xor" => 6,
        _ => 7, // cmp
    }
}

/// Memory operand: base register and displacement.
#[derive(Clone, Copy)]
struct Mem {
    base: u8,
    disp: i32,
}

struct Cg<'a, R: Rng> {
    ops: VecAssembler<X64Relocation>,
    insns: &'a [Insn],
    env: &'a JitEnv,
    hard: &'a Hardening,
    rng: &'a mut R,
    /// Jump target label of each slot (after any function prologue).
    labels: Vec<DynamicLabel>,
    /// Function entry label of each slot that starts a subprogram.
    fn_entry: BTreeMap<usize, DynamicLabel>,
    /// Start slot of the function each slot belongs to.
    func_of: Vec<usize>,
    epilogue: DynamicLabel,
    abort: DynamicLabel,
    stubs: BTreeMap<u32, DynamicLabel>,
    callx: Option<DynamicLabel>,
    callx_len: usize,
    /// `map_lookup_elem` call sites that may be inlined: slot → map index.
    inline: &'a BTreeMap<usize, u32>,
    units: Vec<(usize, Unit)>,
    /// Whether the current unit blinds all constants.
    blind: bool,
    /// Nops still to emit at the end of the current unit.
    post_nops: u32,
    /// The slim frame of a program without calls; `None`: the full frame.
    leaf: Option<LeafFrame>,
    /// Slots something jumps or calls to (a fused pair never spans one).
    /// (Indexed by slot; one past the end is `false`.)
    targets: Vec<bool>,
    /// Slots still to skip: they were fused into an earlier one.
    skip: usize,
    /// The register whose zero-ness the flags hold right now (ZF), with
    /// whether the value was written by a 32-bit op: set by an `add`,
    /// `sub`, `and`, `or` or `xor` that was the last thing emitted, so a
    /// following `if r ==/!= 0` needs no `test`.
    zf_reg: Option<(u8, bool)>,
    /// `zf_reg` as the current slot found it (cleared at jump targets).
    zf_in: Option<(u8, bool)>,
    /// Registers live after each slot (bit `i` = eBPF register `i`), for
    /// folding `rX += imm` into the next access's displacement when rX is
    /// dead after it. Empty when no slot could use it.
    live_out: Vec<u16>,
}

/// The entry frame of a program that calls nothing (no helper, no
/// bpf-to-bpf call, no `callx`): it needs no run context in `r12` (nothing
/// can abort it), saves only the callee-saved registers its code writes,
/// reserves the 512-byte eBPF stack only when it uses `r10`, and zeroes only
/// the registers it mentions. The context pointer is pushed last, so the
/// fall-off guard can still report [`ABORT_FELL_OFF`].
#[derive(Clone, Debug)]
struct LeafFrame {
    /// Callee-saved x86 registers pushed, in push order.
    saved: Vec<u8>,
    /// Whether `r10` is used (then `rbp` is saved and points to the top of
    /// a 512-byte stack below the saved context pointer).
    stack: bool,
    /// Registers zeroed on entry (all mentioned ones except r1, r2, r10).
    zero: Vec<u8>,
}

impl LeafFrame {
    /// The slim frame for `insns`, or `None` when the program calls anything.
    fn of(insns: &[Insn]) -> Option<LeafFrame> {
        let mut used = [false; 11];
        for insn in insns {
            let mut mark = |r: Reg| used[r.idx()] = true;
            match *insn {
                Insn::Call(_) | Insn::CallX { .. } | Insn::LdAbs { .. } | Insn::LdInd { .. } => {
                    return None
                }
                Insn::Alu { dst, src, .. } | Insn::Jmp { dst, src, .. } => {
                    mark(dst);
                    if let Source::Reg(r) = src {
                        mark(r);
                    }
                }
                Insn::Store { dst, src, .. } => {
                    mark(dst);
                    if let Source::Reg(r) = src {
                        mark(r);
                    }
                }
                Insn::Neg { dst, .. }
                | Insn::Endian { dst, .. }
                | Insn::LdImm64 { dst, .. }
                | Insn::LdPseudo { dst, .. } => mark(dst),
                Insn::Load { dst, src, .. } => {
                    mark(dst);
                    mark(src);
                }
                Insn::Atomic { dst, src, .. } => {
                    mark(dst);
                    mark(src);
                    // cmpxchg compares with r0; the fetch forms may use it.
                    used[0] = true;
                }
                Insn::LdImm64Hi | Insn::Ja { .. } | Insn::Exit => {}
            }
        }
        // r0 is what `exit` returns: always defined.
        used[0] = true;
        let stack = used[10];
        let mut saved = Vec::new();
        if stack {
            saved.push(5);
        }
        for r in 6..=9 {
            if used[r] {
                saved.push(MAP[r]);
            }
        }
        let zero = (0..10)
            .filter(|&r| used[r] && r != 1 && r != 2)
            .map(|r| MAP[r])
            .collect();
        Some(LeafFrame { saved, stack, zero })
    }

    /// Bytes between `rsp` after the prologue and the saved context pointer.
    fn ctx_slot(&self) -> i32 {
        if self.stack {
            STACK_SIZE as i32
        } else {
            0
        }
    }
}

/// Emits the whole program once.
///
/// `callx_len` is the number of helper ids `callx` may reach (largest id
/// in the env + 1; 0 when the program has no `callx`).
pub(crate) fn emit<R: Rng>(
    insns: &[Insn],
    env: &JitEnv,
    hard: &Hardening,
    rng: &mut R,
    callx_len: usize,
    inline: &BTreeMap<usize, u32>,
) -> Result<Output, JitError> {
    let mut ops = VecAssembler::<X64Relocation>::new(0);
    let labels: Vec<DynamicLabel> = insns.iter().map(|_| ops.new_dynamic_label()).collect();
    let epilogue = ops.new_dynamic_label();
    let abort = ops.new_dynamic_label();

    // Subprogram starts: slot 0 and every local call target.
    let mut starts = BTreeSet::from([0usize]);
    for (pc, insn) in insns.iter().enumerate() {
        // (`lddw rX, func` names a bpf_loop callback: a subprogram too.)
        if let Insn::Call(CallTarget::Local(_))
        | Insn::LdPseudo {
            kind: LdPseudo::Func,
            ..
        } = insn
        {
            let t = target(insns, pc, insn)?;
            starts.insert(t);
        }
    }
    let mut targets = starts.clone();
    for (pc, insn) in insns.iter().enumerate() {
        if let Insn::Ja { .. } | Insn::Jmp { .. } = insn {
            targets.insert(target(insns, pc, insn)?);
        }
    }
    let mut fn_entry = BTreeMap::new();
    for &s in starts.iter().filter(|&&s| s != 0) {
        fn_entry.insert(s, ops.new_dynamic_label());
    }
    let mut func_of = Vec::with_capacity(insns.len());
    let mut cur = 0;
    for pc in 0..insns.len() {
        if starts.contains(&pc) {
            cur = pc;
        }
        func_of.push(cur);
    }

    let mut cg = Cg {
        ops,
        insns,
        env,
        hard,
        rng,
        labels,
        fn_entry,
        func_of,
        epilogue,
        abort,
        stubs: BTreeMap::new(),
        callx: None,
        callx_len,
        inline,
        units: Vec::new(),
        blind: false,
        post_nops: 0,
        leaf: LeafFrame::of(insns),
        live_out: liveness::live_out(insns),
        targets: {
            let mut t = vec![false; insns.len() + 2];
            for &s in &targets {
                t[s] = true;
            }
            t
        },
        skip: 0,
        zf_reg: None,
        zf_in: None,
    };
    cg.prologue();
    for pc in 0..insns.len() {
        cg.insn(pc)?;
    }
    cg.tail();
    let stub_offsets = cg.emit_stubs()?;
    cg.end_unit();
    let units = std::mem::take(&mut cg.units);
    let code = cg.ops.finalize().map_err(|e| JitError::Assemble {
        reason: e.to_string(),
    })?;
    Ok(Output {
        code,
        units,
        stubs: stub_offsets,
    })
}

/// The validated target slot of a jump or local call at `pc`.
fn target(insns: &[Insn], pc: usize, insn: &Insn) -> Result<usize, JitError> {
    let t = insn.branch_target(pc).unwrap_or(-1);
    match usize::try_from(t) {
        Ok(t) if t < insns.len() && insns[t] != Insn::LdImm64Hi => Ok(t),
        _ => Err(JitError::BadTarget { pc, target: t }),
    }
}

impl<R: Rng> Cg<'_, R> {
    fn offset(&self) -> usize {
        self.ops.offset().0
    }

    /// Ends the current unit: emits the nops its hardening asks for after
    /// its code (they lengthen the unit's forward displacements).
    fn end_unit(&mut self) {
        for _ in 0..std::mem::take(&mut self.post_nops) {
            asm!(self.ops; nop);
        }
    }

    /// Starts a unit: records it, applies its hardening. `L` nops go before
    /// the unit (changing backward displacements from it and every
    /// displacement across it) and `L` after it (changing its forward ones).
    fn unit(&mut self, u: Unit) {
        self.end_unit();
        let level = self.hard.get(&u).copied().unwrap_or(0);
        for _ in 0..level {
            asm!(self.ops; nop);
        }
        self.blind = level > 0;
        self.post_nops = level;
        let off = self.offset();
        self.units.push((off, u));
    }

    /// `op d, imm8` (sign-extended) as `[REX] 83 /digit ib`: dynasm has no
    /// way to ask for this short form with a run-time register.
    fn alu_imm8(&mut self, w64: bool, digit: u8, d: u8, b: i8) {
        let rex = 0x40 | if w64 { 8 } else { 0 } | (d >> 3);
        if rex != 0x40 {
            self.ops.push(rex);
        }
        self.ops.push(0x83);
        self.ops.push(0xc0 | (digit << 3) | (d & 7));
        self.ops.push(b as u8);
    }

    /// `[66] [REX] opcode modrm [sib] [disp]` for a register (or `/digit`)
    /// `reg` and the memory operand `m`, in the shortest form: no
    /// displacement for 0 (except rbp/r13 bases), 8 bits when it fits, a SIB
    /// byte only for rsp/r12 bases. dynasm always emits SIB + disp32 for a
    /// run-time base register. `byte_reg`: `reg` is an 8-bit register (a
    /// REX prefix makes 4–7 mean sil/dil/spl/bpl).
    fn mem_op(&mut self, o16: bool, w64: bool, byte_reg: bool, opcode: &[u8], reg: u8, m: Mem) {
        if o16 {
            self.ops.push(0x66);
        }
        let rex = 0x40 | if w64 { 8 } else { 0 } | ((reg >> 3) << 2) | (m.base >> 3);
        if rex != 0x40 || byte_reg {
            self.ops.push(rex);
        }
        self.ops.extend(opcode.iter().copied());
        let (mode, disp8) = match i8::try_from(m.disp) {
            Ok(0) if m.base & 7 != 5 => (0u8, None),
            Ok(b) => (1u8, Some(b)),
            Err(_) => (2u8, None),
        };
        self.ops.push((mode << 6) | ((reg & 7) << 3) | (m.base & 7));
        if m.base & 7 == 4 {
            self.ops.push(0x24);
        }
        match (mode, disp8) {
            (1, Some(b)) => self.ops.push(b as u8),
            (2, _) => self.ops.extend(m.disp.to_le_bytes()),
            _ => {}
        }
    }

    /// A random 32-bit key such that neither it nor `v ^ key` has a risky byte.
    fn key32(&mut self, v: i32) -> i32 {
        loop {
            let k: i32 = self.rng.gen();
            if !risky(&k.to_le_bytes()) && !risky(&(v ^ k).to_le_bytes()) {
                return k;
            }
        }
    }

    fn key64(&mut self, v: u64) -> u64 {
        loop {
            let k: u64 = self.rng.gen();
            if !risky(&k.to_le_bytes()) && !risky(&(v ^ k).to_le_bytes()) {
                return k;
            }
        }
    }

    /// Whether a 32-bit constant must not appear in the code as is.
    fn must_blind(&self, v: i32) -> bool {
        self.blind || risky(&v.to_le_bytes())
    }

    /// `reg = v` (64-bit), blinded when needed. May clobber r11 (or r10 when
    /// `reg` is r11).
    fn mov_imm64(&mut self, reg: u8, v: u64) {
        let scratch = if reg == S11 { S10 } else { S11 };
        if let Ok(i) = i32::try_from(v as i64) {
            if !self.must_blind(i) {
                if i >= 0 {
                    asm!(self.ops; mov Rd(reg), DWORD i);
                } else {
                    asm!(self.ops; mov Rq(reg), DWORD i);
                }
            } else {
                let k = self.key32(i);
                asm!(self.ops; mov Rq(reg), DWORD i ^ k ; xor Rq(reg), DWORD k);
            }
        } else if !self.blind && !risky(&v.to_le_bytes()) {
            asm!(self.ops; mov Rq(reg), QWORD v as i64);
        } else {
            let k = self.key64(v);
            asm!(self.ops
                ; mov Rq(reg), QWORD (v ^ k) as i64
                ; mov Rq(scratch), QWORD k as i64
                ; xor Rq(reg), Rq(scratch));
        }
    }

    /// `reg = sext(v)` (64-bit) or `reg = v` (32-bit, zero-extended), blinded.
    fn mov_imm32(&mut self, w64: bool, reg: u8, v: i32) {
        if w64 {
            self.mov_imm64(reg, v as i64 as u64);
        } else if !self.must_blind(v) {
            asm!(self.ops; mov Rd(reg), DWORD v);
        } else {
            let k = self.key32(v);
            asm!(self.ops; mov Rd(reg), DWORD v ^ k ; xor Rd(reg), DWORD k);
        }
    }

    /// The memory operand for `[base + off]`; when the displacement must be
    /// blinded the address is computed into r9 first.
    fn mem(&mut self, base: u8, off: i16) -> Mem {
        let disp = i32::from(off);
        if !self.must_blind(disp) {
            return Mem { base, disp };
        }
        let k = self.key32(disp);
        asm!(self.ops
            ; mov Rq(S9), DWORD disp ^ k
            ; xor Rq(S9), DWORD k
            ; add Rq(S9), Rq(base));
        Mem { base: S9, disp: 0 }
    }

    /// `r9 = base + off`.
    fn addr_to_r9(&mut self, base: u8, off: i16) {
        let m = self.mem(base, off);
        if m.base != S9 || m.disp != 0 {
            asm!(self.ops; lea Rq(S9), [Rq(m.base) + m.disp]);
        }
    }

    fn prologue(&mut self) {
        self.unit(Unit::Prologue);
        if let Some(leaf) = self.leaf.clone() {
            for &r in &leaf.saved {
                asm!(self.ops; push Rq(r));
            }
            asm!(self.ops; push rdx);
            if leaf.stack {
                asm!(self.ops
                    ; mov rbp, rsp
                    ; sub rsp, STACK_SIZE as i32
                );
            }
            for &r in &leaf.zero {
                asm!(self.ops; xor Rd(r), Rd(r));
            }
            return;
        }
        asm!(self.ops
            ; push rbp
            ; push rbx
            ; push r12
            ; push r13
            ; push r14
            ; push r15
            ; mov r12, rdx
            ; sub rsp, MAIN_FRAME
            ; mov [r12 + CTX_RSP], rsp
            ; lea rbp, [rsp + STACK_SIZE as i32]
            ; xor eax, eax
            ; xor edx, edx
            ; xor ecx, ecx
            ; xor r8d, r8d
            ; xor ebx, ebx
            ; xor r13d, r13d
            ; xor r14d, r14d
            ; xor r15d, r15d
        );
    }

    /// The leaf frame's epilogue (after `exit`): drop the stack and the
    /// context slot, restore the saved registers, return.
    fn leaf_epilogue(&mut self, leaf: &LeafFrame) {
        asm!(self.ops; add rsp, leaf.ctx_slot() + 8);
        for &r in leaf.saved.iter().rev() {
            asm!(self.ops; pop Rq(r));
        }
        asm!(self.ops; ret);
    }

    fn tail(&mut self) {
        self.unit(Unit::Tail);
        let abort = self.abort;
        let epilogue = self.epilogue;
        if let Some(leaf) = self.leaf.clone() {
            // Execution falling off the end (a verified program never does):
            // the context pointer is in its slot.
            asm!(self.ops
                ; mov rdx, [rsp + leaf.ctx_slot()]
                ; mov r11, QWORD ABORT_FELL_OFF as i64
                ; mov [rdx + CTX_ABORT], r11
                ; xor eax, eax
                ; =>abort
                ; =>epilogue
            );
            self.leaf_epilogue(&leaf);
            return;
        }
        // Execution falling off the end (a verified program never does).
        asm!(self.ops
            ; mov Rq(RDX), QWORD ABORT_FELL_OFF as i64
            ; xor eax, eax
            ; =>abort
            ; mov [r12 + CTX_ABORT], rdx
            ; mov rsp, [r12 + CTX_RSP]
            ; =>epilogue
            ; add rsp, MAIN_FRAME
            ; pop r15
            ; pop r14
            ; pop r13
            ; pop r12
            ; pop rbx
            ; pop rbp
            ; ret
        );
    }

    fn stub_label(&mut self, id: u32) -> DynamicLabel {
        if let Some(&l) = self.stubs.get(&id) {
            return l;
        }
        let l = self.ops.new_dynamic_label();
        self.stubs.insert(id, l);
        l
    }

    /// Emits the per-helper stubs and the callx dispatcher; returns the stub
    /// offsets by helper id.
    fn emit_stubs(&mut self) -> Result<BTreeMap<u32, usize>, JitError> {
        if let Some(callx) = self.callx {
            // callx may reach any helper of the env.
            let ids: Vec<u32> = self.env.helpers.keys().copied().collect();
            for id in ids {
                self.stub_label(id);
            }
            self.unit(Unit::Callx);
            let len = self.callx_len;
            let bad = self.ops.new_dynamic_label();
            let table = self.ops.new_dynamic_label();
            let abort = self.abort;
            // r11 = helper id (set by the call site); keep it in r9, which
            // the stub overwrites anyway.
            asm!(self.ops ; =>callx ; mov r9, r11);
            self.mov_imm64(S10, len as u64);
            asm!(self.ops
                ; cmp r9, r10
                ; jae =>bad
                ; lea r10, [=>table]
                ; lea r10, [r10 + r9 * 8]
                ; jmp r10
                ; =>bad
                ; add rsp, 8
                ; xor eax, eax
                ; mov Rq(RDX), QWORD ABORT_BAD_CALLX as i64
                ; jmp =>abort
                ; =>table
            );
            // The jump table: one 8-byte entry per id, `jmp stub` or `jmp
            // bad`. Code, not data, so it works on execute-only pages.
            for id in 0..len as u32 {
                let start = self.offset();
                let to = self.stubs.get(&id).copied().unwrap_or(bad);
                asm!(self.ops; jmp =>to);
                while self.offset() < start + CALLX_ENTRY {
                    asm!(self.ops; int3);
                }
                if self.offset() != start + CALLX_ENTRY {
                    return Err(JitError::Internal {
                        pc: self.insns.len(),
                        what: format!("callx table entry of {} bytes", self.offset() - start),
                    });
                }
            }
        }
        let mut offsets = BTreeMap::new();
        let stubs: Vec<(u32, DynamicLabel)> = self.stubs.iter().map(|(&i, &l)| (i, l)).collect();
        for (id, label) in stubs {
            self.unit(Unit::Stub(id));
            let abort = self.abort;
            offsets.insert(id, self.offset());
            asm!(self.ops
                ; =>label
                ; sub rsp, 8
                ; mov r9, [r12 + CTX_ENV]
            );
            let f = self.env.helpers.get(&id).map_or(0, |&f| f as usize as u64);
            self.mov_imm64(S11, f);
            asm!(self.ops
                ; call r11
                ; add rsp, 8
                ; test rdx, rdx
                ; jnz =>abort
                ; ret
            );
        }
        Ok(offsets)
    }

    fn insn(&mut self, pc: usize) -> Result<(), JitError> {
        self.unit(Unit::Insn(pc));
        if let Some(&entry) = self.fn_entry.get(&pc) {
            asm!(self.ops
                ; =>entry
                ; push rbx
                ; push r13
                ; push r14
                ; push r15
                ; push rbp
                ; sub rsp, SUB_FRAME
                ; lea rbp, [rsp + SUB_FRAME]
            );
        }
        let label = self.labels[pc];
        asm!(self.ops ; =>label);
        let zf = self.zf_reg.take();
        self.zf_in = if self.targets[pc] { None } else { zf };
        if self.skip > 0 {
            self.skip -= 1;
            return Ok(());
        }
        if self.fuse(pc)? {
            self.skip += 1;
            return Ok(());
        }
        let insn = self.insns[pc];
        match insn {
            Insn::Alu {
                width,
                op,
                dst,
                src,
            } => self.alu(pc, width == Width::W64, op, x(dst), src)?,
            Insn::Neg { width, dst } => {
                let d = x(dst);
                if width == Width::W64 {
                    asm!(self.ops; neg Rq(d));
                } else {
                    asm!(self.ops; neg Rd(d));
                }
            }
            Insn::Endian { order, bits, dst } => self.endian(pc, order, bits, x(dst))?,
            Insn::LdImm64 { dst, imm } => self.mov_imm64(x(dst), imm),
            Insn::LdPseudo {
                dst,
                kind: LdPseudo::Func,
                ..
            } => {
                let l = self.fn_entry[&target(self.insns, pc, &insn)?];
                asm!(self.ops; lea Rq(x(dst)), [=>l]);
            }
            Insn::LdPseudo {
                dst,
                kind,
                imm,
                next_imm,
            } => {
                let v = self.pseudo(pc, kind, imm, next_imm)?;
                self.mov_imm64(x(dst), v);
            }
            Insn::LdImm64Hi => {}
            Insn::LdAbs { .. } => return Err(JitError::Unsupported { pc, what: "ldabs" }),
            Insn::LdInd { .. } => return Err(JitError::Unsupported { pc, what: "ldind" }),
            Insn::Load {
                size,
                signed,
                dst,
                src,
                off,
            } => self.load(size, signed, x(dst), x(src), off),
            Insn::Store {
                size,
                dst,
                off,
                src,
            } => self.store(size, x(dst), off, src),
            Insn::Atomic {
                size,
                op,
                fetch,
                dst,
                src,
                off,
            } => self.atomic(size == MemSize::DW, op, fetch, x(dst), x(src), off),
            Insn::Ja { .. } => {
                let t = self.labels[target(self.insns, pc, &insn)?];
                asm!(self.ops; jmp =>t);
            }
            Insn::Jmp {
                width,
                cond,
                dst,
                src,
                ..
            } => {
                let t = self.labels[target(self.insns, pc, &insn)?];
                self.jmp(width == Width::W64, cond, x(dst), src, t);
            }
            Insn::Call(CallTarget::Helper(MAP_LOOKUP_ELEM)) if self.inline_lookup(pc).is_some() => {
                let layout = self.inline_lookup(pc).expect("checked by the guard");
                self.array_lookup(layout);
            }
            Insn::Call(CallTarget::Helper(MAP_LOOKUP_ELEM)) if self.percpu_lookup(pc).is_some() => {
                let layout = self.percpu_lookup(pc).expect("checked by the guard");
                self.percpu_array_lookup(layout);
            }
            Insn::Call(CallTarget::Helper(id)) if self.direct_helper(id).is_some() => {
                let f = self.direct_helper(id).expect("checked by the guard");
                self.direct_call(f);
            }
            Insn::Call(CallTarget::Helper(BPF_LOOP)) => self.bpf_loop(),
            Insn::Call(CallTarget::Helper(id)) => {
                let id = u32::try_from(id)
                    .ok()
                    .filter(|id| self.env.helpers.contains_key(id))
                    .ok_or(JitError::UnknownHelper { pc, id })?;
                let l = self.stub_label(id);
                asm!(self.ops; call =>l);
            }
            Insn::Call(CallTarget::Local(_)) => {
                let t = target(self.insns, pc, &insn)?;
                let l = self.fn_entry[&t];
                asm!(self.ops; call =>l);
            }
            Insn::Call(CallTarget::Kfunc(_)) => {
                return Err(JitError::Unsupported {
                    pc,
                    what: "kfunc call",
                })
            }
            Insn::CallX { reg } => {
                let l = match self.callx {
                    Some(l) => l,
                    None => {
                        let l = self.ops.new_dynamic_label();
                        self.callx = Some(l);
                        l
                    }
                };
                let r = x(reg);
                asm!(self.ops
                    ; mov r11, Rq(r)
                    ; call =>l
                );
            }
            Insn::Exit => {
                if let Some(leaf) = self.leaf.clone() {
                    self.leaf_epilogue(&leaf);
                } else if self.func_of[pc] == 0 {
                    let e = self.epilogue;
                    asm!(self.ops; jmp =>e);
                } else {
                    asm!(self.ops
                        ; add rsp, SUB_FRAME
                        ; pop rbp
                        ; pop r15
                        ; pop r14
                        ; pop r13
                        ; pop rbx
                        ; ret
                    );
                }
            }
        }
        Ok(())
    }

    /// Emits slots `pc` and `pc + 1` as one when they form a pattern with a
    /// shorter x86 equivalent (and nothing jumps to `pc + 1`); returns
    /// whether it did:
    ///
    /// - `rD = rS; rD += rT` / `rD = rS; rD += imm` (64-bit): one `lea`;
    /// - `if cond goto +1; goto T` (the usual loop back-edge shape): one
    ///   `jcc` with the inverted condition to `T`.
    fn fuse(&mut self, pc: usize) -> Result<bool, JitError> {
        let (Some(&a), Some(&b)) = (self.insns.get(pc), self.insns.get(pc + 1)) else {
            return Ok(false);
        };
        if self.targets[pc + 1] || self.blind {
            return Ok(false);
        }
        if let Some(done) = self.fuse_add_access(pc, a, b) {
            return Ok(done);
        }
        if self.fuse_zext(pc) {
            return Ok(true);
        }
        if let Some(done) = self.fuse_const_compare(pc, a, b) {
            return Ok(done);
        }
        match (a, b) {
            (
                Insn::Alu {
                    width: Width::W64,
                    op: AluOp::Mov,
                    dst,
                    src: Source::Reg(s),
                },
                Insn::Alu {
                    width: Width::W64,
                    op: AluOp::Add,
                    dst: dst2,
                    src: add,
                },
            ) if dst2 == dst && s != dst => {
                let (d, s) = (x(dst), x(s));
                match add {
                    Source::Reg(t) if t != dst => {
                        let t = x(t);
                        asm!(self.ops; lea Rq(d), [Rq(s) + Rq(t)]);
                    }
                    Source::Imm(i) if !self.must_blind(i) => {
                        self.mem_op(false, true, false, &[0x8d], d, Mem { base: s, disp: i });
                    }
                    _ => return Ok(false),
                }
                Ok(true)
            }
            (
                Insn::Jmp {
                    width,
                    cond,
                    dst,
                    src,
                    off: 1,
                },
                Insn::Ja { .. },
            ) => {
                let t = self.labels[target(self.insns, pc + 1, &b)?];
                self.jmp_inv(width == Width::W64, cond, x(dst), src, t, true);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// `bpf_loop(r1 = nr_loops, r2 = callback, r3 = ctx, r4 = flags)` in
    /// line, since the callback is a subprogram of this code (`r2` is its
    /// entry, from `lddw rX, func`): calls it with `r1` = the index and `r2`
    /// = ctx for the low 32 bits of `nr_loops` iterations or until it
    /// returns non-zero; `r0` = iterations done (counting the one that
    /// stopped), `-E2BIG` above 1 << 23 iterations, `-EINVAL` for flags
    /// other than 0 (the kernel's helper). The count, callback, ctx and
    /// index live on the native stack across the calls; r1–r5 are dead
    /// after a helper call anyway, r6–r9 are preserved by the callee.
    fn bpf_loop(&mut self) {
        let (top, stop, out, einval, e2big) = (
            self.ops.new_dynamic_label(),
            self.ops.new_dynamic_label(),
            self.ops.new_dynamic_label(),
            self.ops.new_dynamic_label(),
            self.ops.new_dynamic_label(),
        );
        asm!(self.ops
            ; test rcx, rcx
            ; jnz =>einval
            ; mov edi, edi
            ; cmp rdi, 0x80_0000
            ; ja =>e2big
            ; push rdi
            ; push rsi
            ; push rdx
            ; push 0
            ; =>top
            ; mov rdi, [rsp]
            ; cmp rdi, [rsp + 24]
            ; jae =>stop
            ; mov rsi, [rsp + 8]
            ; call QWORD [rsp + 16]
            ; add QWORD [rsp], 1
            ; test rax, rax
            ; jz =>top
            ; =>stop
            ; pop rax
            ; add rsp, 24
            ; jmp =>out
            ; =>einval
            ; mov rax, -22
            ; jmp =>out
            ; =>e2big
            ; mov rax, -7
            ; =>out
        );
    }

    /// `rX += k; <load or store at [rX + off]>` with rX dead afterwards:
    /// one access at `[rX + k + off]` (the add is not needed). Returns
    /// `None` when the pair does not have that shape.
    fn fuse_add_access(&mut self, pc: usize, a: Insn, b: Insn) -> Option<bool> {
        let Insn::Alu {
            width: Width::W64,
            op: AluOp::Add,
            dst: r,
            src: Source::Imm(k),
        } = a
        else {
            return None;
        };
        let live = *self.live_out.get(pc + 1)?;
        let overwritten = matches!(b, Insn::Load { dst, .. } if dst == r);
        if live & (1 << r.idx()) != 0 && !overwritten {
            return None;
        }
        let (base, off) = match b {
            Insn::Load { src, off, .. } => (src, off),
            Insn::Store { dst, off, src, .. } if src != Source::Reg(dst) => (dst, off),
            _ => return None,
        };
        if base != r {
            return None;
        }
        let disp = i32::try_from(i64::from(k) + i64::from(off)).ok()?;
        if self.must_blind(disp) {
            return None;
        }
        let m = Mem { base: x(r), disp };
        match b {
            Insn::Load {
                size, signed, dst, ..
            } => self.load_mem(size, signed, x(dst), m),
            Insn::Store { size, src, .. } => self.store_mem(size, m, src),
            _ => return None,
        }
        Some(true)
    }

    /// `rX <<= 32; rX >>= 32` (clang's zero-extension) as one 32-bit
    /// `mov rX, rX`, and `rX = rY; rX <<= 32; rX >>= 32` as `mov rX, rY`
    /// (32-bit moves clear the upper half). Whether it fused; a fused triple
    /// also skips its third slot (`self.skip`).
    fn fuse_zext(&mut self, pc: usize) -> bool {
        let insns = self.insns;
        let shift = |at: usize, op: AluOp, d: Reg| {
            matches!(insns.get(at), Some(&Insn::Alu {
                width: Width::W64,
                op: o,
                dst,
                src: Source::Imm(32),
            }) if o == op && dst == d)
        };
        match insns[pc] {
            Insn::Alu {
                width: Width::W64,
                op: AluOp::Mov,
                dst,
                src: Source::Reg(s),
            } if s != dst
                && shift(pc + 1, AluOp::Lsh, dst)
                && shift(pc + 2, AluOp::Rsh, dst)
                && !self.targets[pc + 2] =>
            {
                let (d, s) = (x(dst), x(s));
                asm!(self.ops; mov Rd(d), Rd(s));
                self.skip += 1;
                true
            }
            Insn::Alu {
                width: Width::W64,
                op: AluOp::Lsh,
                dst,
                src: Source::Imm(32),
            } if shift(pc + 1, AluOp::Rsh, dst) => {
                let d = x(dst);
                asm!(self.ops; mov Rd(d), Rd(d));
                true
            }
            _ => false,
        }
    }

    /// `rK = k; if rA <cond> rB` where one of rA, rB is rK and rK is dead
    /// after the jump: one compare with the immediate (the condition
    /// mirrored when the constant was on the left). Clang materialises such
    /// constants because eBPF compares take an immediate only on the right.
    fn fuse_const_compare(&mut self, pc: usize, a: Insn, b: Insn) -> Option<bool> {
        let Insn::Alu {
            width: mw,
            op: AluOp::Mov,
            dst: kr,
            src: Source::Imm(k),
        } = a
        else {
            return None;
        };
        let Insn::Jmp {
            width: jw,
            cond,
            dst: l,
            src: Source::Reg(r),
            ..
        } = b
        else {
            return None;
        };
        if l == r || self.live_out.get(pc + 1)? & (1 << kr.idx()) != 0 {
            return None;
        }
        // A 64-bit compare sign-extends the imm32, which a 32-bit mov did
        // not do.
        if mw == Width::W32 && jw == Width::W64 && k < 0 {
            return None;
        }
        let (other, cond) = if r == kr {
            (l, cond)
        } else if l == kr {
            (r, mirror(cond))
        } else {
            return None;
        };
        let t = self.labels[target(self.insns, pc + 1, &b).ok()?];
        self.jmp(jw == Width::W64, cond, x(other), Source::Imm(k), t);
        Some(true)
    }

    /// The array layout for an inlinable `map_lookup_elem` at `pc`.
    fn inline_lookup(&self, pc: usize) -> Option<ArrayLayout> {
        let &map = self.inline.get(&pc)?;
        self.env.maps.get(map as usize)?.array
    }

    /// `r0 = key < max_entries ? values + key * stride : NULL` with the u32
    /// key at `[r2]`: what `map_lookup_elem` returns for an array map,
    /// without the call. r1–r5 are dead after a call, as after the helper.
    fn array_lookup(&mut self, l: ArrayLayout) {
        let null = self.ops.new_dynamic_label();
        let done = self.ops.new_dynamic_label();
        asm!(self.ops; mov eax, DWORD [rsi]);
        self.mov_imm32(false, S11, l.max_entries as i32);
        asm!(self.ops; cmp eax, r11d ; jae =>null);
        self.mov_imm32(false, S11, l.stride as i32);
        asm!(self.ops; imul rax, r11);
        self.mov_imm64(S11, l.values);
        asm!(self.ops
            ; add rax, r11
            ; jmp =>done
            ; =>null
            ; xor eax, eax
            ; =>done
        );
    }

    fn pseudo(&self, pc: usize, kind: LdPseudo, imm: i32, next_imm: i32) -> Result<u64, JitError> {
        let map = |i: i32| {
            usize::try_from(i)
                .ok()
                .and_then(|i| self.env.maps.get(i))
                .ok_or(JitError::MapIndex {
                    pc,
                    index: i,
                    maps: self.env.maps.len(),
                })
        };
        match kind {
            LdPseudo::MapIdx => Ok(map(imm)?.object),
            LdPseudo::MapIdxValue => {
                let m = map(imm)?;
                let base = m.value.ok_or(JitError::NoMapValue { pc, index: imm })?;
                Ok(base.wrapping_add(next_imm as u32 as u64))
            }
            _ => Err(JitError::Pseudo { pc, kind, imm }),
        }
    }

    fn alu(&mut self, pc: usize, w64: bool, op: AluOp, d: u8, src: Source) -> Result<(), JitError> {
        // Fold immediates of ops that have no imm form or whose imm must be
        // blinded into r11.
        let src = match (op, src) {
            (AluOp::MovSx(bits), Source::Imm(i)) => {
                // Constant operand: fold.
                let b = i as i64 as u64;
                let v = match bits {
                    8 => b as i8 as i64 as u64,
                    16 => b as i16 as i64 as u64,
                    32 if w64 => b as i32 as i64 as u64,
                    _ => b,
                };
                let v = if w64 { v } else { v as u32 as u64 };
                self.mov_imm64(d, v);
                return Ok(());
            }
            (AluOp::Lsh | AluOp::Rsh | AluOp::Arsh, Source::Imm(i)) => {
                self.shift_imm(w64, op, d, i);
                return Ok(());
            }
            (AluOp::Div | AluOp::SDiv | AluOp::Mod | AluOp::SMod, _) => {
                self.div(w64, op, d, src);
                return Ok(());
            }
            (AluOp::Mov, Source::Imm(i)) => {
                self.mov_imm32(w64, d, i);
                return Ok(());
            }
            (_, Source::Imm(i)) if self.must_blind(i) => {
                self.mov_imm32(w64, S11, i);
                Operand::Reg(S11)
            }
            (_, s) => match s {
                Source::Reg(r) => Operand::Reg(x(r)),
                Source::Imm(i) => Operand::Imm(i),
            },
        };
        if matches!(
            op,
            AluOp::Add | AluOp::Sub | AluOp::And | AluOp::Or | AluOp::Xor
        ) {
            // The op below is the last instruction this slot emits.
            self.zf_reg = Some((d, !w64));
        }
        match (op, src) {
            (AluOp::Add, Operand::Reg(s)) => rr!(self, w64, add, d, s),
            (AluOp::Add, Operand::Imm(i)) => ri!(self, w64, add, d, i),
            (AluOp::Sub, Operand::Reg(s)) => rr!(self, w64, sub, d, s),
            (AluOp::Sub, Operand::Imm(i)) => ri!(self, w64, sub, d, i),
            (AluOp::Or, Operand::Reg(s)) => rr!(self, w64, or, d, s),
            (AluOp::Or, Operand::Imm(i)) => ri!(self, w64, or, d, i),
            (AluOp::And, Operand::Reg(s)) => rr!(self, w64, and, d, s),
            (AluOp::And, Operand::Imm(i)) => ri!(self, w64, and, d, i),
            (AluOp::Xor, Operand::Reg(s)) => rr!(self, w64, xor, d, s),
            (AluOp::Xor, Operand::Imm(i)) => ri!(self, w64, xor, d, i),
            (AluOp::Mov, Operand::Reg(s)) => {
                if w64 {
                    if s != d {
                        asm!(self.ops; mov Rq(d), Rq(s));
                    }
                } else {
                    asm!(self.ops; mov Rd(d), Rd(s));
                }
            }
            (AluOp::Mul, Operand::Reg(s)) => rr!(self, w64, imul, d, s),
            (AluOp::Mul, Operand::Imm(i)) => {
                if w64 {
                    asm!(self.ops; imul Rq(d), Rq(d), DWORD i);
                } else {
                    asm!(self.ops; imul Rd(d), Rd(d), DWORD i);
                }
            }
            (AluOp::Lsh | AluOp::Rsh | AluOp::Arsh, Operand::Reg(s)) => {
                self.shift_reg(w64, op, d, s)
            }
            (AluOp::MovSx(bits), Operand::Reg(s)) => match (w64, bits) {
                (true, 8) => asm!(self.ops; movsx Rq(d), Rb(s)),
                (true, 16) => asm!(self.ops; movsx Rq(d), Rw(s)),
                (true, 32) => asm!(self.ops; movsxd Rq(d), Rd(s)),
                (false, 8) => asm!(self.ops; movsx Rd(d), Rb(s)),
                (false, 16) => asm!(self.ops; movsx Rd(d), Rw(s)),
                (true, _) => {
                    if s != d {
                        asm!(self.ops; mov Rq(d), Rq(s));
                    }
                }
                (false, _) => asm!(self.ops; mov Rd(d), Rd(s)),
            },
            (op, src) => {
                // Every other combination was handled above.
                return Err(JitError::Internal {
                    pc,
                    what: format!("unhandled ALU form {op:?} {src:?}"),
                });
            }
        }
        Ok(())
    }

    fn shift_imm(&mut self, w64: bool, op: AluOp, d: u8, i: i32) {
        let mask = if w64 { 63 } else { 31 };
        let n = (i & mask) as i8;
        if n == 0 {
            if !w64 {
                // A zero count leaves the upper half alone; 32-bit ops clear it.
                asm!(self.ops; mov Rd(d), Rd(d));
            }
            return;
        }
        // Split counts whose byte could start a gadget (15 = 0x0F) or when
        // the unit is hardened.
        let parts: &[i8] = if n == 0x0f || (self.blind && n > 1) {
            &[n / 2, n - n / 2]
        } else {
            &[n]
        };
        for &c in parts {
            match (op, w64) {
                (AluOp::Lsh, true) => asm!(self.ops; shl Rq(d), c),
                (AluOp::Lsh, false) => asm!(self.ops; shl Rd(d), c),
                (AluOp::Rsh, true) => asm!(self.ops; shr Rq(d), c),
                (AluOp::Rsh, false) => asm!(self.ops; shr Rd(d), c),
                (_, true) => asm!(self.ops; sar Rq(d), c),
                (_, false) => asm!(self.ops; sar Rd(d), c),
            }
        }
    }

    /// Shift by a register count, which x86 wants in `cl`.
    fn shift_reg(&mut self, w64: bool, op: AluOp, d: u8, s: u8) {
        // The register actually shifted.
        let (target, restore) = if s == RCX {
            (d, false)
        } else if d == RCX {
            asm!(self.ops; mov r11, rcx ; mov Rq(RCX), Rq(s));
            (S11, false)
        } else {
            asm!(self.ops; mov r11, rcx ; mov Rq(RCX), Rq(s));
            (d, true)
        };
        match (op, w64) {
            (AluOp::Lsh, true) => asm!(self.ops; shl Rq(target), cl),
            (AluOp::Lsh, false) => asm!(self.ops; shl Rd(target), cl),
            (AluOp::Rsh, true) => asm!(self.ops; shr Rq(target), cl),
            (AluOp::Rsh, false) => asm!(self.ops; shr Rd(target), cl),
            (_, true) => asm!(self.ops; sar Rq(target), cl),
            (_, false) => asm!(self.ops; sar Rd(target), cl),
        }
        if target == S11 {
            // d was rcx: the result goes back there.
            asm!(self.ops; mov rcx, r11);
        } else if restore {
            asm!(self.ops; mov rcx, r11);
        }
    }

    /// Division and modulo with eBPF semantics: x / 0 = 0, x % 0 = x,
    /// INT_MIN / -1 = INT_MIN, INT_MIN % -1 = 0 (x86 `idiv` would fault).
    fn div(&mut self, w64: bool, op: AluOp, d: u8, src: Source) {
        let signed = matches!(op, AluOp::SDiv | AluOp::SMod);
        let is_mod = matches!(op, AluOp::Mod | AluOp::SMod);
        // Constant divisors: fold what is known.
        let known = match src {
            Source::Imm(i) => {
                let zero = if w64 { i == 0 } else { i as u32 == 0 };
                if zero {
                    if is_mod {
                        if !w64 {
                            asm!(self.ops; mov Rd(d), Rd(d));
                        }
                    } else {
                        asm!(self.ops; xor Rd(d), Rd(d));
                    }
                    return;
                }
                self.mov_imm32(w64, S11, i);
                Some(i)
            }
            Source::Reg(r) => {
                let s = x(r);
                if w64 {
                    asm!(self.ops; mov r11, Rq(s));
                } else {
                    asm!(self.ops; mov r11d, Rd(s));
                }
                None
            }
        };
        let zero = self.ops.new_dynamic_label();
        let done = self.ops.new_dynamic_label();
        let normal = self.ops.new_dynamic_label();
        asm!(self.ops ; mov r9, rax ; mov r10, rdx);
        if w64 {
            asm!(self.ops; mov Rq(RAX), Rq(d));
        } else {
            asm!(self.ops; mov Rd(RAX), Rd(d));
        }
        if known.is_none() {
            rr!(self, w64, test, S11, S11);
            asm!(self.ops; jz =>zero);
        }
        if signed && known.is_none_or(|i| i == -1) {
            ri!(self, w64, cmp, S11, -1);
            asm!(self.ops; jne =>normal);
            if is_mod {
                asm!(self.ops; xor eax, eax);
            } else if w64 {
                asm!(self.ops; neg rax);
            } else {
                asm!(self.ops; neg eax);
            }
            asm!(self.ops; jmp =>done);
        }
        asm!(self.ops ; =>normal);
        match (signed, w64) {
            (false, true) => asm!(self.ops; xor edx, edx ; div r11),
            (false, false) => asm!(self.ops; xor edx, edx ; div r11d),
            (true, true) => asm!(self.ops; cqo ; idiv r11),
            (true, false) => asm!(self.ops; cdq ; idiv r11d),
        }
        if is_mod {
            asm!(self.ops; mov Rq(RAX), Rq(RDX));
        }
        asm!(self.ops; jmp =>done ; =>zero);
        if !is_mod {
            asm!(self.ops; xor eax, eax);
        }
        // (mod by zero: rax already holds dst, zero-extended for 32 bits)
        asm!(self.ops
            ; =>done
            ; mov r11, rax
            ; mov rax, r9
            ; mov rdx, r10
            ; mov Rq(d), r11
        );
    }

    fn endian(&mut self, pc: usize, order: ByteOrder, bits: u8, d: u8) -> Result<(), JitError> {
        match (order, bits) {
            (ByteOrder::ToLe, 16) => asm!(self.ops; movzx Rd(d), Rw(d)),
            (ByteOrder::ToLe, 32) => asm!(self.ops; mov Rd(d), Rd(d)),
            (ByteOrder::ToLe, 64) => {}
            (_, 16) => asm!(self.ops; rol Rw(d), 8 ; movzx Rd(d), Rw(d)),
            (_, 32) => asm!(self.ops; bswap Rd(d)),
            (_, 64) => asm!(self.ops; bswap Rq(d)),
            (_, b) => {
                return Err(JitError::Invalid {
                    pc,
                    field: "byte-swap width",
                    value: b.into(),
                })
            }
        }
        Ok(())
    }

    fn load(&mut self, size: MemSize, signed: bool, d: u8, s: u8, off: i16) {
        let m = self.mem(s, off);
        self.load_mem(size, signed, d, m);
    }

    fn load_mem(&mut self, size: MemSize, signed: bool, d: u8, m: Mem) {
        match (size, signed) {
            // movzx r32, m8 / m16; mov r32, m32; mov r64, m64.
            (MemSize::B, false) => self.mem_op(false, false, false, &[0x0f, 0xb6], d, m),
            (MemSize::H, false) => self.mem_op(false, false, false, &[0x0f, 0xb7], d, m),
            (MemSize::W, false) => self.mem_op(false, false, false, &[0x8b], d, m),
            (MemSize::DW, _) => self.mem_op(false, true, false, &[0x8b], d, m),
            // movsx r64, m8 / m16; movsxd r64, m32.
            (MemSize::B, true) => self.mem_op(false, true, false, &[0x0f, 0xbe], d, m),
            (MemSize::H, true) => self.mem_op(false, true, false, &[0x0f, 0xbf], d, m),
            (MemSize::W, true) => self.mem_op(false, true, false, &[0x63], d, m),
        }
    }

    fn store(&mut self, size: MemSize, d: u8, off: i16, src: Source) {
        let m = self.mem(d, off);
        self.store_mem(size, m, src);
    }

    fn store_mem(&mut self, size: MemSize, m: Mem, src: Source) {
        let s = match src {
            Source::Reg(r) => x(r),
            Source::Imm(i) if !self.must_blind(i) => {
                // mov m, imm (C6 /0 ib, C7 /0 iw/id).
                match size {
                    MemSize::B => {
                        self.mem_op(false, false, false, &[0xc6], 0, m);
                        self.ops.push(i as u8);
                    }
                    MemSize::H => {
                        self.mem_op(true, false, false, &[0xc7], 0, m);
                        self.ops.extend((i as i16).to_le_bytes());
                    }
                    MemSize::W | MemSize::DW => {
                        self.mem_op(false, size == MemSize::DW, false, &[0xc7], 0, m);
                        self.ops.extend(i.to_le_bytes());
                    }
                }
                return;
            }
            Source::Imm(i) => {
                self.mov_imm32(true, S10, i);
                S10
            }
        };
        // mov m, r (88 for bytes, 89 otherwise).
        match size {
            MemSize::B => self.mem_op(false, false, true, &[0x88], s, m),
            MemSize::H => self.mem_op(true, false, false, &[0x89], s, m),
            MemSize::W => self.mem_op(false, false, false, &[0x89], s, m),
            MemSize::DW => self.mem_op(false, true, false, &[0x89], s, m),
        }
    }

    fn atomic(&mut self, w64: bool, op: AtomicOp, fetch: bool, d: u8, s: u8, off: i16) {
        match (op, fetch) {
            (AtomicOp::Add, false)
            | (AtomicOp::Or, false)
            | (AtomicOp::And, false)
            | (AtomicOp::Xor, false) => {
                let m = self.mem(d, off);
                let (b, o) = (m.base, m.disp);
                match (op, w64) {
                    (AtomicOp::Add, true) => asm!(self.ops; lock add QWORD [Rq(b) + o], Rq(s)),
                    (AtomicOp::Add, false) => asm!(self.ops; lock add DWORD [Rq(b) + o], Rd(s)),
                    (AtomicOp::Or, true) => asm!(self.ops; lock or QWORD [Rq(b) + o], Rq(s)),
                    (AtomicOp::Or, false) => asm!(self.ops; lock or DWORD [Rq(b) + o], Rd(s)),
                    (AtomicOp::And, true) => asm!(self.ops; lock and QWORD [Rq(b) + o], Rq(s)),
                    (AtomicOp::And, false) => asm!(self.ops; lock and DWORD [Rq(b) + o], Rd(s)),
                    (_, true) => asm!(self.ops; lock xor QWORD [Rq(b) + o], Rq(s)),
                    (_, false) => asm!(self.ops; lock xor DWORD [Rq(b) + o], Rd(s)),
                }
            }
            (AtomicOp::Add, true) => {
                let m = self.mem(d, off);
                let (b, o) = (m.base, m.disp);
                if w64 {
                    asm!(self.ops; lock xadd QWORD [Rq(b) + o], Rq(s));
                } else {
                    asm!(self.ops; lock xadd DWORD [Rq(b) + o], Rd(s));
                }
            }
            (AtomicOp::Xchg, _) => {
                let m = self.mem(d, off);
                let (b, o) = (m.base, m.disp);
                if w64 {
                    asm!(self.ops; xchg QWORD [Rq(b) + o], Rq(s));
                } else {
                    asm!(self.ops; xchg DWORD [Rq(b) + o], Rd(s));
                }
            }
            (AtomicOp::CmpXchg, _) => {
                let m = self.mem(d, off);
                let (b, o) = (m.base, m.disp);
                if w64 {
                    asm!(self.ops; lock cmpxchg QWORD [Rq(b) + o], Rq(s));
                } else {
                    // On success a 32-bit cmpxchg leaves the upper half of
                    // rax alone; eBPF wants the old value zero-extended.
                    asm!(self.ops; lock cmpxchg DWORD [Rq(b) + o], Rd(s) ; mov eax, eax);
                }
            }
            (_, true) => {
                // or/and/xor with fetch: a cmpxchg loop.
                self.addr_to_r9(d, off);
                asm!(self.ops; mov r10, rax);
                let opnd = if s == RAX { S10 } else { s };
                let again = self.ops.new_dynamic_label();
                if w64 {
                    asm!(self.ops; mov rax, [r9] ; =>again ; mov r11, rax);
                } else {
                    asm!(self.ops; mov eax, [r9] ; =>again ; mov r11d, eax);
                }
                match (op, w64) {
                    (AtomicOp::Or, true) => asm!(self.ops; or r11, Rq(opnd)),
                    (AtomicOp::Or, false) => asm!(self.ops; or r11d, Rd(opnd)),
                    (AtomicOp::And, true) => asm!(self.ops; and r11, Rq(opnd)),
                    (AtomicOp::And, false) => asm!(self.ops; and r11d, Rd(opnd)),
                    (_, true) => asm!(self.ops; xor r11, Rq(opnd)),
                    (_, false) => asm!(self.ops; xor r11d, Rd(opnd)),
                }
                if w64 {
                    asm!(self.ops; lock cmpxchg [r9], r11 ; jne =>again);
                } else {
                    asm!(self.ops; lock cmpxchg [r9], r11d ; jne =>again);
                }
                if s != RAX {
                    asm!(self.ops; mov Rq(s), rax ; mov rax, r10);
                }
            }
        }
    }

    /// Compare and branch, fused: `cmp`/`test` then one `jcc`.
    fn jmp(&mut self, w64: bool, cond: JmpCond, d: u8, src: Source, t: DynamicLabel) {
        self.jmp_inv(w64, cond, d, src, t, false)
    }

    /// [`Cg::jmp`], or with `invert` a jump to `t` when `cond` is false.
    fn jmp_inv(
        &mut self,
        w64: bool,
        cond: JmpCond,
        d: u8,
        src: Source,
        t: DynamicLabel,
        invert: bool,
    ) {
        let src = match src {
            Source::Reg(r) => Operand::Reg(x(r)),
            Source::Imm(i) if self.must_blind(i) => {
                self.mov_imm32(w64, S11, i);
                Operand::Reg(S11)
            }
            Source::Imm(i) => Operand::Imm(i),
        };
        // ZF already says whether d is zero: the previous slot's ALU op
        // wrote d last (a 64-bit test also holds after a 32-bit op, which
        // zero-extends; a 32-bit test needs a 32-bit op).
        let zf_known = matches!(self.zf_in, Some((r, w32)) if r == d && (w64 || w32));
        match (cond, src) {
            (JmpCond::Eq | JmpCond::Ne, Operand::Imm(0)) if zf_known => {}
            // `test d, d` sets the flags exactly as `cmp d, 0` does (CF and
            // OF clear, ZF and SF from d) in fewer bytes.
            (_, Operand::Imm(0)) if cond != JmpCond::Set => rr!(self, w64, test, d, d),
            (JmpCond::Set, Operand::Reg(s)) => rr!(self, w64, test, d, s),
            // `test` has no sign-extended 8-bit immediate form.
            (JmpCond::Set, Operand::Imm(i)) if w64 => asm!(self.ops; test Rq(d), DWORD i),
            (JmpCond::Set, Operand::Imm(i)) => asm!(self.ops; test Rd(d), DWORD i),
            (_, Operand::Reg(s)) => rr!(self, w64, cmp, d, s),
            (_, Operand::Imm(i)) => ri!(self, w64, cmp, d, i),
        }
        let cond = if invert {
            match cond {
                JmpCond::Eq => JmpCond::Ne,
                JmpCond::Ne => JmpCond::Eq,
                // `test` then "zero": emitted as `je` below.
                JmpCond::Set => {
                    asm!(self.ops; je =>t);
                    return;
                }
                JmpCond::Gt => JmpCond::Le,
                JmpCond::Le => JmpCond::Gt,
                JmpCond::Ge => JmpCond::Lt,
                JmpCond::Lt => JmpCond::Ge,
                JmpCond::Sgt => JmpCond::Sle,
                JmpCond::Sle => JmpCond::Sgt,
                JmpCond::Sge => JmpCond::Slt,
                JmpCond::Slt => JmpCond::Sge,
            }
        } else {
            cond
        };
        match cond {
            JmpCond::Eq => asm!(self.ops; je =>t),
            JmpCond::Ne | JmpCond::Set => asm!(self.ops; jne =>t),
            JmpCond::Gt => asm!(self.ops; ja =>t),
            JmpCond::Ge => asm!(self.ops; jae =>t),
            JmpCond::Lt => asm!(self.ops; jb =>t),
            JmpCond::Le => asm!(self.ops; jbe =>t),
            JmpCond::Sgt => asm!(self.ops; jg =>t),
            JmpCond::Sge => asm!(self.ops; jge =>t),
            JmpCond::Slt => asm!(self.ops; jl =>t),
            JmpCond::Sle => asm!(self.ops; jle =>t),
        }
    }
}

/// The condition with its operands swapped: `a cond b` is `b mirror(a) a`.
fn mirror(cond: JmpCond) -> JmpCond {
    match cond {
        JmpCond::Eq | JmpCond::Ne | JmpCond::Set => cond,
        JmpCond::Gt => JmpCond::Lt,
        JmpCond::Lt => JmpCond::Gt,
        JmpCond::Ge => JmpCond::Le,
        JmpCond::Le => JmpCond::Ge,
        JmpCond::Sgt => JmpCond::Slt,
        JmpCond::Slt => JmpCond::Sgt,
        JmpCond::Sge => JmpCond::Sle,
        JmpCond::Sle => JmpCond::Sge,
    }
}

/// A second operand after immediates have been folded or blinded.
#[derive(Clone, Copy, Debug)]
enum Operand {
    Reg(u8),
    Imm(i32),
}
