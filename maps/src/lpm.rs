//! `LPM_TRIE`: longest-prefix match over keys `{u32 prefixlen, data[N]}`.
//!
//! Entries live in a preallocated table `{state, prefixlen, data words}`
//! (internals) with values at `index × slot`. Writers take the map's sequence
//! lock; lookups take no lock: they scan under the sequence count and retry
//! if a writer ran. The scan is linear in `max_entries` (a trie is future
//! work); semantics follow the kernel: a lookup matches stored prefixes no
//! longer than the key's prefixlen, the longest wins; an update replaces an
//! entry with the same prefixlen and prefix; a full map answers `-ENOSPC`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::raw::{read_u32, RawMap, Val, BPF_EXIST, BPF_NOEXIST, EEXIST, EINVAL, ENOENT};
use crate::sync::{seq_read_begin, seq_read_retry, seq_write_lock, seq_write_unlock};

const NONE: u32 = u32::MAX;

impl RawMap {
    fn lpm_seq(&self) -> &AtomicU32 {
        // SAFETY: the first word of the internals is the sequence lock.
        unsafe { &*(self.internals as *const AtomicU32) }
    }
    fn lpm_state(&self, i: u32) -> &AtomicU32 {
        // SAFETY: i < max_entries (callers iterate below it).
        unsafe {
            &*(self
                .internals
                .add(self.p.elems_off + i as usize * self.p.elem_stride)
                as *const AtomicU32)
        }
    }
    fn lpm_plen(&self, i: u32) -> &AtomicU32 {
        // SAFETY: as above, second word of the entry.
        unsafe {
            &*(self
                .internals
                .add(self.p.elems_off + i as usize * self.p.elem_stride + 4)
                as *const AtomicU32)
        }
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
    fn data_size(&self) -> usize {
        self.key_size as usize - 4
    }
    fn lpm_byte(&self, i: u32, j: usize) -> u8 {
        (self.lpm_word(i, j / 8).load(Ordering::Relaxed) >> (8 * (j % 8))) as u8
    }

    /// Whether entry i's first `plen` bits equal those of `data`.
    fn lpm_match(&self, i: u32, data: *const u8, plen: u32) -> bool {
        let full = plen as usize / 8;
        for j in 0..full {
            // SAFETY: j < plen / 8 <= data_size.
            if self.lpm_byte(i, j) != unsafe { *data.add(j) } {
                return false;
            }
        }
        let rem = plen % 8;
        if rem != 0 {
            let mask = 0xffu8 << (8 - rem);
            // SAFETY: full < data_size because plen <= data_size * 8.
            let kb = unsafe { *data.add(full) };
            if self.lpm_byte(i, full) & mask != kb & mask {
                return false;
            }
        }
        true
    }

    /// Longest match for the key (lock-free scan); NONE if no prefix matches.
    unsafe fn lpm_find_longest(&self, key: *const u8) -> u32 {
        let max_plen = (self.data_size() * 8) as u32;
        let kp = read_u32(key).min(max_plen);
        // SAFETY: key has key_size = 4 + data_size bytes.
        let data = unsafe { key.add(4) };
        let (mut best, mut best_len) = (NONE, 0u32);
        for i in 0..self.max_entries {
            if self.lpm_state(i).load(Ordering::Acquire) != 1 {
                continue;
            }
            let pl = self.lpm_plen(i).load(Ordering::Relaxed);
            if pl > kp || (best != NONE && pl <= best_len) {
                continue;
            }
            if self.lpm_match(i, data, pl) {
                (best, best_len) = (i, pl);
            }
        }
        best
    }

    /// # Safety
    /// `key` points to `key_size` readable bytes.
    pub(crate) unsafe fn lpm_lookup(&self, key: *const u8) -> *mut u8 {
        let seq = self.lpm_seq();
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
        let seq = self.lpm_seq();
        loop {
            let s = seq_read_begin(seq);
            // SAFETY: forwarded; e < max_entries when not NONE.
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

    /// The entry with exactly this prefixlen and prefix (writer or reader).
    fn lpm_find_exact(&self, plen: u32, data: *const u8) -> u32 {
        (0..self.max_entries)
            .find(|&i| {
                self.lpm_state(i).load(Ordering::Acquire) == 1
                    && self.lpm_plen(i).load(Ordering::Relaxed) == plen
                    && self.lpm_match(i, data, plen)
            })
            .unwrap_or(NONE)
    }

    /// # Safety
    /// `key` points to `key_size` bytes, `v` to a valid value source.
    pub(crate) unsafe fn lpm_update(&self, key: *const u8, v: Val, flags: u64) -> i64 {
        let plen = read_u32(key);
        if plen as usize > self.data_size() * 8 {
            return EINVAL;
        }
        // SAFETY: key has 4 + data_size bytes.
        let data = unsafe { key.add(4) };
        let seq = self.lpm_seq();
        seq_write_lock(seq);
        let e = self.lpm_find_exact(plen, data);
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
        } else if let Some(i) =
            (0..self.max_entries).find(|&i| self.lpm_state(i).load(Ordering::Relaxed) == 0)
        {
            for w in 0..self.p.key_words {
                let mut b = [0u8; 8];
                for (k, byte) in b.iter_mut().enumerate() {
                    let j = w * 8 + k;
                    let bits = (plen as usize).saturating_sub(j * 8).min(8);
                    if j < self.data_size() && bits > 0 {
                        // SAFETY: j < data_size.
                        let kb = unsafe { *data.add(j) };
                        *byte = kb & (0xffu16 << (8 - bits)) as u8;
                    }
                }
                self.lpm_word(i, w)
                    .store(u64::from_le_bytes(b), Ordering::Relaxed);
            }
            self.lpm_plen(i).store(plen, Ordering::Relaxed);
            // SAFETY: i < max_entries; the source is the caller's contract.
            unsafe { self.write_value(self.elem_value(i), v, true) };
            self.lpm_state(i).store(1, Ordering::Release);
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
        if plen as usize > self.data_size() * 8 {
            return EINVAL;
        }
        let seq = self.lpm_seq();
        seq_write_lock(seq);
        // SAFETY: key has 4 + data_size bytes.
        let e = self.lpm_find_exact(plen, unsafe { key.add(4) });
        if e != NONE {
            self.lpm_state(e).store(0, Ordering::Release);
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
            out[4 + j] = self.lpm_byte(i, j);
        }
    }

    /// Next key in table order; the first when `key` is None or absent.
    ///
    /// # Safety
    /// `key`, if any, points to `key_size` bytes; `out` holds `key_size`.
    pub(crate) unsafe fn lpm_next_key(&self, key: Option<*const u8>, out: &mut [u8]) -> bool {
        let seq = self.lpm_seq();
        loop {
            let s = seq_read_begin(seq);
            let start = match key {
                Some(k) => {
                    let plen = read_u32(k);
                    let e = if plen as usize > self.data_size() * 8 {
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
