//! `maps_model`: operation sequences on each map type against a model.
//!
//! The models are plain Rust collections with the kernel's rules:
//!
//! - hash (and per-CPU hash): a `BTreeMap`; `BPF_NOEXIST` on a present key is
//!   `AlreadyExists`, `BPF_EXIST` on an absent one `NotFound`, a new key in a
//!   full map `Full`, flags above `BPF_EXIST` `InvalidFlags`;
//! - LRU hash (and LRU per-CPU hash): updates never fail for lack of room (the least recently used
//!   entry goes), so the model only demands that a key that was never written
//!   or was deleted is absent, that a found value is the last one written, and
//!   that a key just written is found; a present key the map no longer has was
//!   evicted and leaves the model;
//! - array (and per-CPU array): `max_entries` zeroed values; an index past the
//!   end is `Full`, `BPF_NOEXIST` is `AlreadyExists`, delete is unsupported;
//! - queue and stack: a `VecDeque`; push on a full one is `Full` unless
//!   `BPF_EXIST` (which drops the oldest), pop and peek take the oldest
//!   (queue) or newest (stack).
//!
//! After the sequence, the map's keys (`next_key` walk) must be the model's.

use std::collections::{BTreeMap, VecDeque};

use arbitrary::Arbitrary;
use pkbpf_maps::{Map, MapDef, MapError, MapType, RegionBuilder};

use super::Finding;

const EINVAL: i32 = 22;

/// Which map type a sequence runs on.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum MapSel {
    Hash,
    PerCpuHash,
    LruHash,
    LruPerCpuHash,
    Array,
    PerCpuArray,
    Queue,
    Stack,
    RingBuf,
}

impl MapSel {
    fn map_type(self) -> MapType {
        match self {
            MapSel::Hash => MapType::Hash,
            MapSel::PerCpuHash => MapType::PerCpuHash,
            MapSel::LruHash => MapType::LruHash,
            MapSel::LruPerCpuHash => MapType::LruPerCpuHash,
            MapSel::Array => MapType::Array,
            MapSel::PerCpuArray => MapType::PerCpuArray,
            MapSel::Queue => MapType::Queue,
            MapSel::Stack => MapType::Stack,
            MapSel::RingBuf => MapType::RingBuf,
        }
    }
}

/// One operation. Keys are small numbers (so they collide and fill the
/// map), values a start byte (the value is `v, v+1, …`).
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum MapOp {
    Update {
        key: u8,
        value: u8,
        flags: u8,
    },
    Lookup {
        key: u8,
    },
    Delete {
        key: u8,
    },
    Push {
        value: u8,
        flags: u8,
    },
    Pop,
    Peek,
    Keys,
    /// Ring buffer: `bpf_ringbuf_output` of `len % 700` bytes.
    RbOutput {
        len: u16,
        byte: u8,
    },
    /// Ring buffer: `bpf_ringbuf_reserve` of `len % 700` bytes, filled.
    RbReserve {
        len: u16,
        byte: u8,
    },
    /// Ring buffer: submit or discard an outstanding reservation.
    RbCommit {
        which: u8,
        discard: bool,
    },
    /// Ring buffer: the consumer reads every available record.
    RbConsume,
}

impl MapOp {
    fn is_ring(self) -> bool {
        matches!(
            self,
            MapOp::RbOutput { .. }
                | MapOp::RbReserve { .. }
                | MapOp::RbCommit { .. }
                | MapOp::RbConsume
        )
    }
}

/// A map definition and an operation sequence.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct MapsInput {
    /// The map type.
    pub map: MapSel,
    /// Extra key bytes beyond 4 for hash maps (`% 5`).
    pub key_extra: u8,
    /// Value size is `1 + value_size % 24`.
    pub value_size: u8,
    /// Capacity is `1 + max_entries % 16`.
    pub max_entries: u8,
    /// The operations (at most 256 run).
    pub ops: Vec<MapOp>,
}

/// Outcome of one operation, as compared.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Res {
    Ok,
    Value(Option<Vec<u8>>),
    Keys(Vec<Vec<u8>>),
    AlreadyExists,
    NotFound,
    Full,
    InvalidFlags,
    Unsupported,
    /// Another errno (`-EINVAL` for a queue push with `BPF_NOEXIST`).
    Errno(i32),
    /// Any other error (never expected).
    Error(String),
}

