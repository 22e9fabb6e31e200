//! The userspace map API: a safe `Map` handle over one map of a region, and
//! consumers for ringbuf and perf event array maps.

use std::time::Duration;

use crate::raw::{RawMap, Val};
use crate::region::{MapDef, MemRange, Region};
use crate::ring::Ring;
use crate::{MapError, MapType};

/// A scope the host enters around each access to a region's pages (see
/// [`set_access_gate`]); dropping the returned value leaves it.
pub type AccessGate = fn() -> Box<dyn std::any::Any>;

static ACCESS_GATE: std::sync::OnceLock<AccessGate> = std::sync::OnceLock::new();

/// Installs the gate every host-side [`Map`], [`RingBufConsumer`] and
/// [`PerfConsumer`] operation runs inside. The runtime installs one that
/// enters the trusted protection-key domain, because with `--sandbox=mpk`
/// value pages carry an extension's key and internals the runtime key,
/// which the host's own domain cannot touch. Only the first call takes
/// effect; it returns whether this one did.
pub fn set_access_gate(gate: AccessGate) -> bool {
    ACCESS_GATE.set(gate).is_ok()
}

/// Enters the installed gate, if any, until the result is dropped.
fn access_gate() -> Option<Box<dyn std::any::Any>> {
    ACCESS_GATE.get().map(|g| g())
}

/// A handle on one map of a [`Region`] (keeps the region mapped).
#[derive(Clone, Debug)]
pub struct Map {
    pub(crate) region: Region,
    pub(crate) index: usize,
}

impl Map {
    fn slot(&self) -> &crate::region::MapSlot {
        &self.region.inner.maps[self.index]
    }

    /// The program-side handle (for helpers and the JIT).
    pub fn raw(&self) -> &RawMap {
        &self.slot().raw
    }
    /// The map's definition.
    pub fn def(&self) -> &MapDef {
        &self.slot().def
    }
    /// The map's name.
    pub fn name(&self) -> &str {
        &self.def().name
    }
    /// The map type.
    pub fn map_type(&self) -> MapType {
        self.def().map_type
    }
    /// The map's index in its region.
    pub fn index(&self) -> usize {
        self.index
    }
    /// The region holding the map.
    pub fn region(&self) -> &Region {
        &self.region
    }
    /// The values pages (owning extension's key).
    pub fn values_range(&self) -> MemRange {
        self.slot().values
    }
    /// The internals pages (runtime key).
    pub fn internals_range(&self) -> MemRange {
        self.slot().internals
    }
    /// The size of a userspace value buffer: `value_size`, or for per-CPU
    /// maps possible CPUs × `value_size` rounded up to 8 (the kernel's format).
    pub fn value_buffer_size(&self) -> usize {
        let r = self.raw();
        if r.map_type().is_per_cpu() {
            r.slot_size()
        } else {
            r.value_size() as usize
        }
    }

