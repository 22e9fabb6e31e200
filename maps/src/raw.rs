//! The program-side handle: every map operation on raw pointers, as the
//! helpers (and the JIT's inlined lookups) call them in the calling thread.
//!
//! Return values follow the kernel's helpers: pointers (null when absent) or
//! 0 / a negative errno. Nothing here allocates, takes a global lock, or
//! makes a system call on the lookup paths.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::region::{Layout, MapDef, BPF_F_RDONLY_PROG};
use crate::ring::Ring;
use crate::sync::{
    seq_read_begin, seq_read_retry, seq_write_lock, seq_write_unlock, spin_lock, spin_unlock,
};
use crate::{cpu, MapType};

/// `BPF_ANY`: create or update.
pub const BPF_ANY: u64 = 0;
/// `BPF_NOEXIST`: create only.
pub const BPF_NOEXIST: u64 = 1;
/// `BPF_EXIST`: update only.
pub const BPF_EXIST: u64 = 2;
/// `BPF_F_CURRENT_CPU`: `perf_event_output` to the current CPU's ring.
pub const BPF_F_CURRENT_CPU: u64 = 0xffff_ffff;

pub(crate) const EINVAL: i64 = -(libc::EINVAL as i64);
pub(crate) const ENOENT: i64 = -(libc::ENOENT as i64);
pub(crate) const EEXIST: i64 = -(libc::EEXIST as i64);
pub(crate) const E2BIG: i64 = -(libc::E2BIG as i64);
pub(crate) const EPERM: i64 = -(libc::EPERM as i64);

/// Type-specific layout parameters, derived from the definition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Params {
    /// Value size rounded up to 8.
    pub stride: usize,
    /// Bytes per element in the values part (`stride × ncpus`).
    pub slot: usize,
    /// Value slots per element (possible CPUs for per-CPU maps, else 1).
    pub ncpus: u32,
    pub nbuckets: usize,
    pub key_words: usize,
    pub elem_stride: usize,
    pub buckets_off: usize,
    pub elems_off: usize,
    pub lens_off: usize,
    pub bitmap_off: usize,
    pub free_off: usize,
    pub ring_size: u64,
    pub nrings: u32,
    pub ring_stride: usize,
}

/// Where an update's value comes from.
#[derive(Clone, Copy)]
pub(crate) enum Val {
    /// A program's value for one CPU's slot (the others are zeroed when the
    /// element is created).
    Cpu(*const u8, u32),
    /// Userspace's buffer: `value_size` bytes, or every CPU's value at
    /// `cpu × stride` for per-CPU maps.
    All(*const u8),
}

/// A program-side lookup specialised for one map type and key size.
type LookupFn = unsafe fn(&RawMap, *const u8) -> *mut u8;
/// A program-side update (key, value, flags), specialised likewise.
type UpdateFn = unsafe fn(&RawMap, *const u8, *const u8, u64) -> i64;
/// A program-side delete, specialised likewise.
type DeleteFn = unsafe fn(&RawMap, *const u8) -> i64;

/// The program-side operations of one map, chosen once from its type and
/// key size ([`Ops::of`]): a helper's call then goes straight to code with
/// no type or key-size dispatch left in it.
#[derive(Clone, Copy, Debug)]
struct Ops {
    lookup: LookupFn,
    update: UpdateFn,
    delete: DeleteFn,
}

/// Picks `$f::<KS, ...>` for the key size: 4 and 8 get their own instance.
macro_rules! by_ks {
    ($ks:expr, $f:ident $(, $rest:expr)*) => {
        match $ks {
            4 => RawMap::$f::<4 $(, $rest)*>,
            8 => RawMap::$f::<8 $(, $rest)*>,
            _ => RawMap::$f::<0 $(, $rest)*>,
        }
    };
}

impl Ops {
    fn of(ty: MapType, ks: u32) -> Ops {
        use MapType::*;
        let lookup: LookupFn = match ty {
            Array => RawMap::array_lookup_prog::<false>,
            PerCpuArray => RawMap::array_lookup_prog::<true>,
            Hash => by_ks!(ks, hash_lookup_prog, false, false),
            PerCpuHash => by_ks!(ks, hash_lookup_prog, true, false),
            LruHash => by_ks!(ks, hash_lookup_prog, false, true),
            LruPerCpuHash => by_ks!(ks, hash_lookup_prog, true, true),
            _ => RawMap::lookup_any,
        };
        let update: UpdateFn = match ty {
            Hash | LruHash => by_ks!(ks, hash_update_prog, false),
            PerCpuHash | LruPerCpuHash => by_ks!(ks, hash_update_prog, true),
            Array => RawMap::array_update_prog::<false>,
            PerCpuArray => RawMap::array_update_prog::<true>,
            _ => RawMap::update_any,
        };
        let delete: DeleteFn = match ty {
            Hash | PerCpuHash | LruHash | LruPerCpuHash => by_ks!(ks, hash_delete_prog),
            Array | PerCpuArray => RawMap::array_delete_prog,
            _ => RawMap::delete_any,
        };
        Ops {
            lookup,
            update,
            delete,
        }
    }
}

