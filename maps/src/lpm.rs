//! `LPM_TRIE`: longest-prefix match over keys `{u32 prefixlen, data[N]}`.
//!
//! Instead of the kernel's trie, pkbpf indexes prefixes by length: entries
//! `{state, prefixlen, masked data words}` live in a preallocated table, an
//! open-addressing hash index maps `(prefixlen, masked prefix)` to an entry,
//! and a bitmap (with a count per length) records which prefix lengths are
//! present. A lookup probes, from the key's prefixlen down, only the lengths
//! present — one hash probe each — so its cost is bounded by the number of
//! distinct lengths, not by the number of entries.
//!
//! Writers take the map's sequence lock; lookups take no lock: they read
//! under the sequence count and retry if a writer ran. Semantics follow the
//! kernel: a lookup matches stored prefixes no longer than the key's
//! prefixlen and the longest wins; an update replaces the entry with the same
//! prefixlen and prefix; a prefixlen beyond the data is `-EINVAL`; a full map
//! answers `-ENOSPC`.
//!
//! Internals: `{seq, count, tombstones, free_top}` | count per prefix length
//! (u32) | length bitmap (u64 words) | hash index (u32: 0 empty, entry + 1,
//! or TOMB) | free stack (u32) | entries.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::hash::{le_word, mix};
use crate::raw::{read_u32, RawMap, Val, BPF_EXIST, BPF_NOEXIST, EEXIST, EINVAL, ENOENT};
use crate::sync::{seq_read_begin, seq_read_retry, seq_write_lock, seq_write_unlock};

const NONE: u32 = u32::MAX;
const TOMB: u32 = u32::MAX;
const SEQ: usize = 0;
const TOMBS: usize = 8;
const FREE_TOP: usize = 12;

/// The mask of word `w` of a prefix of `plen` bits (bytes in order, each
/// byte's high bit first; words little-endian).
#[inline]
fn mask_word(plen: u32, w: usize) -> u64 {
    let (full, rem) = (plen as usize / 8, plen % 8);
    let first = w * 8;
    if full >= first + 8 {
        return u64::MAX;
    }
    if full < first {
        return 0;
    }
    let nb = full - first; // full bytes inside this word, 0..8
    let mut m = if nb == 0 {
        0
    } else {
        u64::MAX >> (64 - 8 * nb)
    };
    if rem != 0 {
        m |= ((0xffu64 << (8 - rem)) & 0xff) << (8 * nb);
    }
    m
}

impl RawMap {
    fn lw32(&self, off: usize) -> &AtomicU32 {
        // SAFETY: callers pass offsets inside the LPM internals, 4-aligned.
        unsafe { &*(self.internals.add(off) as *const AtomicU32) }
    }
    fn lpm_state(&self, i: u32) -> &AtomicU32 {
        self.lw32(self.p.elems_off + i as usize * self.p.elem_stride)
    }
    fn lpm_plen(&self, i: u32) -> &AtomicU32 {
        self.lw32(self.p.elems_off + i as usize * self.p.elem_stride + 4)
    }
    fn lpm_word(&self, i: u32, w: usize) -> &AtomicU64 {
        // SAFETY: w < key_words; data words follow the 8-byte entry header.
        unsafe {
            &*(self
                .internals
                .add(self.p.elems_off + i as usize * self.p.elem_stride + 8 + w * 8)
                as *const AtomicU64)
        }
    }
    fn lpm_slot(&self, s: usize) -> &AtomicU32 {
        self.lw32(self.p.buckets_off + 4 * s)
    }
    fn lpm_bitmap(&self, w: usize) -> &AtomicU64 {
        // SAFETY: w < ceil((max_plen + 1) / 64): inside the bitmap.
        unsafe { &*(self.internals.add(self.p.bitmap_off + 8 * w) as *const AtomicU64) }
    }
    fn data_size(&self) -> usize {
        self.key_size as usize - 4
    }
    fn max_plen(&self) -> u32 {
        (self.data_size() * 8) as u32
    }

