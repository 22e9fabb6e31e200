//! The hardware backend (x86-64 Linux). Even here nothing executes `WRPKRU`
//! unless [`detect`] found PKU; without it gates only call through.

use std::marker::PhantomData;
use std::sync::{Mutex, OnceLock};

use super::{pkru, sys, PkuMissing, PkuStatus, SandboxError};

/// Whether protection keys work on this machine: CPUID.(EAX=7,ECX=0):ECX
/// bit 3 (PKU) and bit 4 (OSPKE), and a `pkey_alloc` that succeeds (the probe
/// key is freed at once; no page ever carried it). ENOSPC, EINVAL and ENOSYS
/// all mean "no pkeys". No vendor check: AMD Zen 3+ and QEMU's `-cpu max`
/// (which reports an AMD vendor) count. The answer is computed once and
/// cached; the CLI, the embedding API and the VM runner all ask here.
pub fn detect() -> PkuStatus {
    static STATUS: OnceLock<PkuStatus> = OnceLock::new();
    *STATUS.get_or_init(probe)
}

fn probe() -> PkuStatus {
    use core::arch::x86_64::{__cpuid, __cpuid_count};
    let max_leaf = __cpuid(0).eax;
    if max_leaf < 7 {
        return PkuStatus::Missing(PkuMissing::CpuidLeaf7);
    }
    // Leaf 7 is within the maximum leaf just read.
    let ecx = __cpuid_count(7, 0).ecx;
    if ecx & (1 << 3) == 0 {
        return PkuStatus::Missing(PkuMissing::CpuidPku);
    }
    if ecx & (1 << 4) == 0 {
        return PkuStatus::Missing(PkuMissing::CpuidOspke);
    }
    match sys::pkey_alloc(0) {
        Ok(key) => {
            // SAFETY: the key was allocated a moment ago and never given to
            // pkey_mprotect, so no page carries it.
            let _ = unsafe { sys::pkey_free(key) };
            PkuStatus::Available
        }
        Err(errno) => PkuStatus::Missing(PkuMissing::PkeyAlloc { errno }),
    }
}

/// True when protection keys are in use on this machine ([`detect`] found
/// them). Gates execute `WRPKRU` only when this holds.
pub fn is_active() -> bool {
    detect().is_available()
}

/// A hardware protection key that pkbpf allocated. It exists only where
/// [`detect`] succeeded (the disabled backend's is uninhabited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProtectionKey(u32);

impl ProtectionKey {
    /// The key's number (1..=15).
    pub fn as_u32(self) -> u32 {
        self.0
    }
}

/// `pkey_alloc` access right: deny data access (`PKEY_DISABLE_ACCESS`).
const PKEY_DISABLE_ACCESS: u32 = 1;

struct KeyState {
    runtime: Option<ProtectionKey>,
    in_use: u32,
}

static KEYS: Mutex<KeyState> = Mutex::new(KeyState {
    runtime: None,
    in_use: 0,
});

/// Allocation of pkbpf's keys.
///
/// Policy:
/// - one runtime key R per process ([`Keys::alloc_runtime`] is idempotent);
/// - one key Eᵢ per loaded object ([`Keys::alloc_extension`]);
/// - **keys are never freed**: a key lives as long as the process, because a
///   freed key number would be handed out again while pages may still carry
///   it (pkey use-after-free). Unloading an object leaves its key unused;
/// - when the kernel has no key left (`ENOSPC`; x86 has 15 besides key 0, and
///   libc or the host may hold some), allocation returns
///   [`SandboxError::KeysExhausted`] and the load that asked must fail. pkbpf
///   never shares a key between extensions behind the user's back.
///
/// New keys start access-disabled in the calling thread's PKRU (and threads
/// created later inherit it; threads that exist already never enabled them),
/// so the host domain never sees them.
#[derive(Debug)]
pub struct Keys(());

impl Keys {
    /// The runtime key R (allocated on the first call, then the same key).
    pub fn alloc_runtime() -> Result<ProtectionKey, SandboxError> {
        let mut st = lock_keys();
        if let Some(k) = st.runtime {
            return Ok(k);
        }
        let k = alloc_locked(&mut st)?;
        st.runtime = Some(k);
        Ok(k)
    }

    /// A fresh extension key Eᵢ.
    pub fn alloc_extension() -> Result<ProtectionKey, SandboxError> {
        let mut st = lock_keys();
        alloc_locked(&mut st)
    }

    /// How many keys pkbpf holds (they are never released).
    pub fn in_use() -> u32 {
        lock_keys().in_use
    }
}

fn lock_keys() -> std::sync::MutexGuard<'static, KeyState> {
    // A poisoned lock only means a panic elsewhere; the counters stay valid.
    KEYS.lock().unwrap_or_else(|e| e.into_inner())
}