/// One map's program-side handle: addresses of its parts and its geometry.
/// Valid while its [`Region`](crate::Region) is alive.
#[derive(Debug)]
pub struct RawMap {
    pub(crate) ty: MapType,
    pub(crate) key_size: u32,
    pub(crate) value_size: u32,
    pub(crate) max_entries: u32,
    pub(crate) flags: u32,
    pub(crate) p: Params,
    pub(crate) values: *mut u8,
    pub(crate) internals: *mut u8,
    frozen: *const AtomicU32,
    poisoned: *const AtomicU32,
    /// Whether this process shares the region creator's PID namespace
    /// (lock owners are then attributable by thread id; see `sync`).
    same_ns: bool,
    ops: Ops,
}

// SAFETY: a RawMap only points into the shared mapping, whose every mutable
// word is accessed through atomics or under the map's own locks.
unsafe impl Send for RawMap {}
// SAFETY: as above; all methods take `&self` and synchronise internally.
unsafe impl Sync for RawMap {}

#[inline]
pub(crate) fn read_u32(p: *const u8) -> u32 {
    // SAFETY: callers pass a pointer to at least 4 readable bytes (the key).
    unsafe { std::ptr::read_unaligned(p as *const u32) }
}

impl RawMap {
    /// # Safety
    /// `values`/`internals` point to the map's parts, laid out by `l` for
    /// `def`, and stay mapped as long as the RawMap is used.
    pub(crate) unsafe fn new(
        def: &MapDef,
        l: &Layout,
        values: *mut u8,
        internals: *mut u8,
        frozen: &AtomicU32,
        poisoned: &AtomicU32,
        same_ns: bool,
    ) -> RawMap {
        RawMap {
            ty: def.map_type,
            key_size: def.key_size,
            value_size: def.value_size,
            max_entries: def.max_entries,
            flags: def.flags,
            p: l.params,
            values,
            internals,
            frozen,
            poisoned,
            same_ns,
            ops: Ops::of(def.map_type, def.key_size),
        }
    }

    /// Initialises fresh (zeroed) memory: free lists.
    ///
    /// # Safety
    /// Only on a region no one else uses yet.
    pub(crate) unsafe fn init(&self) {
        if matches!(
            self.ty,
            MapType::Hash | MapType::PerCpuHash | MapType::LruHash | MapType::LruPerCpuHash
        ) {
            // SAFETY: forwarded.
            unsafe { self.hash_init() }
        }
        if self.ty == MapType::LpmTrie {
            // SAFETY: forwarded.
            unsafe { self.lpm_init() }
        }
    }

