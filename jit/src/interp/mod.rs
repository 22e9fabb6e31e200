//! The reference interpreter: the definition of pkbpf's semantics.
//!
//! It follows RFC 9669 exactly:
//!
//! - **ALU/ALU64**: 32-bit results are zero-extended into the 64-bit register;
//!   immediates are sign-extended to 64 bits (then truncated for 32-bit ops);
//!   division by zero gives 0, modulo by zero leaves `dst` unchanged (the
//!   32-bit form still zero-extends it); shift counts are masked to the width
//!   (`& 31`, `& 63`); signed division of the minimum value by -1 wraps to the
//!   minimum value and signed modulo gives 0; `movsx` sign-extends 8, 16 or 32
//!   bits; `le` truncates (x86 is little-endian), `be` and `bswap` swap.
//! - **Loads and stores** of 1, 2, 4 and 8 bytes, sign-extending loads, and
//!   atomics (add/or/and/xor with and without fetch, xchg, cmpxchg comparing
//!   with and writing the old value to `r0`), 32- and 64-bit, every access
//!   checked by [`Memory`].
//! - **Jumps**: `ja`, `gotol`, all conditions in 64- and 32-bit forms.
//! - **Calls**: helpers through a [`Helpers`] table (`call imm` and `callx`),
//!   `bpf_loop` (id [`BPF_LOOP`]) run by the interpreter itself, its
//!   callback (an `lddw rX, func` token) called in a new frame per iteration,
//!   bpf-to-bpf calls with a new 512-byte frame (`r10` = its top, `r6`–`r9`
//!   restored on return), at most [`MAX_CALL_DEPTH`] frames.
//! - An instruction budget: running past it is an error.
//!
//! Legacy packet loads (`ldabs`/`ldind`) and kfunc calls are decoded by the ISA
//! but not runnable: they give [`ExecErrorKind::Unsupported`].
//!
//! Every failure is an [`ExecError`] naming the slot index; the interpreter
//! never panics and never touches memory outside the regions it was given.
//!
//! # Example
//!
//! ```
//! use pkbpf_jit::interp::{ExecErrorKind, Interpreter, Memory, NoHelpers, RegionKind};
//! use pkbpf_verifier::isa::decode_program;
//!
//! // r0 = *(u16 *)(r1 + 0); exit
//! let prog = decode_program(&[
//!     0x69, 0x10, 0, 0, 0, 0, 0, 0, //
//!     0x95, 0, 0, 0, 0, 0, 0, 0,
//! ])?;
//! let ctx = [0x34, 0x12];
//! let mut mem = Memory::new();
//! let addr = mem.add_slice(&ctx, RegionKind::Ctx);
//! let out = Interpreter::new(&prog).run(&mut mem, &mut NoHelpers, [addr, 0, 0, 0, 0])?;
//! assert_eq!(out.r0, 0x1234);
//! assert_eq!(out.stats.insns, 2);
//!
//! // One byte further is outside the context: an error naming slot 0.
//! let err = Interpreter::new(&prog)
//!     .run(&mut mem, &mut NoHelpers, [addr + 1, 0, 0, 0, 0])
//!     .unwrap_err();
//! assert_eq!(err.pc, 0);
//! assert_eq!(err.kind, ExecErrorKind::OutOfBounds { addr: addr + 1, size: 2, write: false });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod helpers;
mod memory;

pub use helpers::{
    HelperCtx, HelperError, HelperFn, HelperTable, Helpers, NoHelpers, CONFORMANCE_UNWIND,
};
pub use memory::{AccessError, Memory, Region, RegionKind};

use pkbpf_verifier::isa::{
    AtomicOp, CallTarget, Insn, LdPseudo, Reg, Source, Width, MAX_CALL_DEPTH,
};

/// `bpf_loop`'s helper id: the interpreter runs it itself (its callback is
/// program code), whatever the [`Helpers`] table holds.
pub const BPF_LOOP: i32 = 181;
/// Most iterations of one `bpf_loop` call (the kernel's `BPF_MAX_LOOPS`).
pub const BPF_MAX_LOOPS: u64 = 1 << 23;
/// What `lddw rX, func` yields in the interpreter: this plus the
/// subprogram's slot index (an opaque token only `bpf_loop` accepts).
pub const FUNC_ADDR_BASE: u64 = 0xbbf0_0000_0000_0000;
/// The return slot of a callback frame (no instruction lives there).
const CALLBACK_RETURN: usize = usize::MAX - 1;

