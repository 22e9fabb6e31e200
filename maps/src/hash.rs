//! Hash maps (plain, per-CPU, LRU, LRU per-CPU) in shared memory.
//!
//! Internals: a small header (free-list lock and head, LRU clock), a
//! power-of-two array of buckets `{seq, head}`, and `max_entries`
//! preallocated elements `{next, state, hash, free_next, stamp, key words}`.
//! Each element's value slot lives in the values part at `index × slot`.
//!
//! Writers take their bucket's sequence lock; readers take none: they walk
//! the chain with atomic loads and retry when the bucket's count moved. No
//! element memory is ever freed (deleted elements return to the free list),
//! so a reader never touches unmapped memory, and a chain walk is bounded by
//! `max_entries` steps even while elements are recycled under it. As in the
//! kernel's preallocated hash maps, a value pointer handed to a program stays
//! valid memory but may be reused by a later insert after a delete.
//!
//! Elements are always preallocated (`BPF_F_NO_PREALLOC` is accepted and
//! ignored), so a full map answers `-E2BIG` without allocating.
//!
//! LRU maps stamp elements from a per-map clock on lookup and update; when
//! the free list is empty an insert evicts the elements with the oldest
//! stamps: exactly the least recently used one for maps below 128 entries,
//! the [`lru_batch`] least recently used ones for larger maps (as the
//! kernel, which also shrinks its LRU lists in batches).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::raw::{RawMap, Val, BPF_EXIST, BPF_NOEXIST, E2BIG, EEXIST, ENOENT};
use crate::sync::{
    seq_read_begin, seq_read_retry, seq_write_lock, seq_write_unlock, spin_lock, spin_unlock,
};
use crate::MapType;

/// "No element".
pub(crate) const NIL: u32 = u32::MAX;
/// Offset of the bucket array in the internals.
pub(crate) const BUCKETS_OFF: usize = 128;

/// Most elements one eviction scan frees.
const MAX_LRU_BATCH: usize = 64;

/// How many elements a full LRU map of `max_entries` evicts at once: one
/// per 64 entries, 1 to 64. The scan that finds them is O(max_entries), so
/// an insert into a full map costs amortised O(64) element reads up to 4096
/// entries, O(max_entries / 64) beyond.
pub fn lru_batch(max_entries: u32) -> usize {
    (max_entries as usize / 64).clamp(1, MAX_LRU_BATCH)
}

const FREE_LOCK: usize = 0;
const FREE_HEAD: usize = 4;
const CLOCK: usize = 64;

#[repr(C)]
struct Elem {
    next: AtomicU32,
    state: AtomicU32,
    hash: AtomicU32,
    free_next: AtomicU32,
    stamp: AtomicU64,
    _pad: u64,
    // followed by `key_words` AtomicU64
}

#[repr(C)]
struct Bucket {
    seq: AtomicU32,
    head: AtomicU32,
}

/// The little-endian word at `p`, reading only `min(rem, 8)` bytes (the
/// rest zero).
///
/// # Safety
/// `p` points to at least `min(rem, 8)` readable bytes.
#[inline(always)]
pub(crate) unsafe fn le_word(p: *const u8, rem: usize) -> u64 {
    // SAFETY: every read stays within the first min(rem, 8) bytes: a full
    // word when 8 remain, else 4-, 2- and 1-byte pieces of `rem`.
    unsafe {
        if rem >= 8 {
            return u64::from_le(std::ptr::read_unaligned(p as *const u64));
        }
        let mut v = 0u64;
        let mut o = 0;
        if rem & 4 != 0 {
            v = u32::from_le(std::ptr::read_unaligned(p as *const u32)) as u64;
            o = 4;
        }
        if rem & 2 != 0 {
            v |= (u16::from_le(std::ptr::read_unaligned(p.add(o) as *const u16)) as u64) << (8 * o);
            o += 2;
        }
        if rem & 1 != 0 {
            v |= (*p.add(o) as u64) << (8 * o);
        }
        v
    }
}

