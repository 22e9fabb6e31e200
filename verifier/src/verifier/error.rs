//! Rejections as typed values: the instruction, a category, and the reason,
//! whose `Display` is the kernel-like one-line message.

use std::fmt;

/// Why a program was rejected, with the instruction that failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct VerifyError {
    /// Slot index of the failing instruction.
    pub insn: usize,
    /// The kind of problem (`reason.category()`).
    pub category: Category,
    /// The problem itself.
    pub reason: Reason,
}

impl VerifyError {
    /// Builds an error; the category follows from the reason.
    pub fn new(insn: usize, reason: Reason) -> VerifyError {
        VerifyError {
            insn,
            category: reason.category(),
            reason,
        }
    }
}

/// Broad kinds of rejection, like the kernel's diagnostic headings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Category {
    /// An access outside its region, a null dereference, a write to read-only memory.
    MemorySafety,
    /// A read of an uninitialised register or stack byte.
    Uninit,
    /// A helper called with wrong argument types or sizes, or unknown.
    InvalidHelperCall,
    /// Malformed control flow: jumps out of range, unreachable code, bad calls.
    ControlFlow,
    /// A loop that may not terminate, or a program too large to explore.
    Termination,
    /// A pointer stored where the program's output can see it.
    PointerLeak,
    /// An operation that is not defined for the operand's type.
    TypeMismatch,
    /// An acquired resource not released on some path.
    ResourceLeak,
    /// A stack or call-depth limit.
    Limits,
    /// An instruction pkbpf does not support.
    Unsupported,
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Category::MemorySafety => "Memory Safety",
            Category::Uninit => "Uninitialized Read",
            Category::InvalidHelperCall => "Invalid Helper Call",
            Category::ControlFlow => "Control Flow",
            Category::Termination => "Termination",
            Category::PointerLeak => "Pointer Leak",
            Category::TypeMismatch => "Type Mismatch",
            Category::ResourceLeak => "Resource Leak",
            Category::Limits => "Limits",
            Category::Unsupported => "Unsupported",
        })
    }
}