    fn check_key(&self, key: &[u8]) -> Result<(), MapError> {
        let expected = self.def().key_size as usize;
        if key.len() != expected {
            return Err(MapError::InvalidKeySize {
                map: self.name().into(),
                size: key.len(),
                expected,
            });
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), MapError> {
        let expected = self.value_buffer_size();
        if value.len() != expected {
            return Err(MapError::InvalidValueSize {
                map: self.name().into(),
                size: value.len(),
                expected,
            });
        }
        Ok(())
    }

    fn unsupported(&self, op: &'static str) -> MapError {
        MapError::Unsupported {
            map: self.name().into(),
            op,
            map_type: self.map_type(),
        }
    }

    fn check_writable(&self) -> Result<(), MapError> {
        if self.is_frozen() {
            return Err(MapError::Frozen {
                map: self.name().into(),
            });
        }
        Ok(())
    }

    /// Looks `key` up: the value (for per-CPU maps every CPU's, see
    /// [`value_buffer_size`](Self::value_buffer_size)), or None.
    /// LPM tries answer the longest matching prefix; prog arrays the program
    /// index as a `u32`.
    pub fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MapError> {
        let _gate = access_gate();
        self.check_key(key)?;
        let raw = self.raw();
        let mut out = vec![0u8; self.value_buffer_size()];
        let found = match self.map_type() {
            MapType::Array | MapType::PerCpuArray => {
                raw.array_read(crate::raw::read_u32(key.as_ptr()), &mut out)
            }
            // SAFETY: key has key_size bytes (checked); out is sized for the value.
            MapType::Hash | MapType::PerCpuHash | MapType::LruHash | MapType::LruPerCpuHash => unsafe {
                raw.hash_lookup_copy(key.as_ptr(), &mut out)
            },
            // SAFETY: as above.
            MapType::LpmTrie => unsafe { raw.lpm_lookup_copy(key.as_ptr(), &mut out) },
            MapType::ProgArray => match raw.prog_array_get(crate::raw::read_u32(key.as_ptr())) {
                Some(p) => {
                    out.copy_from_slice(&p.to_ne_bytes());
                    true
                }
                None => false,
            },
            _ => return Err(self.unsupported("lookup")),
        };
        Ok(found.then_some(out))
    }

    /// Creates or updates `key` (flags `BPF_ANY`, `BPF_NOEXIST`, `BPF_EXIST`).
    /// For queues and stacks (empty key) this pushes. For prog arrays the
    /// value is a `u32` program index in the loader's program table (where
    /// the kernel takes a program fd); `bpf_tail_call` reads it back with
    /// [`RawMap::prog_array_get`].
    pub fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapError> {
        let _gate = access_gate();
        self.check_key(key)?;
        self.check_value(value)?;
        self.check_writable()?;
        if matches!(self.map_type(), MapType::RingBuf | MapType::PerfEventArray) {
            return Err(self.unsupported("update"));
        }
        // SAFETY: key and value have the sizes the map expects (checked above).
        let ret = unsafe {
            self.raw()
                .update_val(key.as_ptr(), Val::All(value.as_ptr()), flags)
        };
        MapError::check(ret, self.name(), "update", self.def().max_entries, flags)
    }

    /// Deletes `key` (`NotFound` when absent). Arrays refuse (as the kernel
    /// does, with `-EINVAL`).
    pub fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        let _gate = access_gate();
        self.check_key(key)?;
        self.check_writable()?;
        match self.map_type() {
            MapType::Hash
            | MapType::PerCpuHash
            | MapType::LruHash
            | MapType::LruPerCpuHash
            | MapType::LpmTrie
            | MapType::ProgArray => {}
            _ => return Err(self.unsupported("delete")),
        }
        // SAFETY: key has key_size bytes.
        let ret = unsafe { self.raw().delete_any(key.as_ptr()) };
        MapError::check(ret, self.name(), "delete", self.def().max_entries, 0)
    }

    /// The key after `key` (the first when `key` is None or absent), or None
    /// at the end: `BPF_MAP_GET_NEXT_KEY`.
    pub fn next_key(&self, key: Option<&[u8]>) -> Result<Option<Vec<u8>>, MapError> {
        let _gate = access_gate();
        if let Some(k) = key {
            self.check_key(k)?;
        }
        let raw = self.raw();
        let mut out = vec![0u8; self.def().key_size as usize];
        let found = match self.map_type() {
            MapType::Array | MapType::PerCpuArray | MapType::ProgArray => {
                let next = match key {
                    Some(k) => match crate::raw::read_u32(k.as_ptr()) {
                        i if i >= raw.max_entries() => 0,
                        i => i + 1,
                    },
                    None => 0,
                };
                out.copy_from_slice(&next.to_ne_bytes());
                next < raw.max_entries()
            }
            // SAFETY: the key (if any) has key_size bytes; out holds key_size.
            MapType::Hash | MapType::PerCpuHash | MapType::LruHash | MapType::LruPerCpuHash => unsafe {
                raw.hash_next_key(key.map(<[u8]>::as_ptr), &mut out)
            },
            // SAFETY: as above.
            MapType::LpmTrie => unsafe { raw.lpm_next_key(key.map(<[u8]>::as_ptr), &mut out) },
            _ => return Err(self.unsupported("next_key")),
        };
        Ok(found.then_some(out))
    }

