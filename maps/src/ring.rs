//! Ring buffers: the `RINGBUF` map and each CPU ring of a `PERF_EVENT_ARRAY`.
//!
//! A ring is a control block (reservation lock, consumer and producer
//! positions, a futex word and waiter count, a lost-record counter — runtime
//! key) and a power-of-two data area. Records are an 8-byte header
//! `{len | BUSY | DISCARD, offset / 8}` followed by the data, padded to 8.
//! Producers serialise only the reservation (as the kernel does); commit is a
//! single atomic store, so records are committed out of order and the
//! consumer stops at the first busy one. A record never wraps: when it would
//! cross the end, a discarded padding record fills the tail first.
//!
//! The consumer (one per ring) advances the consumer position after copying
//! a record out, so producers never overwrite unread data; a full ring makes
//! `reserve` fail (null), never block.

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::raw::EINVAL;
use crate::sync::{futex_wait, futex_wake_all, spin_lock, spin_unlock};

/// Bytes of a ring's control block.
pub(crate) const CTL_SIZE: usize = 256;
const LOCK: usize = 0;
const CONS: usize = 64;
const PROD: usize = 128;
const SEQ: usize = 192;
const WAITERS: usize = 196;
const LOST: usize = 200;

const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;
const LEN_MASK: u32 = DISCARD - 1;
const HDR: u64 = 8;

/// `BPF_RB_NO_WAKEUP`
pub const BPF_RB_NO_WAKEUP: u64 = 1;
/// `BPF_RB_FORCE_WAKEUP`
pub const BPF_RB_FORCE_WAKEUP: u64 = 2;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Ring {
    ctl: *mut u8,
    notify: *mut u8,
    data: *mut u8,
    size: u64,
    /// Lock owners attributable by thread id (see `sync::Robust`).
    same_ns: bool,
}

// SAFETY: only pointers into the shared mapping, used through atomics.
unsafe impl Send for Ring {}

impl Ring {
    /// # Safety
    /// `ctl` and `notify` point to control blocks, `data` to `size` bytes
    /// (a power of two), all inside a live mapping.
    pub(crate) unsafe fn new(
        ctl: *mut u8,
        notify: *mut u8,
        data: *mut u8,
        size: u64,
        same_ns: bool,
    ) -> Ring {
        Ring {
            ctl,
            notify,
            data,
            size,
            same_ns,
        }
    }

    fn w32(&self, base: *mut u8, off: usize) -> &AtomicU32 {
        // SAFETY: offsets inside a control block.
        unsafe { &*(base.add(off) as *const AtomicU32) }
    }
    fn w64(&self, off: usize) -> &AtomicU64 {
        // SAFETY: offsets inside the control block, 8-aligned.
        unsafe { &*(self.ctl.add(off) as *const AtomicU64) }
    }
    fn hdr(&self, off: u64) -> (&AtomicU32, &AtomicU32) {
        // SAFETY: off < size and 8-aligned: the header lies in the data area.
        unsafe {
            let p = self.data.add(off as usize);
            (&*(p as *const AtomicU32), &*(p.add(4) as *const AtomicU32))
        }
    }

    pub(crate) fn reserve(&self, len: u64) -> *mut u8 {
        if len > LEN_MASK as u64 {
            return std::ptr::null_mut();
        }
        let total = (len + HDR + 7) & !7;
        if total > self.size {
            return std::ptr::null_mut();
        }
        let lock = self.w32(self.ctl, LOCK);
        // A reservation lock taken over from a dead producer needs no
        // repair: positions are only advanced after the header is written.
        let _ = spin_lock(lock, self.same_ns);
        let cons = self.w64(CONS).load(Ordering::Acquire);
        let prod = self.w64(PROD).load(Ordering::Relaxed);
        let off = prod & (self.size - 1);
        let pad = if off + total > self.size {
            self.size - off
        } else {
            0
        };
        if prod.wrapping_sub(cons).saturating_add(pad + total) > self.size {
            spin_unlock(lock);
            return std::ptr::null_mut();
        }
        if pad > 0 {
            let (l, o) = self.hdr(off);
            o.store((off / 8) as u32, Ordering::Relaxed);
            l.store((pad - HDR) as u32 | DISCARD, Ordering::Relaxed);
        }
        let roff = (prod + pad) & (self.size - 1);
        let (l, o) = self.hdr(roff);
        o.store((roff / 8) as u32, Ordering::Relaxed);
        l.store(len as u32 | BUSY, Ordering::Relaxed);
        self.w64(PROD).store(prod + pad + total, Ordering::Release);
        spin_unlock(lock);
        // SAFETY: roff + 8 + len <= size.
        unsafe { self.data.add((roff + HDR) as usize) }
    }