fn res_of(r: Result<(), MapError>) -> Result<Res, String> {
    match r {
        Ok(()) => Ok(Res::Ok),
        Err(e) => err_res(e),
    }
}

fn err_res(e: MapError) -> Result<Res, String> {
    Ok(match e {
        MapError::AlreadyExists { .. } => Res::AlreadyExists,
        MapError::NotFound { .. } => Res::NotFound,
        MapError::Full { .. } => Res::Full,
        MapError::InvalidFlags { .. } => Res::InvalidFlags,
        MapError::Unsupported { .. } => Res::Unsupported,
        MapError::Errno { errno, .. } => Res::Errno(errno),
        other => return Err(other.to_string()),
    })
}

struct Model {
    ty: MapType,
    key_size: usize,
    value_size: usize,
    max: usize,
    ncpus: usize,
    kv: BTreeMap<Vec<u8>, Vec<u8>>,
    fifo: VecDeque<Vec<u8>>,
}

impl Model {
    fn key(&self, k: u8) -> Vec<u8> {
        let mut key = vec![0u8; self.key_size];
        let n = if matches!(self.ty, MapType::Array | MapType::PerCpuArray) {
            // Indices up to twice the capacity: half are out of range.
            k as usize % (2 * self.max)
        } else {
            k as usize % (3 * self.max / 2 + 1)
        };
        key[..4].copy_from_slice(&(n as u32).to_ne_bytes());
        key
    }

    /// The value buffer userspace passes: per-CPU maps get one value per
    /// CPU (each differing in its first byte), every value padded to 8.
    fn value(&self, v: u8) -> Vec<u8> {
        let one: Vec<u8> = (0..self.value_size)
            .map(|i| v.wrapping_add(i as u8))
            .collect();
        if !self.ty.is_per_cpu() {
            return one;
        }
        let stride = self.value_size.div_ceil(8) * 8;
        let mut buf = vec![0u8; stride * self.ncpus];
        for c in 0..self.ncpus {
            buf[c * stride..c * stride + self.value_size].copy_from_slice(&one);
            buf[c * stride] ^= c as u8;
        }
        buf
    }

    fn is_hash(&self) -> bool {
        matches!(
            self.ty,
            MapType::Hash | MapType::PerCpuHash | MapType::LruHash | MapType::LruPerCpuHash
        )
    }

    fn is_array(&self) -> bool {
        matches!(self.ty, MapType::Array | MapType::PerCpuArray)
    }

    fn is_fifo(&self) -> bool {
        matches!(self.ty, MapType::Queue | MapType::Stack)
    }

    fn zero(&self) -> Vec<u8> {
        vec![0u8; self.value(0).len()]
    }

    /// Applies `op`; the expected result.
    fn apply(&mut self, op: MapOp) -> Res {
        match op {
            MapOp::Update { key, value, flags } => {
                let flags = u64::from(flags % 4);
                let (k, v) = (self.key(key), self.value(value));
                if self.is_fifo() {
                    return self.push(v, flags);
                }
                if flags > 2 {
                    return Res::InvalidFlags;
                }
                if self.is_array() {
                    let idx = u32::from_ne_bytes(k[..4].try_into().expect("4 bytes")) as usize;
                    if idx >= self.max {
                        return Res::Full;
                    }
                    if flags == 1 {
                        return Res::AlreadyExists;
                    }
                    self.kv.insert(k, v);
                    return Res::Ok;
                }
                let present = self.kv.contains_key(&k);
                match flags {
                    1 if present => return Res::AlreadyExists,
                    2 if !present => return Res::NotFound,
                    _ => {}
                }
                if !present && self.kv.len() >= self.max && !is_lru(self.ty) {
                    return Res::Full;
                }
                self.kv.insert(k, v);
                Res::Ok
            }
            MapOp::Lookup { key } => {
                let k = self.key(key);
                if self.is_fifo() {
                    return Res::Unsupported;
                }
                if self.is_array() {
                    let idx = u32::from_ne_bytes(k[..4].try_into().expect("4 bytes")) as usize;
                    if idx >= self.max {
                        return Res::Value(None);
                    }
                    return Res::Value(Some(
                        self.kv.get(&k).cloned().unwrap_or_else(|| self.zero()),
                    ));
                }
                Res::Value(self.kv.get(&k).cloned())
            }
            MapOp::Delete { key } => {
                let k = self.key(key);
                if !self.is_hash() {
                    return Res::Unsupported;
                }
                match self.kv.remove(&k) {
                    Some(_) => Res::Ok,
                    None => Res::NotFound,
                }
            }
            MapOp::Push { value, flags } => {
                if !self.is_fifo() {
                    return Res::Unsupported;
                }
                let v = self.value(value);
                self.push(v, u64::from(flags % 4))
            }
            MapOp::Pop | MapOp::Peek => {
                if !self.is_fifo() {
                    return Res::Unsupported;
                }
                let remove = op == MapOp::Pop;
                let v = match (self.ty, remove) {
                    (MapType::Queue, true) => self.fifo.pop_front(),
                    (MapType::Queue, false) => self.fifo.front().cloned(),
                    (_, true) => self.fifo.pop_back(),
                    (_, false) => self.fifo.back().cloned(),
                };
                Res::Value(v)
            }
            // Ring-buffer ops never reach the keyed model.
            MapOp::RbOutput { .. }
            | MapOp::RbReserve { .. }
            | MapOp::RbCommit { .. }
            | MapOp::RbConsume => Res::Unsupported,
            MapOp::Keys => {
                if self.is_fifo() {
                    return Res::Unsupported;
                }
                if self.is_array() {
                    return Res::Keys(
                        (0..self.max as u32)
                            .map(|i| i.to_ne_bytes().to_vec())
                            .collect(),
                    );
                }
                Res::Keys(self.kv.keys().cloned().collect())
            }
        }
    }

