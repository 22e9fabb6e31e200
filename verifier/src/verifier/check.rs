//! What must hold before an instruction runs: the access and argument checks.
//! They inspect a state and report a [`Reason`]; they never change it (the
//! effects are in `transfer.rs`).

use super::env::ProgramEnv;
use super::error::Reason;
use super::reg::{Pointer, PtrKind, RegValue};
use super::state::State;
use crate::isa::STACK_SIZE;

/// Where a checked access lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// Stack of frame `frame` at constant offset `off` from its frame pointer.
    Stack {
        /// Frame index.
        frame: usize,
        /// Offset (negative).
        off: i64,
    },
    /// Stack of frame `frame` through a variable offset: the access lies
    /// somewhere within bytes `[lo, hi)` from its frame pointer.
    StackVar {
        /// Frame index.
        frame: usize,
        /// Lowest byte any value of the offset may touch.
        lo: i64,
        /// One past the highest.
        hi: i64,
    },
    /// Context at constant offset `off`.
    Ctx {
        /// Offset.
        off: i64,
    },
    /// Any other memory (map value, mem, ringbuf record).
    Other,
}

/// The value of register `reg`, failing when it was never written.
pub fn read_reg(state: &State, reg: u8) -> Result<RegValue, Reason> {
    match state.reg(reg as usize) {
        RegValue::NotInit => Err(Reason::UninitReg { reg }),
        v => Ok(v),
    }
}

fn in_range(lo: i128, hi_excl: i128, size: i128) -> bool {
    lo >= 0 && hi_excl <= size
}

/// Checks an access of `size` bytes at `ptr + off` through register `reg`.
pub fn check_access(
    env: &ProgramEnv,
    reg: u8,
    ptr: &Pointer,
    off: i64,
    size: u64,
    write: bool,
) -> Result<Region, Reason> {
    let lo = ptr.off.smin() as i128 + off as i128;
    let hi = ptr.off.smax() as i128 + off as i128 + size as i128;
    // The offset of the access that fails: the lowest if it is below the
    // region, else the highest.
    let worst = || -> i64 {
        if lo < 0 {
            lo.max(i64::MIN as i128) as i64
        } else {
            (hi - size as i128).min(i64::MAX as i128) as i64
        }
    };
    let size32 = size.min(u32::MAX as u64) as u32;
    match ptr.kind {
        PtrKind::Ctx => {
            let Some(base) = ptr.const_off() else {
                return Err(Reason::VariableCtxAccess { reg });
            };
            let o = base.saturating_add(off);
            if env.ctx.allows(o, size32, write) {
                Ok(Region::Ctx { off: o })
            } else {
                Err(Reason::CtxAccess {
                    off: o,
                    size: size32,
                    write,
                })
            }
        }
        PtrKind::Stack { frame } => {
            let Some(base) = ptr.const_off() else {
                // A variable offset: every offset it may take must be in
                // the frame (the kernel's rule for privileged programs).
                if lo < -(STACK_SIZE as i128) || hi > 0 {
                    return Err(Reason::StackOutOfBounds {
                        off: worst(),
                        size: size32,
                    });
                }
                return Ok(Region::StackVar {
                    frame: frame as usize,
                    lo: lo as i64,
                    hi: hi as i64,
                });
            };
            let o = base.saturating_add(off);
            if o < -(STACK_SIZE as i64) || o.saturating_add(size as i64) > 0 {
                return Err(Reason::StackOutOfBounds {
                    off: o,
                    size: size32,
                });
            }
            Ok(Region::Stack {
                frame: frame as usize,
                off: o,
            })
        }
        PtrKind::Map { .. }
        | PtrKind::MapValueOrNull { .. }
        | PtrKind::RingbufMemOrNull { .. }
        | PtrKind::Func { .. } => Err(Reason::InvalidMemAccess {
            reg,
            ty: ptr.kind.name().into(),
        }),
        PtrKind::MapValue { map } => {
            let Some(m) = env.maps.get(map as usize) else {
                return Err(Reason::InvalidMap { index: map as i64 });
            };
            if !in_range(lo, hi, m.value_size as i128) {
                return Err(Reason::MapValueOutOfBounds {
                    value_size: m.value_size,
                    off: worst(),
                    size: size32,
                });
            }
            if write && m.read_only {
                return Err(Reason::ReadOnlyWrite {
                    reg,
                    ty: "map_value (read-only map)".into(),
                });
            }
            Ok(Region::Other)
        }
        PtrKind::Mem {
            size: mem,
            writable,
        } => {
            if !in_range(lo, hi, mem as i128) {
                return Err(Reason::MemOutOfBounds {
                    mem_size: mem,
                    off: worst(),
                    size: size32,
                });
            }
            if write && !writable {
                return Err(Reason::ReadOnlyWrite {
                    reg,
                    ty: "rdonly_mem".into(),
                });
            }
            Ok(Region::Other)
        }
        PtrKind::RingbufMem { size: mem, .. } => {
            if !in_range(lo, hi, mem as i128) {
                return Err(Reason::MemOutOfBounds {
                    mem_size: mem,
                    off: worst(),
                    size: size32,
                });
            }
            Ok(Region::Other)
        }
    }
}

/// The base register of a load or store as a pointer.
pub fn base_pointer(state: &State, reg: u8) -> Result<Pointer, Reason> {
    match read_reg(state, reg)? {
        RegValue::Ptr(p) => Ok(p),
        v => Err(Reason::InvalidMemAccess {
            reg,
            ty: v.type_name(),
        }),
    }
}

/// Where a stored pointer would leak to, for a region that is not the stack.
pub fn leak_target(kind: PtrKind) -> &'static str {
    match kind {
        PtrKind::MapValue { .. } => "map",
        PtrKind::Ctx => "ctx",
        PtrKind::RingbufMem { .. } => "ringbuf",
        _ => "mem",
    }
}

/// Checks a memory argument of a helper: `size` bytes at `ptr`, which the
/// helper reads (`write == false`: the bytes must be initialised and hold
/// no pointer) or writes.
pub fn check_mem_arg(
    env: &ProgramEnv,
    state: &State,
    reg: u8,
    ptr: &Pointer,
    size: u64,
    write: bool,
) -> Result<Region, Reason> {
    if let PtrKind::Ctx = ptr.kind {
        return Err(Reason::HelperArgType {
            reg,
            expected: "mem",
            found: "ctx".into(),
        });
    }
    let region = check_access(env, reg, ptr, 0, size, write)?;
    let range = match region {
        Region::Stack { frame, off } => Some((frame, off, size)),
        Region::StackVar { frame, lo, hi } => Some((frame, lo, (hi - lo) as u64)),
        _ => None,
    };
    if let (Some((frame, off, size)), false) = (range, write) {
        let stack = &state.frames[frame].stack;
        if let Some(o) = stack.first_uninit(off, size as u32) {
            return Err(Reason::UninitStackRead {
                off: o,
                size: size as u32,
            });
        }
        if stack.has_pointer(off, size as u32) {
            return Err(Reason::PointerStore {
                reg,
                into: "helper memory",
            });
        }
    }
    Ok(region)
}
