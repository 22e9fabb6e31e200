//! Register types: what one register holds on one path.
//!
//! `NotInit` is top for subsumption (a path that never read the register is
//! safe whatever it holds); a scalar is a [`Scalar`]; a pointer is a kind,
//! an offset (a [`Scalar`], so it may be variable) and an id tying together
//! copies of one possibly-null pointer for null-check refinement.

use super::env::ProgramEnv;
use super::scalar::Scalar;
use std::fmt;

/// What a pointer points to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PtrKind {
    /// The program's context.
    Ctx,
    /// A stack frame (index in the call chain, 0 = main program).
    Stack {
        /// Frame index.
        frame: u8,
    },
    /// A map itself (only for helper arguments).
    Map {
        /// Map index.
        map: u32,
    },
    /// A map value.
    MapValue {
        /// Map index.
        map: u32,
    },
    /// A map value, or null: must be checked before use.
    MapValueOrNull {
        /// Map index.
        map: u32,
    },
    /// `size` bytes of memory (input memory, buffer context).
    Mem {
        /// Region size.
        size: u64,
        /// Whether the program may write it.
        writable: bool,
    },
    /// A reserved ringbuf record, to be submitted or discarded.
    RingbufMem {
        /// Record size.
        size: u64,
        /// The reference to release.
        ref_id: u32,
    },
    /// A reserved ringbuf record, or null.
    RingbufMemOrNull {
        /// Record size.
        size: u64,
        /// The reference to release.
        ref_id: u32,
    },
    /// The address of a subprogram (`lddw rX, func`): only usable as a
    /// callback argument of `bpf_loop`; no arithmetic, no dereference, no
    /// ordering comparison.
    Func {
        /// Entry slot of the subprogram.
        entry: u32,
    },
}

impl PtrKind {
    /// Whether the pointer may be null.
    pub fn maybe_null(self) -> bool {
        matches!(
            self,
            PtrKind::MapValueOrNull { .. } | PtrKind::RingbufMemOrNull { .. }
        )
    }

    /// The kernel's type name.
    pub fn name(self) -> &'static str {
        match self {
            PtrKind::Ctx => "ctx",
            PtrKind::Stack { .. } => "fp",
            PtrKind::Map { .. } => "map_ptr",
            PtrKind::MapValue { .. } => "map_value",
            PtrKind::MapValueOrNull { .. } => "map_value_or_null",
            PtrKind::Mem { .. } => "mem",
            PtrKind::RingbufMem { .. } => "ringbuf_mem",
            PtrKind::RingbufMemOrNull { .. } => "ringbuf_mem_or_null",
            PtrKind::Func { .. } => "func",
        }
    }
}

/// A pointer value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pointer {
    /// What it points to.
    pub kind: PtrKind,
    /// Offset from the start of the region (from the frame pointer for stack).
    pub off: Scalar,
    /// Id shared by copies of one maybe-null pointer (0: none).
    pub id: u32,
}

impl Pointer {
    /// A pointer at offset 0.
    pub fn new(kind: PtrKind) -> Pointer {
        Pointer {
            kind,
            off: Scalar::constant(0),
            id: 0,
        }
    }

    /// The offset if it is constant (as signed).
    pub fn const_off(&self) -> Option<i64> {
        self.off.as_const().map(|v| v as i64)
    }
}

/// What a register holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegValue {
    /// Never written on this path.
    NotInit,
    /// A number.
    Scalar(Scalar),
    /// A pointer.
    Ptr(Pointer),
}

impl RegValue {
    /// An unknown scalar.
    pub const UNKNOWN: RegValue = RegValue::Scalar(Scalar::UNKNOWN);

    /// A constant scalar.
    pub fn constant(v: u64) -> RegValue {
        RegValue::Scalar(Scalar::constant(v))
    }

    /// The scalar, if it is one.
    pub fn scalar(&self) -> Option<Scalar> {
        match self {
            RegValue::Scalar(s) => Some(*s),
            _ => None,
        }
    }

    /// The pointer, if it is one.
    pub fn ptr(&self) -> Option<Pointer> {
        match self {
            RegValue::Ptr(p) => Some(*p),
            _ => None,
        }
    }

    /// The kernel's type name.
    pub fn type_name(&self) -> String {
        match self {
            RegValue::NotInit => "?".into(),
            RegValue::Scalar(_) => "scalar".into(),
            RegValue::Ptr(p) => p.kind.name().into(),
        }
    }

    /// Kernel-style rendering, given the environment (for map sizes).
    pub fn render(&self, env: &ProgramEnv) -> String {
        match self {
            RegValue::NotInit => "?".into(),
            RegValue::Scalar(s) => s.to_string(),
            RegValue::Ptr(p) => {
                let off = match p.const_off() {
                    Some(0) => String::new(),
                    Some(o) => format!("off={o}"),
                    None => format!("var_off={}", p.off),
                };
                let mut parts: Vec<String> = Vec::new();
                if p.id != 0 {
                    parts.push(format!("id={}", p.id));
                }
                match p.kind {
                    PtrKind::Stack { frame } => {
                        let o = p.const_off().unwrap_or(0);
                        return if frame == 0 {
                            format!("fp{o}")
                        } else {
                            format!("fp{o}(frame={frame})")
                        };
                    }
                    PtrKind::Map { map }
                    | PtrKind::MapValue { map }
                    | PtrKind::MapValueOrNull { map } => {
                        if let Some(m) = env.maps.get(map as usize) {
                            parts.push(format!("map={map},ks={},vs={}", m.key_size, m.value_size));
                        }
                    }
                    PtrKind::Mem { size, .. }
                    | PtrKind::RingbufMem { size, .. }
                    | PtrKind::RingbufMemOrNull { size, .. } => parts.push(format!("sz={size}")),
                    PtrKind::Func { entry } => parts.push(format!("pc={entry}")),
                    PtrKind::Ctx => {}
                }
                if !off.is_empty() {
                    parts.push(off);
                }
                format!("{}({})", p.kind.name(), parts.join(","))
            }
        }
    }
}

impl fmt::Display for RegValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.type_name())
    }
}