    fn push(&mut self, v: Vec<u8>, flags: u64) -> Res {
        if flags > 2 {
            return Res::InvalidFlags;
        }
        if flags == 1 {
            // The map crate types only flags above BPF_EXIST as invalid.
            return Res::Errno(EINVAL);
        }
        if self.fifo.len() >= self.max {
            if flags != 2 {
                return Res::Full;
            }
            self.fifo.pop_front();
        }
        self.fifo.push_back(v);
        Res::Ok
    }
}

fn run_map(map: &Map, op: MapOp, model: &Model) -> Result<Res, String> {
    match op {
        MapOp::Update { key, value, flags } => {
            let flags = u64::from(flags % 4);
            let v = model.value(value);
            if model.is_fifo() {
                return res_of(map.update(&[], &v, flags));
            }
            res_of(map.update(&model.key(key), &v, flags))
        }
        MapOp::Lookup { key } => {
            if model.is_fifo() {
                return match map.lookup(&[]) {
                    Ok(v) => Ok(Res::Value(v)),
                    Err(e) => err_res(e),
                };
            }
            match map.lookup(&model.key(key)) {
                Ok(v) => Ok(Res::Value(v.map(|v| mask_padding(model, v)))),
                Err(e) => err_res(e),
            }
        }
        MapOp::Delete { key } => {
            let k = if model.is_fifo() {
                Vec::new()
            } else {
                model.key(key)
            };
            res_of(map.delete(&k))
        }
        MapOp::Push { value, flags } => res_of(map.push(&model.value(value), u64::from(flags % 4))),
        MapOp::Pop | MapOp::Peek => {
            let r = if op == MapOp::Pop {
                map.pop()
            } else {
                map.peek()
            };
            match r {
                Ok(v) => Ok(Res::Value(v)),
                Err(e) => err_res(e),
            }
        }
        MapOp::RbOutput { .. }
        | MapOp::RbReserve { .. }
        | MapOp::RbCommit { .. }
        | MapOp::RbConsume => Ok(Res::Unsupported),
        MapOp::Keys => {
            if model.is_fifo() {
                return match map.next_key(None) {
                    Ok(_) => Ok(Res::Keys(Vec::new())),
                    Err(e) => err_res(e),
                };
            }
            match map.keys().collect::<Result<Vec<Vec<u8>>, MapError>>() {
                Ok(mut keys) => {
                    keys.sort();
                    Ok(Res::Keys(keys))
                }
                Err(e) => err_res(e),
            }
        }
    }
}

fn is_lru(ty: MapType) -> bool {
    matches!(ty, MapType::LruHash | MapType::LruPerCpuHash)
}

