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
//!
//! Robustness against a process dying while it holds a lock (a killed
//! loader in the middle of `pkbpf map update`, a crashing target): the
//! spinlock word holds its owner's thread id instead of 1, and the hash
//! buckets' sequence lock is an *owned* one (`oseq_*`: beside the count, an
//! owner word the holder fills right after its CAS and clears right before
//! unlocking; it lives apart from the bucket so that buckets stay 8 bytes).
//! A waiter that has spun for a while checks whether the owner still exists
//! (`kill(tid, 0)`); if it is gone, the waiter releases the lock in its
//! place and raises the map's "possibly inconsistent" flag (the dead writer
//! may have left a value half-written; the hash chains stay walkable, since
//! every link change is a single store). A thread id reused by a new thread
//! only delays that recovery. Thread ids mean something only within one
//! PID namespace: a region records its creator's, and a process outside it
//! writes an unattributable owner (`u32::MAX`, never taken for dead) and
//! never releases another's lock (see [`Robust`]). A holder that dies in
//! the two instructions
//! between its CAS and storing its id (or between clearing it and
//! unlocking) leaves a lock nobody can attribute, which is not recovered.

use std::cell::Cell;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, Ordering};

thread_local! {
    /// This thread's id, 0 until first asked (and again in a fork's child).
    static TID: Cell<u32> = const { Cell::new(0) };
}

extern "C" fn forget_tid() {
    TID.with(|t| t.set(0));
}

/// The calling thread's id (the owner recorded in lock words), cached: no
/// system call after the first one in a thread.
#[inline]
pub(crate) fn my_tid() -> u32 {
    let t = TID.with(|t| t.get());
    if t != 0 {
        return t;
    }
    my_tid_slow()
}

#[cold]
fn my_tid_slow() -> u32 {
    // The fork handler that clears the cache, registered once. Not a
    // `Once`: the child of a multi-threaded parent that forked while
    // another thread was registering would inherit "running" with nobody
    // left to finish it and block for ever (seen: a forked test child hung
    // in `Once::call`). Here a thread that finds the registration under way
    // just does not cache its id (one more gettid later), and a child that
    // inherited "under way" never caches: slower, never stuck.
    const NONE: u8 = 0;
    const REGISTERING: u8 = 1;
    const DONE: u8 = 2;
    static ATFORK: AtomicU8 = AtomicU8::new(NONE);
    let mut state = ATFORK.load(Ordering::Acquire);
    if state == NONE
        && ATFORK
            .compare_exchange(NONE, REGISTERING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    {
        // SAFETY: registers a plain function that only resets a
        // thread-local; a fork's child must not reuse its parent's id.
        unsafe { libc::pthread_atfork(None, None, Some(forget_tid)) };
        ATFORK.store(DONE, Ordering::Release);
        state = DONE;
    } else if state == NONE {
        state = ATFORK.load(Ordering::Acquire);
    }
    // SAFETY: gettid has no preconditions.
    let t = unsafe { libc::gettid() } as u32;
    if state == DONE {
        TID.with(|c| c.set(t));
    }
    t
}

/// The inode of this process's PID namespace (`/proc/self/ns/pid`), 0 when
/// unknown. A region records its creator's, and thread ids in lock words
/// are only written and trusted by processes in that same namespace.
/// Cached without a lock (two threads may both read it once): a `OnceLock`
/// caught mid-initialisation by a fork would block the child for ever.
pub(crate) fn pid_ns() -> u64 {
    use std::os::unix::fs::MetadataExt;
    static NS: AtomicU64 = AtomicU64::new(0);
    let cached = NS.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    let ns = std::fs::metadata("/proc/self/ns/pid")
        .map(|m| m.ino())
        .unwrap_or(0);
    NS.store(ns, Ordering::Relaxed);
    ns
}

/// Whether this process shares the PID namespace `ns` (a region's).
pub(crate) fn same_pid_ns(ns: u64) -> bool {
    ns != 0 && pid_ns() == ns
}

/// What a map's locks need for recovery: the map's "possibly
/// inconsistent" flag, and whether this process may attribute locks by
/// thread id (it shares the region creator's PID namespace). A process
/// that may not writes an unattributable owner (`u32::MAX`, never "dead")
/// and never releases anyone else's lock.
#[derive(Clone, Copy)]
pub(crate) struct Robust<'a> {
    pub poisoned: &'a AtomicU32,
    pub attributable: bool,
}

