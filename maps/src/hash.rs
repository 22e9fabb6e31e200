//! Hash maps (plain, per-CPU, LRU, LRU per-CPU) in shared memory.
//!
//! Internals: a small header (free-list head, LRU clock), a power-of-two
//! array of buckets `{seqlock, head}` and their lock-owner words, and `max_entries` preallocated elements
//! `{next, hash, key words…, state, free_next, stamp}` (the fields a lookup
//! reads first, so a key of up to 8 bytes makes a 32-byte element). Each
//! element's value slot lives in the values part at `index × slot`.
//!
//! Writers take their bucket's sequence lock (an owned one: a waiter
//! releases it when its holder died, see `sync`); readers take no lock at all:
//! they walk the chain with plain (atomic) loads and retry when the bucket's
//! count moved. No element memory is ever freed or unmapped (deleted
//! elements return to the free list), so a reader never touches unmapped
//! memory, and a chain walk is bounded by `max_entries` steps even while
//! elements are recycled under it. A lookup that finds nothing and a delete
//! of an absent key therefore cost no locked instruction; an update of an
//! existing key costs one (the bucket lock). As in the kernel's preallocated
//! hash maps, a value pointer handed to a program stays valid memory but may
//! be reused by a later insert after a delete.
//!
//! The free list is a lock-free stack (a 32-bit index and a 32-bit ABA tag
//! in one word), so no process can die holding it.
//!
//! Hashing: keys of up to 8 bytes are one little-endian word `k` and hash
//! to the top 32 bits of `k × 2⁶⁴/φ` (Fibonacci hashing); the bucket is the
//! top bits of that. Sequential or strided integer keys, the common case,
//! spread over distinct buckets (no collisions for a run of consecutive
//! keys no longer than the bucket count). Longer keys fold their words with
//! a multiply-rotate mix first. The hash is not keyed: a program (or its
//! user) that picks colliding keys only lengthens its own map's chains, and
//! every walk stays bounded by `max_entries`; nothing else shares the map's
//! buckets. Keys of 4 and 8 bytes get specialised code (one load, one
//! compare); other sizes take the general word loop.
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
use crate::sync::{oseq_read_begin, oseq_read_retry, oseq_write_lock, oseq_write_unlock};
use crate::MapType;

/// "No element".
pub(crate) const NIL: u32 = u32::MAX;
/// Offset of the bucket array in the internals.
pub(crate) const BUCKETS_OFF: usize = 128;
/// Bytes of an element before its key words (`next`, `hash`).
pub(crate) const ELEM_HEAD: usize = 8;
/// Bytes of an element after its key words (`state`, `free_next`, `stamp`).
pub(crate) const ELEM_TAIL: usize = 16;

/// Most elements one eviction scan frees.
const MAX_LRU_BATCH: usize = 64;

/// How many elements a full LRU map of `max_entries` evicts at once: one
/// per 64 entries, 1 to 64. The scan that finds them is O(max_entries), so
/// an insert into a full map costs amortised O(64) element reads up to 4096
/// entries, O(max_entries / 64) beyond.
pub fn lru_batch(max_entries: u32) -> usize {
    (max_entries as usize / 64).clamp(1, MAX_LRU_BATCH)
}

/// The free list's head: `tag << 32 | index` (an AtomicU64).
const FREE_HEAD: usize = 8;
const CLOCK: usize = 64;

/// The multiplier of Fibonacci hashing: 2⁶⁴/φ, odd.
const FIB: u64 = 0x9E37_79B9_7F4A_7C15;

/// Bytes of a bucket.
pub(crate) const BUCKET_SIZE: usize = 8;
/// Bytes of a bucket's lock-owner word (an array after the buckets).
pub(crate) const OWNER_SIZE: usize = 4;

#[repr(C)]
struct Bucket {
    /// Owned sequence lock's count (its owner word: [`RawMap::owner_of`]).
    seq: AtomicU32,
    head: AtomicU32,
}
const _: () = assert!(std::mem::size_of::<Bucket>() == BUCKET_SIZE);

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
    h = (h ^ w).wrapping_mul(FIB);
    h ^ (h >> 29)
}

/// The 32-bit hash of a key whose only word is `w`: the top half of
/// `w × 2⁶⁴/φ`.
#[inline(always)]
fn fib_hash(w: u64) -> u32 {
    (w.wrapping_mul(FIB) >> 32) as u32
}

