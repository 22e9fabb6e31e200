//! The calling thread's CPU index and the number of possible CPUs.
//!
//! Per-CPU maps keep one value slot per *possible* CPU (as the kernel does),
//! indexed by the CPU the calling thread runs on. The fast path reads the
//! `cpu_id` field of the thread's rseq area, which glibc (≥ 2.35) registers
//! for every thread and whose location it publishes as `__rseq_offset` from
//! the thread pointer (`__rseq_size` is 0 when registration failed). Without
//! rseq, `sched_getcpu(3)` (a vDSO call) answers instead.

use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::OnceLock;

/// Offset of the rseq area from the thread pointer, if glibc registered one.
fn rseq_offset() -> Option<isize> {
    static OFF: OnceLock<Option<isize>> = OnceLock::new();
    *OFF.get_or_init(|| {
        if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            return None;
        }
        // SAFETY: dlsym with RTLD_DEFAULT and NUL-terminated names only looks
        // symbols up; a null result means the symbol is absent.
        let (off, size) = unsafe {
            (
                libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr()),
                libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr()),
            )
        };
        if off.is_null() || size.is_null() {
            return None;
        }
        // SAFETY: glibc defines `__rseq_offset` as a `ptrdiff_t` and
        // `__rseq_size` as an `unsigned int`, both constant after start-up.
        let (off, size) = unsafe { (*(off as *const isize), *(size as *const u32)) };
        // `cpu_id` is the u32 at offset 4 of `struct rseq`.
        (size >= 8).then_some(off)
    })
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn thread_pointer() -> usize {
    let tp: usize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: on x86-64 Linux `fs:0` holds the TCB's self pointer, i.e. the
    // thread pointer; reading it has no side effect.
    unsafe {
        std::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: TPIDR_EL0 is the thread pointer register; reading it has no
    // side effect.
    unsafe {
        std::arch::asm!("mrs {}, tpidr_el0", out(reg) tp, options(nostack, nomem, preserves_flags));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        tp = 0;
    }
    tp
}

/// [`rseq_offset`] + 4 (the `cpu_id` field), cached in one word so the
/// per-operation path is a plain load: [`CPU_OFF_UNKNOWN`] until first
/// asked, [`CPU_OFF_ABSENT`] without rseq.
static CPU_OFF: AtomicIsize = AtomicIsize::new(CPU_OFF_UNKNOWN);
const CPU_OFF_UNKNOWN: isize = isize::MIN;
const CPU_OFF_ABSENT: isize = isize::MIN + 1;

#[inline(always)]
fn cpu_id_off() -> isize {
    let o = CPU_OFF.load(Ordering::Relaxed);
    if o != CPU_OFF_UNKNOWN {
        return o;
    }
    let o = rseq_offset().map_or(CPU_OFF_ABSENT, |off| off + 4);
    CPU_OFF.store(o, Ordering::Relaxed);
    o
}

/// The u32 at `off` from the thread pointer: on x86-64 one `fs`-relative
/// load.
///
/// # Safety
/// `off` is the offset of this thread's rseq `cpu_id` (glibc's
/// `__rseq_offset` + 4, with rseq registered).
#[inline(always)]
unsafe fn read_cpu_id(off: isize) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        let id: u32;
        // SAFETY: the caller's contract: `fs:[off]` is this thread's
        // `cpu_id`, which the kernel keeps current; reading it has no side
        // effect.
        unsafe {
            std::arch::asm!(
                "mov {id:e}, dword ptr fs:[{off}]",
                id = out(reg) id,
                off = in(reg) off,
                options(nostack, readonly, preserves_flags)
            );
        }
        id
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let area = thread_pointer().wrapping_add_signed(off);
        // SAFETY: as above, through the thread pointer.
        unsafe { std::ptr::read_volatile(area as *const u32) }
    }
}

/// The index of the CPU the calling thread runs on (may be stale by the time
/// it is used, as in the kernel with preemption enabled: per-CPU map slots
/// are therefore still updated with atomics or locks where it matters).
#[inline]
pub fn current_cpu() -> u32 {
    let off = cpu_id_off();
    if off != CPU_OFF_ABSENT {
        // SAFETY: glibc registered the rseq area at thread pointer +
        // `__rseq_offset` for every thread (we checked `__rseq_size`); the
        // kernel updates `cpu_id` (offset 4) on every migration.
        let id = unsafe { read_cpu_id(off) };
        if (id as i32) >= 0 {
            return id;
        }
    }
    // SAFETY: sched_getcpu has no preconditions.
    let id = unsafe { libc::sched_getcpu() };
    id.max(0) as u32
}

/// The offset from the thread pointer (`fs` base on x86-64) of the calling
/// thread's rseq `cpu_id`, when glibc registered rseq areas: the same for
/// every thread of the process, so code generated at load (the JIT's
/// inlined per-CPU array lookup) may read `fs:[offset]` directly. A thread
/// whose registration failed reads a negative id there (`cpu_id` is -1 or
/// -2), which such code must treat as "ask [`current_cpu`]".
pub fn rseq_cpu_id_offset() -> Option<isize> {
    rseq_offset().map(|off| off + 4)
}

/// Whether [`current_cpu`] uses the rseq area (false: `sched_getcpu`).
pub fn uses_rseq() -> bool {
    rseq_offset().is_some()
}

/// Parses a kernel CPU list such as `0-7` or `0,2-3,8` and returns the
/// highest index plus one.
pub fn parse_cpu_list(s: &str) -> Option<u32> {
    let mut max: Option<u32> = None;
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let hi = match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (
                    lo.trim().parse::<u32>().ok()?,
                    hi.trim().parse::<u32>().ok()?,
                );
                if lo > hi {
                    return None;
                }
                hi
            }
            None => part.trim().parse::<u32>().ok()?,
        };
        max = Some(max.map_or(hi, |m: u32| m.max(hi)));
    }
    max?.checked_add(1)
}

/// The number of possible CPUs (`/sys/devices/system/cpu/possible`), the
/// number of value slots of a per-CPU map.
pub fn possible_cpus() -> u32 {
    static N: OnceLock<u32> = OnceLock::new();
    *N.get_or_init(|| {
        std::fs::read_to_string("/sys/devices/system/cpu/possible")
            .ok()
            .and_then(|s| parse_cpu_list(&s))
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32))
            .max(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-7\n"), Some(8));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0,2-3,8"), Some(9));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(parse_cpu_list(""), None);
    }

    #[test]
    fn current_cpu_agrees_with_getcpu() {
        let n = possible_cpus();
        let mut agreed = false;
        for _ in 0..1000 {
            let a = current_cpu();
            // SAFETY: no preconditions.
            let b = unsafe { libc::sched_getcpu() } as u32;
            assert!(a < n, "cpu {a} >= possible {n}");
            if a == b {
                agreed = true;
                break;
            }
        }
        assert!(
            agreed,
            "rseq cpu_id never matched sched_getcpu (rseq: {})",
            uses_rseq()
        );
    }
}