/// Per-CPU lookups return padded values; the padding is not part of the
/// contract, so it is zeroed like the model's.
fn mask_padding(model: &Model, mut v: Vec<u8>) -> Vec<u8> {
    if model.ty.is_per_cpu() {
        let stride = model.value_size.div_ceil(8) * 8;
        for (i, b) in v.iter_mut().enumerate() {
            if i % stride >= model.value_size {
                *b = 0;
            }
        }
    }
    v
}

/// Runs `input` on a fresh map and on the model; the first disagreement is a
/// [`Finding::MapMismatch`]. A definition the map crate refuses ends the run
/// without a finding.
pub fn maps_model(input: &MapsInput) -> Result<(), Finding> {
    let ty = input.map.map_type();
    if ty == MapType::RingBuf {
        return ringbuf_model(input);
    }
    let fifo = matches!(ty, MapType::Queue | MapType::Stack);
    let key_size = if fifo {
        0
    } else if matches!(ty, MapType::Array | MapType::PerCpuArray) {
        4
    } else {
        4 + u32::from(input.key_extra % 5)
    };
    let value_size = 1 + u32::from(input.value_size % 24);
    let max = 1 + u32::from(input.max_entries % 16);
    let mut b = RegionBuilder::new();
    if b.add(MapDef::new("m", ty, key_size, value_size, max))
        .is_err()
    {
        return Ok(());
    }
    let Ok(region) = b.build() else {
        return Ok(());
    };
    let Ok(map) = region.map("m") else {
        return Ok(());
    };
    let mut model = Model {
        ty,
        key_size: key_size.max(4) as usize,
        value_size: value_size as usize,
        max: max as usize,
        ncpus: region.ncpus() as usize,
        kv: BTreeMap::new(),
        fifo: VecDeque::new(),
    };
    for (index, &op) in input.ops.iter().take(256).enumerate() {
        if op.is_ring() {
            continue;
        }
        if is_lru(ty) {
            // A key the model holds but the map evicted leaves the model.
            if let MapOp::Update { key, .. } | MapOp::Lookup { key } | MapOp::Delete { key } = op {
                let k = model.key(key);
                if model.kv.contains_key(&k) && matches!(map.lookup(&k), Ok(None)) {
                    model.kv.remove(&k);
                }
            }
        }
        let expected = model.apply(op);
        let actual = match run_map(&map, op, &model) {
            Ok(r) => r,
            Err(e) => Res::Error(e),
        };
        let ok = match (&expected, &actual) {
            (Res::Keys(want), Res::Keys(got)) if is_lru(ty) => {
                // Evictions: the map's keys are a subset of the model's.
                let subset = got.iter().all(|k| want.contains(k));
                model.kv.retain(|k, _| got.contains(k));
                subset
            }
            (e, a) => e == a,
        };
        if !ok {
            return Err(Finding::MapMismatch {
                map_type: ty,
                index,
                op: format!("{op:?}"),
                actual: format!("{actual:?}"),
                expected: format!("{expected:?}"),
            });
        }
        if let (true, MapOp::Update { key, .. }, Res::Ok) = (is_lru(ty), op, &actual) {
            // A key just written is readable at once, with its new value.
            let k = model.key(key);
            let got = map
                .lookup(&k)
                .ok()
                .flatten()
                .map(|v| mask_padding(&model, v));
            if got.as_ref() != model.kv.get(&k) {
                return Err(Finding::MapMismatch {
                    map_type: ty,
                    index,
                    op: format!("lookup right after {op:?}"),
                    actual: format!("{got:?}"),
                    expected: format!("{:?}", model.kv.get(&k)),
                });
            }
        }
    }
    Ok(())
}

/// Ring size of the ring-buffer runs.
const RING_SIZE: u64 = 4096;

/// State of a ring record in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RecState {
    Busy,
    Submitted,
    Discarded,
}