/// Default instruction budget of [`Options`].
pub const DEFAULT_BUDGET: u64 = 1 << 24;

/// Run options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Most instructions one run may execute.
    pub budget: u64,
    /// Report reads of never-written stack bytes ([`ExecErrorKind::UninitRead`]).
    pub check_uninit: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            budget: DEFAULT_BUDGET,
            check_uninit: true,
        }
    }
}

/// A run-time error, naming the instruction (slot index).
///
/// Its `Display` is `instruction N: <kind>`; its `source` is the kind's
/// (e.g. the [`HelperError`] of a failed helper call).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecError {
    /// Slot index of the failing instruction.
    pub pc: usize,
    /// What went wrong.
    pub kind: ExecErrorKind,
    /// Instructions executed before the failure (the failing one included).
    pub insns: u64,
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "instruction {}: {}", self.pc, self.kind)
    }
}

impl std::error::Error for ExecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.kind)
    }
}

/// What went wrong at run time.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExecErrorKind {
    /// A load, store or atomic outside every region, or a write to a
    /// read-only one.
    #[error("{} of {size} bytes at {addr:#x} is outside every region{}",
        if *write { "write" } else { "read" },
        if *write { " it may write" } else { "" })]
    OutOfBounds {
        /// First byte accessed.
        addr: u64,
        /// Access size in bytes.
        size: u64,
        /// Whether it was a write.
        write: bool,
    },
    /// A read of a stack byte that was never written.
    #[error("read of uninitialised stack byte fp{offset:+} (frame {frame})")]
    UninitRead {
        /// Call depth of the frame.
        frame: usize,
        /// Offset of the byte from the frame's `r10` (negative).
        offset: i64,
    },
    /// More instructions than the budget allows.
    #[error("instruction budget of {budget} exhausted")]
    BudgetExhausted {
        /// The budget.
        budget: u64,
    },
    /// A bpf-to-bpf call would need more than [`MAX_CALL_DEPTH`] frames.
    #[error("call depth exceeds {max} frames")]
    CallDepth {
        /// The limit.
        max: usize,
    },
    /// Execution reached a slot outside the program (fell off the end).
    #[error("execution left the program ({len} slots)")]
    PcOutOfRange {
        /// Number of slots in the program.
        len: usize,
    },
    /// Execution reached the second half of an `lddw`.
    #[error("jump into the middle of lddw")]
    LddwHalf,
    /// An instruction writes the read-only frame pointer `r10`.
    #[error("write to the frame pointer r10")]
    WriteR10,
    /// An instruction field the interpreter cannot run (e.g. a byte-swap width
    /// other than 16, 32, 64).
    #[error("invalid {field} {value}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: i64,
    },
    /// An instruction pkbpf decodes but does not run.
    #[error("{what} is not supported")]
    Unsupported {
        /// What it is.
        what: &'static str,
    },
    /// A helper call failed.
    #[error("helper {id} failed")]
    Helper {
        /// The helper id.
        id: u32,
        /// Why.
        #[source]
        source: HelperError,
    },
    /// A `lddw` pseudo form could not be resolved.
    #[error("lddw pseudo form could not be resolved")]
    Pseudo {
        /// Why.
        #[source]
        source: HelperError,
    },
}

impl ExecErrorKind {
    /// Whether this is a memory-safety violation: an access outside the
    /// regions (or a write to a read-only one) or a read of uninitialised
    /// stack. A verified program must never produce one.
    pub fn is_memory_violation(&self) -> bool {
        matches!(
            self,
            ExecErrorKind::OutOfBounds { .. } | ExecErrorKind::UninitRead { .. }
        )
    }
}

impl From<AccessError> for ExecErrorKind {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::OutOfBounds { addr, size, write } => {
                ExecErrorKind::OutOfBounds { addr, size, write }
            }
            AccessError::UninitRead { frame, offset } => {
                ExecErrorKind::UninitRead { frame, offset }
            }
        }
    }
}

/// The result of a successful run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// `r0` at the final `exit`.
    pub r0: u64,
    /// Statistics.
    pub stats: Stats,
}

/// Per-run statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Instructions executed (`lddw` counts once).
    pub insns: u64,
    /// Deepest call depth reached, in frames (1 = no bpf-to-bpf call).
    pub max_frames: usize,
}

/// A saved caller state of a bpf-to-bpf call.
#[derive(Clone, Copy, Debug)]
struct Frame {
    ret_pc: usize,
    callee_saved: [u64; 4],
}