/// The owner id this process writes into a lock word.
#[inline(always)]
fn owner_id(attributable: bool) -> u32 {
    if attributable {
        my_tid()
    } else {
        u32::MAX
    }
}

/// Whether thread `tid` no longer exists (a lock it holds is abandoned).
/// Any doubt (no permission, a filtered system call) counts as alive.
fn owner_dead(tid: u32) -> bool {
    if tid == 0 || tid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: signal 0 only checks that the target exists.
    let r = unsafe { libc::kill(tid as i32, 0) };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// How many backoff rounds pass between checks of a lock owner's liveness.
const OWNER_CHECK_EVERY: u32 = 256;

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

/// Takes the spinlock `l` (its word then holds our thread id). Returns true
/// when it had to be taken over from a dead owner (the data it protects may
/// be half-updated).
/// `attributable`: see [`Robust`].
#[inline]
pub(crate) fn spin_lock(l: &AtomicU32, attributable: bool) -> bool {
    let me = owner_id(attributable);
    if l.compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
    {
        return false;
    }
    spin_lock_slow(l, me, attributable)
}

#[cold]
#[inline(never)]
fn spin_lock_slow(l: &AtomicU32, me: u32, attributable: bool) -> bool {
    let mut spins = 0;
    loop {
        if l.compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return false;
        }
        loop {
            let owner = l.load(Ordering::Relaxed);
            if owner == 0 {
                break;
            }
            backoff(&mut spins);
            if attributable && spins.is_multiple_of(OWNER_CHECK_EVERY) && owner_dead(owner) {
                // Take it over in the dead owner's place.
                if l.compare_exchange(owner, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return true;
                }
            }
        }
    }
}

/// Releases the spinlock `l`.
#[inline]
pub(crate) fn spin_unlock(l: &AtomicU32) {
    l.store(0, Ordering::Release);
}