    /// The map type.
    pub fn map_type(&self) -> MapType {
        self.ty
    }
    /// Key size in bytes.
    pub fn key_size(&self) -> u32 {
        self.key_size
    }
    /// Value size in bytes.
    pub fn value_size(&self) -> u32 {
        self.value_size
    }
    /// Capacity.
    pub fn max_entries(&self) -> u32 {
        self.max_entries
    }
    /// Start of the values part (array element `i`, CPU `c` is at
    /// `values_ptr() + i * slot_size() + c * value_stride()`).
    pub fn values_ptr(&self) -> *mut u8 {
        self.values
    }
    /// Value size rounded up to 8: the distance between CPUs' values.
    pub fn value_stride(&self) -> usize {
        self.p.stride
    }
    /// Bytes per element in the values part (`value_stride × slots`).
    pub fn slot_size(&self) -> usize {
        self.p.slot
    }
    /// Value slots per element: possible CPUs for per-CPU maps, else 1.
    pub fn slots(&self) -> u32 {
        self.p.ncpus
    }
    /// Raised when one of the map's locks was taken over from a holder
    /// that died (the map may hold a half-written value or a leaked
    /// element).
    pub(crate) fn poisoned(&self) -> &AtomicU32 {
        // SAFETY: points into the region header, alive with the region.
        unsafe { &*self.poisoned }
    }
    /// What this map's owned locks need for recovery.
    #[inline(always)]
    pub(crate) fn robust(&self) -> crate::sync::Robust<'_> {
        crate::sync::Robust {
            poisoned: self.poisoned(),
            attributable: self.same_ns,
        }
    }
    pub(crate) fn frozen(&self) -> &AtomicU32 {
        // SAFETY: points into the region header, alive with the region.
        unsafe { &*self.frozen }
    }

    #[inline]
    pub(crate) fn cur_cpu(&self) -> u32 {
        if self.p.ncpus <= 1 {
            0
        } else {
            let c = cpu::current_cpu();
            if c < self.p.ncpus {
                c
            } else {
                c % self.p.ncpus
            }
        }
    }

    /// Writes a value into element slot `dst` (the element's first CPU).
    ///
    /// # Safety
    /// `dst` is an element slot of this map; the source holds the bytes
    /// `v` promises.
    #[inline]
    pub(crate) unsafe fn write_value(&self, dst: *mut u8, v: Val, fresh: bool) {
        let vs = self.value_size as usize;
        // SAFETY: all offsets stay within the slot (`ncpus × stride`); the
        // source sizes are the caller's contract.
        unsafe {
            match v {
                Val::All(src) if self.p.ncpus > 1 => {
                    for c in 0..self.p.ncpus as usize {
                        std::ptr::copy_nonoverlapping(
                            src.add(c * self.p.stride),
                            dst.add(c * self.p.stride),
                            vs,
                        );
                    }
                }
                Val::All(src) => copy_value(src, dst, vs),
                Val::Cpu(src, c) => {
                    if fresh && self.p.ncpus > 1 {
                        std::ptr::write_bytes(dst, 0, self.p.slot);
                    }
                    copy_value(src, dst.add(c as usize * self.p.stride), vs);
                }
            }
        }
    }

    /// Copies element slot `src` out to userspace's buffer `out`
    /// (`value_size`, or `ncpus × stride` bytes for per-CPU maps).
    ///
    /// # Safety
    /// `src` is an element slot of this map.
    pub(crate) unsafe fn read_value(&self, src: *const u8, out: &mut [u8]) {
        let n = if self.p.ncpus > 1 {
            self.p.slot
        } else {
            self.value_size as usize
        };
        debug_assert!(out.len() >= n);
        // SAFETY: `src` has `slot >= n` bytes, `out` at least n.
        unsafe { std::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), n.min(out.len())) }
    }

    // ---- program-side operations -------------------------------------

    /// `bpf_map_lookup_elem`: a pointer to the value (the calling CPU's, for
    /// per-CPU maps), or null.
    ///
    /// # Safety
    /// `key` points to `key_size` readable bytes.
    #[doc(alias = "bpf_map_lookup_elem")]
    #[inline]
    pub unsafe fn lookup(&self, key: *const u8) -> *mut u8 {
        // SAFETY: forwarded to this map's lookup with the same contract.
        unsafe { (self.ops.lookup)(self, key) }
    }

    /// The array lookup: element `key`'s value (this CPU's for `PERCPU`).
    ///
    /// # Safety
    /// `key` points to 4 readable bytes; `PERCPU` matches the map's type.
    unsafe fn array_lookup_prog<const PERCPU: bool>(&self, key: *const u8) -> *mut u8 {
        let idx = read_u32(key);
        if idx >= self.max_entries {
            return std::ptr::null_mut();
        }
        let cpu = if PERCPU { self.cur_cpu() as usize } else { 0 };
        // SAFETY: idx < max_entries, cpu < ncpus: inside the values part.
        unsafe {
            self.values
                .add(idx as usize * self.p.slot + cpu * self.p.stride)
        }
    }

    /// The lookup of every other type, dispatched on the type.
    ///
    /// # Safety
    /// As [`lookup`](Self::lookup).
    unsafe fn lookup_any(&self, key: *const u8) -> *mut u8 {
        // SAFETY: forwarded to the type's lookup with the same contract.
        unsafe {
            match self.ty {
                MapType::Array | MapType::PerCpuArray => {
                    let idx = read_u32(key);
                    if idx >= self.max_entries {
                        return std::ptr::null_mut();
                    }
                    self.values
                        .add(idx as usize * self.p.slot + self.cur_cpu() as usize * self.p.stride)
                }
                MapType::Hash | MapType::PerCpuHash | MapType::LruHash | MapType::LruPerCpuHash => {
                    let e = self.hash_find(key, true);
                    if e == crate::hash::NIL {
                        std::ptr::null_mut()
                    } else {
                        self.elem_value(e)
                            .add(self.cur_cpu() as usize * self.p.stride)
                    }
                }
                MapType::LpmTrie => self.lpm_lookup(key),
                _ => std::ptr::null_mut(),
            }
        }
    }

    /// `bpf_map_lookup_percpu_elem`: CPU `cpu`'s value of a per-CPU map, or
    /// null (absent key, CPU out of range, or not a per-CPU map).
    ///
    /// # Safety
    /// `key` points to `key_size` readable bytes.
    #[doc(alias = "bpf_map_lookup_percpu_elem")]
    pub unsafe fn lookup_percpu(&self, key: *const u8, cpu: u32) -> *mut u8 {
        if !self.ty.is_per_cpu() || cpu >= self.p.ncpus {
            return std::ptr::null_mut();
        }
        let off = cpu as usize * self.p.stride;
        // SAFETY: forwarded; `off` stays inside the element's slot.
        unsafe {
            match self.ty {
                MapType::PerCpuArray => {
                    let idx = read_u32(key);
                    if idx >= self.max_entries {
                        return std::ptr::null_mut();
                    }
                    self.values.add(idx as usize * self.p.slot + off)
                }
                _ => {
                    let e = self.hash_find(key, true);
                    if e == crate::hash::NIL {
                        std::ptr::null_mut()
                    } else {
                        self.elem_value(e).add(off)
                    }
                }
            }
        }
    }

    /// `bpf_map_update_elem` from a program (per-CPU maps: the calling CPU's
    /// value).
    ///
    /// # Safety
    /// `key` points to `key_size` and `value` to `value_size` readable bytes.
    #[doc(alias = "bpf_map_update_elem")]
    #[inline]
    pub unsafe fn update(&self, key: *const u8, value: *const u8, flags: u64) -> i64 {
        if self.flags & BPF_F_RDONLY_PROG != 0 {
            return EPERM;
        }
        // SAFETY: forwarded.
        unsafe { (self.ops.update)(self, key, value, flags) }
    }

    /// The program-side array update (this CPU's value for `PERCPU`).
    ///
    /// # Safety
    /// As [`update`](Self::update); `PERCPU` matches the map's type.
    unsafe fn array_update_prog<const PERCPU: bool>(
        &self,
        key: *const u8,
        value: *const u8,
        flags: u64,
    ) -> i64 {
        if flags > BPF_EXIST {
            return EINVAL;
        }
        let cpu = if PERCPU { self.cur_cpu() } else { 0 };
        let idx = read_u32(key);
        if let (true, Some(w)) = (
            idx < self.max_entries && flags != BPF_NOEXIST,
            self.atomic_width(),
        ) {
            // The common case in line: one atomic store (see array_update).
            // SAFETY: idx < max_entries and cpu < ncpus (cur_cpu): an
            // 8-aligned slot of `w` bytes; `value` has value_size = w bytes.
            unsafe { atomic_put(self.array_slot(idx, cpu), value, w) };
            return 0;
        }
        // SAFETY: forwarded.
        unsafe { self.array_update(key, Val::Cpu(value, cpu), flags) }
    }

    /// Array elements cannot be deleted: `-EINVAL`, as in the kernel.
    ///
    /// # Safety
    /// None beyond [`delete`](Self::delete)'s (the key is not read).
    unsafe fn array_delete_prog(&self, _key: *const u8) -> i64 {
        EINVAL
    }

    /// The program-side update of types without a specialised one.
    ///
    /// # Safety
    /// As [`update`](Self::update).
    unsafe fn update_any(&self, key: *const u8, value: *const u8, flags: u64) -> i64 {
        // SAFETY: forwarded.
        unsafe { self.update_val(key, Val::Cpu(value, self.cur_cpu()), flags) }
    }

    /// `bpf_map_delete_elem` from a program.
    ///
    /// # Safety
    /// `key` points to `key_size` readable bytes.
    #[doc(alias = "bpf_map_delete_elem")]
    #[inline]
    pub unsafe fn delete(&self, key: *const u8) -> i64 {
        if self.flags & BPF_F_RDONLY_PROG != 0 {
            return EPERM;
        }
        // SAFETY: forwarded.
        unsafe { (self.ops.delete)(self, key) }
    }

    /// # Safety
    /// As [`update`](Self::update), with `v` describing a valid source.
    #[inline]
    pub(crate) unsafe fn update_val(&self, key: *const u8, v: Val, flags: u64) -> i64 {
        if flags > BPF_EXIST {
            return EINVAL;
        }
        // SAFETY: forwarded.
        unsafe {
            match self.ty {
                MapType::Array | MapType::PerCpuArray => self.array_update(key, v, flags),
                MapType::Hash | MapType::PerCpuHash | MapType::LruHash | MapType::LruPerCpuHash => {
                    self.hash_update(key, v, flags)
                }
                MapType::LpmTrie => self.lpm_update(key, v, flags),
                MapType::Queue | MapType::Stack => match v {
                    Val::Cpu(p, _) | Val::All(p) => self.push(p, flags),
                },
                MapType::ProgArray => match v {
                    Val::All(p) => self.prog_array_set(read_u32(key), read_u32(p), flags),
                    Val::Cpu(..) => EINVAL,
                },
                MapType::RingBuf | MapType::PerfEventArray => EINVAL,
            }
        }
    }

    /// # Safety
    /// `key` points to `key_size` readable bytes.
    #[inline]
    pub(crate) unsafe fn delete_any(&self, key: *const u8) -> i64 {
        // SAFETY: forwarded.
        unsafe {
            match self.ty {
                MapType::Hash | MapType::PerCpuHash | MapType::LruHash | MapType::LruPerCpuHash => {
                    self.hash_delete(key)
                }
                MapType::LpmTrie => self.lpm_delete(key),
                MapType::ProgArray => self.prog_array_clear(read_u32(key)),
                _ => EINVAL,
            }
        }
    }

    // ---- arrays ---------------------------------------------------------

    /// The value size when array values are read and written with single
    /// atomic loads and stores (1, 2, 4 or 8 bytes) instead of under their
    /// sequence lock.
    #[inline]
    fn atomic_width(&self) -> Option<usize> {
        matches!(self.value_size, 1 | 2 | 4 | 8).then_some(self.value_size as usize)
    }

    /// The sequence lock of element `idx`'s CPU slot `c` (per-CPU arrays
    /// lock each CPU's value apart, so CPUs updating their own slots do not
    /// share a lock word).
    fn array_seq(&self, idx: u32, c: u32) -> &AtomicU32 {
        let i = idx as usize * self.p.ncpus as usize + c as usize;
        // SAFETY: internals hold one u32 per element and slot; callers check
        // idx < max_entries and c < ncpus.
        unsafe { &*(self.internals as *const AtomicU32).add(i) }
    }

    fn array_slot(&self, idx: u32, c: u32) -> *mut u8 {
        // SAFETY: idx < max_entries and c < ncpus (callers check): inside the values part.
        unsafe {
            self.values
                .add(idx as usize * self.p.slot + c as usize * self.p.stride)
        }
    }

    /// # Safety
    /// `key` points to 4 readable bytes; `v` describes a valid source.
    #[inline(never)]
    unsafe fn array_update(&self, key: *const u8, v: Val, flags: u64) -> i64 {
        let idx = read_u32(key);
        if idx >= self.max_entries {
            return E2BIG;
        }
        if flags == BPF_NOEXIST {
            return EEXIST;
        }
        let vs = self.value_size as usize;
        if let Some(w) = self.atomic_width() {
            // One aligned store of 1, 2, 4 or 8 bytes cannot tear, and
            // `array_read` loads such values with one load: no lock, as in
            // the kernel (whose array updates take none either).
            let put = |c: u32, src: *const u8| {
                // SAFETY: the slot is 8-aligned (values part page-aligned,
                // slot and stride multiples of 8) and holds `w` bytes; `src`
                // holds `w` readable bytes (the caller's contract).
                unsafe { atomic_put(self.array_slot(idx, c), src, w) }
            };
            match v {
                Val::Cpu(src, c) => put(c.min(self.p.ncpus - 1), src),
                Val::All(src) => {
                    for c in 0..self.p.ncpus {
                        // SAFETY: userspace buffers hold ncpus × stride bytes.
                        put(c, unsafe { src.add(c as usize * self.p.stride) });
                    }
                }
            }
            return 0;
        }
        let put = |c: u32, src: *const u8| {
            let seq = self.array_seq(idx, c);
            seq_write_lock(seq);
            // SAFETY: the slot holds value_size bytes; `src` is the caller's contract.
            unsafe { std::ptr::copy_nonoverlapping(src, self.array_slot(idx, c), vs) };
            seq_write_unlock(seq);
        };
        match v {
            Val::Cpu(src, c) => put(c.min(self.p.ncpus - 1), src),
            Val::All(src) => {
                for c in 0..self.p.ncpus {
                    // SAFETY: userspace buffers hold ncpus × stride bytes.
                    put(c, unsafe { src.add(c as usize * self.p.stride) });
                }
            }
        }
        0
    }

    /// Copies array element `idx` out (userspace lookup: every CPU's value
    /// of a per-CPU array); false when out of range.
    pub(crate) fn array_read(&self, idx: u32, out: &mut [u8]) -> bool {
        if idx >= self.max_entries {
            return false;
        }
        let vs = self.value_size as usize;
        for c in 0..self.p.ncpus {
            let seq = self.array_seq(idx, c);
            let dst = &mut out[c as usize * self.p.stride..c as usize * self.p.stride + vs];
            if let Some(w) = self.atomic_width() {
                // SAFETY: the slot is 8-aligned and holds `w` bytes; `dst`
                // has `w` bytes (see `array_update`: such values are
                // written with one store, never under the sequence lock).
                unsafe { atomic_get(self.array_slot(idx, c), dst.as_mut_ptr(), w) };
                continue;
            }
            loop {
                let s = seq_read_begin(seq);
                // SAFETY: the slot holds value_size bytes, `dst` as many.
                unsafe {
                    std::ptr::copy_nonoverlapping(self.array_slot(idx, c), dst.as_mut_ptr(), vs)
                };
                if !seq_read_retry(seq, s) {
                    break;
                }
            }
        }
        true
    }

    // ---- prog array -----------------------------------------------------

    fn prog_slot(&self, idx: u32) -> &AtomicU32 {
        // SAFETY: one u32 per index; callers check idx < max.
        unsafe { &*(self.internals as *const AtomicU32).add(idx as usize) }
    }

    /// The program index in `PROG_ARRAY` slot `idx`, for `bpf_tail_call`.
    #[doc(alias = "bpf_tail_call")]
    #[inline]
    pub fn prog_array_get(&self, idx: u32) -> Option<u32> {
        if self.ty != MapType::ProgArray || idx >= self.max_entries {
            return None;
        }
        self.prog_slot(idx).load(Ordering::Acquire).checked_sub(1)
    }

    pub(crate) fn prog_array_set(&self, idx: u32, prog: u32, flags: u64) -> i64 {
        if flags != BPF_ANY || prog == u32::MAX {
            return EINVAL;
        }
        if idx >= self.max_entries {
            return E2BIG;
        }
        self.prog_slot(idx).store(prog + 1, Ordering::Release);
        0
    }

    pub(crate) fn prog_array_clear(&self, idx: u32) -> i64 {
        if idx >= self.max_entries {
            return E2BIG;
        }
        if self.prog_slot(idx).swap(0, Ordering::AcqRel) == 0 {
            ENOENT
        } else {
            0
        }
    }

    // ---- queue / stack --------------------------------------------------

    fn q_word(&self, i: usize) -> &AtomicU32 {
        // SAFETY: the first 64 bytes of a queue's internals are its header.
        unsafe { &*(self.internals as *const AtomicU32).add(i) }
    }

    fn q_slot(&self, i: u32) -> *mut u8 {
        // SAFETY: i < max_entries + 1 (callers reduce modulo that).
        unsafe { self.internals.add(64 + i as usize * self.p.stride) }
    }

    /// `bpf_map_push_elem`: `BPF_EXIST` overwrites the oldest value when full.
    ///
    /// # Safety
    /// `value` points to `value_size` readable bytes.
    #[doc(alias = "bpf_map_push_elem")]
    pub unsafe fn push(&self, value: *const u8, flags: u64) -> i64 {
        if !matches!(self.ty, MapType::Queue | MapType::Stack) {
            return EINVAL;
        }
        if flags & !BPF_EXIST != 0 {
            return EINVAL;
        }
        let size = self.max_entries + 1;
        let (lock, head, tail) = (self.q_word(0), self.q_word(1), self.q_word(2));
        if spin_lock(lock, self.same_ns) {
            self.poisoned().store(1, Ordering::Release);
        }
        let h = head.load(Ordering::Relaxed) % size;
        let mut t = tail.load(Ordering::Relaxed) % size;
        if (h + 1) % size == t {
            if flags & BPF_EXIST == 0 {
                spin_unlock(lock);
                return E2BIG;
            }
            t = (t + 1) % size;
            tail.store(t, Ordering::Relaxed);
        }
        // SAFETY: slot h exists; `value` is the caller's contract; we hold the lock.
        unsafe { std::ptr::copy_nonoverlapping(value, self.q_slot(h), self.value_size as usize) };
        head.store((h + 1) % size, Ordering::Relaxed);
        spin_unlock(lock);
        0
    }

    /// `bpf_map_pop_elem` (`remove`) or `bpf_map_peek_elem`: the oldest value
    /// of a queue, the newest of a stack; `-ENOENT` when empty.
    ///
    /// # Safety
    /// `out` points to `value_size` writable bytes.
    pub unsafe fn pop_or_peek(&self, out: *mut u8, remove: bool) -> i64 {
        let is_queue = match self.ty {
            MapType::Queue => true,
            MapType::Stack => false,
            _ => return EINVAL,
        };
        let size = self.max_entries + 1;
        let (lock, head, tail) = (self.q_word(0), self.q_word(1), self.q_word(2));
        if spin_lock(lock, self.same_ns) {
            self.poisoned().store(1, Ordering::Release);
        }
        let h = head.load(Ordering::Relaxed) % size;
        let t = tail.load(Ordering::Relaxed) % size;
        if h == t {
            spin_unlock(lock);
            return ENOENT;
        }
        let i = if is_queue { t } else { (h + size - 1) % size };
        // SAFETY: slot i exists; `out` is the caller's contract; we hold the lock.
        unsafe { std::ptr::copy_nonoverlapping(self.q_slot(i), out, self.value_size as usize) };
        if remove {
            if is_queue {
                tail.store((t + 1) % size, Ordering::Relaxed);
            } else {
                head.store(i, Ordering::Relaxed);
            }
        }
        spin_unlock(lock);
        0
    }

    /// `bpf_map_pop_elem`.
    ///
    /// # Safety
    /// `out` points to `value_size` writable bytes.
    #[doc(alias = "bpf_map_pop_elem")]
    pub unsafe fn pop(&self, out: *mut u8) -> i64 {
        // SAFETY: forwarded.
        unsafe { self.pop_or_peek(out, true) }
    }

    /// `bpf_map_peek_elem`.
    ///
    /// # Safety
    /// `out` points to `value_size` writable bytes.
    #[doc(alias = "bpf_map_peek_elem")]
    pub unsafe fn peek(&self, out: *mut u8) -> i64 {
        // SAFETY: forwarded.
        unsafe { self.pop_or_peek(out, false) }
    }

    // ---- rings ------------------------------------------------------------

    pub(crate) fn ring(&self, k: u32) -> Option<Ring> {
        match self.ty {
            MapType::RingBuf if k == 0 => {
                // SAFETY: a ringbuf's internals start with its control block
                // and its values part is the data area of ring_size bytes.
                Some(unsafe {
                    Ring::new(
                        self.internals,
                        self.internals,
                        self.values,
                        self.p.ring_size,
                        self.same_ns,
                    )
                })
            }
            MapType::PerfEventArray if k < self.p.nrings => {
                // SAFETY: perf internals: a notify block, then nrings × (control block + data).
                unsafe {
                    let base = self
                        .internals
                        .add(crate::ring::CTL_SIZE + k as usize * self.p.ring_stride);
                    Some(Ring::new(
                        base,
                        self.internals,
                        base.add(crate::ring::CTL_SIZE),
                        self.p.ring_size,
                        self.same_ns,
                    ))
                }
            }
            _ => None,
        }
    }

    /// Number of rings (1 for a ringbuf, one per slot for a perf event array).
    pub fn nrings(&self) -> u32 {
        self.p.nrings
    }

    /// `bpf_ringbuf_reserve`: a record of `size` bytes to fill, or null.
    #[doc(alias = "bpf_ringbuf_reserve")]
    pub fn ringbuf_reserve(&self, size: u64, flags: u64) -> *mut u8 {
        match self.ring(0) {
            Some(r) if flags == 0 && self.ty == MapType::RingBuf => r.reserve(size),
            _ => std::ptr::null_mut(),
        }
    }

    /// `bpf_ringbuf_submit` (`discard == false`) / `bpf_ringbuf_discard` of a
    /// record of this map; `-EINVAL` when `data` is not one of its reserved
    /// records.
    ///
    /// # Safety
    /// The caller does not use the record afterwards.
    pub unsafe fn ringbuf_commit(&self, data: *mut u8, flags: u64, discard: bool) -> i64 {
        match self.ring(0) {
            Some(r) if self.ty == MapType::RingBuf => r.commit(data, flags, discard),
            _ => EINVAL,
        }
    }

    /// `bpf_ringbuf_submit`.
    ///
    /// # Safety
    /// As [`ringbuf_commit`](Self::ringbuf_commit).
    #[doc(alias = "bpf_ringbuf_submit")]
    pub unsafe fn ringbuf_submit(&self, data: *mut u8, flags: u64) -> i64 {
        // SAFETY: forwarded.
        unsafe { self.ringbuf_commit(data, flags, false) }
    }

    /// `bpf_ringbuf_discard`.
    ///
    /// # Safety
    /// As [`ringbuf_commit`](Self::ringbuf_commit).
    #[doc(alias = "bpf_ringbuf_discard")]
    pub unsafe fn ringbuf_discard(&self, data: *mut u8, flags: u64) -> i64 {
        // SAFETY: forwarded.
        unsafe { self.ringbuf_commit(data, flags, true) }
    }

    /// `bpf_ringbuf_output`: copies `size` bytes as one record; `-EAGAIN`
    /// when there is no room.
    ///
    /// # Safety
    /// `data` points to `size` readable bytes.
    #[doc(alias = "bpf_ringbuf_output")]
    pub unsafe fn ringbuf_output(&self, data: *const u8, size: u64, flags: u64) -> i64 {
        match self.ring(0) {
            // SAFETY: forwarded.
            Some(r) if self.ty == MapType::RingBuf => unsafe { r.output(data, size, flags) },
            _ => EINVAL,
        }
    }

    /// `bpf_ringbuf_query`: `BPF_RB_AVAIL_DATA` (0), `BPF_RB_RING_SIZE` (1),
    /// `BPF_RB_CONS_POS` (2), `BPF_RB_PROD_POS` (3); 0 otherwise.
    #[doc(alias = "bpf_ringbuf_query")]
    pub fn ringbuf_query(&self, flags: u64) -> u64 {
        match self.ring(0) {
            Some(r) if self.ty == MapType::RingBuf => r.query(flags),
            _ => 0,
        }
    }

    /// `bpf_perf_event_output`: appends `size` bytes to ring `flags &
    /// BPF_F_INDEX_MASK` (or the current CPU's with `BPF_F_CURRENT_CPU`).
    /// `-E2BIG` for an index beyond the map, `-ENOSPC` (and a lost count)
    /// when the ring is full.
    ///
    /// # Safety
    /// `data` points to `size` readable bytes.
    #[doc(alias = "bpf_perf_event_output")]
    pub unsafe fn perf_event_output(&self, flags: u64, data: *const u8, size: u64) -> i64 {
        if self.ty != MapType::PerfEventArray || flags >> 32 != 0 {
            return EINVAL;
        }
        let idx = if flags == BPF_F_CURRENT_CPU {
            cpu::current_cpu()
        } else {
            flags as u32
        };
        let Some(r) = self.ring(idx) else {
            return E2BIG;
        };
        // SAFETY: forwarded.
        let ret = unsafe { r.output(data, size, 0) };
        if ret < 0 {
            r.count_lost();
            -(libc::ENOSPC as i64)
        } else {
            0
        }
    }
}

