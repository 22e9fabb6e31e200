//! Wiring DESIGN.md's MPK domain model into loads and calls.
//!
//! With `--sandbox=mpk` (or `auto` on PKU hardware) the runtime holds the
//! runtime key R and gives each loaded object its own key Eᵢ:
//!
//! - the region's header and every map's internals carry R, every map's
//!   values pages carry Eᵢ ([`protect_region`]);
//! - JIT code runs behind an entry gate into Xᵢ (key 0 + Eᵢ);
//! - helpers that walk keyed memory enter T through a [`DomainGuard`] and
//!   first check every pointer they were given with [`check_ptr`], which
//!   allows exactly what Xᵢ itself may touch (the object's own values, and
//!   memory that carries no pkbpf key);
//! - host-side access through the userspace map API enters T (the maps
//!   crate's access gate, installed by [`install_map_gate`]).
//!
//! Without PKU none of this exists: no [`ProtectionKey`] can be made, so an
//! object has no [`ObjectKeys`] and every check passes through.

use std::sync::RwLock;

use pkbpf_maps::Region;
use pkbpf_sandbox::regions::{Access, Regions};
use pkbpf_sandbox::{Domain, DomainGuard, ProtectionKey};

use super::RuntimeError;

/// The keys of one loaded object.
#[derive(Debug, Clone)]
pub(crate) struct ObjectKeys {
    /// Its extension key Eᵢ.
    pub key: ProtectionKey,
    /// Its own values ranges (what Xᵢ may touch besides key 0).
    pub own: Regions,
}

/// A range carrying a pkbpf key (R or some Eᵢ).
#[derive(Debug, Clone, Copy)]
struct KeyedRange {
    start: usize,
    len: usize,
}

/// Every range pkbpf ever keyed (for the confused-deputy check). Entries
/// are never removed: a region outlives its object while a `Map` handle
/// holds it, and a stale entry can only make a check refuse, never allow.
static KEYED: RwLock<Vec<KeyedRange>> = RwLock::new(Vec::new());

/// Installs the maps crate's access gate (host map API → T) once.
pub(crate) fn install_map_gate() {
    fn enter_trusted() -> Box<dyn std::any::Any> {
        Box::new(DomainGuard::enter(Domain::trusted()))
    }
    let _ = pkbpf_maps::set_access_gate(enter_trusted);
}

/// Tags `region`: header and internals with `runtime`, values with `ext`;
/// records the ranges for [`check_ptr`]; returns the object's keys.
pub(crate) fn protect_region(
    region: &Region,
    runtime: ProtectionKey,
    ext: ProtectionKey,
) -> Result<ObjectKeys, RuntimeError> {
    let mut own = Regions::new();
    let mut keyed = Vec::new();
    let header = region.header_range();
    let mut ranges = vec![("<header>".to_string(), header, None)];
    for (i, def) in region.defs().enumerate() {
        if let Some(r) = region.internals_range(i) {
            ranges.push((def.name.clone(), r, None));
        }
        if let Some(r) = region.values_range(i) {
            ranges.push((def.name.clone(), r, Some(ext)));
        }
    }
    for (name, r, owner) in ranges {
        if r.len == 0 {
            continue;
        }
        let key = owner.unwrap_or(runtime);
        // SAFETY: the range is part of the region's own mapping, which the
        // object owns; afterwards only domains allowing `key` reach it, and
        // every pkbpf path to it (JIT code in Xᵢ, helpers and the map API
        // in T) allows it.
        unsafe { pkbpf_sandbox::protect(r.addr, r.len, key) }.map_err(|source| {
            RuntimeError::Protect {
                map: name.clone(),
                source,
            }
        })?;
        if owner.is_some() {
            own.add(r.addr, r.len, true)
                .map_err(|_| RuntimeError::Protect {
                    map: name.clone(),
                    source: pkbpf_sandbox::SandboxError::Unaligned {
                        addr: r.addr,
                        len: r.len,
                    },
                })?;
        }
        keyed.push(KeyedRange {
            start: r.addr,
            len: r.len,
        });
    }
    KEYED
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .extend(keyed);
    Ok(ObjectKeys { key: ext, own })
}