/// Enters the write side of the owned sequence lock `seq` (see the module
/// doc): `owner` gets our thread id once the lock is ours; `poisoned` is
/// raised if a dead holder's lock had to be released on the way.
#[inline(always)]
pub(crate) fn oseq_write_lock(seq: &AtomicU32, owner: &AtomicU32, rb: Robust<'_>) {
    let v = seq.load(Ordering::Relaxed);
    if v & 1 == 0
        && seq
            .compare_exchange_weak(v, v.wrapping_add(1), Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    {
        // Readers that see the data we are about to write must also see
        // the odd count.
        fence(Ordering::Release);
        owner.store(owner_id(rb.attributable), Ordering::Relaxed);
        return;
    }
    oseq_write_lock_slow(seq, owner, rb);
}

#[cold]
#[inline(never)]
fn oseq_write_lock_slow(seq: &AtomicU32, owner: &AtomicU32, rb: Robust<'_>) {
    let mut spins = 0;
    loop {
        let v = seq.load(Ordering::Relaxed);
        if v & 1 == 0 {
            if seq
                .compare_exchange_weak(v, v.wrapping_add(1), Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                fence(Ordering::Release);
                owner.store(owner_id(rb.attributable), Ordering::Relaxed);
                return;
            }
            continue;
        }
        backoff(&mut spins);
        if spins.is_multiple_of(OWNER_CHECK_EVERY) {
            oseq_recover(seq, v, owner, rb);
        }
    }
}

/// Releases `seq`, held at odd count `v`, if the holder `owner` names is
/// dead. The holder clears `owner` before it unlocks and a new holder sets
/// it only after its CAS, so an id read after seeing count `v` is the
/// holder of `v` or 0 (not yet known: keep waiting); the CAS on the count
/// fails if the lock moved on meanwhile.
#[cold]
fn oseq_recover(seq: &AtomicU32, v: u32, owner: &AtomicU32, rb: Robust<'_>) {
    let o = owner.load(Ordering::Acquire);
    if rb.attributable
        && v & 1 == 1
        && owner_dead(o)
        && seq
            .compare_exchange(v, v.wrapping_add(1), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    {
        let _ = owner.compare_exchange(o, 0, Ordering::Relaxed, Ordering::Relaxed);
        rb.poisoned.store(1, Ordering::Release);
    }
}

/// Leaves the write side of the owned sequence lock `seq`.
#[inline(always)]
pub(crate) fn oseq_write_unlock(seq: &AtomicU32, owner: &AtomicU32) {
    // Cleared first: a waiter must never read our id once another thread
    // holds the lock.
    owner.store(0, Ordering::Relaxed);
    // Only the holder changes an odd count, so a release store (no locked
    // instruction) publishes the new even count.
    let v = seq.load(Ordering::Relaxed);
    seq.store(v.wrapping_add(1), Ordering::Release);
}

/// Starts a read section of the owned sequence lock `seq`: waits out a
/// writer (releasing a dead one's lock) and returns the count to check.
#[inline(always)]
pub(crate) fn oseq_read_begin(seq: &AtomicU32, owner: &AtomicU32, rb: Robust<'_>) -> u32 {
    let v = seq.load(Ordering::Acquire);
    if v & 1 == 0 {
        return v;
    }
    oseq_read_wait(seq, owner, rb)
}

#[cold]
#[inline(never)]
fn oseq_read_wait(seq: &AtomicU32, owner: &AtomicU32, rb: Robust<'_>) -> u32 {
    let mut spins = 0;
    loop {
        let v = seq.load(Ordering::Acquire);
        if v & 1 == 0 {
            return v;
        }
        backoff(&mut spins);
        if spins.is_multiple_of(OWNER_CHECK_EVERY) {
            oseq_recover(seq, v, owner, rb);
        }
    }
}

/// Whether the read section begun with count `v` must be retried.
#[inline(always)]
pub(crate) fn oseq_read_retry(seq: &AtomicU32, v: u32) -> bool {
    fence(Ordering::Acquire);
    seq.load(Ordering::Relaxed) != v
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
                        spin_lock(&lock, true);
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

    /// A thread that exits holding a lock leaves its id in the word; the
    /// next taker finds it gone and takes over (spinlock), or releases it
    /// and raises the poison flag (owned seqlock, for readers and writers).
    #[test]
    fn locks_of_dead_threads_are_recovered() {
        let l = Arc::new(AtomicU32::new(0));
        let (seq, owner) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let (l2, seq2, owner2) = (l.clone(), seq.clone(), owner.clone());
        let poison = AtomicU32::new(0);
        let rb = Robust {
            poisoned: &poison,
            attributable: true,
        };
        let dead = std::thread::spawn(move || {
            assert!(!spin_lock(&l2, true));
            let p = AtomicU32::new(0);
            let rb = Robust {
                poisoned: &p,
                attributable: true,
            };
            oseq_write_lock(&seq2, &owner2, rb);
            my_tid()
        })
        .join()
        .unwrap();
        assert_eq!(l.load(Ordering::Relaxed), dead);
        assert_eq!(owner.load(Ordering::Relaxed), dead);
        assert_eq!(seq.load(Ordering::Relaxed) & 1, 1);
        assert!(spin_lock(&l, true), "taken over from the dead thread");
        assert_eq!(l.load(Ordering::Relaxed), my_tid());
        spin_unlock(&l);
        let v = oseq_read_begin(&seq, &owner, rb);
        assert_eq!(v & 1, 0);
        assert_eq!(poison.load(Ordering::Relaxed), 1);
        assert_eq!(owner.load(Ordering::Relaxed), 0);
        assert!(!oseq_read_retry(&seq, v));
        oseq_write_lock(&seq, &owner, rb);
        assert_eq!(owner.load(Ordering::Relaxed), my_tid());
        oseq_write_unlock(&seq, &owner);
        assert_eq!(owner.load(Ordering::Relaxed), 0);
        assert!(oseq_read_retry(&seq, v));
        // A live holder is waited for, not robbed; an unattributable one
        // is never taken for dead.
        assert!(!owner_dead(my_tid()));
        assert!(!owner_dead(owner_id(false)));
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
