//! Patching live code while other threads run it.
//!
//! Protocol for replacing `n > 1` bytes at `addr` (as in the kernel's
//! text_poke_bp, done in userspace): make the pages writable (RWX, only for
//! the duration), write `int3` on the first byte, serialise every core, write
//! bytes `1..n`, serialise, write the first byte, serialise, restore the
//! protection. A thread reaching `addr` meanwhile traps on the `int3` and the
//! SIGTRAP handler ([`crate::uprobe`]) sends it through the site's trampoline,
//! which is already complete, so it never executes a half-written instruction.
//!
//! Serialisation is `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE)`
//! (registered once per process); where the kernel lacks it, an `mprotect`
//! round trip that removes write permission forces a TLB-shootdown IPI on every
//! core running this process, and returning from that interrupt serialises.
//!
//! A thread stopped *between* the displaced instructions (preempted, or
//! blocked in a system call made by one of them) would resume in the middle of
//! the new `jmp`. Before the tail is written, the patcher therefore sends
//! every other thread a SIGTRAP with `tgkill` (no extra signal number is
//! taken from the application); the handler recognises it by `SI_TKILL` from
//! our own pid, moves a `rip` found at an interior instruction start to that
//! instruction's relocated copy in the trampoline, and acknowledges. The
//! patcher waits for all acknowledgements (at most 200 ms: a thread that
//! blocks SIGTRAP is not waited for). New arrivals meet the `int3` already.
//! Not covered: a thread whose interrupted context is an outer signal frame
//! (it was inside a signal handler when evacuated), and return addresses
//! inside the patched bytes (the planner refuses the jump when a displaced
//! instruction other than the last is a call).

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::resolve::MapEntry;
use crate::trampoline::PAGE;
use crate::{HookError, Result};

const MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_int = 1 << 5;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_int = 1 << 6;

fn membarrier_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        // SAFETY: registering for membarrier has no memory effects.
        unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE,
                0,
                0,
            ) == 0
        }
    })
}

fn prot_of(perms: &str) -> libc::c_int {
    let p = perms.as_bytes();
    let mut prot = 0;
    if p.first() == Some(&b'r') {
        prot |= libc::PROT_READ;
    }
    if p.get(1) == Some(&b'w') {
        prot |= libc::PROT_WRITE;
    }
    if p.get(2) == Some(&b'x') {
        prot |= libc::PROT_EXEC;
    }
    prot
}

/// Writable pages covering a code range, restored on drop.
struct Unprotect {
    pages: Vec<(usize, libc::c_int)>,
}

impl Unprotect {
    fn new(addr: usize, len: usize, maps: &[MapEntry]) -> Result<Self> {
        let first = addr & !(PAGE - 1);
        let last = (addr + len - 1) & !(PAGE - 1);
        let mut pages = Vec::new();
        let mut page = first;
        while page <= last {
            let entry = maps
                .iter()
                .find(|e| e.start <= page && page < e.end && e.executable())
                .ok_or(HookError::NotExecutable { addr: page })?;
            pages.push((page, prot_of(&entry.perms)));
            page += PAGE;
        }
        let mut guard = Unprotect { pages: Vec::new() };
        for &(page, prot) in &pages {
            // SAFETY: the page is mapped executable (checked above); adding
            // write permission keeps it executable for running threads.
            let rc = unsafe {
                libc::mprotect(
                    page as *mut libc::c_void,
                    PAGE,
                    libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                )
            };
            if rc != 0 {
                return Err(HookError::Sys {
                    op: "mprotect(RWX)",
                    addr: page,
                    source: io::Error::last_os_error(),
                });
            }
            guard.pages.push((page, prot));
        }
        Ok(guard)
    }

    fn serialise(&self) {
        if membarrier_ready() {
            // SAFETY: the command only interrupts this process's threads.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_membarrier,
                    MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE,
                    0,
                    0,
                )
            };
            if rc == 0 {
                return;
            }
        }
        for &(page, _) in &self.pages {
            // SAFETY: dropping write then restoring RWX on a page we made RWX;
            // the page stays executable throughout.
            unsafe {
                libc::mprotect(
                    page as *mut libc::c_void,
                    PAGE,
                    libc::PROT_READ | libc::PROT_EXEC,
                );
                libc::mprotect(
                    page as *mut libc::c_void,
                    PAGE,
                    libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                );
            }
        }
    }
}

