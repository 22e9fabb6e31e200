//! What a handler sees: the kernel-layout `pt_regs` and the per-hit frame.

use std::ffi::c_void;

/// The kernel's x86-64 `struct pt_regs` (arch/x86/include/asm/ptrace.h
/// layout), as eBPF uprobe programs read it through `PT_REGS_*`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PtRegs {
    #[allow(missing_docs)]
    pub r15: u64,
    #[allow(missing_docs)]
    pub r14: u64,
    #[allow(missing_docs)]
    pub r13: u64,
    #[allow(missing_docs)]
    pub r12: u64,
    /// rbp.
    pub bp: u64,
    /// rbx.
    pub bx: u64,
    #[allow(missing_docs)]
    pub r11: u64,
    #[allow(missing_docs)]
    pub r10: u64,
    /// Sixth argument.
    pub r9: u64,
    /// Fifth argument.
    pub r8: u64,
    /// rax; the return value in a return probe (`PT_REGS_RC`).
    pub ax: u64,
    /// Fourth argument.
    pub cx: u64,
    /// Third argument.
    pub dx: u64,
    /// Second argument.
    pub si: u64,
    /// First argument.
    pub di: u64,
    /// Always `u64::MAX` (-1) here: no system call.
    pub orig_ax: u64,
    /// The probed address (entry probes) or the original return address (return probes).
    pub ip: u64,
    /// 0x33, the user code segment.
    pub cs: u64,
    /// rflags at the probe.
    pub flags: u64,
    /// rsp at the probe: at a function entry it points at the return address.
    pub sp: u64,
    /// 0x2b, the user stack segment.
    pub ss: u64,
}

/// Byte offsets of the `PtRegs` fields the trampolines touch.
pub(crate) mod off {
    pub const AX: i32 = 80;
    pub const IP: i32 = 128;
    pub const FLAGS: i32 = 144;
    pub const SP: i32 = 152;
    pub const OVERRIDE_ACTIVE: i32 = 168;
    pub const OVERRIDE_VALUE: i32 = 176;
    pub const FRAME_SIZE: i32 = 184;
}

/// The per-hit frame a trampoline builds on the stack. `regs` comes first, so
/// a `*mut HookFrame` is also the `struct pt_regs *` context of an eBPF
/// program, and a `bpf_override_return` helper given that context can turn it
/// back into the frame with [`HookFrame::from_ctx`].
#[repr(C)]
#[derive(Debug)]
pub struct HookFrame {
    /// The registers at the probe; a handler may change them (they are
    /// restored from here), except `ip`, `sp`, `cs` and `ss`.
    pub regs: PtRegs,
    override_active: u64,
    override_value: u64,
}

const _: () = assert!(std::mem::size_of::<HookFrame>() == off::FRAME_SIZE as usize);
const _: () = assert!(std::mem::offset_of!(PtRegs, ax) == off::AX as usize);
const _: () = assert!(std::mem::offset_of!(PtRegs, ip) == off::IP as usize);
const _: () = assert!(std::mem::offset_of!(PtRegs, sp) == off::SP as usize);
const _: () = assert!(std::mem::offset_of!(PtRegs, flags) == off::FLAGS as usize);
const _: () =
    assert!(std::mem::offset_of!(HookFrame, override_active) == off::OVERRIDE_ACTIVE as usize);
const _: () =
    assert!(std::mem::offset_of!(HookFrame, override_value) == off::OVERRIDE_VALUE as usize);

impl HookFrame {
    /// A frame with the given registers and no override (for tests and for
    /// running handlers outside a trampoline).
    pub fn new(regs: PtRegs) -> Self {
        HookFrame {
            regs,
            override_active: 0,
            override_value: 0,
        }
    }

    /// `bpf_override_return`: in an entry probe, skip the function and return
    /// `value` to its caller (return probes on the function still fire, with
    /// `ax == value`). Ignored in return probes.
    pub fn override_return(&mut self, value: u64) {
        self.override_active = 1;
        self.override_value = value;
    }

    /// The override asked for so far, if any.
    pub fn overridden(&self) -> Option<u64> {
        (self.override_active != 0).then_some(self.override_value)
    }

    /// Turns an eBPF context pointer (what the trampoline handed the program
    /// as `struct pt_regs *`) back into its frame.
    ///
    /// # Safety
    /// `ctx` must be the `regs` pointer of a live `HookFrame` (the pointer a
    /// handler was given, or derived from it), not a copy of the registers.
    pub unsafe fn from_ctx<'a>(ctx: *mut u8) -> &'a mut HookFrame {
        // SAFETY: the caller promises `ctx` is the start of a live frame;
        // `regs` is at offset 0 of the `repr(C)` frame.
        unsafe { &mut *ctx.cast::<HookFrame>() }
    }
}

/// The raw handler ABI: called on every hit with its data pointer and the frame.
pub type RawHandlerFn = unsafe extern "C" fn(data: *mut c_void, frame: *mut HookFrame);

/// A handler: a function and the data it is called with. The runtime builds
/// one from a shim that enters the extension's gate and calls the JIT entry
/// with `&frame.regs`; tests build them from closures with [`Handler::from_fn`].
#[derive(Debug, Clone, Copy)]
pub struct Handler {
    pub(crate) func: RawHandlerFn,
    pub(crate) data: *mut c_void,
}

// SAFETY: `from_raw`'s contract makes the pair callable from any thread;
// `from_fn` requires `Send + Sync` closures.
unsafe impl Send for Handler {}
// SAFETY: as above; the handler is only ever called, never mutated.
unsafe impl Sync for Handler {}

unsafe extern "C" fn call_boxed<F: Fn(&mut HookFrame) + Send + Sync + 'static>(
    data: *mut c_void,
    frame: *mut HookFrame,
) {
    // SAFETY: `data` is the leaked `Box<F>` from `from_fn` (never freed), and
    // `frame` is the live frame the trampoline built for this hit.
    unsafe { (*data.cast::<F>())(&mut *frame) }
}

impl Handler {
    /// A handler from a raw function and its data pointer.
    ///
    /// # Safety
    /// `func(data, frame)` must be callable from any thread at any probe hit,
    /// for as long as the process lives (a thread may still be inside it
    /// after detach), must not unwind, and must not change `frame.regs.ip`,
    /// `sp`, `cs` or `ss`.
    pub unsafe fn from_raw(func: RawHandlerFn, data: *mut c_void) -> Self {
        Handler { func, data }
    }

    /// A handler from a closure. The closure is leaked: a thread may still be
    /// running it after its probe is detached, so it is never freed. A panic
    /// in it aborts the process (it runs under an `extern "C"` frame).
    pub fn from_fn<F: Fn(&mut HookFrame) + Send + Sync + 'static>(f: F) -> Self {
        let data = Box::into_raw(Box::new(f)).cast::<c_void>();
        Handler {
            func: call_boxed::<F>,
            data,
        }
    }

    /// Calls the handler on a frame (for running it outside a trampoline).
    ///
    /// # Safety
    /// As for [`Handler::from_raw`]'s contract: the handler must be valid.
    pub unsafe fn call(&self, frame: &mut HookFrame) {
        // SAFETY: the handler's construction guarantees `func(data, ..)` is valid.
        unsafe { (self.func)(self.data, frame) }
    }
}
