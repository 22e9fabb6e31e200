//! The disabled backend: the same names as `enabled.rs`, for builds without
//! PKU support (not x86-64 Linux, or `--cfg pkbpf_force_disabled_mpk`).
//! [`ProtectionKey`] is uninhabited, so everything that needs a key is
//! provably unreachable.

use std::marker::PhantomData;

use super::{PkuMissing, PkuStatus, SandboxError};

/// Always [`PkuStatus::Missing`], saying why this build has no backend.
pub fn detect() -> PkuStatus {
    if cfg!(pkbpf_force_disabled_mpk) {
        PkuStatus::Missing(PkuMissing::ForcedOff)
    } else {
        PkuStatus::Missing(PkuMissing::Platform)
    }
}

/// Always false.
pub fn is_active() -> bool {
    false
}

/// A protection key; cannot exist in this backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtectionKey {}

impl ProtectionKey {
    /// The key's number (unreachable).
    pub fn as_u32(self) -> u32 {
        match self {}
    }
}

/// Key allocation; always [`SandboxError::MpkUnavailable`] here.
#[derive(Debug)]
pub struct Keys(());

impl Keys {
    /// Fails: no keys in this backend.
    pub fn alloc_runtime() -> Result<ProtectionKey, SandboxError> {
        Err(unavailable())
    }

    /// Fails: no keys in this backend.
    pub fn alloc_extension() -> Result<ProtectionKey, SandboxError> {
        Err(unavailable())
    }

    /// Always 0.
    pub fn in_use() -> u32 {
        0
    }
}

fn unavailable() -> SandboxError {
    match detect() {
        PkuStatus::Missing(missing) => SandboxError::MpkUnavailable { missing },
        PkuStatus::Available => SandboxError::MpkUnavailable {
            missing: PkuMissing::Platform,
        },
    }
}

/// Unreachable: no key can be given.
///
/// # Safety
///
/// As in the enabled backend (the range must be owned by the caller).
pub unsafe fn protect(_addr: usize, _len: usize, key: ProtectionKey) -> Result<(), SandboxError> {
    match key {}
}

/// A domain (a PKRU value that is never loaded in this backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Domain(u32);

impl Domain {
    /// H: key 0 only.
    pub const fn host() -> Domain {
        Domain(0x5555_5554)
    }

    /// Unreachable: no key can be given.
    pub const fn extension(key: ProtectionKey) -> Domain {
        match key {}
    }

    /// T: every key.
    pub const fn trusted() -> Domain {
        Domain(0)
    }

    /// The PKRU value.
    pub const fn pkru(self) -> u32 {
        self.0
    }

    /// Unreachable: no key can be given.
    pub const fn allows(self, key: ProtectionKey) -> bool {
        match key {}
    }
}

/// The scoped gate; a no-op in this backend.
#[derive(Debug)]
#[must_use = "the domain is left when the guard is dropped"]
pub struct DomainGuard {
    saved: Option<u32>,
    _not_send: PhantomData<*const ()>,
}

impl DomainGuard {
    /// Does nothing (no PKRU to switch).
    pub fn enter(_domain: Domain) -> DomainGuard {
        DomainGuard {
            saved: None,
            _not_send: PhantomData,
        }
    }

    /// Always `None`.
    pub fn saved(&self) -> Option<u32> {
        self.saved
    }
}

/// Always `None`.
pub fn current_pkru() -> Option<u32> {
    None
}