impl Drop for Unprotect {
    fn drop(&mut self) {
        for &(page, prot) in &self.pages {
            // SAFETY: restoring the protection the page had before `new`.
            unsafe { libc::mprotect(page as *mut libc::c_void, PAGE, prot) };
        }
    }
}

const EVAC_MAX: usize = 16;
static EVAC_FROM: [AtomicUsize; EVAC_MAX] = [const { AtomicUsize::new(0) }; EVAC_MAX];
static EVAC_TO: [AtomicUsize; EVAC_MAX] = [const { AtomicUsize::new(0) }; EVAC_MAX];
static EVAC_LEN: AtomicUsize = AtomicUsize::new(0);
static EVAC_ACKS: AtomicUsize = AtomicUsize::new(0);

/// In the SIGTRAP handler: where a thread at `rip` must go, if anywhere.
pub(crate) fn evacuation_target(rip: usize) -> Option<usize> {
    let n = EVAC_LEN.load(Ordering::Acquire).min(EVAC_MAX);
    (0..n)
        .find(|&i| EVAC_FROM[i].load(Ordering::Relaxed) == rip)
        .map(|i| EVAC_TO[i].load(Ordering::Relaxed))
}

/// In the SIGTRAP handler: one thread has looked at its `rip`.
pub(crate) fn evacuation_ack() {
    EVAC_ACKS.fetch_add(1, Ordering::AcqRel);
}

/// Moves every other thread out of the interior of the bytes being patched
/// (see the module docs). Called with the registry lock held, so one at a time.
fn evacuate(moves: &[(usize, usize)]) {
    if moves.is_empty() {
        return;
    }
    for (i, &(from, to)) in moves.iter().take(EVAC_MAX).enumerate() {
        EVAC_FROM[i].store(from, Ordering::Relaxed);
        EVAC_TO[i].store(to, Ordering::Relaxed);
    }
    EVAC_ACKS.store(0, Ordering::Release);
    EVAC_LEN.store(moves.len().min(EVAC_MAX), Ordering::Release);
    // SAFETY: getpid/gettid have no preconditions.
    let (pid, me) = unsafe { (libc::getpid(), libc::gettid()) };
    let mut sent = 0;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for tid in dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
        {
            if tid == me {
                continue;
            }
            // SAFETY: signalling a thread of our own process; our SIGTRAP
            // handler is installed (attach installs it before patching).
            if unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGTRAP) } == 0 {
                sent += 1;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_millis(200);
    while EVAC_ACKS.load(Ordering::Acquire) < sent && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(50));
    }
    EVAC_LEN.store(0, Ordering::Release);
}

/// Copies the `len` bytes of code at `addr`.
///
/// # Safety
/// `addr..addr+len` must be mapped readable.
pub(crate) unsafe fn read_code(addr: usize, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    // SAFETY: the caller guarantees the range is readable.
    unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, out.as_mut_ptr(), len) };
    out
}

/// Replaces the code at `addr` with `new` by the int3-first protocol.
///
/// # Safety
/// `addr` must be an instruction boundary in executable code of this process,
/// and a SIGTRAP route for `addr` must be registered before the call (so a
/// thread meeting the transient `int3` has somewhere to go). The caller
/// serialises patching of overlapping ranges. `evacuate` maps the interior
/// instruction starts of the bytes being replaced to where a thread stopped
/// there must continue (empty when restoring original bytes).
pub(crate) unsafe fn write_code(
    addr: usize,
    new: &[u8],
    evacuate_to: &[(usize, usize)],
    maps: &[MapEntry],
) -> Result<()> {
    let guard = Unprotect::new(addr, new.len(), maps)?;
    let p = addr as *mut u8;
    if new.len() > 1 {
        // SAFETY: the pages are RWX (guard); single-byte stores are atomic on x86.
        unsafe { std::ptr::write_volatile(p, 0xcc) };
        guard.serialise();
        evacuate(evacuate_to);
        for (i, &b) in new.iter().enumerate().skip(1) {
            // SAFETY: as above; no thread executes these bytes while byte 0 is
            // int3, and threads that were past byte 0 have been evacuated.
            unsafe { std::ptr::write_volatile(p.add(i), b) };
        }
        guard.serialise();
    }
    // SAFETY: as above.
    unsafe { std::ptr::write_volatile(p, new[0]) };
    guard.serialise();
    Ok(())
}