/// The reference interpreter over one program.
#[derive(Clone, Debug)]
pub struct Interpreter<'p> {
    prog: &'p [Insn],
    opts: Options,
}

impl<'p> Interpreter<'p> {
    /// An interpreter for `prog` (one [`Insn`] per slot, as
    /// [`decode_program`](pkbpf_verifier::isa::decode_program) returns) with
    /// default options.
    pub fn new(prog: &'p [Insn]) -> Self {
        Interpreter {
            prog,
            opts: Options::default(),
        }
    }

    /// Replaces the options.
    pub fn with_options(mut self, opts: Options) -> Self {
        self.opts = opts;
        self
    }

    /// The options in use.
    pub fn options(&self) -> Options {
        self.opts
    }

    /// Runs the program from slot 0 with `r1..=r5 = args`, `r10` = the top of
    /// frame 0 of `mem`'s stack, every other register 0.
    pub fn run<H: Helpers + ?Sized>(
        &self,
        mem: &mut Memory<'_>,
        helpers: &mut H,
        args: [u64; 5],
    ) -> Result<Outcome, ExecError> {
        mem.reset_stack();
        mem.set_check_uninit(self.opts.check_uninit);
        let mut st = State {
            regs: [0; Reg::COUNT],
            pc: 0,
            insns: 0,
            frames: Vec::new(),
            max_frames: 1,
            fault_pc: None,
        };
        st.regs[1..6].copy_from_slice(&args);
        st.regs[10] = mem.frame_pointer(0);
        loop {
            let pc = st.pc;
            match self.step(&mut st, mem, helpers) {
                Ok(Some(r0)) => {
                    return Ok(Outcome {
                        r0,
                        stats: Stats {
                            insns: st.insns,
                            max_frames: st.max_frames,
                        },
                    })
                }
                Ok(None) => {}
                Err(kind) => {
                    return Err(ExecError {
                        pc: st.fault_pc.unwrap_or(pc),
                        kind,
                        insns: st.insns,
                    })
                }
            }
        }
    }