/// The specific problem; `Display` is the kernel's wording where it has one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    /// The program has no instructions.
    #[error("empty program")]
    EmptyProgram,
    /// A register read before it was written.
    #[error("R{reg} !read_ok")]
    UninitReg {
        /// Register number.
        reg: u8,
    },
    /// An instruction writes r10.
    #[error("frame pointer is read only")]
    FramePointerWrite,
    /// A dereference of a register that is not a pointer to memory (scalar,
    /// map pointer, or a pointer that may be null).
    #[error("R{reg} invalid mem access '{ty}'")]
    InvalidMemAccess {
        /// Base register.
        reg: u8,
        /// Kernel type name of the register.
        ty: String,
    },
    /// Out of bounds access to a map value.
    #[error("invalid access to map value, value_size={value_size} off={off} size={size}")]
    MapValueOutOfBounds {
        /// The map's value size.
        value_size: u32,
        /// The worst offset the access may use.
        off: i64,
        /// Access size.
        size: u32,
    },
    /// Out of bounds access to a memory region (buffer ctx, input memory, ringbuf record).
    #[error("invalid access to memory, mem_size={mem_size} off={off} size={size}")]
    MemOutOfBounds {
        /// The region's size.
        mem_size: u64,
        /// The worst offset the access may use.
        off: i64,
        /// Access size.
        size: u32,
    },
    /// Stack access outside the frame's 512 bytes.
    #[error("invalid stack access off={off} size={size}")]
    StackOutOfBounds {
        /// Offset from the frame pointer.
        off: i64,
        /// Access size.
        size: u32,
    },
    /// Stack access whose offset is not a constant.
    #[error("R{reg} variable stack access prohibited")]
    VariableStackAccess {
        /// Base register.
        reg: u8,
    },
    /// Read of stack bytes never written on this path.
    #[error("invalid read from stack off {off}+0 size {size}")]
    UninitStackRead {
        /// Offset from the frame pointer.
        off: i64,
        /// Access size.
        size: u32,
    },
    /// Context access outside the declared layout, or a write to a read-only field.
    #[error("invalid bpf_context access off={off} size={size}")]
    CtxAccess {
        /// Offset into the context.
        off: i64,
        /// Access size.
        size: u32,
        /// Whether the access was a write.
        write: bool,
    },
    /// Context access through a pointer with a variable offset.
    #[error("dereference of modified ctx ptr R{reg} disallowed")]
    VariableCtxAccess {
        /// Base register.
        reg: u8,
    },
    /// Write through a pointer to read-only memory.
    #[error("R{reg} cannot write into {ty}")]
    ReadOnlyWrite {
        /// Base register.
        reg: u8,
        /// Kernel type name of the region.
        ty: String,
    },
    /// A pointer stored into memory the program's output can see.
    #[error("R{reg} leaks addr into {into}")]
    PointerStore {
        /// The stored register.
        reg: u8,
        /// Where it went (`map`, `mem`, `ctx`, `helper memory`).
        into: &'static str,
    },
    /// A pointer returned from the program.
    #[error("R0 leaks addr as return value")]
    PointerReturn,
    /// A spill or fill of a pointer that is not 8 bytes at an aligned slot.
    #[error("invalid size of register spill")]
    PartialPointerSpill,
    /// A partial read of a spilled pointer.
    #[error("invalid size of register fill")]
    PartialPointerFill,
    /// An ALU operation that pointers do not support.
    #[error("R{reg} {what} prohibited")]
    PointerArith {
        /// Destination register.
        reg: u8,
        /// What was attempted (`pointer arithmetic with |= operator`, ...).
        what: String,
    },
    /// A pointer comparison that cannot be reasoned about.
    #[error("R{reg} pointer comparison prohibited")]
    PointerComparison {
        /// The pointer register.
        reg: u8,
    },
    /// An atomic operation on something other than a scalar in stack or map value.
    #[error("BPF_ATOMIC stores into R{reg} {ty} is not allowed")]
    InvalidAtomic {
        /// Base register.
        reg: u8,
        /// Kernel type name of the base or operand.
        ty: String,
    },
    /// A call of an unknown helper.
    #[error("invalid func unknown#{id}")]
    UnknownHelper {
        /// Helper id.
        id: i64,
    },
    /// A helper argument of the wrong type.
    #[error("R{reg} type={found} expected={expected}")]
    HelperArgType {
        /// Argument register (1..=5).
        reg: u8,
        /// What the prototype wants.
        expected: &'static str,
        /// What the register holds.
        found: String,
    },
    /// A helper given a map of a type it does not work on.
    #[error("cannot pass map_type {map_type} into func {helper}#{id}")]
    HelperMapType {
        /// The map's kernel type number.
        map_type: u32,
        /// Helper name.
        helper: &'static str,
        /// Helper id.
        id: i32,
    },
    /// A size argument whose upper bound is unknown or too big.
    #[error("R{reg} unbounded memory access, use 'var &= const' or 'if (var < const)'")]
    HelperSizeUnbounded {
        /// Size register.
        reg: u8,
    },
    /// A size argument that may be zero where zero is not allowed.
    #[error("R{reg} invalid zero-sized read")]
    HelperSizeZero {
        /// Size register.
        reg: u8,
    },
    /// A size argument that must be a constant.
    #[error("R{reg} is not a known constant")]
    HelperSizeNotConst {
        /// Size register.
        reg: u8,
    },
    /// A released or never acquired reference passed to a release helper.
    #[error("R{reg} must be referenced when passed to release function")]
    ReleaseUnreferenced {
        /// Argument register.
        reg: u8,
    },
    /// A reference acquired and never released.
    #[error("Unreleased reference id={id} alloc_insn={alloc_insn}")]
    UnreleasedReference {
        /// Reference id.
        id: u32,
        /// Instruction that acquired it.
        alloc_insn: usize,
    },
    /// A map reference to a map the environment does not have.
    #[error("fd {index} is not pointing to valid bpf_map")]
    InvalidMap {
        /// Index into the program's map table.
        index: i64,
    },
    /// An offset into a map value given by `lddw` outside the value.
    #[error("invalid access to map value pointer, value_size={value_size} off={off}")]
    InvalidMapValueOffset {
        /// The map's value size.
        value_size: u32,
        /// The offset.
        off: i64,
    },
    /// A loop back-edge where loops are not allowed.
    #[error("back-edge from insn {from} to {to}")]
    BackEdge {
        /// Jump instruction.
        from: usize,
        /// Target.
        to: usize,
    },
    /// A loop whose state repeats: it may never terminate.
    #[error("infinite loop detected at insn {insn}")]
    InfiniteLoop {
        /// Loop head.
        insn: usize,
    },
    /// The exploration budget ran out.
    #[error("BPF program is too large. Processed {processed} insn")]
    TooComplex {
        /// Instructions processed.
        processed: u64,
    },
    /// An instruction no path reaches.
    #[error("unreachable insn {insn}")]
    Unreachable {
        /// The instruction.
        insn: usize,
    },
    /// A jump (or call) target outside the program or its function.
    #[error("jump out of range from insn {from} to {to}")]
    JumpOutOfRange {
        /// Jump instruction.
        from: usize,
        /// Target.
        to: i64,
    },
    /// A jump to the second slot of an `lddw`.
    #[error("jump into the middle of ldimm64 insn {to}")]
    JumpIntoLddw {
        /// Jump instruction.
        from: usize,
        /// Target.
        to: usize,
    },
    /// An `lddw` without its second slot.
    #[error("invalid bpf_ld_imm64 insn")]
    IncompleteLddw,
    /// A function whose last instruction may fall through.
    #[error("last insn is not an exit or jmp")]
    FallThrough,
    /// Too many nested calls.
    #[error("the call stack of {frames} frames is too deep")]
    CallTooDeep {
        /// Frames the call would need.
        frames: usize,
    },
    /// A function that calls itself, directly or not.
    #[error("recursive call from insn {from} to {to}")]
    RecursiveCall {
        /// Call instruction.
        from: usize,
        /// Function entry.
        to: usize,
    },
    /// The stacks of a call chain exceed 512 bytes together.
    #[error("combined stack size of {calls} calls is {size}. Too large")]
    CombinedStackTooLarge {
        /// Frames in the chain.
        calls: usize,
        /// Their combined stack.
        size: usize,
    },
    /// A `bpf_loop` callback whose return value may be outside `[0, 1]`.
    #[error(
        "At callback return the register R0 has smin={smin} smax={smax} should have been in [0, 1]"
    )]
    CallbackReturn {
        /// Lowest signed value `r0` may hold.
        smin: i64,
        /// Highest signed value `r0` may hold.
        smax: i64,
    },
    /// A flags argument that is a constant other than the ones allowed.
    #[error("R{reg} flags={value} unsupported, must be 0")]
    InvalidFlags {
        /// Argument register.
        reg: u8,
        /// The constant.
        value: u64,
    },
    /// A subprogram address that is not a function entry.
    #[error("invalid callback target insn {target} at insn {pc}")]
    InvalidCallbackTarget {
        /// The `lddw` of the address.
        pc: usize,
        /// Its target slot.
        target: i64,
    },
    /// A function returns a pointer into its own (dying) stack, or leaves one behind.
    #[error("cannot return stack pointer to the caller frame")]
    StackPointerEscape,
    /// An instruction pkbpf does not support.
    #[error("{what}")]
    Unsupported {
        /// What it is.
        what: &'static str,
    },
}