/// Dispatches `$self.$f::<KS>(args)` on the key size: 4 and 8 get their own
/// instances, every other size the general one (`KS = 0`).
macro_rules! by_key_size {
    ($self:ident . $f:ident ( $($a:expr),* )) => {
        match $self.key_size {
            4 => $self.$f::<4>($($a),*),
            8 => $self.$f::<8>($($a),*),
            _ => $self.$f::<0>($($a),*),
        }
    };
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

    /// Bucket number `i` (< nbuckets).
    #[inline]
    fn bucket_at(&self, i: usize) -> &Bucket {
        debug_assert!(i < self.p.nbuckets);
        // SAFETY: i < nbuckets; the bucket array starts at buckets_off.
        unsafe { &*(self.internals.add(self.p.buckets_off + i * BUCKET_SIZE) as *const Bucket) }
    }

    /// The lock-owner word of bucket `b` (in the array after the buckets).
    #[inline(always)]
    fn owner_of(&self, b: &Bucket) -> &AtomicU32 {
        let base = self.internals as usize + self.p.buckets_off;
        let i = (b as *const Bucket as usize - base) / BUCKET_SIZE;
        // SAFETY: `b` is one of this map's buckets (i < nbuckets); the
        // owner array of nbuckets words follows the bucket array.
        unsafe {
            &*(self
                .internals
                .add(self.p.buckets_off + self.p.nbuckets * BUCKET_SIZE + i * OWNER_SIZE)
                as *const AtomicU32)
        }
    }

    /// The bucket number of hash `h`: its top log2(nbuckets) bits.
    #[inline(always)]
    fn bucket_index(&self, h: u32) -> usize {
        // nbuckets <= 2^32, so the product fits and the result < nbuckets.
        ((h as u64 * self.p.nbuckets as u64) >> 32) as usize
    }

    #[inline(always)]
    fn bucket_of(&self, h: u32) -> &Bucket {
        self.bucket_at(self.bucket_index(h))
    }

    /// Field at byte `off` of element `i`.
    #[inline(always)]
    fn efield<T>(&self, i: u32, off: usize) -> &T {
        debug_assert!(i < self.max_entries);
        // SAFETY: i < max_entries (callers check) and `off` is a field
        // offset below elem_stride: inside the element array, 8-aligned
        // elements (stride and elems_off are multiples of 8).
        unsafe {
            &*(self
                .internals
                .add(self.p.elems_off + i as usize * self.p.elem_stride + off)
                as *const T)
        }
    }

    #[inline(always)]
    fn e_next(&self, i: u32) -> &AtomicU32 {
        self.efield(i, 0)
    }
    #[inline(always)]
    fn e_hash(&self, i: u32) -> &AtomicU32 {
        self.efield(i, 4)
    }
    #[inline(always)]
    fn e_key(&self, i: u32, w: usize) -> &AtomicU64 {
        self.efield(i, ELEM_HEAD + 8 * w)
    }
    #[inline(always)]
    fn e_state(&self, i: u32) -> &AtomicU32 {
        self.efield(i, ELEM_HEAD + 8 * self.p.key_words)
    }
    #[inline(always)]
    fn e_free_next(&self, i: u32) -> &AtomicU32 {
        self.efield(i, ELEM_HEAD + 8 * self.p.key_words + 4)
    }
    #[inline(always)]
    fn e_stamp(&self, i: u32) -> &AtomicU64 {
        self.efield(i, ELEM_HEAD + 8 * self.p.key_words + 8)
    }

    #[inline]
    pub(crate) fn elem_value(&self, i: u32) -> *mut u8 {
        // SAFETY: i < max_entries: the slot lies in the values part.
        unsafe { self.values.add(i as usize * self.p.slot) }
    }

    /// Key words of a `KS`-byte key (`KS = 0`: any size).
    #[inline(always)]
    fn kwords<const KS: usize>(&self) -> usize {
        if KS != 0 {
            1
        } else {
            self.p.key_words
        }
    }

    /// Key word `w` of `key` (little-endian), zero-padded past `key_size`.
    ///
    /// # Safety
    /// `key` has `key_size` readable bytes, `w < key_words`, and `KS` is 0
    /// or `key_size`.
    #[inline(always)]
    unsafe fn kword<const KS: usize>(&self, key: *const u8, w: usize) -> u64 {
        // SAFETY: the reads stay within the key's key_size bytes.
        unsafe {
            match KS {
                4 => u32::from_le(std::ptr::read_unaligned(key as *const u32)) as u64,
                8 => u64::from_le(std::ptr::read_unaligned(key as *const u64)),
                _ => {
                    let start = w * 8;
                    le_word(key.add(start), self.key_size as usize - start)
                }
            }
        }
    }

    /// The key's 32-bit hash; the same for every `KS` instance of a map.
    ///
    /// # Safety
    /// As [`kword`](Self::kword).
    #[inline(always)]
    unsafe fn hash_key<const KS: usize>(&self, key: *const u8) -> u32 {
        // SAFETY: forwarded.
        unsafe {
            if KS != 0 || self.p.key_words == 1 {
                return fib_hash(self.kword::<KS>(key, 0));
            }
            let mut h = self.key_size as u64;
            for w in 0..self.p.key_words {
                h = (h.rotate_left(26) ^ self.kword::<KS>(key, w)).wrapping_mul(FIB);
            }
            fib_hash(h ^ (h >> 32))
        }
    }

    /// Walks bucket `b`'s chain for `key` with hash `h` (inside a read or
    /// write section); NIL when absent.
    ///
    /// # Safety
    /// As [`kword`](Self::kword).
    #[inline(always)]
    unsafe fn chain_find<const KS: usize>(&self, b: &Bucket, h: u32, key: *const u8) -> u32 {
        let mut cur = b.head.load(Ordering::Acquire);
        let mut steps = 0;
        // SAFETY: forwarded.
        let k0 = unsafe { self.kword::<KS>(key, 0) };
        while cur < self.max_entries && steps <= self.max_entries {
            let hit = if KS != 0 {
                self.e_key(cur, 0).load(Ordering::Relaxed) == k0
            } else {
                self.e_hash(cur).load(Ordering::Relaxed) == h
                    && (0..self.p.key_words).all(|w| {
                        // SAFETY: forwarded; w < key_words.
                        let kw = unsafe { self.kword::<KS>(key, w) };
                        self.e_key(cur, w).load(Ordering::Relaxed) == kw
                    })
            };
            if hit {
                return cur;
            }
            cur = self.e_next(cur).load(Ordering::Acquire);
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
            let stamp = self.e_stamp(e);
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
            self.e_free_next(i).store(next, Ordering::Relaxed);
            self.e_next(i).store(NIL, Ordering::Relaxed);
        }
        self.iword::<AtomicU64>(FREE_HEAD)
            .store(0, Ordering::Relaxed);
        for b in 0..self.p.nbuckets {
            self.bucket_at(b).head.store(NIL, Ordering::Relaxed);
        }
    }

    /// The element holding `key`, or NIL, taking no lock; `touch` refreshes
    /// LRU recency.
    ///
    /// # Safety
    /// As [`kword`](Self::kword).
    #[inline(always)]
    unsafe fn find_k<const KS: usize>(&self, key: *const u8, touch: bool) -> u32 {
        // SAFETY: forwarded.
        let h = unsafe { self.hash_key::<KS>(key) };
        let b = self.bucket_of(h);
        // One optimistic pass in line; a writer in the bucket sends us to
        // the retrying loop, out of line, so that this path keeps nothing
        // live across a call (no register saves).
        let s = b.seq.load(Ordering::Acquire);
        if s & 1 == 0 {
            // SAFETY: forwarded.
            let e = unsafe { self.chain_find::<KS>(b, h, key) };
            if !oseq_read_retry(&b.seq, s) {
                if e != NIL && touch {
                    self.touch(e);
                }
                return e;
            }
        }
        // SAFETY: forwarded.
        unsafe { self.find_retry::<KS>(key, touch) }
    }

    /// [`find_k`](Self::find_k)'s loop: waits out (or recovers from) the
    /// bucket's writer and walks again until a pass saw no change.
    ///
    /// # Safety
    /// As [`kword`](Self::kword).
    #[cold]
    #[inline(never)]
    unsafe fn find_retry<const KS: usize>(&self, key: *const u8, touch: bool) -> u32 {
        // SAFETY: forwarded.
        let h = unsafe { self.hash_key::<KS>(key) };
        let b = self.bucket_of(h);
        loop {
            let s = oseq_read_begin(&b.seq, self.owner_of(b), self.robust());
            // SAFETY: forwarded.
            let e = unsafe { self.chain_find::<KS>(b, h, key) };
            if !oseq_read_retry(&b.seq, s) {
                if e != NIL && touch {
                    self.touch(e);
                }
                return e;
            }
        }
    }

    /// The element holding `key`, or NIL; lock-free. `touch` refreshes LRU
    /// recency.
    ///
    /// # Safety
    /// `key` points to `key_size` readable bytes.
    #[inline]
    pub(crate) unsafe fn hash_find(&self, key: *const u8, touch: bool) -> u32 {
        // SAFETY: forwarded; KS is key_size or 0.
        unsafe { by_key_size!(self.find_k(key, touch)) }
    }

    /// Userspace lookup: copies the value (all CPUs' for per-CPU maps) with
    /// no torn read. Like the kernel's syscall lookup, it leaves LRU recency
    /// alone (monitoring does not keep entries alive).
    ///
    /// # Safety
    /// `key` points to `key_size` readable bytes.
    pub(crate) unsafe fn hash_lookup_copy(&self, key: *const u8, out: &mut [u8]) -> bool {
        // SAFETY: KS = 0 fits every key size.
        let h = unsafe { self.hash_key::<0>(key) };
        let b = self.bucket_of(h);
        loop {
            let s = oseq_read_begin(&b.seq, self.owner_of(b), self.robust());
            // SAFETY: as above.
            let e = unsafe { self.chain_find::<0>(b, h, key) };
            if e != NIL {
                // SAFETY: e < max_entries.
                unsafe { self.read_value(self.elem_value(e), out) };
            }
            if !oseq_read_retry(&b.seq, s) {
                return e != NIL;
            }
        }
    }

    /// Pops an element off the lock-free free list; NIL when empty.
    fn free_pop(&self) -> u32 {
        let head = self.iword::<AtomicU64>(FREE_HEAD);
        let mut cur = head.load(Ordering::Acquire);
        loop {
            let e = cur as u32;
            if e >= self.max_entries {
                return NIL;
            }
            // `e` may be popped and reused by another thread meanwhile: then
            // this read is stale, but the tag has moved and the CAS fails.
            let next = self.e_free_next(e).load(Ordering::Relaxed);
            let new = ((cur >> 32).wrapping_add(1) << 32) | next as u64;
            match head.compare_exchange_weak(cur, new, Ordering::Acquire, Ordering::Acquire) {
                Ok(_) => return e,
                Err(now) => cur = now,
            }
        }
    }

    /// Pushes element `e` (owned by the caller) onto the free list.
    fn free_push(&self, e: u32) {
        let head = self.iword::<AtomicU64>(FREE_HEAD);
        let mut cur = head.load(Ordering::Relaxed);
        loop {
            self.e_free_next(e).store(cur as u32, Ordering::Relaxed);
            let new = ((cur >> 32).wrapping_add(1) << 32) | e as u64;
            match head.compare_exchange_weak(cur, new, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }

    /// Unlinks `e` from bucket `b` (write section held); false if absent.
    fn unlink(&self, b: &Bucket, e: u32) -> bool {
        let next = self.e_next(e).load(Ordering::Relaxed);
        let mut cur = b.head.load(Ordering::Relaxed);
        if cur == e {
            b.head.store(next, Ordering::Release);
            return true;
        }
        let mut steps = 0;
        while cur < self.max_entries && steps <= self.max_entries {
            let n = self.e_next(cur).load(Ordering::Relaxed);
            if n == e {
                self.e_next(cur).store(next, Ordering::Release);
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
                if self.e_state(i).load(Ordering::Acquire) != 1 {
                    continue;
                }
                let s = self.e_stamp(i).load(Ordering::Relaxed);
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
                let b = self.bucket_of(self.e_hash(i).load(Ordering::Relaxed));
                oseq_write_lock(&b.seq, self.owner_of(b), self.robust());
                let ok = self.e_state(i).load(Ordering::Relaxed) == 1
                    && self.e_stamp(i).load(Ordering::Relaxed) == s
                    && self.unlink(b, i);
                if ok {
                    self.e_state(i).store(0, Ordering::Release);
                }
                oseq_write_unlock(&b.seq, self.owner_of(b));
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
        // SAFETY: forwarded; KS is key_size or 0.
        unsafe { by_key_size!(self.update_k(key, v, flags)) }
    }

    /// # Safety
    /// As [`hash_update`](Self::hash_update), and `KS` is 0 or `key_size`.
    #[inline(always)]
    unsafe fn update_k<const KS: usize>(&self, key: *const u8, v: Val, flags: u64) -> i64 {
        // SAFETY: forwarded.
        let h = unsafe { self.hash_key::<KS>(key) };
        let b = self.bucket_of(h);
        oseq_write_lock(&b.seq, self.owner_of(b), self.robust());
        // SAFETY: forwarded.
        let found = unsafe { self.chain_find::<KS>(b, h, key) };
        if found != NIL && flags != BPF_NOEXIST {
            // The common case, kept small: an existing element updated in
            // place under its bucket's lock.
            // SAFETY: found < max_entries; the source is the caller's contract.
            unsafe { self.write_value(self.elem_value(found), v, false) };
            self.touch(found);
            oseq_write_unlock(&b.seq, self.owner_of(b));
            return 0;
        }
        // SAFETY: forwarded; `b` is write-locked and `found` its walk's result.
        unsafe { self.update_locked::<KS>(b, h, key, v, flags, found) }
    }

    /// The rest of an update (flag errors, inserts, LRU eviction), entered
    /// with `b` write-locked and `found` the result of walking it for `key`;
    /// returns with `b` unlocked.
    ///
    /// # Safety
    /// As [`update_k`](Self::update_k).
    #[inline(never)]
    unsafe fn update_locked<const KS: usize>(
        &self,
        b: &Bucket,
        h: u32,
        key: *const u8,
        v: Val,
        flags: u64,
        mut found: u32,
    ) -> i64 {
        let mut spare = NIL;
        let mut locked = true;
        let ret = loop {
            if !locked {
                oseq_write_lock(&b.seq, self.owner_of(b), self.robust());
                // SAFETY: forwarded.
                found = unsafe { self.chain_find::<KS>(b, h, key) };
            }
            if found != NIL {
                if flags == BPF_NOEXIST {
                    oseq_write_unlock(&b.seq, self.owner_of(b));
                    break EEXIST;
                }
                // SAFETY: found < max_entries; the source is the caller's contract.
                unsafe { self.write_value(self.elem_value(found), v, false) };
                self.touch(found);
                oseq_write_unlock(&b.seq, self.owner_of(b));
                break 0;
            }
            if flags == BPF_EXIST {
                oseq_write_unlock(&b.seq, self.owner_of(b));
                break ENOENT;
            }
            let e = if spare != NIL {
                std::mem::replace(&mut spare, NIL)
            } else {
                self.free_pop()
            };
            if e == NIL {
                oseq_write_unlock(&b.seq, self.owner_of(b));
                if !self.is_lru() {
                    break E2BIG;
                }
                // Evict outside our bucket lock (a second bucket lock could deadlock).
                spare = self.lru_evict();
                locked = false;
                continue;
            }
            for w in 0..self.kwords::<KS>() {
                // SAFETY: forwarded.
                let kw = unsafe { self.kword::<KS>(key, w) };
                self.e_key(e, w).store(kw, Ordering::Relaxed);
            }
            self.e_hash(e).store(h, Ordering::Relaxed);
            // SAFETY: e < max_entries; the source is the caller's contract.
            unsafe { self.write_value(self.elem_value(e), v, true) };
            self.touch(e);
            self.e_next(e)
                .store(b.head.load(Ordering::Relaxed), Ordering::Relaxed);
            self.e_state(e).store(1, Ordering::Release);
            b.head.store(e, Ordering::Release);
            oseq_write_unlock(&b.seq, self.owner_of(b));
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
        // SAFETY: forwarded; KS is key_size or 0.
        unsafe { by_key_size!(self.delete_k(key)) }
    }

    /// # Safety
    /// As [`hash_delete`](Self::hash_delete), and `KS` is 0 or `key_size`.
    #[inline(always)]
    unsafe fn delete_k<const KS: usize>(&self, key: *const u8) -> i64 {
        // An absent key needs no lock: the lock-free lookup is the delete's
        // linearisation point.
        // SAFETY: forwarded.
        if unsafe { self.find_k::<KS>(key, false) } == NIL {
            return ENOENT;
        }
        // SAFETY: forwarded.
        unsafe { self.delete_locked::<KS>(key) }
    }

    /// Deletes `key` under its bucket's lock.
    ///
    /// # Safety
    /// As [`delete_k`](Self::delete_k).
    #[inline(never)]
    unsafe fn delete_locked<const KS: usize>(&self, key: *const u8) -> i64 {
        // SAFETY: forwarded.
        let h = unsafe { self.hash_key::<KS>(key) };
        let b = self.bucket_of(h);
        oseq_write_lock(&b.seq, self.owner_of(b), self.robust());
        // SAFETY: forwarded.
        let e = unsafe { self.chain_find::<KS>(b, h, key) };
        let ok = e != NIL && self.unlink(b, e);
        if ok {
            self.e_state(e).store(0, Ordering::Release);
        }
        oseq_write_unlock(&b.seq, self.owner_of(b));
        if ok {
            self.free_push(e);
            0
        } else {
            ENOENT
        }
    }

    /// `bpf_map_lookup_elem` on a hash map of `KS`-byte keys (0: any
    /// size), per-CPU or not, LRU or not: one instance per combination, so
    /// the common lookups run without a dispatch.
    ///
    /// # Safety
    /// `key` points to `key_size` readable bytes; `KS` is 0 or `key_size`;
    /// `PERCPU`/`LRU` match the map's type.
    pub(crate) unsafe fn hash_lookup_prog<const KS: usize, const PERCPU: bool, const LRU: bool>(
        &self,
        key: *const u8,
    ) -> *mut u8 {
        // The CPU first: its loads are independent of the chain walk's, so
        // they overlap with it instead of lengthening the value's address
        // chain.
        let off = if PERCPU {
            self.cur_cpu() as usize * self.p.stride
        } else {
            0
        };
        // SAFETY: forwarded.
        let e = unsafe { self.find_k::<KS>(key, LRU) };
        if e == NIL {
            return std::ptr::null_mut();
        }
        // SAFETY: cur_cpu < ncpus: `off` stays inside the element's slot.
        unsafe { self.elem_value(e).add(off) }
    }

    /// `bpf_map_update_elem` from a program on a hash map (see
    /// [`hash_lookup_prog`](Self::hash_lookup_prog)).
    ///
    /// # Safety
    /// `key`/`value` point to `key_size`/`value_size` readable bytes; `KS`
    /// is 0 or `key_size`; `PERCPU` matches the map's type.
    pub(crate) unsafe fn hash_update_prog<const KS: usize, const PERCPU: bool>(
        &self,
        key: *const u8,
        value: *const u8,
        flags: u64,
    ) -> i64 {
        if flags > BPF_EXIST {
            return crate::raw::EINVAL;
        }
        let cpu = if PERCPU { self.cur_cpu() } else { 0 };
        // SAFETY: forwarded.
        unsafe { self.update_k::<KS>(key, Val::Cpu(value, cpu), flags) }
    }

    /// `bpf_map_delete_elem` from a program on a hash map.
    ///
    /// # Safety
    /// `key` points to `key_size` readable bytes; `KS` is 0 or `key_size`.
    pub(crate) unsafe fn hash_delete_prog<const KS: usize>(&self, key: *const u8) -> i64 {
        // SAFETY: forwarded.
        unsafe { self.delete_k::<KS>(key) }
    }

    /// Takes `key`'s bucket lock and never releases it: what a process
    /// killed in the middle of an update leaves behind. For robustness
    /// tests only.
    ///
    /// # Safety
    /// `key` points to `key_size` readable bytes; the calling thread must
    /// exit (its process die) without touching the map again.
    #[doc(hidden)]
    pub unsafe fn abandon_bucket_lock(&self, key: *const u8) {
        // SAFETY: KS = 0 fits every key size.
        let h = unsafe { self.hash_key::<0>(key) };
        let b = self.bucket_of(h);
        oseq_write_lock(&b.seq, self.owner_of(b), self.robust());
    }

    fn copy_key_out(&self, e: u32, out: &mut [u8]) {
        for w in 0..self.p.key_words {
            let bytes = self.e_key(e, w).load(Ordering::Relaxed).to_le_bytes();
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
            // SAFETY: KS = 0 fits every key size.
            let h = unsafe { self.hash_key::<0>(key) };
            let b = self.bucket_of(h);
            loop {
                let s = oseq_read_begin(&b.seq, self.owner_of(b), self.robust());
                // SAFETY: as above.
                let e = unsafe { self.chain_find::<0>(b, h, key) };
                let next = if e == NIL {
                    NIL
                } else {
                    self.e_next(e).load(Ordering::Acquire)
                };
                let got = next < self.max_entries;
                if got {
                    self.copy_key_out(next, out);
                }
                if !oseq_read_retry(&b.seq, s) {
                    if got {
                        return true;
                    }
                    if e != NIL {
                        first_bucket = self.bucket_index(h) + 1;
                    }
                    break;
                }
            }
        }
        for bi in first_bucket..self.p.nbuckets {
            let b = self.bucket_at(bi);
            loop {
                let s = oseq_read_begin(&b.seq, self.owner_of(b), self.robust());
                let head = b.head.load(Ordering::Acquire);
                let got = head < self.max_entries;
                if got {
                    self.copy_key_out(head, out);
                }
                if !oseq_read_retry(&b.seq, s) {
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