    /// Word `w` of the key's data masked to `plen` bits.
    #[inline]
    fn data_word(&self, data: *const u8, plen: u32, w: usize) -> u64 {
        let start = w * 8;
        // SAFETY: data has data_size bytes and start < data_size.
        unsafe { le_word(data.add(start), self.data_size() - start) & mask_word(plen, w) }
    }

    #[inline]
    fn prefix_hash(&self, data: *const u8, plen: u32) -> usize {
        let mut h = 0x517c_c1b7_2722_0a95 ^ plen as u64;
        for w in 0..self.p.key_words {
            h = mix(h, self.data_word(data, plen, w));
        }
        (h ^ (h >> 32)) as usize & (self.p.nbuckets - 1)
    }

    /// Fills the free stack with every entry.
    ///
    /// # Safety
    /// Only on fresh memory no other thread or process uses yet.
    pub(crate) unsafe fn lpm_init(&self) {
        for i in 0..self.max_entries {
            self.lw32(self.p.free_off + 4 * i as usize)
                .store(self.max_entries - 1 - i, Ordering::Relaxed);
        }
        self.lw32(FREE_TOP)
            .store(self.max_entries, Ordering::Relaxed);
    }

    /// The entry holding exactly `(plen, prefix of data)`, or NONE.
    fn lpm_find_exact(&self, plen: u32, data: *const u8) -> u32 {
        let mask = self.p.nbuckets - 1;
        let mut s = self.prefix_hash(data, plen);
        for _ in 0..self.p.nbuckets {
            let v = self.lpm_slot(s).load(Ordering::Acquire);
            if v == 0 {
                return NONE;
            }
            let e = v.wrapping_sub(1);
            if v != TOMB
                && e < self.max_entries
                && self.lpm_state(e).load(Ordering::Acquire) == 1
                && self.lpm_plen(e).load(Ordering::Relaxed) == plen
                && (0..self.p.key_words).all(|w| {
                    self.lpm_word(e, w).load(Ordering::Relaxed) == self.data_word(data, plen, w)
                })
            {
                return e;
            }
            s = (s + 1) & mask;
        }
        NONE
    }

    /// Longest match for the key (lock-free, inside a read section).
    ///
    /// # Safety
    /// `key` points to `key_size` readable bytes.
    unsafe fn lpm_find_longest(&self, key: *const u8) -> u32 {
        let kp = read_u32(key).min(self.max_plen());
        // SAFETY: key has key_size = 4 + data_size bytes.
        let data = unsafe { key.add(4) };
        let mut p = kp as i64;
        while p >= 0 {
            let w = p as usize / 64;
            let below = if p % 64 == 63 {
                u64::MAX
            } else {
                (1u64 << (p % 64 + 1)) - 1
            };
            let bits = self.lpm_bitmap(w).load(Ordering::Acquire) & below;
            if bits == 0 {
                p = w as i64 * 64 - 1;
                continue;
            }
            let plen = (w * 64 + 63 - bits.leading_zeros() as usize) as u32;
            let e = self.lpm_find_exact(plen, data);
            if e != NONE {
                return e;
            }
            p = plen as i64 - 1;
        }
        NONE
    }

    /// # Safety
    /// `key` points to `key_size` readable bytes.
    pub(crate) unsafe fn lpm_lookup(&self, key: *const u8) -> *mut u8 {
        let seq = self.lw32(SEQ);
        loop {
            let s = seq_read_begin(seq);
            // SAFETY: forwarded.
            let e = unsafe { self.lpm_find_longest(key) };
            if !seq_read_retry(seq, s) {
                return if e == NONE {
                    std::ptr::null_mut()
                } else {
                    self.elem_value(e)
                };
            }
        }
    }

    /// Userspace lookup: longest match, value copied without tearing.
    ///
    /// # Safety
    /// `key` points to `key_size` readable bytes.
    pub(crate) unsafe fn lpm_lookup_copy(&self, key: *const u8, out: &mut [u8]) -> bool {
        let seq = self.lw32(SEQ);
        loop {
            let s = seq_read_begin(seq);
            // SAFETY: forwarded.
            let e = unsafe { self.lpm_find_longest(key) };
            if e != NONE {
                // SAFETY: e < max_entries.
                unsafe { self.read_value(self.elem_value(e), out) };
            }
            if !seq_read_retry(seq, s) {
                return e != NONE;
            }
        }
    }