/// Whether a helper may use `[addr, addr + len)` on behalf of the object
/// with `keys`: inside its own values (writes too), or overlapping no range
/// that carries a pkbpf key (key-0 memory, which Xᵢ reaches anyway; keeping
/// programs out of the host's is the verifier's job). Pointers into R or
/// another extension's values are refused. Without keys everything passes.
pub(crate) fn check_ptr(keys: Option<&ObjectKeys>, addr: u64, len: u64, access: Access) -> bool {
    let Some(k) = keys else {
        return true;
    };
    let table = KEYED.read().unwrap_or_else(|e| e.into_inner());
    allowed(&k.own, &table, addr as usize, len as usize, access)
}

/// [`check_ptr`] against an explicit table of keyed ranges.
fn allowed(own: &Regions, keyed: &[KeyedRange], addr: usize, len: usize, access: Access) -> bool {
    len == 0 || own.check(addr, len, access).is_ok() || !overlaps(keyed, addr, len)
}

/// Whether `[addr, addr + len)` (non-empty) touches a range of `keyed`; a
/// wrapping range counts as touching.
fn overlaps(keyed: &[KeyedRange], addr: usize, len: usize) -> bool {
    let Some(end) = addr.checked_add(len) else {
        return true;
    };
    keyed
        .iter()
        .any(|r| addr < r.start + r.len && r.start < end)
}

/// Whether `[addr, addr + len)` touches a page carrying a pkbpf key (R or
/// any extension's); a wrapping range counts as touching.
pub(crate) fn overlaps_keyed(addr: u64, len: u64) -> bool {
    let table = KEYED.read().unwrap_or_else(|e| e.into_inner());
    len != 0 && overlaps(&table, addr as usize, len as usize)
}

/// Enters T for a helper that touches keyed memory, when the object has
/// keys (the helper gate Xᵢ → T → Xᵢ: the guard restores Xᵢ on drop).
pub(crate) fn helper_gate(keys: Option<&ObjectKeys>) -> Option<DomainGuard> {
    keys.map(|_| DomainGuard::enter(Domain::trusted()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Own values at 0x10000 (2 pages), another extension's at 0x20000, R
    /// at 0x30000.
    fn layout() -> (Regions, Vec<KeyedRange>) {
        let mut own = Regions::new();
        own.add(0x10000, 0x2000, true).unwrap();
        let keyed = vec![
            KeyedRange {
                start: 0x10000,
                len: 0x2000,
            },
            KeyedRange {
                start: 0x20000,
                len: 0x1000,
            },
            KeyedRange {
                start: 0x30000,
                len: 0x1000,
            },
        ];
        (own, keyed)
    }

    #[test]
    fn helpers_may_use_own_values_and_unkeyed_memory_only() {
        let (own, keyed) = layout();
        let ok = |addr, len, access| allowed(&own, &keyed, addr, len, access);
        // Own values, reads and writes, up to the last byte.
        assert!(ok(0x10000, 8, Access::Write));
        assert!(ok(0x11ff8, 8, Access::Read));
        // Key-0 memory (stack, context) between the keyed ranges.
        assert!(ok(0x18000, 64, Access::Write));
        // Another extension's values, the runtime's pages: refused, also
        // when only one byte crosses in.
        assert!(!ok(0x20000, 8, Access::Read));
        assert!(!ok(0x30ff8, 8, Access::Write));
        assert!(!ok(0x1fff8, 9, Access::Read));
        assert!(!ok(0x2fffc, 8, Access::Read));
        // Own values running into the next (key-0) page is not "own" and
        // overlaps a keyed range: refused.
        assert!(!ok(0x11ffc, 8, Access::Read));
        // A range that wraps the address space, and one covering everything.
        assert!(!ok(usize::MAX - 3, 8, Access::Read));
        assert!(!ok(0, 0x40000, Access::Read));
        // Zero bytes touch nothing.
        assert!(ok(0x30000, 0, Access::Write));
    }

    #[test]
    fn without_keys_every_pointer_passes_the_check() {
        assert!(check_ptr(None, 0x30000, 8, Access::Write));
    }
}