/// Copies `w` (1, 2, 4 or 8) bytes from `src` to the aligned `dst` with one
/// atomic store.
///
/// # Safety
/// `dst` is `w`-aligned with `w` writable bytes, `src` has `w` readable bytes.
#[inline(always)]
unsafe fn atomic_put(dst: *mut u8, src: *const u8, w: usize) {
    use std::sync::atomic::{AtomicU16, AtomicU64, AtomicU8};
    // SAFETY: the caller's contract; the atomics only reinterpret `dst`.
    unsafe {
        match w {
            8 => (*(dst as *const AtomicU64)).store(
                std::ptr::read_unaligned(src as *const u64),
                Ordering::Release,
            ),
            4 => (*(dst as *const AtomicU32)).store(
                std::ptr::read_unaligned(src as *const u32),
                Ordering::Release,
            ),
            2 => (*(dst as *const AtomicU16)).store(
                std::ptr::read_unaligned(src as *const u16),
                Ordering::Release,
            ),
            _ => (*(dst as *const AtomicU8)).store(*src, Ordering::Release),
        }
    }
}

/// Copies `w` (1, 2, 4 or 8) bytes from the aligned `src` to `dst` with one
/// atomic load.
///
/// # Safety
/// `src` is `w`-aligned with `w` readable bytes, `dst` has `w` writable bytes.
#[inline(always)]
unsafe fn atomic_get(src: *const u8, dst: *mut u8, w: usize) {
    use std::sync::atomic::{AtomicU16, AtomicU64, AtomicU8};
    // SAFETY: the caller's contract; the atomics only reinterpret `src`.
    unsafe {
        match w {
            8 => std::ptr::write_unaligned(
                dst as *mut u64,
                (*(src as *const AtomicU64)).load(Ordering::Acquire),
            ),
            4 => std::ptr::write_unaligned(
                dst as *mut u32,
                (*(src as *const AtomicU32)).load(Ordering::Acquire),
            ),
            2 => std::ptr::write_unaligned(
                dst as *mut u16,
                (*(src as *const AtomicU16)).load(Ordering::Acquire),
            ),
            _ => *dst = (*(src as *const AtomicU8)).load(Ordering::Acquire),
        }
    }
}

/// Copies an `n`-byte value: one load and store for the common 8- and
/// 4-byte values, `memcpy` otherwise.
///
/// # Safety
/// `src` has `n` readable bytes, `dst` `n` writable ones, not overlapping.
#[inline(always)]
unsafe fn copy_value(src: *const u8, dst: *mut u8, n: usize) {
    // SAFETY: the caller's contract.
    unsafe {
        match n {
            8 => std::ptr::write_unaligned(
                dst as *mut u64,
                std::ptr::read_unaligned(src as *const u64),
            ),
            4 => std::ptr::write_unaligned(
                dst as *mut u32,
                std::ptr::read_unaligned(src as *const u32),
            ),
            _ => std::ptr::copy_nonoverlapping(src, dst, n),
        }
    }
}
