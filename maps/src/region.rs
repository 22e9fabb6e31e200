//! The shared region: one memfd holding a header table and every map.
//!
//! ```text
//! page 0..   RegionHeader | MapEntry × nmaps            (runtime key)
//! map 0      values pages    (extension key)  | internals pages (runtime key)
//! map 1      values pages ...                 | internals pages ...
//! ```
//!
//! Every offset is relative to the region start, so the region may be mapped
//! at any address in any process. The layout of each map is a pure function of
//! its definition, the number of possible CPUs and the page size
//! ([`compute_layout`]); [`Region::open`] recomputes it and refuses a header
//! that disagrees, so a corrupt or foreign fd never yields out-of-range
//! pointers.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use memmap2::MmapMut;

use crate::raw::{Params, RawMap};
use crate::{cpu, MapError, MapType};

const MAGIC: u64 = u64::from_le_bytes(*b"PKBPFMAP");
/// Layout version: 2 since hash elements put their key before their cold
/// fields and buckets take the hash's top bits.
const VERSION: u32 = 2;
/// Longest map name stored in the region (bytes, without NUL).
pub const MAX_NAME_LEN: usize = 63;
/// Default bytes of data per CPU ring of a `PERF_EVENT_ARRAY` map (see
/// [`RegionBuilder::perf_ring_bytes`]).
pub const PERF_RING_BYTES: u64 = 64 * 1024;
/// Largest memory one map may take (values and internals together).
pub const MAX_MAP_BYTES: usize = 1 << 34;
/// Largest value size accepted (a `.bss`/`.data` section is one value).
pub const MAX_VALUE_SIZE: u32 = 1 << 26;
/// Largest value size of a per-CPU map, as in the kernel (`PCPU_MIN_UNIT_SIZE`).
pub const MAX_PERCPU_VALUE_SIZE: u32 = 32 << 10;
/// Largest LPM trie data part (`key_size - 4`), as in the kernel.
pub const LPM_DATA_SIZE_MAX: u32 = 256;

/// `BPF_F_RDONLY_PROG`: programs may not write the map (helpers refuse with
/// `-EPERM`).
pub const BPF_F_RDONLY_PROG: u32 = 1 << 7;

/// A map's definition, as found in an object's `maps` / `.maps` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDef {
    /// The map's name (at most [`MAX_NAME_LEN`] bytes, unique in a region).
    pub name: String,
    /// The map type.
    pub map_type: MapType,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Capacity (for `RINGBUF`: data bytes, a power of two and page multiple;
    /// for `PERF_EVENT_ARRAY`: rings, 0 meaning one per possible CPU).
    pub max_entries: u32,
    /// Map flags (`BPF_F_*`).
    pub flags: u32,
}

impl MapDef {
    /// A definition with no flags.
    pub fn new(
        name: &str,
        map_type: MapType,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    ) -> MapDef {
        MapDef {
            name: name.to_string(),
            map_type,
            key_size,
            value_size,
            max_entries,
            flags: 0,
        }
    }
}

/// A byte range of the region: where a map part lies, for `pkey_mprotect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemRange {
    /// Offset from the region start (page-aligned).
    pub offset: usize,
    /// Length in bytes (a page multiple, possibly 0).
    pub len: usize,
    /// Address in this process's mapping.
    pub addr: usize,
}

impl MemRange {
    /// Whether `[addr, addr + len)` lies inside the range.
    pub fn contains(&self, addr: usize, len: usize) -> bool {
        addr >= self.addr
            && addr
                .checked_add(len)
                .is_some_and(|end| end <= self.addr + self.len)
    }
}

#[repr(C)]
struct RegionHeader {
    magic: u64,
    version: u32,
    nmaps: u32,
    total_len: u64,
    ncpus: u32,
    page_size: u32,
    perf_ring_bytes: u64,
    /// The creator's PID namespace (see `sync::Robust`), 0 if unknown.
    pid_ns: u64,
}