impl Reason {
    /// The category of this reason.
    pub fn category(&self) -> Category {
        use Reason::*;
        match self {
            UninitReg { .. } | UninitStackRead { .. } => Category::Uninit,
            InvalidMemAccess { .. }
            | MapValueOutOfBounds { .. }
            | MemOutOfBounds { .. }
            | StackOutOfBounds { .. }
            | VariableStackAccess { .. }
            | CtxAccess { .. }
            | VariableCtxAccess { .. }
            | ReadOnlyWrite { .. }
            | FramePointerWrite
            | InvalidMapValueOffset { .. }
            | StackPointerEscape => Category::MemorySafety,
            PointerStore { .. } | PointerReturn => Category::PointerLeak,
            PartialPointerSpill
            | PartialPointerFill
            | PointerArith { .. }
            | PointerComparison { .. }
            | InvalidAtomic { .. } => Category::TypeMismatch,
            UnknownHelper { .. }
            | HelperArgType { .. }
            | HelperMapType { .. }
            | HelperSizeUnbounded { .. }
            | HelperSizeZero { .. }
            | HelperSizeNotConst { .. }
            | ReleaseUnreferenced { .. }
            | CallbackReturn { .. }
            | InvalidFlags { .. }
            | InvalidMap { .. } => Category::InvalidHelperCall,
            UnreleasedReference { .. } => Category::ResourceLeak,
            BackEdge { .. } | InfiniteLoop { .. } | TooComplex { .. } => Category::Termination,
            EmptyProgram
            | Unreachable { .. }
            | JumpOutOfRange { .. }
            | JumpIntoLddw { .. }
            | IncompleteLddw
            | FallThrough
            | InvalidCallbackTarget { .. }
            | RecursiveCall { .. } => Category::ControlFlow,
            CallTooDeep { .. } | CombinedStackTooLarge { .. } => Category::Limits,
            Unsupported { .. } => Category::Unsupported,
        }
    }
}