    /// Executes one instruction; `Some(r0)` when the program is done.
    fn step<H: Helpers + ?Sized>(
        &self,
        st: &mut State,
        mem: &mut Memory<'_>,
        helpers: &mut H,
    ) -> Result<Option<u64>, ExecErrorKind> {
        let pc = st.pc;
        let insn = *self.prog.get(pc).ok_or(ExecErrorKind::PcOutOfRange {
            len: self.prog.len(),
        })?;
        if st.insns >= self.opts.budget {
            return Err(ExecErrorKind::BudgetExhausted {
                budget: self.opts.budget,
            });
        }
        st.insns += 1;
        let mut next = pc + 1;
        match insn {
            Insn::Alu {
                width,
                op,
                dst,
                src,
            } => {
                let a = st.regs[dst.idx()];
                let b = match src {
                    Source::Reg(r) => st.regs[r.idx()],
                    Source::Imm(i) => i as i64 as u64,
                };
                st.set(dst, op.eval(width, a, b))?;
            }
            Insn::Neg { width, dst } => {
                let a = st.regs[dst.idx()];
                let v = match width {
                    Width::W64 => a.wrapping_neg(),
                    Width::W32 => (a as u32).wrapping_neg() as u64,
                };
                st.set(dst, v)?;
            }
            Insn::Endian { order, bits, dst } => {
                let a = st.regs[dst.idx()];
                let v = order.eval(bits, a).ok_or(ExecErrorKind::Invalid {
                    field: "byte-swap width",
                    value: bits.into(),
                })?;
                st.set(dst, v)?;
            }
            Insn::LdImm64 { dst, imm } => {
                st.set(dst, imm)?;
                next = pc + 2;
            }
            Insn::LdPseudo {
                dst,
                kind: LdPseudo::Func,
                imm,
                ..
            } => {
                st.set(
                    dst,
                    FUNC_ADDR_BASE.wrapping_add(target(pc, imm as i64) as u64),
                )?;
                next = pc + 2;
            }
            Insn::LdPseudo {
                dst,
                kind,
                imm,
                next_imm,
            } => {
                let v = helpers
                    .resolve_pseudo(kind, imm, next_imm)
                    .map_err(|source| ExecErrorKind::Pseudo { source })?;
                st.set(dst, v)?;
                next = pc + 2;
            }
            Insn::LdImm64Hi => return Err(ExecErrorKind::LddwHalf),
            Insn::LdAbs { .. } => return Err(ExecErrorKind::Unsupported { what: "ldabs" }),
            Insn::LdInd { .. } => return Err(ExecErrorKind::Unsupported { what: "ldind" }),
            Insn::Load {
                size,
                signed,
                dst,
                src,
                off,
            } => {
                let addr = st.regs[src.idx()].wrapping_add(off as i64 as u64);
                let raw = mem.load(addr, size.bytes())?;
                let v = if signed {
                    let shift = 64 - 8 * size.bytes() as u32;
                    (((raw << shift) as i64) >> shift) as u64
                } else {
                    raw
                };
                st.set(dst, v)?;
            }
            Insn::Store {
                size,
                dst,
                off,
                src,
            } => {
                let addr = st.regs[dst.idx()].wrapping_add(off as i64 as u64);
                let v = match src {
                    Source::Reg(r) => st.regs[r.idx()],
                    Source::Imm(i) => i as i64 as u64,
                };
                mem.store(addr, size.bytes(), v)?;
            }
            Insn::Atomic {
                size,
                op,
                fetch,
                dst,
                src,
                off,
            } => {
                let addr = st.regs[dst.idx()].wrapping_add(off as i64 as u64);
                let n = size.bytes();
                let mask = if n == 8 { u64::MAX } else { u32::MAX as u64 };
                let s = st.regs[src.idx()] & mask;
                let r0 = st.regs[0] & mask;
                let old = mem.atomic_rmw(addr, n, |old| match op {
                    AtomicOp::Add => Some(old.wrapping_add(s) & mask),
                    AtomicOp::Or => Some(old | s),
                    AtomicOp::And => Some(old & s),
                    AtomicOp::Xor => Some(old ^ s),
                    AtomicOp::Xchg => Some(s),
                    AtomicOp::CmpXchg => (old == r0).then_some(s),
                })?;
                match op {
                    AtomicOp::CmpXchg => st.regs[0] = old,
                    _ if fetch || op == AtomicOp::Xchg => st.set(src, old)?,
                    _ => {}
                }
            }
            Insn::Ja { off, .. } => next = target(pc, off as i64),
            Insn::Jmp {
                width,
                cond,
                dst,
                src,
                off,
            } => {
                let a = st.regs[dst.idx()];
                let b = match src {
                    Source::Reg(r) => st.regs[r.idx()],
                    Source::Imm(i) => i as i64 as u64,
                };
                if cond.eval(width, a, b) {
                    next = target(pc, off as i64);
                }
            }
            Insn::Call(CallTarget::Helper(BPF_LOOP)) => {
                if let Some(r0) = self.bpf_loop(st, mem, helpers)? {
                    return Ok(Some(r0));
                }
            }
            Insn::Call(CallTarget::Helper(id)) => {
                if let Some(r0) = self.call_helper(st, mem, helpers, id as u32)? {
                    return Ok(Some(r0));
                }
            }
            Insn::CallX { reg } => {
                let id = st.regs[reg.idx()];
                let id = u32::try_from(id).map_err(|_| ExecErrorKind::Invalid {
                    field: "callx helper id",
                    value: id as i64,
                })?;
                if let Some(r0) = self.call_helper(st, mem, helpers, id)? {
                    return Ok(Some(r0));
                }
            }
            Insn::Call(CallTarget::Local(off)) => {
                let depth = st.frames.len() + 1;
                if depth >= MAX_CALL_DEPTH {
                    return Err(ExecErrorKind::CallDepth {
                        max: MAX_CALL_DEPTH,
                    });
                }
                let mut saved = [0; 4];
                saved.copy_from_slice(&st.regs[6..10]);
                st.frames.push(Frame {
                    ret_pc: pc + 1,
                    callee_saved: saved,
                });
                mem.push_frame(depth);
                st.regs[10] = mem.frame_pointer(depth);
                st.max_frames = st.max_frames.max(depth + 1);
                next = target(pc, off as i64);
            }
            Insn::Call(CallTarget::Kfunc(_)) => {
                return Err(ExecErrorKind::Unsupported { what: "kfunc call" })
            }
            Insn::Exit => match st.frames.pop() {
                None => return Ok(Some(st.regs[0])),
                Some(f) => {
                    st.regs[6..10].copy_from_slice(&f.callee_saved);
                    let depth = st.frames.len();
                    mem.pop_frame(depth);
                    st.regs[10] = mem.frame_pointer(depth);
                    next = f.ret_pc;
                }
            },
        }
        st.pc = next;
        Ok(None)
    }