    fn lpm_len_count(&self, plen: u32, delta: i32) {
        let c = self.lw32(self.p.lens_off + 4 * plen as usize);
        let n = c.load(Ordering::Relaxed).wrapping_add_signed(delta);
        c.store(n, Ordering::Relaxed);
        let (w, bit) = (plen as usize / 64, 1u64 << (plen % 64));
        let b = self.lpm_bitmap(w);
        if n == 0 {
            b.fetch_and(!bit, Ordering::Release);
        } else {
            b.fetch_or(bit, Ordering::Release);
        }
    }

    /// Adds entry `e` to the index (write lock held).
    fn lpm_index_insert(&self, e: u32) {
        let plen = self.lpm_plen(e).load(Ordering::Relaxed);
        let mut bytes = [0u8; crate::region::LPM_DATA_SIZE_MAX as usize];
        for (j, b) in bytes.iter_mut().enumerate().take(self.data_size()) {
            *b = (self.lpm_word(e, j / 8).load(Ordering::Relaxed) >> (8 * (j % 8))) as u8;
        }
        let mask = self.p.nbuckets - 1;
        let mut s = self.prefix_hash(bytes.as_ptr(), plen);
        // The index has 2 × max_entries slots and holds at most max_entries
        // live ones, so an empty or tombstone slot exists.
        for _ in 0..self.p.nbuckets {
            let slot = self.lpm_slot(s);
            let v = slot.load(Ordering::Relaxed);
            if v == 0 || v == TOMB {
                if v == TOMB {
                    self.lw32(TOMBS).fetch_sub(1, Ordering::Relaxed);
                }
                slot.store(e + 1, Ordering::Release);
                return;
            }
            s = (s + 1) & mask;
        }
    }

    /// Rebuilds the index without tombstones (write lock held).
    fn lpm_reindex(&self) {
        for s in 0..self.p.nbuckets {
            self.lpm_slot(s).store(0, Ordering::Relaxed);
        }
        self.lw32(TOMBS).store(0, Ordering::Relaxed);
        for e in 0..self.max_entries {
            if self.lpm_state(e).load(Ordering::Relaxed) == 1 {
                self.lpm_index_insert(e);
            }
        }
    }

    /// # Safety
    /// `key` points to `key_size` bytes, `v` to a valid value source.
    pub(crate) unsafe fn lpm_update(&self, key: *const u8, v: Val, flags: u64) -> i64 {
        let plen = read_u32(key);
        if plen > self.max_plen() {
            return EINVAL;
        }
        // SAFETY: key has 4 + data_size bytes.
        let data = unsafe { key.add(4) };
        let seq = self.lw32(SEQ);
        seq_write_lock(seq);
        let e = self.lpm_find_exact(plen, data);
        let top = self.lw32(FREE_TOP);
        let ret = if e != NONE {
            if flags == BPF_NOEXIST {
                EEXIST
            } else {
                // SAFETY: e < max_entries; the source is the caller's contract.
                unsafe { self.write_value(self.elem_value(e), v, false) };
                0
            }
        } else if flags == BPF_EXIST {
            ENOENT
        } else if let Some(t) = top
            .load(Ordering::Relaxed)
            .checked_sub(1)
            .filter(|&t| t < self.max_entries)
        {
            let i = self
                .lw32(self.p.free_off + 4 * t as usize)
                .load(Ordering::Relaxed);
            if i >= self.max_entries {
                seq_write_unlock(seq);
                return EINVAL;
            }
            top.store(t, Ordering::Relaxed);
            for w in 0..self.p.key_words {
                self.lpm_word(i, w)
                    .store(self.data_word(data, plen, w), Ordering::Relaxed);
            }
            self.lpm_plen(i).store(plen, Ordering::Relaxed);
            // SAFETY: i < max_entries; the source is the caller's contract.
            unsafe { self.write_value(self.elem_value(i), v, true) };
            self.lpm_state(i).store(1, Ordering::Release);
            self.lpm_index_insert(i);
            self.lpm_len_count(plen, 1);
            0
        } else {
            -(libc::ENOSPC as i64)
        };
        seq_write_unlock(seq);
        ret
    }