#[repr(C)]
pub(crate) struct MapEntry {
    name: [u8; MAX_NAME_LEN + 1],
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    flags: u32,
    pub(crate) frozen: AtomicU32,
    /// Set when a lock of the map was taken over from a dead holder.
    pub(crate) poisoned: AtomicU32,
    _pad: u32,
    values_off: u64,
    values_len: u64,
    internals_off: u64,
    internals_len: u64,
}

const HEADER_SIZE: usize = 64;
const ENTRY_SIZE: usize = std::mem::size_of::<MapEntry>();
const _: () = assert!(std::mem::size_of::<RegionHeader>() <= HEADER_SIZE);
const _: () = assert!(ENTRY_SIZE.is_multiple_of(8));

/// The sizes of a map's two parts and its type-specific parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub values_len: usize,
    pub internals_len: usize,
    pub params: Params,
}

fn valid_perf_ring(bytes: u64, page: usize) -> bool {
    bytes.is_power_of_two() && bytes >= page as u64 && bytes <= 1 << 30
}

pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p <= 0 {
        4096
    } else {
        p as usize
    }
}

pub(crate) fn round_up(x: usize, to: usize) -> Option<usize> {
    x.checked_add(to - 1).map(|v| v / to * to)
}

/// Computes a map's layout, or says why the definition is invalid.
pub(crate) fn compute_layout(
    def: &MapDef,
    ncpus: u32,
    page: usize,
    perf_ring: u64,
) -> Result<Layout, String> {
    use MapType::*;
    let (ks, vs, max) = (def.key_size, def.value_size, def.max_entries);
    let need = |cond: bool, what: &str| if cond { Ok(()) } else { Err(what.to_string()) };
    let too_big = || "map too large".to_string();
    if vs > MAX_VALUE_SIZE {
        return Err(format!("value_size {vs} exceeds {MAX_VALUE_SIZE}"));
    }
    if def.map_type.is_per_cpu() && vs > MAX_PERCPU_VALUE_SIZE {
        return Err(format!(
            "per-CPU value_size {vs} exceeds {MAX_PERCPU_VALUE_SIZE}"
        ));
    }
    if def.name.len() > MAX_NAME_LEN || def.name.is_empty() || def.name.contains('\0') {
        return Err(format!("name must be 1..={MAX_NAME_LEN} bytes without NUL"));
    }
    let stride = round_up(vs as usize, 8).ok_or_else(too_big)?;
    let cpus = if def.map_type.is_per_cpu() {
        ncpus as usize
    } else {
        1
    };
    let slot = stride.checked_mul(cpus).ok_or_else(too_big)?;
    let mut p = Params {
        stride,
        slot,
        ncpus: cpus as u32,
        ..Params::default()
    };
    let mul = |a: usize, b: usize| a.checked_mul(b).ok_or_else(too_big);
    let add = |a: usize, b: usize| a.checked_add(b).ok_or_else(too_big);
    let (values, internals) = match def.map_type {
        Array | PerCpuArray => {
            need(ks == 4, "array maps need key_size 4")?;
            need(
                vs > 0 && max > 0,
                "array maps need value_size > 0 and max_entries > 0",
            )?;
            // One sequence lock per element and CPU slot.
            (mul(slot, max as usize)?, mul(4 * cpus, max as usize)?)
        }
        Hash | PerCpuHash | LruHash | LruPerCpuHash => {
            need(
                ks > 0 && vs > 0 && max > 0,
                "hash maps need key_size, value_size and max_entries > 0",
            )?;
            need(ks <= 512, "hash key_size must be <= 512")?;
            let nb = (max as usize)
                .checked_next_power_of_two()
                .ok_or_else(too_big)?;
            p.nbuckets = nb;
            p.key_words = (ks as usize).div_ceil(8);
            p.elem_stride = crate::hash::ELEM_HEAD + 8 * p.key_words + crate::hash::ELEM_TAIL;
            p.buckets_off = crate::hash::BUCKETS_OFF;
            let bucket_bytes = crate::hash::BUCKET_SIZE + crate::hash::OWNER_SIZE;
            p.elems_off =
                round_up(add(p.buckets_off, mul(nb, bucket_bytes)?)?, 64).ok_or_else(too_big)?;
            (
                mul(slot, max as usize)?,
                add(p.elems_off, mul(p.elem_stride, max as usize)?)?,
            )
        }
        LpmTrie => {
            need(
                ks > 4 && ks - 4 <= LPM_DATA_SIZE_MAX,
                "lpm_trie key_size must be 5..=260 (u32 prefixlen + data)",
            )?;
            need(
                vs > 0 && max > 0,
                "lpm_trie needs value_size > 0 and max_entries > 0",
            )?;
            let ds = ks as usize - 4;
            let nlen = ds * 8 + 1;
            p.key_words = ds.div_ceil(8);
            p.elem_stride = 8 + 8 * p.key_words;
            p.lens_off = 64;
            p.bitmap_off = round_up(64 + 4 * nlen, 8).ok_or_else(too_big)?;
            p.buckets_off = p.bitmap_off + 8 * nlen.div_ceil(64);
            p.nbuckets = (max as usize)
                .checked_mul(2)
                .and_then(usize::checked_next_power_of_two)
                .ok_or_else(too_big)?;
            p.free_off = add(p.buckets_off, mul(4, p.nbuckets)?)?;
            p.elems_off =
                round_up(add(p.free_off, mul(4, max as usize)?)?, 64).ok_or_else(too_big)?;
            (
                mul(slot, max as usize)?,
                add(p.elems_off, mul(p.elem_stride, max as usize)?)?,
            )
        }
        Queue | Stack => {
            need(ks == 0, "queue/stack maps need key_size 0")?;
            need(
                max < u32::MAX,
                "queue/stack max_entries must be below 2^32 - 1",
            )?;
            need(
                vs > 0 && max > 0,
                "queue/stack maps need value_size > 0 and max_entries > 0",
            )?;
            (0, add(64, mul(stride, max as usize + 1)?)?)
        }
        ProgArray => {
            need(
                ks == 4 && vs == 4,
                "prog_array maps need key_size 4 and value_size 4",
            )?;
            need(max > 0, "prog_array maps need max_entries > 0")?;
            (0, mul(4, max as usize)?)
        }
        RingBuf => {
            need(
                ks == 0 && vs == 0,
                "ringbuf maps need key_size 0 and value_size 0",
            )?;
            need(
                max.is_power_of_two() && (max as usize).is_multiple_of(page),
                "ringbuf max_entries must be a power of two and a multiple of the page size",
            )?;
            p.ring_size = max as u64;
            p.nrings = 1;
            (max as usize, crate::ring::CTL_SIZE)
        }
        PerfEventArray => {
            need(
                ks == 4 && vs == 4,
                "perf_event_array maps need key_size 4 and value_size 4",
            )?;
            let n = if max == 0 { ncpus } else { max };
            p.nrings = n;
            need(
                valid_perf_ring(perf_ring, page),
                "perf ring size must be a power-of-two page multiple up to 1 GiB",
            )?;
            p.ring_size = perf_ring;
            p.ring_stride = crate::ring::CTL_SIZE + perf_ring as usize;
            (
                0,
                add(crate::ring::CTL_SIZE, mul(p.ring_stride, n as usize)?)?,
            )
        }
    };
    let values_len = round_up(values, page).ok_or_else(too_big)?;
    let internals_len = round_up(internals, page).ok_or_else(too_big)?;
    if values_len.saturating_add(internals_len) > MAX_MAP_BYTES {
        return Err(format!(
            "map needs {} bytes, more than {MAX_MAP_BYTES}",
            values_len.saturating_add(internals_len)
        ));
    }
    Ok(Layout {
        values_len,
        internals_len,
        params: p,
    })
}