    /// `bpf_loop(nr_loops, callback, ctx, flags)`, run by the interpreter
    /// itself since the callback is program code: calls the callback with
    /// `r1` = the index (from 0), `r2` = `ctx` in a new frame, `nr_loops`
    /// times (the low 32 bits of `r1`, as the kernel's `u32` argument) or
    /// until it returns non-zero; `r0` = the iterations done (counting the
    /// one that stopped the loop), `-E2BIG` when `nr_loops` exceeds
    /// [`BPF_MAX_LOOPS`], `-EINVAL` when `flags` is not 0.
    fn bpf_loop<H: Helpers + ?Sized>(
        &self,
        st: &mut State,
        mem: &mut Memory<'_>,
        helpers: &mut H,
    ) -> Result<Option<u64>, ExecErrorKind> {
        let call_pc = st.pc;
        let nr = st.regs[1] as u32 as u64;
        let (func, ctx, flags) = (st.regs[2], st.regs[3], st.regs[4]);
        if flags != 0 {
            st.regs[0] = -22i64 as u64; // -EINVAL
            return Ok(None);
        }
        if nr > BPF_MAX_LOOPS {
            st.regs[0] = -7i64 as u64; // -E2BIG
            return Ok(None);
        }
        let entry = func
            .checked_sub(FUNC_ADDR_BASE)
            .and_then(|e| usize::try_from(e).ok())
            .filter(|&e| e < self.prog.len())
            .ok_or(ExecErrorKind::Invalid {
                field: "bpf_loop callback",
                value: func as i64,
            })?;
        let mut done = nr;
        for i in 0..nr {
            let depth = st.frames.len() + 1;
            if depth >= MAX_CALL_DEPTH {
                return Err(ExecErrorKind::CallDepth {
                    max: MAX_CALL_DEPTH,
                });
            }
            let mut saved = [0; 4];
            saved.copy_from_slice(&st.regs[6..10]);
            st.frames.push(Frame {
                ret_pc: CALLBACK_RETURN,
                callee_saved: saved,
            });
            mem.push_frame(depth);
            st.regs[10] = mem.frame_pointer(depth);
            st.max_frames = st.max_frames.max(depth + 1);
            st.regs[1] = i;
            st.regs[2] = ctx;
            st.regs[3..6].fill(0);
            st.pc = entry;
            while !(st.frames.len() + 1 == depth && st.pc == CALLBACK_RETURN) {
                let pc = st.pc;
                match self.step(st, mem, helpers) {
                    Ok(Some(r0)) => return Ok(Some(r0)),
                    Ok(None) => {}
                    Err(e) => {
                        st.fault_pc.get_or_insert(pc);
                        return Err(e);
                    }
                }
            }
            st.pc = call_pc;
            if st.regs[0] != 0 {
                done = i + 1;
                break;
            }
        }
        st.regs[0] = done;
        Ok(None)
    }

    fn call_helper<H: Helpers + ?Sized>(
        &self,
        st: &mut State,
        mem: &mut Memory<'_>,
        helpers: &mut H,
        id: u32,
    ) -> Result<Option<u64>, ExecErrorKind> {
        let mut args = [0; 5];
        args.copy_from_slice(&st.regs[1..6]);
        let mut ctx = HelperCtx::new(mem);
        let r0 = helpers
            .call(id, args, &mut ctx)
            .map_err(|source| ExecErrorKind::Helper { id, source })?;
        if let Some(v) = ctx.exit_requested() {
            return Ok(Some(v));
        }
        st.regs[0] = r0;
        Ok(None)
    }
}

/// Register file and control state of one run.
struct State {
    regs: [u64; Reg::COUNT],
    pc: usize,
    insns: u64,
    frames: Vec<Frame>,
    max_frames: usize,
    /// The instruction that failed inside a `bpf_loop` callback (the error
    /// names it, not the call).
    fault_pc: Option<usize>,
}

impl State {
    fn set(&mut self, dst: Reg, v: u64) -> Result<(), ExecErrorKind> {
        if dst == Reg::R10 {
            return Err(ExecErrorKind::WriteR10);
        }
        self.regs[dst.idx()] = v;
        Ok(())
    }
}

/// `pc + 1 + off`, or `usize::MAX` (out of range, caught by the next fetch)
/// when negative.
fn target(pc: usize, off: i64) -> usize {
    let t = pc as i64 + 1 + off;
    usize::try_from(t).unwrap_or(usize::MAX)
}