/// The ring-buffer model: records in reservation order; the consumer sees
/// submitted ones in that order, skips discarded ones and stops at the first
/// busy one. Capacity: a reservation never succeeds when the bytes not yet
/// consumed plus the record (8-byte header, padded to 8) exceed the ring,
/// and always succeeds when they plus twice the record fit (pkbpf pads
/// rather than wraps a record at the end of the ring, costing less than one
/// record; the kernel's double mapping needs no padding).
fn ringbuf_model(input: &MapsInput) -> Result<(), Finding> {
    use pkbpf_maps::RingBufConsumer;

    let ty = MapType::RingBuf;
    let mut b = RegionBuilder::new();
    if b.add(MapDef::new("r", ty, 0, 0, RING_SIZE as u32)).is_err() {
        return Ok(());
    }
    let Ok(region) = b.build() else {
        return Ok(());
    };
    let Ok(map) = region.map("r") else {
        return Ok(());
    };
    let Ok(mut consumer) = RingBufConsumer::new(&map) else {
        return Ok(());
    };
    let raw = map.raw();
    // Model records: data, state; outstanding reservations: (model index, pointer).
    let mut recs: VecDeque<(Vec<u8>, RecState)> = VecDeque::new();
    let mut outstanding: Vec<(usize, *mut u8)> = Vec::new();
    let mut consumed = 0usize; // records removed from the front of `recs`
    let mut occupied = 0u64; // model bytes not yet consumed (without padding)
    let mismatch = |index: usize, op: MapOp, actual: String, expected: String| {
        Err(Finding::MapMismatch {
            map_type: ty,
            index,
            op: format!("{op:?}"),
            actual,
            expected,
        })
    };
    for (index, &op) in input.ops.iter().take(256).enumerate() {
        match op {
            MapOp::RbOutput { len, byte } | MapOp::RbReserve { len, byte } => {
                let len = u64::from(len % 700);
                let total = (len + 8 + 7) & !7;
                let data: Vec<u8> = (0..len).map(|i| byte.wrapping_add(i as u8)).collect();
                let avail = raw.ringbuf_query(0);
                let ok = if let MapOp::RbOutput { .. } = op {
                    // SAFETY: `data` holds `len` readable bytes.
                    unsafe { raw.ringbuf_output(data.as_ptr(), len, 0) == 0 }
                } else {
                    let p = raw.ringbuf_reserve(len, 0);
                    if !p.is_null() {
                        // SAFETY: a successful reservation is `len` writable
                        // bytes, ours until committed.
                        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
                        outstanding.push((consumed + recs.len(), p));
                    }
                    !p.is_null()
                };
                if avail < occupied {
                    return mismatch(
                        index,
                        op,
                        format!("available {avail}"),
                        format!("at least {occupied}"),
                    );
                }
                let must_fail = occupied + total > RING_SIZE;
                let must_succeed = avail + 2 * total <= RING_SIZE;
                if (ok && must_fail) || (!ok && must_succeed) {
                    return mismatch(
                        index,
                        op,
                        format!("success {ok} with {avail} bytes unconsumed"),
                        format!("must_fail {must_fail}, must_succeed {must_succeed}"),
                    );
                }
                if ok {
                    occupied += total;
                    let state = if let MapOp::RbOutput { .. } = op {
                        RecState::Submitted
                    } else {
                        RecState::Busy
                    };
                    recs.push_back((data, state));
                }
            }
            MapOp::RbCommit { which, discard } => {
                if outstanding.is_empty() {
                    continue;
                }
                let (at, p) = outstanding.remove(which as usize % outstanding.len());
                // SAFETY: `p` is an outstanding reservation of this ring, not
                // used after this commit.
                let ret = unsafe { raw.ringbuf_commit(p, 0, discard) };
                if ret != 0 {
                    return mismatch(index, op, format!("ret {ret}"), "0".into());
                }
                recs[at - consumed].1 = if discard {
                    RecState::Discarded
                } else {
                    RecState::Submitted
                };
            }
            MapOp::RbConsume => {
                let mut want = Vec::new();
                while let Some((_, st)) = recs.front() {
                    if *st == RecState::Busy {
                        break;
                    }
                    let (d, st) = recs.pop_front().expect("front exists");
                    consumed += 1;
                    occupied -= (d.len() as u64 + 8 + 7) & !7;
                    if st == RecState::Submitted {
                        want.push(d);
                    }
                }
                let mut got = Vec::new();
                while let Some(r) = consumer.next_record() {
                    got.push(r);
                }
                if got != want {
                    return mismatch(
                        index,
                        op,
                        format!("{} records {got:02x?}", got.len()),
                        format!("{} records {want:02x?}", want.len()),
                    );
                }
            }
            _ => {}
        }
    }
    // Leave no reservation busy (the region is dropped anyway).
    for (_, p) in outstanding {
        // SAFETY: an outstanding reservation of this ring, never used again.
        unsafe { raw.ringbuf_commit(p, 0, true) };
    }
    Ok(())
}
