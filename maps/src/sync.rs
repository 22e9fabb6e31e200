//! Process-shared synchronisation built from atomics that live in the region.
//!
//! Nothing here may hold a pointer or an OS handle: every primitive is a word in
//! the shared mapping, so a second process that maps the same memfd uses the
//! very same lock. Two shapes are used:
//!
//! - a test-and-test-and-set spinlock on an `AtomicU32` (0 = free, 1 = held),
//!   for writers and for operations the kernel also serialises (queue/stack,
//!   ringbuf reservation);
//! - a sequence lock on an `AtomicU32`: writers make it odd while they change
//!   the protected data (and exclude each other with the same word), readers
//!   take no lock at all: they read the count, read the data, and retry when
//!   the count moved or was odd.

use std::sync::atomic::{fence, AtomicU32, Ordering};

/// Spins, then yields the CPU when a lock stays held (the holder may be a
/// preempted thread of another process).
#[inline]
pub(crate) fn backoff(spins: &mut u32) {
    *spins = spins.saturating_add(1);
    if *spins < 64 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// Takes the spinlock `l`.
#[inline]
pub(crate) fn spin_lock(l: &AtomicU32) {
    let mut spins = 0;
    loop {
        if l.compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
        while l.load(Ordering::Relaxed) != 0 {
            backoff(&mut spins);
        }
    }
}

/// Releases the spinlock `l`.
#[inline]
pub(crate) fn spin_unlock(l: &AtomicU32) {
    l.store(0, Ordering::Release);
}

/// Enters the write side of the sequence lock `s` (excluding other writers).
/// The uncontended case is one load and one CAS; waiting is out of line so
/// callers' fast paths stay small.
#[inline(always)]
pub(crate) fn seq_write_lock(s: &AtomicU32) {
    let v = s.load(Ordering::Relaxed);
    if v & 1 == 0
        && s.compare_exchange_weak(v, v.wrapping_add(1), Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    {
        // Readers that see the data we are about to write must also see
        // the odd count.
        fence(Ordering::Release);
        return;
    }
    seq_write_lock_slow(s);
}

#[cold]
#[inline(never)]
fn seq_write_lock_slow(s: &AtomicU32) {
    let mut spins = 0;
    loop {
        let v = s.load(Ordering::Relaxed);
        if v & 1 == 0
            && s.compare_exchange_weak(v, v.wrapping_add(1), Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            fence(Ordering::Release);
            return;
        }
        backoff(&mut spins);
    }
}

/// Leaves the write side of the sequence lock `s`.
#[inline(always)]
pub(crate) fn seq_write_unlock(s: &AtomicU32) {
    // Only the holder changes an odd count, so a plain release store (no
    // locked instruction) publishes the new even count.
    let v = s.load(Ordering::Relaxed);
    s.store(v.wrapping_add(1), Ordering::Release);
}

/// Starts a read section: waits out a writer and returns the count to check.
#[inline(always)]
pub(crate) fn seq_read_begin(s: &AtomicU32) -> u32 {
    let v = s.load(Ordering::Acquire);
    if v & 1 == 0 {
        return v;
    }
    seq_read_wait(s)
}

#[cold]
#[inline(never)]
fn seq_read_wait(s: &AtomicU32) -> u32 {
    let mut spins = 0;
    loop {
        let v = s.load(Ordering::Acquire);
        if v & 1 == 0 {
            return v;
        }
        backoff(&mut spins);
    }
}

/// Whether the read section begun with count `v` must be retried.
#[inline(always)]
pub(crate) fn seq_read_retry(s: &AtomicU32, v: u32) -> bool {
    fence(Ordering::Acquire);
    s.load(Ordering::Relaxed) != v
}

/// Wait on a process-shared futex word while it still holds `expected`.
/// Returns after a wake-up, a timeout, a signal, or at once if the word
/// changed.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: std::time::Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call and
    // `ts` a valid timespec; FUTEX_WAIT without FUTEX_PRIVATE_FLAG keys the
    // wait on the physical page, so waiters in other processes that map the
    // same memfd are woken too.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            0usize,
            0u32,
        );
    }
}

/// Wakes every waiter of a process-shared futex word.
pub(crate) fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: `word` is a valid u32; FUTEX_WAKE only reads its address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            0usize,
            0usize,
            0u32,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn spinlock_excludes() {
        let lock = Arc::new(AtomicU32::new(0));
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (lock, counter) = (lock.clone(), counter.clone());
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        spin_lock(&lock);
                        // A non-atomic read-modify-write: only correct under the lock.
                        let v = counter.load(Ordering::Relaxed);
                        counter.store(v + 1, Ordering::Relaxed);
                        spin_unlock(&lock);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(counter.load(Ordering::Relaxed), 8000);
    }

    #[test]
    fn seqlock_reader_sees_writer() {
        let s = AtomicU32::new(0);
        let v = seq_read_begin(&s);
        assert!(!seq_read_retry(&s, v));
        seq_write_lock(&s);
        assert_eq!(s.load(Ordering::Relaxed) & 1, 1);
        seq_write_unlock(&s);
        assert!(seq_read_retry(&s, v));
    }
}
