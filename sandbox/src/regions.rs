//! Pointer validation for helpers (the confused-deputy defence).
//!
//! A helper that runs in the trusted domain T can reach every key, so the
//! hardware no longer stops it from reading or writing the runtime's or
//! another extension's memory on an extension's behalf. Before it touches a
//! pointer argument it asks the calling extension's [`Regions`] whether the
//! whole `[addr, addr + len)` lies inside one region the extension owns, with
//! the access it needs.

use std::fmt;

/// One region an extension may access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub start: usize,
    /// Length in bytes (non-zero).
    pub len: usize,
    /// Whether helpers may write it on the extension's behalf.
    pub writable: bool,
}

/// A rejected pointer argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("pointer {addr:#x}+{len} ({access}) is outside the extension's regions")]
pub struct PointerRejected {
    /// The pointer.
    pub addr: usize,
    /// The length asked for.
    pub len: usize,
    /// The access asked for.
    pub access: Access,
}

/// Read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reading through the pointer.
    Read,
    /// Writing through the pointer.
    Write,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
        })
    }
}

/// The regions of one extension: its map values, globals, the context and
/// stack of the current invocation. Regions may not overlap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Regions {
    /// Sorted by start, non-overlapping.
    sorted: Vec<Region>,
}

impl Regions {
    /// No regions: every pointer is rejected.
    pub fn new() -> Regions {
        Regions::default()
    }

    /// Adds a region; an empty, wrapping or overlapping one is refused
    /// (returned as the rejection of that range).
    pub fn add(&mut self, start: usize, len: usize, writable: bool) -> Result<(), PointerRejected> {
        let reject = PointerRejected {
            addr: start,
            len,
            access: if writable {
                Access::Write
            } else {
                Access::Read
            },
        };
        let end = start.checked_add(len).filter(|_| len > 0).ok_or(reject)?;
        let i = self.sorted.partition_point(|r| r.start < start);
        if i > 0 {
            let p = self.sorted[i - 1];
            if p.start + p.len > start {
                return Err(reject);
            }
        }
        if let Some(n) = self.sorted.get(i) {
            if n.start < end {
                return Err(reject);
            }
        }
        self.sorted.insert(
            i,
            Region {
                start,
                len,
                writable,
            },
        );
        Ok(())
    }

    /// The regions, sorted by start.
    pub fn regions(&self) -> &[Region] {
        &self.sorted
    }

    /// `Ok` when `[addr, addr + len)` lies inside one region allowing
    /// `access`. A zero length is allowed anywhere (nothing is touched).
    pub fn check(&self, addr: usize, len: usize, access: Access) -> Result<(), PointerRejected> {
        if len == 0 {
            return Ok(());
        }
        let reject = PointerRejected { addr, len, access };
        let end = addr.checked_add(len).ok_or(reject)?;
        let i = self.sorted.partition_point(|r| r.start <= addr);
        let r = i.checked_sub(1).map(|j| self.sorted[j]).ok_or(reject)?;
        let inside = end <= r.start + r.len;
        let allowed = access == Access::Read || r.writable;
        if inside && allowed {
            Ok(())
        } else {
            Err(reject)
        }
    }
}
