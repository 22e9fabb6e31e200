//! Raw protection-key system calls (libc exposes only their numbers).
//!
//! Man pages: `pkey_alloc(2)`, `pkey_free(2)`, `pkey_mprotect(2)`.

/// `pkey_alloc(0, access_rights)`: a fresh key, or the errno.
///
/// Issued from the sandbox's trusted system-call site, the only one the
/// hardening filter lets allocate keys after initialisation.
pub(crate) fn pkey_alloc(access_rights: u32) -> Result<u32, i32> {
    // SAFETY: pkey_alloc takes two integers and touches no user memory.
    let r = unsafe {
        crate::harden::trusted_syscall(libc::SYS_pkey_alloc, [0, access_rights as u64, 0, 0, 0])
    };
    r.map(|k| k as u32)
}

/// `pkey_free(key)`.
///
/// # Safety
///
/// No page may still carry `key`: a later `pkey_alloc` would hand the same
/// number out again and its owner would gain access to those pages
/// (pkey use-after-free).
pub(crate) unsafe fn pkey_free(key: u32) -> Result<(), i32> {
    // SAFETY: integer arguments only; the caller upholds the no-pages rule.
    let r = unsafe { libc::syscall(libc::SYS_pkey_free, key as u64) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// `pkey_mprotect(addr, len, prot, key)`, from the trusted system-call
/// site (after hardening the filter refuses it anywhere else, and over a
/// protected range even there).
///
/// # Safety
///
/// The range must be memory the caller owns; afterwards every access to it
/// must be made in a domain that allows `key` (and `prot`).
pub(crate) unsafe fn pkey_mprotect(
    addr: usize,
    len: usize,
    prot: i32,
    key: u32,
) -> Result<(), i32> {
    // SAFETY: the kernel validates the range; the caller owns it.
    let r = unsafe {
        crate::harden::trusted_syscall(
            libc::SYS_pkey_mprotect,
            [addr as u64, len as u64, prot as u64, key as u64, 0],
        )
    };
    r.map(|_| ())
}

fn errno() -> i32 {
    super::sys_errno()
}