    pub(crate) fn commit(&self, rec: *mut u8, flags: u64, discard: bool) -> i64 {
        let a = (rec as usize).wrapping_sub(self.data as usize) as u64;
        if a < HDR || a > self.size || !a.is_multiple_of(8) {
            return EINVAL;
        }
        let off = a - HDR;
        let (l, o) = self.hdr(off);
        let w = l.load(Ordering::Relaxed);
        if w & BUSY == 0 || o.load(Ordering::Relaxed) as u64 != off / 8 {
            return EINVAL;
        }
        let new = (w & !BUSY) | if discard { DISCARD } else { 0 };
        if l.compare_exchange(w, new, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            return EINVAL;
        }
        self.wake(flags);
        0
    }

    fn wake(&self, flags: u64) {
        if flags & BPF_RB_NO_WAKEUP != 0 {
            return;
        }
        // Orders our commit before the waiter check (pairs with `wait`).
        fence(Ordering::SeqCst);
        if flags & BPF_RB_FORCE_WAKEUP != 0
            || self.w32(self.notify, WAITERS).load(Ordering::Relaxed) > 0
        {
            let seq = self.w32(self.notify, SEQ);
            seq.fetch_add(1, Ordering::SeqCst);
            futex_wake_all(seq);
        }
    }

    /// # Safety
    /// `src` points to `len` readable bytes.
    pub(crate) unsafe fn output(&self, src: *const u8, len: u64, flags: u64) -> i64 {
        let p = self.reserve(len);
        if p.is_null() {
            return -(libc::EAGAIN as i64);
        }
        // SAFETY: the reserved record has room for len bytes.
        unsafe { std::ptr::copy_nonoverlapping(src, p, len as usize) };
        self.commit(p, flags, false)
    }

    pub(crate) fn query(&self, flags: u64) -> u64 {
        let cons = self.w64(CONS).load(Ordering::Acquire);
        let prod = self.w64(PROD).load(Ordering::Acquire);
        match flags {
            0 => prod.wrapping_sub(cons),
            1 => self.size,
            2 => cons,
            3 => prod,
            _ => 0,
        }
    }

    pub(crate) fn count_lost(&self) {
        self.w64(LOST).fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn lost(&self) -> u64 {
        self.w64(LOST).load(Ordering::Relaxed)
    }

    /// Whether the next record is committed (something to consume).
    pub(crate) fn ready(&self) -> bool {
        let cons = self.w64(CONS).load(Ordering::Acquire);
        let prod = self.w64(PROD).load(Ordering::Acquire);
        cons != prod && self.hdr(cons & (self.size - 1)).0.load(Ordering::Acquire) & BUSY == 0
    }

    /// Hands up to `max` committed records, in ring order, to `f`; returns
    /// how many. Stops at a busy record or a corrupt header.
    pub(crate) fn consume(&self, max: usize, f: &mut dyn FnMut(&[u8])) -> usize {
        let mut n = 0;
        let mut cons = self.w64(CONS).load(Ordering::Acquire);
        while n < max {
            let prod = self.w64(PROD).load(Ordering::Acquire);
            if cons == prod {
                break;
            }
            let off = cons & (self.size - 1);
            let w = self.hdr(off).0.load(Ordering::Acquire);
            if w & BUSY != 0 {
                break;
            }
            let len = (w & LEN_MASK) as u64;
            let total = (len + HDR + 7) & !7;
            if off + total > self.size || total > prod.wrapping_sub(cons) {
                break;
            }
            if w & DISCARD == 0 {
                // SAFETY: the record [off + 8, off + 8 + len) lies in the data
                // area and producers do not reuse it before we advance.
                let s = unsafe {
                    std::slice::from_raw_parts(self.data.add((off + HDR) as usize), len as usize)
                };
                f(s);
                n += 1;
            }
            cons += total;
            self.w64(CONS).store(cons, Ordering::Release);
        }
        n
    }

    /// Blocks until `ready()` of any ring in `rings` (which share this
    /// ring's notify block) or the timeout; returns whether one is ready.
    pub(crate) fn wait_any(rings: &[Ring], timeout: Duration) -> bool {
        let Some(first) = rings.first() else {
            return false;
        };
        let deadline = Instant::now() + timeout;
        let seq = first.w32(first.notify, SEQ);
        let waiters = first.w32(first.notify, WAITERS);
        loop {
            if rings.iter().any(Ring::ready) {
                return true;
            }
            let s = seq.load(Ordering::SeqCst);
            waiters.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if rings.iter().any(Ring::ready) {
                waiters.fetch_sub(1, Ordering::SeqCst);
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                waiters.fetch_sub(1, Ordering::SeqCst);
                return false;
            }
            // Bounded naps also cover a producer in another process that
            // committed between our check and the wait without seeing us.
            futex_wait(seq, s, (deadline - now).min(Duration::from_millis(50)));
            waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }
}
