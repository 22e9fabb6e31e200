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
//! the new `jmp`. Before the tail is written, the patcher therefore queues
//! every other thread an *evacuation signal* (`rt_tgsigqueueinfo`, carrying a
//! generation number); its handler moves a `rip` found at an interior
//! instruction start to that instruction's relocated copy in the trampoline,
//! and acknowledges. The patcher waits for all acknowledgements of its
//! generation (at most 200 ms: a thread that blocks the signal is not waited
//! for). New arrivals meet the `int3` already. The evacuation signal is the
//! highest real-time signal whose action is still `SIG_DFL` at the first
//! patch, claimed for the life of the process (an application that later
//! installs its own handler on it disables evacuation). It must not be
//! SIGTRAP: a standard signal does not queue, so an evacuation request
//! pending when a thread hits the `int3` would swallow the trap (or the
//! reverse), and the two cases cannot be told apart from `rip`. Without a
//! free real-time signal, evacuation is skipped. Side effect: system calls
//! that fail with `EINTR` on any handled signal (`epoll_wait`, `nanosleep`,
//! `pause`, ...) can return `EINTR` in the application's threads when a
//! probe is attached, as they would for any other signal.
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

static EVAC_GEN: AtomicUsize = AtomicUsize::new(0);

/// Where a thread at `rip` must go, if anywhere.
fn evacuation_target(rip: usize) -> Option<usize> {
    let n = EVAC_LEN.load(Ordering::Acquire).min(EVAC_MAX);
    (0..n)
        .find(|&i| EVAC_FROM[i].load(Ordering::Relaxed) == rip)
        .map(|i| EVAC_TO[i].load(Ordering::Relaxed))
}

/// Byte offset of `si_value` in a `SI_QUEUE` siginfo (after signo, errno,
/// code, padding, pid, uid).
const SI_VALUE_OFFSET: usize = 24;

extern "C" fn on_evacuate(_sig: libc::c_int, info: *mut libc::siginfo_t, uctx: *mut libc::c_void) {
    // SAFETY: the kernel hands an SA_SIGINFO handler a valid siginfo of at
    // least 128 bytes; `si_value` of a queued signal is at this offset.
    let generation = unsafe {
        info.cast::<u8>()
            .add(SI_VALUE_OFFSET)
            .cast::<u32>()
            .read_unaligned()
    };
    if generation as usize != EVAC_GEN.load(Ordering::Acquire) {
        return; // a late request from an evacuation that already gave up
    }
    // SAFETY: the kernel hands an SA_SIGINFO handler a valid ucontext.
    let uc = unsafe { &mut *uctx.cast::<libc::ucontext_t>() };
    let rip = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize;
    if let Some(to) = evacuation_target(rip) {
        uc.uc_mcontext.gregs[libc::REG_RIP as usize] = to as i64;
    }
    EVAC_ACKS.fetch_add(1, Ordering::AcqRel);
}

/// The evacuation signal (see the module docs), claimed on first use.
fn evacuation_signal() -> Option<libc::c_int> {
    static SIG: OnceLock<Option<libc::c_int>> = OnceLock::new();
    *SIG.get_or_init(|| {
        for sig in (libc::SIGRTMIN() + 1..=libc::SIGRTMAX()).rev() {
            // SAFETY: a zeroed sigaction is a valid out-parameter.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: querying the current action only.
            if unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } != 0
                || old.sa_sigaction != libc::SIG_DFL
            {
                continue;
            }
            // SAFETY: as above; we fill in the fields we use.
            let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
            act.sa_sigaction = on_evacuate as *const () as usize;
            act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
            // SAFETY: valid sigaction pointers; the signal was unused (SIG_DFL).
            if unsafe {
                libc::sigemptyset(&mut act.sa_mask);
                libc::sigaction(sig, &act, std::ptr::null_mut())
            } == 0
            {
                return Some(sig);
            }
        }
        None
    })
}

/// Moves every other thread out of the interior of the bytes being patched
/// (see the module docs). Called with the registry lock held, so one at a time.
fn evacuate(moves: &[(usize, usize)]) {
    if moves.is_empty() {
        return;
    }
    let Some(sig) = evacuation_signal() else {
        return;
    };
    for (i, &(from, to)) in moves.iter().take(EVAC_MAX).enumerate() {
        EVAC_FROM[i].store(from, Ordering::Relaxed);
        EVAC_TO[i].store(to, Ordering::Relaxed);
    }
    EVAC_ACKS.store(0, Ordering::Release);
    EVAC_LEN.store(moves.len().min(EVAC_MAX), Ordering::Release);
    let generation = (EVAC_GEN.fetch_add(1, Ordering::AcqRel) + 1) as u32;
    // SAFETY: getpid/gettid/getuid have no preconditions.
    let (pid, me, uid) = unsafe { (libc::getpid(), libc::gettid(), libc::getuid()) };
    let mut info = [0u8; 128];
    info[0..4].copy_from_slice(&sig.to_ne_bytes());
    info[8..12].copy_from_slice(&libc::SI_QUEUE.to_ne_bytes());
    info[16..20].copy_from_slice(&pid.to_ne_bytes());
    info[20..24].copy_from_slice(&uid.to_ne_bytes());
    info[SI_VALUE_OFFSET..SI_VALUE_OFFSET + 4].copy_from_slice(&generation.to_ne_bytes());
    let mut sent = 0;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for tid in dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
        {
            if tid == me {
                continue;
            }
            // SAFETY: queueing a signal with a well-formed SI_QUEUE siginfo to
            // a thread of our own process; its handler is installed.
            let rc =
                unsafe { libc::syscall(libc::SYS_rt_tgsigqueueinfo, pid, tid, sig, info.as_ptr()) };
            if rc == 0 {
                sent += 1;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_millis(200);
    while EVAC_ACKS.load(Ordering::Acquire) < sent && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(50));
    }
    let acks = EVAC_ACKS.load(Ordering::Acquire);
    if acks < sent {
        tracing::debug!(sent, acks, "evacuation: not every thread answered in time");
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