#[inline]
pub(crate) fn mix(mut h: u64, w: u64) -> u64 {
    h = (h ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^ (h >> 29)
}

impl RawMap {
    #[inline]
    fn is_lru(&self) -> bool {
        matches!(self.ty, MapType::LruHash | MapType::LruPerCpuHash)
    }

    #[inline]
    fn iword<T>(&self, off: usize) -> &T {
        // SAFETY: callers pass header offsets inside the internals.
        unsafe { &*(self.internals.add(off) as *const T) }
    }

    #[inline]
    fn bucket(&self, h: u32) -> &Bucket {
        let b = h as usize & (self.p.nbuckets - 1);
        // SAFETY: b < nbuckets; the bucket array starts at buckets_off.
        unsafe { &*(self.internals.add(self.p.buckets_off + b * 8) as *const Bucket) }
    }

    #[inline]
    fn elem(&self, i: u32) -> &Elem {
        debug_assert!(i < self.max_entries);
        // SAFETY: i < max_entries (callers check), elements start at elems_off.
        unsafe {
            &*(self
                .internals
                .add(self.p.elems_off + i as usize * self.p.elem_stride)
                as *const Elem)
        }
    }

    #[inline]
    fn elem_key(&self, i: u32, w: usize) -> &AtomicU64 {
        // SAFETY: w < key_words: the element's key words follow its 32-byte header.
        unsafe {
            &*(self
                .internals
                .add(self.p.elems_off + i as usize * self.p.elem_stride + 32 + w * 8)
                as *const AtomicU64)
        }
    }

    #[inline]
    pub(crate) fn elem_value(&self, i: u32) -> *mut u8 {
        // SAFETY: i < max_entries: the slot lies in the values part.
        unsafe { self.values.add(i as usize * self.p.slot) }
    }

    /// Key word `w` of `key` (little-endian), zero-padded past `key_size`.
    #[inline(always)]
    fn key_word(&self, key: *const u8, w: usize) -> u64 {
        let start = w * 8;
        // SAFETY: the key has key_size bytes, start < key_size.
        unsafe { le_word(key.add(start), self.key_size as usize - start) }
    }

    #[inline]
    fn hash_of(&self, key: *const u8) -> u32 {
        let mut h = 0x243F_6A88_85A3_08D3 ^ self.key_size as u64;
        for w in 0..self.p.key_words {
            h = mix(h, self.key_word(key, w));
        }
        (h ^ (h >> 32)) as u32
    }

    #[inline]
    fn key_eq(&self, e: u32, key: *const u8) -> bool {
        (0..self.p.key_words)
            .all(|w| self.elem_key(e, w).load(Ordering::Relaxed) == self.key_word(key, w))
    }

    /// Walks bucket `b`'s chain for `key` (inside a read or write section).
    #[inline]
    fn chain_find(&self, b: &Bucket, h: u32, key: *const u8) -> u32 {
        let mut cur = b.head.load(Ordering::Acquire);
        let mut steps = 0;
        while cur < self.max_entries && steps <= self.max_entries {
            let e = self.elem(cur);
            if e.hash.load(Ordering::Relaxed) == h && self.key_eq(cur, key) {
                return cur;
            }
            cur = e.next.load(Ordering::Acquire);
            steps += 1;
        }
        NIL
    }

    /// Marks element `e` most recently used. No locked instruction: the
    /// clock is advanced with a plain load and store (concurrent touches may
    /// share a stamp, which only blurs the order of simultaneous uses), and
    /// nothing is written when `e` already holds the newest stamp, so a hot
    /// element's lookups do not bounce cache lines.
    #[inline]
    fn touch(&self, e: u32) {
        if self.is_lru() {
            let clock = self.iword::<AtomicU64>(CLOCK);
            let now = clock.load(Ordering::Relaxed);
            let stamp = &self.elem(e).stamp;
            if now == 0 || stamp.load(Ordering::Relaxed) != now {
                clock.store(now + 1, Ordering::Relaxed);
                stamp.store(now + 1, Ordering::Relaxed);
            }
        }
    }

    /// Links every element into the free list and empties the buckets.
    ///
    /// # Safety
    /// Only on fresh memory no other thread or process uses yet.
    pub(crate) unsafe fn hash_init(&self) {
        for i in 0..self.max_entries {
            let next = if i + 1 < self.max_entries { i + 1 } else { NIL };
            self.elem(i).free_next.store(next, Ordering::Relaxed);
            self.elem(i).next.store(NIL, Ordering::Relaxed);
        }
        self.iword::<AtomicU32>(FREE_HEAD)
            .store(0, Ordering::Relaxed);
        for b in 0..self.p.nbuckets {
            self.bucket(b as u32).head.store(NIL, Ordering::Relaxed);
        }
    }

    /// The element holding `key`, or NIL; lock-free. `touch` refreshes LRU
    /// recency.
    ///
    /// # Safety
    /// `key` points to `key_size` readable bytes.
    #[inline]
    pub(crate) unsafe fn hash_find(&self, key: *const u8, touch: bool) -> u32 {
        let h = self.hash_of(key);
        let b = self.bucket(h);
        loop {
            let s = seq_read_begin(&b.seq);
            let e = self.chain_find(b, h, key);
            if !seq_read_retry(&b.seq, s) {
                if e != NIL && touch {
                    self.touch(e);
                }
                return e;
            }
        }
    }

    /// Userspace lookup: copies the value (all CPUs' for per-CPU maps) with
    /// no torn read. Like the kernel's syscall lookup, it leaves LRU recency
    /// alone (monitoring does not keep entries alive).
    ///
    /// # Safety
    /// `key` points to `key_size` readable bytes.
    pub(crate) unsafe fn hash_lookup_copy(&self, key: *const u8, out: &mut [u8]) -> bool {
        let h = self.hash_of(key);
        let b = self.bucket(h);
        loop {
            let s = seq_read_begin(&b.seq);
            let e = self.chain_find(b, h, key);
            if e != NIL {
                // SAFETY: e < max_entries.
                unsafe { self.read_value(self.elem_value(e), out) };
            }
            if !seq_read_retry(&b.seq, s) {
                return e != NIL;
            }
        }
    }

    fn free_pop(&self) -> u32 {
        let lock = self.iword::<AtomicU32>(FREE_LOCK);
        let head = self.iword::<AtomicU32>(FREE_HEAD);
        spin_lock(lock);
        let e = head.load(Ordering::Relaxed);
        if e < self.max_entries {
            head.store(
                self.elem(e).free_next.load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
        }
        spin_unlock(lock);
        if e < self.max_entries {
            e
        } else {
            NIL
        }
    }

    fn free_push(&self, e: u32) {
        let lock = self.iword::<AtomicU32>(FREE_LOCK);
        let head = self.iword::<AtomicU32>(FREE_HEAD);
        spin_lock(lock);
        self.elem(e)
            .free_next
            .store(head.load(Ordering::Relaxed), Ordering::Relaxed);
        head.store(e, Ordering::Relaxed);
        spin_unlock(lock);
    }

    /// Unlinks `e` from bucket `b` (write section held); false if absent.
    fn unlink(&self, b: &Bucket, e: u32) -> bool {
        let next = self.elem(e).next.load(Ordering::Relaxed);
        let mut cur = b.head.load(Ordering::Relaxed);
        if cur == e {
            b.head.store(next, Ordering::Release);
            return true;
        }
        let mut steps = 0;
        while cur < self.max_entries && steps <= self.max_entries {
            let c = self.elem(cur);
            let n = c.next.load(Ordering::Relaxed);
            if n == e {
                c.next.store(next, Ordering::Release);
                return true;
            }
            cur = n;
            steps += 1;
        }
        false
    }

    /// Evicts the [`lru_batch`] least recently used elements: returns one,
    /// unlinked and owned by the caller, and frees the others; NIL when
    /// nothing is linked. An element used again since the scan is spared.
    fn lru_evict(&self) -> u32 {
        let k = lru_batch(self.max_entries);
        loop {
            // The k oldest (stamp, index), ascending.
            let mut old = [(u64::MAX, NIL); MAX_LRU_BATCH];
            let mut n = 0;
            for i in 0..self.max_entries {
                let e = self.elem(i);
                if e.state.load(Ordering::Acquire) != 1 {
                    continue;
                }
                let s = e.stamp.load(Ordering::Relaxed);
                if n == k && s >= old[k - 1].0 {
                    continue;
                }
                let mut j = if n < k {
                    n += 1;
                    n - 1
                } else {
                    k - 1
                };
                while j > 0 && old[j - 1].0 > s {
                    old[j] = old[j - 1];
                    j -= 1;
                }
                old[j] = (s, i);
            }
            if n == 0 {
                return NIL;
            }
            let mut got = NIL;
            for &(s, i) in &old[..n] {
                let e = self.elem(i);
                let b = self.bucket(e.hash.load(Ordering::Relaxed));
                seq_write_lock(&b.seq);
                let ok = e.state.load(Ordering::Relaxed) == 1
                    && e.stamp.load(Ordering::Relaxed) == s
                    && self.unlink(b, i);
                if ok {
                    e.state.store(0, Ordering::Release);
                }
                seq_write_unlock(&b.seq);
                if ok {
                    if got == NIL {
                        got = i;
                    } else {
                        self.free_push(i);
                    }
                }
            }
            if got != NIL {
                return got;
            }
        }
    }

    /// # Safety
    /// `key` points to `key_size` bytes; `v` to a valid value source.
    pub(crate) unsafe fn hash_update(&self, key: *const u8, v: Val, flags: u64) -> i64 {
        let h = self.hash_of(key);
        let b = self.bucket(h);
        let mut spare = NIL;
        let ret = loop {
            seq_write_lock(&b.seq);
            let found = self.chain_find(b, h, key);
            if found != NIL {
                if flags == BPF_NOEXIST {
                    seq_write_unlock(&b.seq);
                    break EEXIST;
                }
                // SAFETY: found < max_entries; the source is the caller's contract.
                unsafe { self.write_value(self.elem_value(found), v, false) };
                self.touch(found);
                seq_write_unlock(&b.seq);
                break 0;
            }
            if flags == BPF_EXIST {
                seq_write_unlock(&b.seq);
                break ENOENT;
            }
            let e = if spare != NIL {
                std::mem::replace(&mut spare, NIL)
            } else {
                self.free_pop()
            };
            if e == NIL {
                seq_write_unlock(&b.seq);
                if !self.is_lru() {
                    break E2BIG;
                }
                // Evict outside our bucket lock (a second bucket lock could deadlock).
                spare = self.lru_evict();
                continue;
            }
            let el = self.elem(e);
            for w in 0..self.p.key_words {
                self.elem_key(e, w)
                    .store(self.key_word(key, w), Ordering::Relaxed);
            }
            el.hash.store(h, Ordering::Relaxed);
            // SAFETY: e < max_entries; the source is the caller's contract.
            unsafe { self.write_value(self.elem_value(e), v, true) };
            self.touch(e);
            el.next
                .store(b.head.load(Ordering::Relaxed), Ordering::Relaxed);
            el.state.store(1, Ordering::Release);
            b.head.store(e, Ordering::Release);
            seq_write_unlock(&b.seq);
            break 0;
        };
        if spare != NIL {
            self.free_push(spare);
        }
        ret
    }

    /// # Safety
    /// `key` points to `key_size` readable bytes.
    pub(crate) unsafe fn hash_delete(&self, key: *const u8) -> i64 {
        let h = self.hash_of(key);
        let b = self.bucket(h);
        seq_write_lock(&b.seq);
        let e = self.chain_find(b, h, key);
        let ok = e != NIL && self.unlink(b, e);
        if ok {
            self.elem(e).state.store(0, Ordering::Release);
        }
        seq_write_unlock(&b.seq);
        if ok {
            self.free_push(e);
            0
        } else {
            ENOENT
        }
    }

    fn copy_key_out(&self, e: u32, out: &mut [u8]) {
        for w in 0..self.p.key_words {
            let bytes = self.elem_key(e, w).load(Ordering::Relaxed).to_le_bytes();
            let start = w * 8;
            let n = (self.key_size as usize - start).min(8);
            out[start..start + n].copy_from_slice(&bytes[..n]);
        }
    }

    /// The key after `key` in iteration order (bucket order, then chain);
    /// the first key when `key` is None or absent. False at the end.
    ///
    /// # Safety
    /// `key`, if any, points to `key_size` readable bytes; `out` holds `key_size`.
    pub(crate) unsafe fn hash_next_key(&self, key: Option<*const u8>, out: &mut [u8]) -> bool {
        let mut first_bucket = 0;
        if let Some(key) = key {
            let h = self.hash_of(key);
            let b = self.bucket(h);
            loop {
                let s = seq_read_begin(&b.seq);
                let e = self.chain_find(b, h, key);
                let next = if e == NIL {
                    NIL
                } else {
                    self.elem(e).next.load(Ordering::Acquire)
                };
                let got = next < self.max_entries;
                if got {
                    self.copy_key_out(next, out);
                }
                if !seq_read_retry(&b.seq, s) {
                    if got {
                        return true;
                    }
                    if e != NIL {
                        first_bucket = (h as usize & (self.p.nbuckets - 1)) + 1;
                    }
                    break;
                }
            }
        }
        for bi in first_bucket..self.p.nbuckets {
            let b = self.bucket(bi as u32);
            loop {
                let s = seq_read_begin(&b.seq);
                let head = b.head.load(Ordering::Acquire);
                let got = head < self.max_entries;
                if got {
                    self.copy_key_out(head, out);
                }
                if !seq_read_retry(&b.seq, s) {
                    if got {
                        return true;
                    }
                    break;
                }
            }
        }
        false
    }
}
