//! Return probes by return-address replacement and a per-thread shadow stack.
//!
//! At a function entry with return handlers, the entry dispatcher pushes
//! `(slot, original return address, site)` on the thread's shadow stack,
//! where `slot` is the stack address holding the return address (the entry
//! `rsp`), and overwrites `*slot` with the process-wide return trampoline. When
//! the function returns there, the trampoline builds a frame (`ax` = return
//! value, `ip` = the original return address, `sp` = the rsp after return)
//! and calls `dispatch_return`, which pops the entry, runs the site's return
//! handlers and answers the original address, where the trampoline jumps
//! with every register restored.
//!
//! The shadow stack is `mmap`ed per thread on first use (no malloc, so probing
//! `malloc` is fine) with room for [`SHADOW_CAPACITY`] frames; a deeper hit is
//! counted as missed and its return is not probed (like the kernel's
//! `maxactive`). It is freed when the thread exits.
//!
//! Recursion works because entries are matched by `slot`: deeper frames have
//! lower slots. Several return probes on one function share the site (one
//! replacement, all handlers run). A tail call from one probed function into
//! another finds the trampoline already in `*slot`: it pushes a second entry
//! with the same slot and the same original address, and the single return
//! pops (and reports) both, innermost first.
//!
//! **`longjmp`** over probed frames: their trampolines never run, so their
//! entries go stale. Stale entries are discarded lazily and exactly: when the
//! return trampoline runs for `slot`, every entry with a lower slot belongs to
//! a frame that no longer exists (the stack has unwound past it), and when a
//! new entry is pushed at `slot`, every older entry at or below it is stale.
//! The skipped frames' return handlers never run (the function did not
//! return). Tested in `tests/uprobes.rs` (`longjmp_over_probed_frames`).
//! Switching stacks (`swapcontext`, green threads, `sigaltstack` handlers
//! probing) breaks the slot ordering and is not supported.
//!
//! **C++ exceptions and Rust panics** unwinding through a probed frame: the
//! unwinder reads the replaced return address, which points into the return
//! trampoline, a page with no unwind information (no FDE). The unwinder's
//! phase 1 stops with `_URC_END_OF_STACK`: C++ calls `std::terminate`, and a
//! Rust panic aborts with "failed to initiate panic". Unsupported; the failure
//! is an abort, never a jump to a wrong address. Tested in `tests/uprobes.rs`
//! (`panic_through_uretprobe_aborts`).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::frame::HookFrame;
use crate::resolve::read_self_maps;
use crate::trampoline::{self, ExecPage};
use crate::uprobe::{guarded, Site};
use crate::{HookError, Result};

/// Frames one thread's shadow stack holds.
pub const SHADOW_CAPACITY: usize = 4096;

#[derive(Clone, Copy)]
#[repr(C)]
struct Entry {
    slot: usize,
    ret: usize,
    site: *const Site,
}

#[repr(C)]
struct Shadow {
    len: usize,
    entries: [Entry; SHADOW_CAPACITY],
}

/// Marks a thread whose shadow stack was freed at exit (never an mmap address).
const DEAD: *mut Shadow = std::ptr::dangling_mut::<Shadow>();

thread_local! {
    static SHADOW: Cell<*mut Shadow> = const { Cell::new(std::ptr::null_mut()) };
    static GUARD: ShadowGuard = const { ShadowGuard };
}

struct ShadowGuard;

impl Drop for ShadowGuard {
    fn drop(&mut self) {
        let _ = SHADOW.try_with(|c| {
            let p = c.replace(DEAD);
            if !p.is_null() && p != DEAD {
                // SAFETY: `p` was mmapped by `shadow()` with this size, and
                // this thread (its only user) is exiting.
                unsafe { libc::munmap(p.cast(), std::mem::size_of::<Shadow>()) };
            }
        });
    }
}

static RETURN_TRAMPOLINE: AtomicUsize = AtomicUsize::new(0);
static MISSED: AtomicU64 = AtomicU64::new(0);

pub(crate) fn missed() -> u64 {
    MISSED.load(Ordering::Relaxed)
}

