//! The verifier's output: the program together with what was proven about it.
//! Only the verifier constructs it (private fields), so holding one means the
//! program was accepted.

use super::env::MapDesc;
use crate::isa::Insn;
use std::collections::BTreeSet;

/// One function of the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subprog {
    /// Entry slot.
    pub entry: usize,
    /// Bytes of stack the function uses (deepest access below its frame pointer).
    pub stack_depth: usize,
}

/// Exploration statistics, as the kernel prints them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Instructions processed over all paths.
    pub processed: u64,
    /// Most states kept at one instruction.
    pub max_states_per_insn: usize,
    /// States kept in all.
    pub total_states: usize,
    /// Most states kept at once.
    pub peak_states: usize,
    /// Paths cut because a kept state subsumed them.
    pub pruned: u64,
}

/// Per-instruction facts collected over every path (merged conservatively).
#[derive(Clone, Debug, Default)]
pub(crate) struct Facts {
    /// The register written by the instruction has its upper 32 bits zero on every path.
    pub upper_zero: Vec<Option<bool>>,
    /// For map_lookup_elem call sites: the map, when every path uses the same one.
    pub lookup_map: Vec<Option<Option<u32>>>,
    /// Deepest stack offset per function.
    pub stack_depth: Vec<usize>,
    /// Helpers called.
    pub helpers: BTreeSet<i32>,
    /// Instructions reached.
    pub visited: Vec<bool>,
    /// `bpf_loop` calls: (subprog making the call, call pc, callback subprog).
    pub callbacks: BTreeSet<(usize, usize, usize)>,
}

impl Facts {
    pub(crate) fn new(len: usize, subprogs: usize) -> Facts {
        Facts {
            upper_zero: vec![None; len],
            lookup_map: vec![None; len],
            stack_depth: vec![0; subprogs],
            helpers: BTreeSet::new(),
            visited: vec![false; len],
            callbacks: BTreeSet::new(),
        }
    }

    pub(crate) fn note_upper(&mut self, pc: usize, zero: bool) {
        let e = &mut self.upper_zero[pc];
        *e = Some(e.unwrap_or(true) && zero);
    }

    pub(crate) fn note_lookup(&mut self, pc: usize, map: Option<u32>) {
        let e = &mut self.lookup_map[pc];
        *e = Some(match *e {
            None => map,
            Some(m) if m == map => m,
            Some(_) => None,
        });
    }

    pub(crate) fn note_stack(&mut self, subprog: usize, off: i64) {
        let d = (-off).max(0) as usize;
        let e = &mut self.stack_depth[subprog];
        *e = (*e).max(d);
    }
}

/// A program the verifier accepted, with the facts later stages use.
///
/// Every memory access of an accepted program is proven in bounds on every
/// path (the verifier rejects any access it cannot prove), so
/// [`VerifiedProgram::access_in_bounds`] holds for every load, store and
/// atomic instruction: engines need no runtime bounds checks.
#[derive(Clone, Debug)]
pub struct VerifiedProgram {
    insns: Vec<Insn>,
    subprogs: Vec<Subprog>,
    helpers: BTreeSet<i32>,
    upper_zero: Vec<bool>,
    inline_lookups: Vec<(usize, u32)>,
    percpu_lookups: Vec<(usize, u32)>,
    maps: Vec<MapDesc>,
    stats: Stats,
}

impl VerifiedProgram {
    pub(crate) fn new(
        insns: Vec<Insn>,
        subprogs: Vec<Subprog>,
        facts: Facts,
        maps: Vec<MapDesc>,
        stats: Stats,
    ) -> VerifiedProgram {
        let inline_lookups = facts
            .lookup_map
            .iter()
            .enumerate()
            .filter_map(|(pc, m)| match m {
                Some(Some(map))
                    if maps.get(*map as usize).map(|d| d.map_type) == Some(MapDesc::ARRAY) =>
                {
                    Some((pc, *map))
                }
                _ => None,
            })
            .collect();
        // The same for PERCPU_ARRAY (map type 6) maps.
        let percpu_lookups = facts
            .lookup_map
            .iter()
            .enumerate()
            .filter_map(|(pc, m)| match m {
                Some(Some(map)) if maps.get(*map as usize).map(|d| d.map_type) == Some(6) => {
                    Some((pc, *map))
                }
                _ => None,
            })
            .collect();
        VerifiedProgram {
            insns,
            subprogs,
            helpers: facts.helpers,
            upper_zero: facts
                .upper_zero
                .iter()
                .map(|z| z.unwrap_or(false))
                .collect(),
            inline_lookups,
            percpu_lookups,
            maps,
            stats,
        }
    }

    /// The instructions, one per slot.
    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }

    /// The functions (the first is the main program at slot 0).
    pub fn subprogs(&self) -> &[Subprog] {
        &self.subprogs
    }

    /// The deepest stack any single function uses.
    pub fn max_stack_depth(&self) -> usize {
        self.subprogs
            .iter()
            .map(|s| s.stack_depth)
            .max()
            .unwrap_or(0)
    }

    /// Helper ids the program calls.
    pub fn helpers_used(&self) -> &BTreeSet<i32> {
        &self.helpers
    }

    /// Whether the memory access at `pc` is proven in bounds: true for every
    /// reachable load, store and atomic of an accepted program.
    pub fn access_in_bounds(&self, pc: usize) -> bool {
        matches!(
            self.insns.get(pc),
            Some(Insn::Load { .. } | Insn::Store { .. } | Insn::Atomic { .. })
        )
    }

    /// Whether the register written at `pc` has its upper 32 bits zero on
    /// every path (so a 32-bit result needs no explicit zero-extension).
    pub fn upper_half_zero(&self, pc: usize) -> bool {
        self.upper_zero.get(pc).copied().unwrap_or(false)
    }

    /// `map_lookup_elem` call sites whose map is always the same ARRAY map:
    /// (call slot, map index). The JIT may inline them.
    pub fn inlinable_lookups(&self) -> &[(usize, u32)] {
        &self.inline_lookups
    }

    /// `map_lookup_elem` call sites whose map is always the same
    /// PERCPU_ARRAY map: (call slot, map index). The JIT may inline them
    /// (bounds check, the calling CPU's index, multiply-add).
    pub fn inlinable_percpu_lookups(&self) -> &[(usize, u32)] {
        &self.percpu_lookups
    }

    /// The maps the program was verified against.
    pub fn maps(&self) -> &[MapDesc] {
        &self.maps
    }

    /// Exploration statistics.
    pub fn stats(&self) -> Stats {
        self.stats
    }
}
