//! What the verifier knows about a program's surroundings: its context, its
//! maps, its helpers.

use super::ctx::CtxDesc;
use super::helpers::HelperTable;

/// One map the program references (by index, as `lddw` pseudo immediates).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDesc {
    /// Kernel map type number (see `pkbpf_maps::types::MapType`).
    pub map_type: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Maximum number of entries.
    pub max_entries: u32,
    /// Frozen (`.rodata`): values are read-only to the program.
    pub read_only: bool,
}

impl MapDesc {
    /// `BPF_MAP_TYPE_ARRAY`.
    pub const ARRAY: u32 = 2;
    /// `BPF_MAP_TYPE_PROG_ARRAY`.
    pub const PROG_ARRAY: u32 = 3;
    /// `BPF_MAP_TYPE_RINGBUF`.
    pub const RINGBUF: u32 = 27;

    /// A writable map description.
    pub fn new(map_type: u32, key_size: u32, value_size: u32, max_entries: u32) -> MapDesc {
        MapDesc {
            map_type,
            key_size,
            value_size,
            max_entries,
            read_only: false,
        }
    }
}

/// Everything the verifier needs besides the instructions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramEnv {
    /// What `r1` points to.
    pub ctx: CtxDesc,
    /// Maps, indexed by `lddw` pseudo immediates.
    pub maps: Vec<MapDesc>,
    /// Callable helpers.
    pub helpers: HelperTable,
    /// Source lines (`insn`, text) from BTF line info, sorted by insn.
    pub line_info: Vec<(usize, String)>,
    /// Whether loops (back-edges) are allowed; explored within the budget.
    pub allow_loops: bool,
}

impl ProgramEnv {
    /// An environment with the given context, no maps, the built-in helpers.
    pub fn new(ctx: CtxDesc) -> ProgramEnv {
        ProgramEnv {
            ctx,
            maps: Vec::new(),
            helpers: HelperTable::builtin(),
            line_info: Vec::new(),
            allow_loops: true,
        }
    }

    /// The conformance runner's environment: `r1` = `mem_size` bytes, `r2` =
    /// their size, the unwind helper as id 5.
    pub fn conformance(mem_size: u32) -> ProgramEnv {
        ProgramEnv::new(CtxDesc::MemWithLen { size: mem_size })
            .with_helpers(HelperTable::conformance())
    }

    /// Adds a map; its index is the number of maps before it.
    pub fn with_map(mut self, map: MapDesc) -> ProgramEnv {
        self.maps.push(map);
        self
    }

    /// Replaces the helper table.
    pub fn with_helpers(mut self, helpers: HelperTable) -> ProgramEnv {
        self.helpers = helpers;
        self
    }

    /// Sets the source lines.
    pub fn with_line_info(mut self, lines: Vec<(usize, String)>) -> ProgramEnv {
        self.line_info = lines;
        self
    }

    /// Allows or forbids loops.
    pub fn with_loops(mut self, allow: bool) -> ProgramEnv {
        self.allow_loops = allow;
        self
    }
}