/// This thread's shadow stack, allocated on first use; None after thread exit
/// began or when mmap fails.
fn shadow() -> Option<&'static mut Shadow> {
    let p = SHADOW.try_with(|c| c.get()).ok()?;
    if p == DEAD {
        return None;
    }
    if !p.is_null() {
        // SAFETY: only this thread uses its shadow stack.
        return Some(unsafe { &mut *p });
    }
    // SAFETY: anonymous private mapping; zero-filled, so `len` starts at 0.
    let m = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            std::mem::size_of::<Shadow>(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if m == libc::MAP_FAILED {
        return None;
    }
    let p = m.cast::<Shadow>();
    SHADOW.try_with(|c| c.set(p)).ok()?;
    // Register the destructor; if TLS is being torn down, leak instead.
    let _ = GUARD.try_with(|_| ());
    // SAFETY: freshly mapped, zeroed, and owned by this thread.
    Some(unsafe { &mut *p })
}

/// The number of live entries on this thread's shadow stack (for tests and
/// diagnostics).
pub fn shadow_depth() -> usize {
    match SHADOW.try_with(|c| c.get()) {
        // SAFETY: only this thread uses its shadow stack.
        Ok(p) if !p.is_null() && p != DEAD => unsafe { (*p).len },
        _ => 0,
    }
}

/// Maps the return trampoline (once).
pub(crate) fn init() -> Result<()> {
    static INIT: OnceLock<std::result::Result<usize, String>> = OnceLock::new();
    let r = INIT.get_or_init(|| {
        let maps = read_self_maps().map_err(|e| e.to_string())?;
        let near = dispatch_return as *const () as usize;
        let page = ExecPage::alloc_near(near, &maps).map_err(|e| e.to_string())?;
        let base = page
            .seal(&trampoline::return_code(
                dispatch_return as *const () as usize,
            ))
            .map_err(|e| e.to_string())?;
        RETURN_TRAMPOLINE.store(base, Ordering::Release);
        Ok(base)
    });
    r.as_ref()
        .map(|_| ())
        .map_err(|reason| HookError::Relocate {
            addr: 0,
            reason: format!("return trampoline: {reason}"),
        })
}

/// Entry side: called by the entry dispatcher when the site has return handlers.
///
/// # Safety
/// `frame.regs.sp` must point at the return address of the function whose
/// entry was hit, on this thread's stack.
pub(crate) unsafe fn on_entry(site: &Site, frame: &mut HookFrame) {
    let tramp = RETURN_TRAMPOLINE.load(Ordering::Acquire);
    let Some(stack) = shadow() else {
        MISSED.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let slot = frame.regs.sp as usize;
    // SAFETY: the caller guarantees `slot` holds the return address.
    let current = unsafe { *(slot as *const usize) };
    let tail_call = current == tramp && stack.len > 0 && stack.entries[stack.len - 1].slot == slot;
    if !tail_call {
        while stack.len > 0 && stack.entries[stack.len - 1].slot <= slot {
            stack.len -= 1;
        }
    }
    if stack.len == SHADOW_CAPACITY || (current == tramp && !tail_call) {
        MISSED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let ret = if tail_call {
        stack.entries[stack.len - 1].ret
    } else {
        current
    };
    stack.entries[stack.len] = Entry { slot, ret, site };
    stack.len += 1;
    if !tail_call {
        // SAFETY: as above; the slot is this thread's live stack.
        unsafe { *(slot as *mut usize) = tramp };
    }
}

fn fatal(msg: &str) -> ! {
    // SAFETY: writing a static message to stderr.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    std::process::abort()
}

/// Called by the return trampoline; answers the original return address.
unsafe extern "C" fn dispatch_return(frame: *mut HookFrame) -> usize {
    // SAFETY: the trampoline passes its live frame.
    let frame = unsafe { &mut *frame };
    let Some(stack) = shadow() else {
        fatal("pkbpf-hooks: return trampoline reached without a shadow stack\n")
    };
    let slot = (frame.regs.sp as usize).wrapping_sub(8);
    // Entries below `slot` are stale (see the module docs); the top entry
    // left must be this frame's.
    let mut top = stack.len.min(SHADOW_CAPACITY);
    while top > 0 && stack.entries[top - 1].slot < slot {
        top -= 1;
    }
    if top == 0 || stack.entries[top - 1].slot != slot {
        fatal("pkbpf-hooks: return trampoline: no shadow-stack entry for this frame\n")
    }
    let ret = stack.entries[top - 1].ret;
    frame.regs.ip = ret as u64;
    while top > 0 && stack.entries[top - 1].slot == slot {
        top -= 1;
        let site = stack.entries[top].site;
        // Popped before its handlers run.
        stack.len = top;
        // SAFETY: sites are leaked and immortal.
        let site = unsafe { &*site };
        guarded(|| site.ret.run(frame));
    }
    stack.len = top;
    ret
}