/// Lays out maps in a new region: add definitions, then [`build`](Self::build).
#[derive(Debug, Default)]
pub struct RegionBuilder {
    defs: Vec<MapDef>,
    perf_ring_bytes: Option<u64>,
}

/// Another name for [`RegionBuilder`]: the set of maps of one region.
pub type MapSet = RegionBuilder;

impl RegionBuilder {
    /// An empty builder.
    pub fn new() -> RegionBuilder {
        RegionBuilder::default()
    }

    /// Sets the data bytes of each CPU ring of the region's
    /// `PERF_EVENT_ARRAY` maps (default [`PERF_RING_BYTES`]; the kernel lets
    /// the consumer choose it, here it is fixed when the region is laid out).
    /// Must be a power of two, at least a page, at most 1 GiB.
    pub fn perf_ring_bytes(&mut self, bytes: u64) -> Result<&mut Self, MapError> {
        if !valid_perf_ring(bytes, page_size()) {
            return Err(MapError::InvalidRingSize { bytes });
        }
        self.perf_ring_bytes = Some(bytes);
        Ok(self)
    }

    fn perf_ring(&self) -> u64 {
        self.perf_ring_bytes.unwrap_or(PERF_RING_BYTES)
    }

    /// Adds a map; returns its index in the region. Checks the definition
    /// now, so an error names the map at fault.
    pub fn add(&mut self, def: MapDef) -> Result<usize, MapError> {
        let index = self.defs.len();
        let invalid = |reason: String| MapError::InvalidDefinition {
            name: def.name.clone(),
            index,
            reason,
        };
        if self.defs.iter().any(|d| d.name == def.name) {
            return Err(invalid("duplicate map name".into()));
        }
        compute_layout(&def, cpu::possible_cpus(), page_size(), self.perf_ring())
            .map_err(invalid)?;
        self.defs.push(def);
        Ok(index)
    }

