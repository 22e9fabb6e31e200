//! Executable memory for generated code, W^X by construction.
//!
//! The code is copied into a fresh private anonymous mapping while it is
//! read-write, then the mapping is switched to read-execute with `mprotect`;
//! it is never writable and executable at once. The mapping is unmapped on
//! drop. Execute-only protection (no read) needs a protection key, which the
//! sandbox owns: [`CodeMemory::range`] gives it the pages to `pkey_mprotect`.

use std::ptr::NonNull;

use super::JitError;

/// One read-execute mapping holding a program's machine code.
#[derive(Debug)]
pub(crate) struct CodeMemory {
    ptr: NonNull<u8>,
    /// Mapped length (whole pages).
    map_len: usize,
    /// Bytes of code at the start of the mapping.
    code_len: usize,
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
        let mem = CodeMemory {
            ptr,
            map_len,
            code_len: code.len(),
        };
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
    pub(crate) fn base(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// The code bytes (readable until the sandbox makes them execute-only).
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: the first `code_len` bytes of the mapping were initialised
        // and stay mapped (read-execute) for `self`'s lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.code_len) }
    }

    /// Start and length (whole pages) of the mapping.
    pub(crate) fn range(&self) -> (*const u8, usize) {
        (self.ptr.as_ptr(), self.map_len)
    }
}

impl Drop for CodeMemory {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this value created and owns; no
        // reference into it outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.map_len) };
    }
}
