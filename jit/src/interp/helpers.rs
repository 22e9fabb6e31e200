//! Helper calls: the table a caller supplies, and what a helper may touch.

use std::collections::BTreeMap;

use pkbpf_verifier::isa::LdPseudo;

use super::memory::{AccessError, Memory, Region};

/// Why a helper (or a pseudo-`lddw` resolution) failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HelperError {
    /// No helper with this id is available.
    #[error("unknown helper {id}")]
    Unknown {
        /// The helper id.
        id: u32,
    },
    /// The helper touched memory it may not.
    #[error("helper memory access refused: {0}")]
    Access(#[from] AccessError),
    /// The helper refused its arguments.
    #[error("{reason}")]
    Failed {
        /// What went wrong.
        reason: String,
    },
    /// The `lddw` pseudo form cannot be resolved here.
    #[error("lddw pseudo form {kind:?} (imm {imm}) is not supported here")]
    UnsupportedPseudo {
        /// The form.
        kind: LdPseudo,
        /// Its first immediate.
        imm: i32,
    },
}

/// What a helper gets besides its arguments: checked access to the program's
/// memory, and a way to end the program.
#[derive(Debug)]
pub struct HelperCtx<'m, 'a> {
    mem: &'m mut Memory<'a>,
    exit: Option<u64>,
}

impl<'m, 'a> HelperCtx<'m, 'a> {
    pub(crate) fn new(mem: &'m mut Memory<'a>) -> Self {
        HelperCtx { mem, exit: None }
    }

    pub(crate) fn exit_requested(&self) -> Option<u64> {
        self.exit
    }

    /// Reads program memory (checked like a program load, stack bytes must be
    /// initialised).
    pub fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), AccessError> {
        self.mem.read(addr, out)
    }

    /// Writes program memory (checked like a program store).
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), AccessError> {
        self.mem.write(addr, data)
    }

    /// The memory model itself (e.g. to check a range without copying).
    pub fn memory(&self) -> &Memory<'a> {
        self.mem
    }

    /// Registers a region the program may access from now on (e.g. the map
    /// value a lookup returns a pointer to).
    ///
    /// # Safety
    ///
    /// As [`Memory::add_region`]: the range must stay valid (for writes too
    /// when writable) for as long as the memory is used.
    pub unsafe fn add_region(&mut self, region: Region) {
        // SAFETY: the caller upholds `add_region`'s contract (see above).
        unsafe { self.mem.add_region(region) }
    }

    /// Ends the program after this helper returns, with `r0 = value`
    /// (bpf_conformance's "unwind").
    pub fn exit(&mut self, value: u64) {
        self.exit = Some(value);
    }
}

/// The helpers a program may call, by id.
pub trait Helpers {
    /// Calls helper `id` with `r1..=r5`; the result goes to `r0`.
    fn call(
        &mut self,
        id: u32,
        args: [u64; 5],
        ctx: &mut HelperCtx<'_, '_>,
    ) -> Result<u64, HelperError>;

    /// Resolves an `lddw` pseudo form (map fd, map value, ...) to the value
    /// the destination register gets. By default none is supported.
    fn resolve_pseudo(
        &mut self,
        kind: LdPseudo,
        imm: i32,
        next_imm: i32,
    ) -> Result<u64, HelperError> {
        let _ = next_imm;
        Err(HelperError::UnsupportedPseudo { kind, imm })
    }
}

/// No helpers at all: every call is [`HelperError::Unknown`].
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHelpers;

impl Helpers for NoHelpers {
    fn call(
        &mut self,
        id: u32,
        _: [u64; 5],
        _: &mut HelperCtx<'_, '_>,
    ) -> Result<u64, HelperError> {
        Err(HelperError::Unknown { id })
    }
}

/// A helper function as [`HelperTable`] stores it.
pub type HelperFn = Box<dyn FnMut([u64; 5], &mut HelperCtx<'_, '_>) -> Result<u64, HelperError>>;

/// A table of helper closures by id.
#[derive(Default)]
pub struct HelperTable {
    fns: BTreeMap<u32, HelperFn>,
}

impl std::fmt::Debug for HelperTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HelperTable")
            .field("ids", &self.fns.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl HelperTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) helper `id`.
    pub fn insert(
        &mut self,
        id: u32,
        f: impl FnMut([u64; 5], &mut HelperCtx<'_, '_>) -> Result<u64, HelperError> + 'static,
    ) -> &mut Self {
        self.fns.insert(id, Box::new(f));
        self
    }

    /// The table with bpf_conformance's helpers: id 5, "unwind", returns `r1`
    /// and, when `r1` is 0, ends the program with result 0.
    pub fn conformance() -> Self {
        let mut t = Self::new();
        t.insert(CONFORMANCE_UNWIND, |args, ctx| {
            if args[0] == 0 {
                ctx.exit(0);
            }
            Ok(args[0])
        });
        t
    }
}

/// bpf_conformance's "unwind" helper id.
pub const CONFORMANCE_UNWIND: u32 = 5;

impl Helpers for HelperTable {
    fn call(
        &mut self,
        id: u32,
        args: [u64; 5],
        ctx: &mut HelperCtx<'_, '_>,
    ) -> Result<u64, HelperError> {
        match self.fns.get_mut(&id) {
            Some(f) => f(args, ctx),
            None => Err(HelperError::Unknown { id }),
        }
    }
}