    /// Creates the memfd, sizes it from the definitions, maps it and
    /// initialises every map.
    pub fn build(&self) -> Result<Region, MapError> {
        let ncpus = cpu::possible_cpus();
        let page = page_size();
        let header_len =
            round_up(HEADER_SIZE + ENTRY_SIZE * self.defs.len(), page).unwrap_or(usize::MAX);
        let mut off = header_len;
        let mut placed = Vec::with_capacity(self.defs.len());
        for (index, def) in self.defs.iter().enumerate() {
            let l = compute_layout(def, ncpus, page, self.perf_ring()).map_err(|reason| {
                MapError::InvalidDefinition {
                    name: def.name.clone(),
                    index,
                    reason,
                }
            })?;
            let big = || MapError::InvalidDefinition {
                name: def.name.clone(),
                index,
                reason: "region too large".into(),
            };
            let v = off;
            let i = v.checked_add(l.values_len).ok_or_else(big)?;
            off = i.checked_add(l.internals_len).ok_or_else(big)?;
            placed.push((v, i, l));
        }
        // SAFETY: the name is NUL-terminated; memfd_create has no other
        // preconditions and returns a new fd or -1.
        let fd = unsafe { libc::memfd_create(c"pkbpf-maps".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(MapError::Io {
                op: "memfd_create",
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: `fd` was just returned by memfd_create and is owned by no one else.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        file.set_len(off as u64).map_err(|source| MapError::Io {
            op: "ftruncate",
            source,
        })?;
        // SAFETY: the memfd is ours; other processes that map it cooperate
        // through the atomics inside, never through Rust references to
        // non-atomic data.
        let mut mmap = unsafe { MmapMut::map_mut(&file) }
            .map_err(|source| MapError::Io { op: "mmap", source })?;
        let base = mmap.as_mut_ptr();
        // SAFETY: the mapping is `off >= header_len` bytes, page-aligned, and
        // zero-filled by the kernel; the header and entries fit in the first
        // `header_len` bytes and are plain integers.
        unsafe {
            std::ptr::write(
                base as *mut RegionHeader,
                RegionHeader {
                    magic: MAGIC,
                    version: VERSION,
                    nmaps: self.defs.len() as u32,
                    total_len: off as u64,
                    ncpus,
                    page_size: page as u32,
                    perf_ring_bytes: self.perf_ring(),
                    pid_ns: crate::sync::pid_ns(),
                },
            );
            for (k, (def, (v, i, l))) in self.defs.iter().zip(&placed).enumerate() {
                let mut name = [0u8; MAX_NAME_LEN + 1];
                name[..def.name.len()].copy_from_slice(def.name.as_bytes());
                std::ptr::write(
                    base.add(HEADER_SIZE + k * ENTRY_SIZE) as *mut MapEntry,
                    MapEntry {
                        name,
                        map_type: def.map_type as u32,
                        key_size: def.key_size,
                        value_size: def.value_size,
                        max_entries: def.max_entries,
                        flags: def.flags,
                        frozen: AtomicU32::new(0),
                        poisoned: AtomicU32::new(0),
                        _pad: 0,
                        values_off: *v as u64,
                        values_len: l.values_len as u64,
                        internals_off: *i as u64,
                        internals_len: l.internals_len as u64,
                    },
                );
            }
        }
        let region = Region::from_parts(file.into(), mmap)?;
        for m in &region.inner.maps {
            // SAFETY: the map's memory is fresh and not yet shared.
            unsafe { m.raw.init() };
        }
        Ok(region)
    }
}

pub(crate) struct MapSlot {
    pub def: MapDef,
    pub values: MemRange,
    pub internals: MemRange,
    pub raw: RawMap,
}

pub(crate) struct RegionInner {
    pub mmap: MmapMut,
    pub fd: OwnedFd,
    pub maps: Vec<MapSlot>,
    pub ncpus: u32,
}

/// A mapped map region (cheap to clone: clones share the mapping).
#[derive(Clone)]
pub struct Region {
    pub(crate) inner: Arc<RegionInner>,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("fd", &self.inner.fd.as_raw_fd())
            .field("len", &self.inner.mmap.len())
            .field(
                "maps",
                &self
                    .inner
                    .maps
                    .iter()
                    .map(|m| &m.def.name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Region {
    /// Maps an existing region from its fd (inherited, passed over a socket,
    /// or opened from `/proc/PID/fd/N`) and validates its header.
    ///
    /// ```
    /// use std::os::fd::AsRawFd;
    /// use pkbpf_maps::{MapDef, MapType, Region, RegionBuilder};
    /// let mut b = RegionBuilder::new();
    /// b.add(MapDef::new("counts", MapType::Array, 4, 8, 4))?;
    /// let loader = b.build()?;
    /// // Another process would open /proc/<loader pid>/fd/<fd>.
    /// let path = format!("/proc/self/fd/{}", loader.fd().as_raw_fd());
    /// let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    /// let target = Region::open(file.into())?;
    /// target.map("counts")?.update(&1u32.to_ne_bytes(), &7u64.to_ne_bytes(), 0)?;
    /// assert_eq!(loader.map("counts")?.lookup(&1u32.to_ne_bytes())?, Some(7u64.to_ne_bytes().to_vec()));
    /// # Ok::<(), pkbpf_maps::MapError>(())
    /// ```
    pub fn open(fd: OwnedFd) -> Result<Region, MapError> {
        let file = File::from(fd);
        // SAFETY: see `RegionBuilder::build`; the content is validated below
        // before any pointer is derived from it.
        let mmap = unsafe { MmapMut::map_mut(&file) }
            .map_err(|source| MapError::Io { op: "mmap", source })?;
        Region::from_parts(file.into(), mmap)
    }

    fn from_parts(fd: OwnedFd, mut mmap: MmapMut) -> Result<Region, MapError> {
        let bad = |reason: String| MapError::BadRegion { reason };
        let len = mmap.len();
        if len < HEADER_SIZE {
            return Err(bad(format!("{len} bytes is smaller than the header")));
        }
        let base = mmap.as_mut_ptr();
        // SAFETY: the mapping holds at least HEADER_SIZE bytes, is
        // page-aligned, and RegionHeader is plain integers.
        let hdr = unsafe { std::ptr::read(base as *const RegionHeader) };
        if hdr.magic != MAGIC || hdr.version != VERSION {
            return Err(bad("bad magic or version".into()));
        }
        let page = page_size();
        if hdr.page_size as usize != page || hdr.total_len != len as u64 || hdr.ncpus == 0 {
            return Err(bad(format!(
                "header says {} bytes, page {}, {} cpus; mapping is {len} bytes, page {page}",
                hdr.total_len, hdr.page_size, hdr.ncpus
            )));
        }
        let nmaps = hdr.nmaps as usize;
        let header_len = nmaps
            .checked_mul(ENTRY_SIZE)
            .and_then(|t| round_up(t + HEADER_SIZE, page))
            .filter(|&h| h <= len)
            .ok_or_else(|| bad(format!("{nmaps} map entries do not fit")))?;
        let mut off = header_len;
        let mut maps = Vec::with_capacity(nmaps);
        for k in 0..nmaps {
            // SAFETY: entry k lies inside the header checked above.
            let e = unsafe { &*(base.add(HEADER_SIZE + k * ENTRY_SIZE) as *const MapEntry) };
            let name_len = e.name.iter().position(|&b| b == 0).unwrap_or(e.name.len());
            let name = std::str::from_utf8(&e.name[..name_len])
                .map_err(|_| bad(format!("map {k}: name is not UTF-8")))?
                .to_string();
            let map_type = MapType::from_kernel(e.map_type)
                .ok_or_else(|| bad(format!("map {k}: unknown type {}", e.map_type)))?;
            let def = MapDef {
                name,
                map_type,
                key_size: e.key_size,
                value_size: e.value_size,
                max_entries: e.max_entries,
                flags: e.flags,
            };
            let l = compute_layout(&def, hdr.ncpus, page, hdr.perf_ring_bytes)
                .map_err(|r| bad(format!("map {k}: {r}")))?;
            let v = off;
            let i = v + l.values_len;
            off = i + l.internals_len;
            if (e.values_off, e.values_len, e.internals_off, e.internals_len)
                != (
                    v as u64,
                    l.values_len as u64,
                    i as u64,
                    l.internals_len as u64,
                )
                || off > len
            {
                return Err(bad(format!(
                    "map {k} (`{}`): layout does not match its definition",
                    def.name
                )));
            }
            let values = MemRange {
                offset: v,
                len: l.values_len,
                addr: base as usize + v,
            };
            let internals = MemRange {
                offset: i,
                len: l.internals_len,
                addr: base as usize + i,
            };
            // SAFETY: both ranges lie inside the mapping (checked above) and
            // are laid out for `def` by `compute_layout`.
            let raw = unsafe {
                RawMap::new(
                    &def,
                    &l,
                    base.add(v),
                    base.add(i),
                    &e.frozen,
                    &e.poisoned,
                    crate::sync::same_pid_ns(hdr.pid_ns),
                )
            };
            maps.push(MapSlot {
                def,
                values,
                internals,
                raw,
            });
        }
        if maps
            .iter()
            .enumerate()
            .any(|(k, m)| maps[..k].iter().any(|o: &MapSlot| o.def.name == m.def.name))
        {
            return Err(bad("duplicate map names".into()));
        }
        Ok(Region {
            inner: Arc::new(RegionInner {
                mmap,
                fd,
                maps,
                ncpus: hdr.ncpus,
            }),
        })
    }

    /// The region's memfd (pass it to another process, or read
    /// `/proc/PID/fd/N` there).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }

    /// The region's address and length in this process.
    pub fn as_range(&self) -> MemRange {
        MemRange {
            offset: 0,
            len: self.inner.mmap.len(),
            addr: self.inner.mmap.as_ptr() as usize,
        }
    }

    /// The header pages (runtime key).
    pub fn header_range(&self) -> MemRange {
        let len = self
            .inner
            .maps
            .first()
            .map_or(self.inner.mmap.len(), |m| m.values.offset);
        MemRange {
            offset: 0,
            len,
            addr: self.inner.mmap.as_ptr() as usize,
        }
    }

    /// Number of possible CPUs the per-CPU maps of this region were laid out for.
    pub fn ncpus(&self) -> u32 {
        self.inner.ncpus
    }

    /// Number of maps.
    pub fn len(&self) -> usize {
        self.inner.maps.len()
    }

    /// Whether the region holds no map.
    pub fn is_empty(&self) -> bool {
        self.inner.maps.is_empty()
    }

    /// The definitions, in index order.
    pub fn defs(&self) -> impl Iterator<Item = &MapDef> {
        self.inner.maps.iter().map(|m| &m.def)
    }

    /// The index of the map called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.inner.maps.iter().position(|m| m.def.name == name)
    }

    /// The program-side handle of map `index`, for helpers and the JIT. Its
    /// address is stable for the life of the region.
    pub fn raw(&self, index: usize) -> Option<&RawMap> {
        self.inner.maps.get(index).map(|m| &m.raw)
    }

    /// The map whose program-side handle ([`raw`](Self::raw)) lives at
    /// `addr`, in constant time: how helpers check that a map pointer a
    /// program passed is one of this region's maps. `None` for any other
    /// address.
    #[inline]
    pub fn raw_at(&self, addr: usize) -> Option<&RawMap> {
        let maps = &self.inner.maps;
        let first = maps.as_ptr() as usize + std::mem::offset_of!(MapSlot, raw);
        let off = addr.checked_sub(first)?;
        let size = std::mem::size_of::<MapSlot>();
        let index = off / size;
        (off % size == 0).then(|| maps.get(index).map(|m| &m.raw))?
    }

    /// Map `index`'s values pages (to carry the owning extension's key).
    pub fn values_range(&self, index: usize) -> Option<MemRange> {
        self.inner.maps.get(index).map(|m| m.values)
    }

    /// Map `index`'s internals pages (to carry the runtime key).
    pub fn internals_range(&self, index: usize) -> Option<MemRange> {
        self.inner.maps.get(index).map(|m| m.internals)
    }

    /// The index of the map whose values pages hold `[addr, addr + len)`,
    /// for helpers that must check a pointer a program passed (a value
    /// pointer, a ringbuf record) before using it.
    pub fn map_containing(&self, addr: usize, len: usize) -> Option<usize> {
        self.inner
            .maps
            .iter()
            .position(|m| m.values.len > 0 && m.values.contains(addr, len))
    }

    /// The userspace handle of map `index`.
    pub fn map_at(&self, index: usize) -> Result<crate::Map, MapError> {
        if index >= self.len() {
            return Err(MapError::NoSuchMap {
                name: format!("#{index}"),
            });
        }
        Ok(crate::Map {
            region: self.clone(),
            index,
        })
    }

    /// The userspace handle of the map called `name`.
    pub fn map(&self, name: &str) -> Result<crate::Map, MapError> {
        let index = self.index_of(name).ok_or_else(|| MapError::NoSuchMap {
            name: name.to_string(),
        })?;
        Ok(crate::Map {
            region: self.clone(),
            index,
        })
    }

    /// Commits (`discard == false`) or discards a ringbuf record reserved by
    /// `bpf_ringbuf_reserve`, finding its map from the pointer, as the
    /// `bpf_ringbuf_submit`/`discard` helpers must (they get no map). Returns
    /// 0, or `-EINVAL` when `data` is not a reserved, uncommitted record of a
    /// ringbuf of this region.
    ///
    /// # Safety
    /// `data` may be any value; if it points into a ringbuf's data pages, the
    /// caller must not use the record after this call.
    pub unsafe fn ringbuf_commit(&self, data: *mut u8, flags: u64, discard: bool) -> i64 {
        for m in &self.inner.maps {
            if m.def.map_type == MapType::RingBuf && m.values.contains(data as usize, 0) {
                // SAFETY: `data` lies in this ringbuf's data pages; the
                // callee validates the record header.
                return unsafe { m.raw.ringbuf_commit(data, flags, discard) };
            }
        }
        -(libc::EINVAL as i64)
    }
}
