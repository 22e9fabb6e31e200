//! Executable memory for generated code, W^X by construction.
//!
//! The code is copied into a fresh private anonymous mapping while it is
//! read-write, then the mapping is switched to read-execute with `mprotect`;
//! it is never writable and executable at once. The mapping is unmapped on
//! drop. Execute-only protection (no read) needs a protection key, which the
//! sandbox owns: it calls [`CodeMemory::make_execute_only`] (through
//! `JitProgram::make_execute_only`) with its key, or takes the pages from
//! [`CodeMemory::range`].

use std::ptr::NonNull;

use super::JitError;

/// One read-execute mapping holding a program's machine code.
#[derive(Debug)]
pub(crate) struct CodeMemory {
    ptr: NonNull<u8>,
    /// Mapped length (whole pages).
    map_len: usize,
}

// SAFETY: the mapping is immutable (read-execute) after construction and owned
// by this value; sharing or sending it between threads is sound.
unsafe impl Send for CodeMemory {}
// SAFETY: as above, no interior mutability.
unsafe impl Sync for CodeMemory {}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}

fn os_error(op: &'static str) -> JitError {
    JitError::CodeMemory {
        op,
        source: std::io::Error::last_os_error(),
    }
}

impl CodeMemory {
    /// Maps `code` read-write, copies it, and makes it read-execute.
    pub(crate) fn new(code: &[u8]) -> Result<CodeMemory, JitError> {
        let page = page_size();
        let map_len = code.len().max(1).div_ceil(page) * page;
        // SAFETY: a fresh private anonymous mapping; no existing memory is
        // affected, and the result is checked against MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(os_error("mmap"));
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| os_error("mmap"))?;
        let mem = CodeMemory { ptr, map_len };
        // SAFETY: the mapping is `map_len >= code.len()` bytes, writable, and
        // does not overlap `code` (it was just created).
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), ptr.as_ptr(), code.len()) };
        // SAFETY: changes the protection of our own mapping only.
        let rc = unsafe {
            libc::mprotect(
                ptr.as_ptr().cast(),
                map_len,
                libc::PROT_READ | libc::PROT_EXEC,
            )
        };
        if rc != 0 {
            // `mem` is dropped here and unmaps the pages.
            return Err(os_error("mprotect"));
        }
        Ok(mem)
    }

    /// Address of the first byte of code.
    #[inline]
    pub(crate) fn base(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// Start and length (whole pages) of the mapping.
    pub(crate) fn range(&self) -> (*const u8, usize) {
        (self.ptr.as_ptr(), self.map_len)
    }

    /// Drops read permission: `PROT_EXEC` only, under protection key `pkey`
    /// when given (`pkey_mprotect`), else with `mprotect`, where Linux on a
    /// PKU CPU assigns its execute-only key by itself (without PKU, x86
    /// pages stay readable).
    pub(crate) fn make_execute_only(&self, pkey: Option<i32>) -> Result<(), JitError> {
        let (addr, len) = (self.ptr.as_ptr().cast::<libc::c_void>(), self.map_len);
        let rc = match pkey {
            // SAFETY: changes the protection of our own mapping only; the
            // pages stay executable.
            Some(k) => unsafe {
                libc::syscall(libc::SYS_pkey_mprotect, addr, len, libc::PROT_EXEC, k) as i32
            },
            // SAFETY: as above.
            None => unsafe { libc::mprotect(addr, len, libc::PROT_EXEC) },
        };
        if rc != 0 {
            return Err(os_error(if pkey.is_some() {
                "pkey_mprotect"
            } else {
                "mprotect"
            }));
        }
        Ok(())
    }
}

impl Drop for CodeMemory {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this value created and owns; no
        // reference into it outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.map_len) };
    }
}
