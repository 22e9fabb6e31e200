//! Map type identifiers, as numbered in linux/bpf.h (`enum bpf_map_type`).

use std::fmt;

/// A map type, with the kernel's numbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MapType {
    /// `BPF_MAP_TYPE_HASH`
    #[doc(alias = "BPF_MAP_TYPE_HASH")]
    Hash = 1,
    /// `BPF_MAP_TYPE_ARRAY`
    #[doc(alias = "BPF_MAP_TYPE_ARRAY")]
    Array = 2,
    /// `BPF_MAP_TYPE_PROG_ARRAY`
    #[doc(alias = "BPF_MAP_TYPE_PROG_ARRAY")]
    ProgArray = 3,
    /// `BPF_MAP_TYPE_PERF_EVENT_ARRAY`
    #[doc(alias = "BPF_MAP_TYPE_PERF_EVENT_ARRAY")]
    PerfEventArray = 4,
    /// `BPF_MAP_TYPE_PERCPU_HASH`
    #[doc(alias = "BPF_MAP_TYPE_PERCPU_HASH")]
    PerCpuHash = 5,
    /// `BPF_MAP_TYPE_PERCPU_ARRAY`
    #[doc(alias = "BPF_MAP_TYPE_PERCPU_ARRAY")]
    PerCpuArray = 6,
    /// `BPF_MAP_TYPE_LRU_HASH`
    #[doc(alias = "BPF_MAP_TYPE_LRU_HASH")]
    LruHash = 9,
    /// `BPF_MAP_TYPE_LRU_PERCPU_HASH`
    #[doc(alias = "BPF_MAP_TYPE_LRU_PERCPU_HASH")]
    LruPerCpuHash = 10,
    /// `BPF_MAP_TYPE_LPM_TRIE`
    #[doc(alias = "BPF_MAP_TYPE_LPM_TRIE")]
    LpmTrie = 11,
    /// `BPF_MAP_TYPE_QUEUE`
    #[doc(alias = "BPF_MAP_TYPE_QUEUE")]
    Queue = 22,
    /// `BPF_MAP_TYPE_STACK`
    #[doc(alias = "BPF_MAP_TYPE_STACK")]
    Stack = 23,
    /// `BPF_MAP_TYPE_RINGBUF`
    #[doc(alias = "BPF_MAP_TYPE_RINGBUF")]
    RingBuf = 27,
}

impl MapType {
    /// Every supported type.
    pub const ALL: [MapType; 12] = [
        MapType::Hash,
        MapType::Array,
        MapType::ProgArray,
        MapType::PerfEventArray,
        MapType::PerCpuHash,
        MapType::PerCpuArray,
        MapType::LruHash,
        MapType::LruPerCpuHash,
        MapType::LpmTrie,
        MapType::Queue,
        MapType::Stack,
        MapType::RingBuf,
    ];

    /// The type with kernel number `n`, if pkbpf supports it.
    pub fn from_kernel(n: u32) -> Option<MapType> {
        MapType::ALL.iter().copied().find(|t| *t as u32 == n)
    }

    /// The kernel's name for the type without prefix, as bpftool prints it
    /// (`hash`, `array`, `percpu_hash`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            MapType::Hash => "hash",
            MapType::Array => "array",
            MapType::ProgArray => "prog_array",
            MapType::PerfEventArray => "perf_event_array",
            MapType::PerCpuHash => "percpu_hash",
            MapType::PerCpuArray => "percpu_array",
            MapType::LruHash => "lru_hash",
            MapType::LruPerCpuHash => "lru_percpu_hash",
            MapType::LpmTrie => "lpm_trie",
            MapType::Queue => "queue",
            MapType::Stack => "stack",
            MapType::RingBuf => "ringbuf",
        }
    }

    /// Whether values are stored once per possible CPU.
    pub const fn is_per_cpu(self) -> bool {
        matches!(
            self,
            MapType::PerCpuArray | MapType::PerCpuHash | MapType::LruPerCpuHash
        )
    }
}

impl fmt::Display for MapType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