    /// # Safety
    /// `key` points to `key_size` readable bytes.
    pub(crate) unsafe fn lpm_delete(&self, key: *const u8) -> i64 {
        let plen = read_u32(key);
        if plen > self.max_plen() {
            return EINVAL;
        }
        // SAFETY: key has 4 + data_size bytes.
        let data = unsafe { key.add(4) };
        let seq = self.lw32(SEQ);
        seq_write_lock(seq);
        let e = self.lpm_find_exact(plen, data);
        if e != NONE {
            // Tombstone its index slot.
            let mask = self.p.nbuckets - 1;
            let mut s = self.prefix_hash(data, plen);
            for _ in 0..self.p.nbuckets {
                let slot = self.lpm_slot(s);
                if slot.load(Ordering::Relaxed) == e + 1 {
                    slot.store(TOMB, Ordering::Release);
                    break;
                }
                s = (s + 1) & mask;
            }
            self.lpm_state(e).store(0, Ordering::Release);
            self.lpm_len_count(plen, -1);
            let top = self.lw32(FREE_TOP);
            let t = top.load(Ordering::Relaxed);
            if t < self.max_entries {
                self.lw32(self.p.free_off + 4 * t as usize)
                    .store(e, Ordering::Relaxed);
                top.store(t + 1, Ordering::Relaxed);
            }
            if self.lw32(TOMBS).fetch_add(1, Ordering::Relaxed) + 1 > self.max_entries / 2 {
                self.lpm_reindex();
            }
        }
        seq_write_unlock(seq);
        if e == NONE {
            ENOENT
        } else {
            0
        }
    }

    fn lpm_key_out(&self, i: u32, out: &mut [u8]) {
        out[..4].copy_from_slice(&self.lpm_plen(i).load(Ordering::Relaxed).to_ne_bytes());
        for j in 0..self.data_size() {
            out[4 + j] = (self.lpm_word(i, j / 8).load(Ordering::Relaxed) >> (8 * (j % 8))) as u8;
        }
    }

    /// Next key in table order; the first when `key` is None or absent.
    ///
    /// # Safety
    /// `key`, if any, points to `key_size` bytes; `out` holds `key_size`.
    pub(crate) unsafe fn lpm_next_key(&self, key: Option<*const u8>, out: &mut [u8]) -> bool {
        let seq = self.lw32(SEQ);
        loop {
            let s = seq_read_begin(seq);
            let start = match key {
                Some(k) => {
                    let plen = read_u32(k);
                    let e = if plen > self.max_plen() {
                        NONE
                    } else {
                        // SAFETY: k has key_size = 4 + data_size bytes.
                        self.lpm_find_exact(plen, unsafe { k.add(4) })
                    };
                    if e == NONE {
                        0
                    } else {
                        e + 1
                    }
                }
                None => 0,
            };
            let next =
                (start..self.max_entries).find(|&i| self.lpm_state(i).load(Ordering::Acquire) == 1);
            if let Some(i) = next {
                self.lpm_key_out(i, out);
            }
            if !seq_read_retry(seq, s) {
                return next.is_some();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mask_word;

    #[test]
    fn masks() {
        assert_eq!(mask_word(0, 0), 0);
        assert_eq!(mask_word(8, 0), 0xff);
        assert_eq!(mask_word(12, 0), 0xf0ff);
        assert_eq!(mask_word(64, 0), u64::MAX);
        assert_eq!(mask_word(64, 1), 0);
        assert_eq!(mask_word(65, 1), 0x80);
        assert_eq!(mask_word(1, 0), 0x80);
        assert_eq!(mask_word(63, 0), u64::MAX >> 1 & !(1 << 56) | 0xfe << 56);
    }
}