    /// Iterates over the keys (`next_key` from the start). Concurrent
    /// deletes may restart the walk, as with the kernel's maps.
    pub fn keys(&self) -> Keys<'_> {
        Keys {
            map: self,
            cur: None,
            done: false,
        }
    }

    /// Iterates over `(key, value)` pairs (values as [`lookup`](Self::lookup)
    /// returns them); keys deleted during the walk are skipped.
    pub fn iter(&self) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), MapError>> + '_ {
        self.keys().filter_map(move |k| match k {
            Ok(k) => match self.lookup(&k) {
                Ok(Some(v)) => Some(Ok((k, v))),
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            },
            Err(e) => Some(Err(e)),
        })
    }

    /// Every CPU's value of `key` for a per-CPU map (one `value_size` buffer
    /// per possible CPU).
    pub fn lookup_percpu(&self, key: &[u8]) -> Result<Option<Vec<Vec<u8>>>, MapError> {
        let _gate = access_gate();
        if !self.map_type().is_per_cpu() {
            return Err(self.unsupported("lookup_percpu"));
        }
        let raw = self.raw();
        Ok(self.lookup(key)?.map(|buf| {
            buf.chunks(raw.value_stride())
                .map(|c| c[..raw.value_size() as usize].to_vec())
                .collect()
        }))
    }

    /// Sets every CPU's value of `key` for a per-CPU map (`values.len()` must
    /// be the number of possible CPUs, each `value_size` bytes).
    pub fn update_percpu(&self, key: &[u8], values: &[&[u8]], flags: u64) -> Result<(), MapError> {
        let _gate = access_gate();
        if !self.map_type().is_per_cpu() {
            return Err(self.unsupported("update_percpu"));
        }
        let raw = self.raw();
        let (vs, stride) = (raw.value_size() as usize, raw.value_stride());
        if values.len() != raw.slots() as usize || values.iter().any(|v| v.len() != vs) {
            let size = values.iter().map(|v| v.len()).sum();
            return Err(MapError::InvalidValueSize {
                map: self.name().into(),
                size,
                expected: vs * raw.slots() as usize,
            });
        }
        let mut buf = vec![0u8; raw.slot_size()];
        for (c, v) in values.iter().enumerate() {
            buf[c * stride..c * stride + vs].copy_from_slice(v);
        }
        self.update(key, &buf, flags)
    }

    /// Pushes onto a queue or stack (`BPF_EXIST` overwrites the oldest when full).
    pub fn push(&self, value: &[u8], flags: u64) -> Result<(), MapError> {
        let _gate = access_gate();
        if !matches!(self.map_type(), MapType::Queue | MapType::Stack) {
            return Err(self.unsupported("push"));
        }
        self.update(&[], value, flags)
    }

    fn pop_peek(&self, remove: bool) -> Result<Option<Vec<u8>>, MapError> {
        if !matches!(self.map_type(), MapType::Queue | MapType::Stack) {
            return Err(self.unsupported(if remove { "pop" } else { "peek" }));
        }
        if remove {
            self.check_writable()?;
        }
        let mut out = vec![0u8; self.def().value_size as usize];
        // SAFETY: out holds value_size bytes.
        let ret = unsafe { self.raw().pop_or_peek(out.as_mut_ptr(), remove) };
        Ok((ret == 0).then_some(out))
    }

    /// Pops the oldest (queue) or newest (stack) value; None when empty.
    pub fn pop(&self) -> Result<Option<Vec<u8>>, MapError> {
        let _gate = access_gate();
        self.pop_peek(true)
    }

    /// Reads the value `pop` would return without removing it.
    pub fn peek(&self) -> Result<Option<Vec<u8>>, MapError> {
        let _gate = access_gate();
        self.pop_peek(false)
    }

    /// Freezes the map: userspace writes fail with [`MapError::Frozen`]
    /// from now on, in every process (`BPF_MAP_FREEZE`, used for `.rodata`).
    pub fn freeze(&self) {
        let _gate = access_gate();
        self.raw()
            .frozen()
            .store(1, std::sync::atomic::Ordering::Release);
    }

    /// Whether [`freeze`](Self::freeze) was called.
    pub fn is_frozen(&self) -> bool {
        let _gate = access_gate();
        self.raw()
            .frozen()
            .load(std::sync::atomic::Ordering::Acquire)
            != 0
    }

    /// Whether a lock of this map had to be taken over from a thread that
    /// died holding it (a process killed in the middle of an update): the
    /// map still works, but the update that thread was making may be half
    /// done (a torn value, an element lost to the free list). Stays set.
    pub fn possibly_inconsistent(&self) -> bool {
        let _gate = access_gate();
        self.raw()
            .poisoned()
            .load(std::sync::atomic::Ordering::Acquire)
            != 0
    }
}

/// Iterator over a map's keys, from [`Map::keys`].
#[derive(Debug)]
pub struct Keys<'a> {
    map: &'a Map,
    cur: Option<Vec<u8>>,
    done: bool,
}

