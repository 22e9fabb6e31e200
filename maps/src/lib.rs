//! pkbpf's maps: every map type's data plane in shared memory.
//!
//! All maps of a loaded object live in one [`Region`]: a memfd mapped
//! `MAP_SHARED`, so the loader and the target process (or any process given
//! the fd) see the same maps. Inside, everything is offsets and
//! process-shared atomics. Each map has a *values* part (pages that will
//! carry the owning extension's protection key) and an *internals* part
//! (buckets, locks, free lists, ring positions: the runtime key); see
//! [`Region::values_range`] and [`Region::internals_range`].
//!
//! | type | values part (extension key) | internals part (runtime key) |
//! |---|---|---|
//! | array, percpu_array | element `i`, CPU `c` at `i × slot + c × stride` | a sequence lock per element (and CPU) |
//! | hash, percpu_hash, lru_hash, lru_percpu_hash | preallocated element values | buckets (seqlock + head), elements (key, links, LRU stamp), free list |
//! | lpm_trie | entry values | prefix index, length bitmap, free stack, entries |
//! | ringbuf | the data area records are written into | producer/consumer positions, reservation lock, futex word |
//! | perf_event_array, prog_array, queue, stack | — | rings / program slots / value slots |
//!
//! (`stride` = value size rounded up to 8, `slot` = `stride × CPUs` for
//! per-CPU maps, else `stride`; see [`RawMap::values_ptr`],
//! [`RawMap::slot_size`], [`RawMap::value_stride`] for inlined array
//! lookups.)
//!
//! Two layers:
//! - [`RawMap`]: the program-side operations the helpers call with raw
//!   pointers (`lookup`, `update`, `delete`, `push`/`pop`/`peek`,
//!   `ringbuf_*`, `perf_event_output`, `prog_array_get`), returning
//!   pointers or kernel-style negative errnos;
//! - [`Map`] and the typed views in [`typed`]: the safe userspace API.
//!
//! ```
//! use pkbpf_maps::{MapDef, MapType, RegionBuilder, typed::HashMap};
//! let mut b = RegionBuilder::new();
//! b.add(MapDef::new("counts", MapType::Hash, 4, 8, 128))?;
//! let region = b.build()?;
//! let map = region.map("counts")?;
//! let counts = HashMap::<u32, u64>::try_from(&map)?;
//! counts.insert(&7, &42, 0)?;
//! assert_eq!(counts.get(&7)?, Some(42));
//! # Ok::<(), pkbpf_maps::MapError>(())
//! ```
#![deny(missing_docs)]

pub mod cpu;
mod error;
mod hash;
mod lpm;
mod map;
mod raw;
mod region;
mod ring;
mod sync;
pub mod typed;
pub mod types;

pub use error::MapError;
pub use hash::lru_batch;
pub use map::{set_access_gate, AccessGate, Keys, Map, PerfConsumer, RingBufConsumer};
pub use raw::{RawMap, BPF_ANY, BPF_EXIST, BPF_F_CURRENT_CPU, BPF_NOEXIST};
pub use region::{
    MapDef, MapSet, MemRange, Region, RegionBuilder, BPF_F_RDONLY_PROG, LPM_DATA_SIZE_MAX,
    MAX_MAP_BYTES, MAX_NAME_LEN, MAX_PERCPU_VALUE_SIZE, MAX_VALUE_SIZE, PERF_RING_BYTES,
};
pub use ring::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
pub use types::MapType;