fn alloc_locked(st: &mut KeyState) -> Result<ProtectionKey, SandboxError> {
    if let PkuStatus::Missing(missing) = detect() {
        return Err(SandboxError::MpkUnavailable { missing });
    }
    match sys::pkey_alloc(PKEY_DISABLE_ACCESS) {
        Ok(k) => {
            st.in_use += 1;
            Ok(ProtectionKey(k))
        }
        Err(libc::ENOSPC) => Err(SandboxError::KeysExhausted { in_use: st.in_use }),
        Err(errno) => Err(SandboxError::Syscall {
            call: "pkey_alloc",
            errno,
        }),
    }
}

/// Tags the page-aligned range `addr..addr+len` with `key`, readable and
/// writable in domains that allow `key` (`pkey_mprotect(2)`).
///
/// # Safety
///
/// The range must be mapped memory the caller owns. Afterwards it is
/// reachable only from a domain that allows `key` (an access from another
/// faults with SEGV_PKUERR).
pub unsafe fn protect(addr: usize, len: usize, key: ProtectionKey) -> Result<(), SandboxError> {
    let page = page_size();
    if !addr.is_multiple_of(page) || !len.is_multiple_of(page) {
        return Err(SandboxError::Unaligned { addr, len });
    }
    // SAFETY: the caller owns the range (this function's contract).
    unsafe { sys::pkey_mprotect(addr, len, libc::PROT_READ | libc::PROT_WRITE, key.0) }.map_err(
        |errno| SandboxError::Syscall {
            call: "pkey_mprotect",
            errno,
        },
    )
}

pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// A domain: the PKRU value a thread runs with (DESIGN.md's table).
///
/// Denied keys get only their access-disable bit, as the kernel's own
/// default PKRU does, so [`Domain::host`] equals the PKRU a signal handler
/// starts with (`0x5555_5554`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Domain(u32);

impl Domain {
    /// H: key 0 only.
    pub const fn host() -> Domain {
        Domain(pkru::host_value())
    }

    /// Xᵢ: key 0 and the extension's key `key`.
    pub const fn extension(key: ProtectionKey) -> Domain {
        Domain(pkru::extension_value(key.0))
    }

    /// T: every key (helpers, map internals, the loader API).
    pub const fn trusted() -> Domain {
        Domain(pkru::TRUSTED_VALUE)
    }

    /// The PKRU value.
    pub const fn pkru(self) -> u32 {
        self.0
    }

    /// Whether this domain may read and write pages tagged `key`.
    pub const fn allows(self, key: ProtectionKey) -> bool {
        self.0 & (pkru::ad_bit(key.0) | pkru::wd_bit(key.0)) == 0
    }
}

/// The Rust-level gate (loader/API gate H→T→H, helper gate Xᵢ→T→Xᵢ): while
/// it lives the thread runs in the domain given to [`DomainGuard::enter`];
/// dropping it restores the PKRU saved on entry, so nesting is safe.
///
/// Each switch is one of the constant ERIM sequences in `pkru.rs`
/// (`mov eax, C; wrpkru; cmp eax, C; jne abort`), so it fails closed; a
/// saved value that is not a pkbpf domain aborts the process. Without PKU it
/// does nothing. It is `!Send`: PKRU belongs to the thread.
#[derive(Debug)]
#[must_use = "the domain is left when the guard is dropped"]
pub struct DomainGuard {
    saved: Option<u32>,
    _not_send: PhantomData<*const ()>,
}

impl DomainGuard {
    /// Enters `domain` until the guard is dropped.
    pub fn enter(domain: Domain) -> DomainGuard {
        if !is_active() {
            return DomainGuard {
                saved: None,
                _not_send: PhantomData,
            };
        }
        // SAFETY: is_active() means detect() saw OSPKE.
        let saved = unsafe { pkru::read() };
        if saved != domain.0 {
            // SAFETY: OSPKE as above; the guard restores `saved` on drop.
            unsafe { pkru::switch(domain.0) };
        }
        DomainGuard {
            saved: Some(saved),
            _not_send: PhantomData,
        }
    }

    /// The PKRU value the guard will restore (`None` without PKU).
    pub fn saved(&self) -> Option<u32> {
        self.saved
    }
}

impl Drop for DomainGuard {
    fn drop(&mut self) {
        if let Some(saved) = self.saved {
            // SAFETY: a saved value exists only when PKU is active.
            if unsafe { pkru::read() } != saved {
                // SAFETY: restoring the value read on entry.
                unsafe { pkru::switch(saved) };
            }
        }
    }
}

/// This thread's PKRU, or `None` without PKU (for tests and diagnostics).
pub fn current_pkru() -> Option<u32> {
    if is_active() {
        // SAFETY: PKU is active.
        Some(unsafe { pkru::read() })
    } else {
        None
    }
}