impl Iterator for Keys<'_> {
    type Item = Result<Vec<u8>, MapError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.map.next_key(self.cur.as_deref()) {
            Ok(Some(k)) => {
                self.cur = Some(k.clone());
                Some(Ok(k))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Reads a `RINGBUF` map's records in order. Use one consumer per ring
/// (across all processes), as with the kernel's ring buffers.
///
/// ```
/// use std::time::Duration;
/// use pkbpf_maps::{MapDef, MapType, RegionBuilder, RingBufConsumer};
/// let mut b = RegionBuilder::new();
/// b.add(MapDef::new("events", MapType::RingBuf, 0, 0, 4096))?;
/// let region = b.build()?;
/// let map = region.map("events")?;
/// // What `bpf_ringbuf_output` does for a program:
/// // SAFETY: 5 readable bytes.
/// assert_eq!(unsafe { map.raw().ringbuf_output(b"hello".as_ptr(), 5, 0) }, 0);
/// let mut consumer = RingBufConsumer::new(&map)?;
/// assert!(consumer.wait(Duration::from_secs(1)));
/// let mut seen = Vec::new();
/// consumer.poll(|record| seen.push(record.to_vec()));
/// assert_eq!(seen, [b"hello".to_vec()]);
/// # Ok::<(), pkbpf_maps::MapError>(())
/// ```
#[derive(Debug)]
pub struct RingBufConsumer {
    map: Map,
    ring: Ring,
}

impl RingBufConsumer {
    /// A consumer for `map`, which must be a `RINGBUF`.
    pub fn new(map: &Map) -> Result<RingBufConsumer, MapError> {
        let _gate = access_gate();
        match (map.map_type(), map.raw().ring(0)) {
            (MapType::RingBuf, Some(ring)) => Ok(RingBufConsumer {
                map: map.clone(),
                ring,
            }),
            _ => Err(MapError::WrongType {
                map: map.name().into(),
                expected: "ringbuf",
                found: map.map_type(),
            }),
        }
    }

    /// The next committed record, or None when none is ready.
    pub fn next_record(&mut self) -> Option<Vec<u8>> {
        let _gate = access_gate();
        let mut out = None;
        self.ring.consume(1, &mut |d| out = Some(d.to_vec()));
        out
    }

    /// Hands every ready record, in order, to `f`; returns how many.
    pub fn poll(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        let _gate = access_gate();
        self.ring.consume(usize::MAX, &mut f)
    }

    /// Blocks until a record is ready or `timeout` passes; true when ready.
    pub fn wait(&self, timeout: Duration) -> bool {
        let _gate = access_gate();
        Ring::wait_any(std::slice::from_ref(&self.ring), timeout)
    }

    /// Bytes produced and not yet consumed.
    pub fn available(&self) -> u64 {
        let _gate = access_gate();
        self.ring.query(0)
    }

    /// The map consumed.
    pub fn map(&self) -> &Map {
        &self.map
    }
}

impl Iterator for RingBufConsumer {
    type Item = Vec<u8>;

    /// The next ready record; None when none is ready now (not the end:
    /// producers may add more, see [`RingBufConsumer::wait`]).
    fn next(&mut self) -> Option<Vec<u8>> {
        self.next_record()
    }
}

/// Reads the per-CPU rings of a `PERF_EVENT_ARRAY` map.
#[derive(Debug)]
pub struct PerfConsumer {
    map: Map,
    rings: Vec<Ring>,
}

impl PerfConsumer {
    /// A consumer for `map`, which must be a `PERF_EVENT_ARRAY`.
    pub fn new(map: &Map) -> Result<PerfConsumer, MapError> {
        let _gate = access_gate();
        if map.map_type() != MapType::PerfEventArray {
            return Err(MapError::WrongType {
                map: map.name().into(),
                expected: "perf_event_array",
                found: map.map_type(),
            });
        }
        let raw = map.raw();
        let rings = (0..raw.nrings()).filter_map(|k| raw.ring(k)).collect();
        Ok(PerfConsumer {
            map: map.clone(),
            rings,
        })
    }

    /// Hands every ready record to `f(ring index, data)`, ring by ring, in
    /// order within each ring; returns how many.
    pub fn poll(&mut self, mut f: impl FnMut(u32, &[u8])) -> usize {
        let _gate = access_gate();
        let mut n = 0;
        for (k, r) in self.rings.iter().enumerate() {
            n += r.consume(usize::MAX, &mut |d| f(k as u32, d));
        }
        n
    }

    /// Records dropped because ring `k` was full.
    pub fn lost(&self, k: u32) -> u64 {
        let _gate = access_gate();
        self.rings.get(k as usize).map_or(0, Ring::lost)
    }

    /// Records dropped over all rings.
    pub fn lost_total(&self) -> u64 {
        let _gate = access_gate();
        self.rings.iter().map(Ring::lost).sum()
    }

    /// Blocks until any ring has a record or `timeout` passes.
    pub fn wait(&self, timeout: Duration) -> bool {
        let _gate = access_gate();
        Ring::wait_any(&self.rings, timeout)
    }

    /// The map consumed.
    pub fn map(&self) -> &Map {
        &self.map
    }
}
