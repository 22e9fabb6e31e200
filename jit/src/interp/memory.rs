//! The checked memory model of the interpreter.
//!
//! Registers hold real host addresses, so the stack, the input buffer and map
//! values are ordinary memory that helpers (and, later, JIT code) can share.
//! But every access the interpreter makes goes through [`Memory`] first: it
//! must lie wholly inside one [`Region`] the caller registered (or inside a live
//! stack frame), and a write needs a writable region. Anything else is an
//! [`AccessError`], which the interpreter turns into an
//! [`ExecError`](super::ExecError) naming the instruction.

use std::marker::PhantomData;

use pkbpf_verifier::isa::{MAX_CALL_DEPTH, STACK_SIZE};

/// What a region of memory is, for error reports and for the verifier's
/// soundness checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegionKind {
    /// The stack frame of call depth `frame` (0 = the entry function).
    Stack {
        /// Call depth of the frame.
        frame: usize,
    },
    /// The program's context argument.
    Ctx,
    /// The input buffer (the conformance tests' `-- mem`).
    Input,
    /// A map value.
    MapValue {
        /// An identifier of the map, chosen by whoever registers the region.
        map: u32,
    },
    /// Anything else a caller or helper registered.
    Other,
}

/// A range of host memory the program may access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First address.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// Whether stores and atomics may write to it.
    pub writable: bool,
    /// What it is.
    pub kind: RegionKind,
}

impl Region {
    /// Whether `[addr, addr + size)` lies wholly inside the region.
    pub fn contains(&self, addr: u64, size: u64) -> bool {
        match addr.checked_add(size) {
            Some(end) => addr >= self.start && end <= self.start.saturating_add(self.len),
            None => false,
        }
    }
}

/// Why an access was refused (the interpreter adds the instruction index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// The access is not wholly inside one region, or writes a read-only one.
    #[error("{} of {size} bytes at {addr:#x} is outside every region{}",
        if *write { "write" } else { "read" },
        if *write { " it may write" } else { "" })]
    OutOfBounds {
        /// First byte accessed.
        addr: u64,
        /// Access size in bytes.
        size: u64,
        /// Whether it was a write.
        write: bool,
    },
    /// A read of a stack byte that was never written.
    #[error("read of uninitialised stack byte fp{offset:+} (frame {frame})")]
    UninitRead {
        /// Call depth of the frame.
        frame: usize,
        /// Offset of the first uninitialised byte from that frame's `r10` (negative).
        offset: i64,
    },
}

/// The stack: [`MAX_CALL_DEPTH`] frames of [`STACK_SIZE`] bytes in one
/// 8-byte-aligned buffer, frame 0 at the top, each frame its own region.
pub(crate) struct Stack {
    /// From `Box::into_raw` of a `[u64]` of `STACK_TOTAL / 8` elements; freed
    /// in `Drop`. Kept raw so that program accesses through integer addresses
    /// never alias a live Rust reference to the buffer.
    buf: *mut [u64],
    init: Box<[bool]>,
}

const STACK_TOTAL: usize = STACK_SIZE * MAX_CALL_DEPTH;

// SAFETY: `Stack` owns its buffer exclusively (the raw pointer is only a way
// to reach it without a Rust reference); moving that ownership to another
// thread is as sound as moving the `Box` it came from.
unsafe impl Send for Stack {}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: `buf` came from `Box::into_raw` in `Stack::new` and is
        // dropped exactly once, here.
        drop(unsafe { Box::from_raw(self.buf) });
    }
}

impl Stack {
    fn new() -> Stack {
        Stack {
            buf: Box::into_raw(vec![0u64; STACK_TOTAL / 8].into_boxed_slice()),
            init: vec![false; STACK_TOTAL].into_boxed_slice(),
        }
    }

    fn base(&self) -> u64 {
        self.buf as *mut u64 as u64
    }

    /// Byte index in the buffer of the lowest byte of `frame`.
    fn frame_lo(frame: usize) -> usize {
        (MAX_CALL_DEPTH - 1 - frame) * STACK_SIZE
    }
}

/// The regions a run may access, plus the interpreter's own stack.
///
/// Build one per run (or reuse it), register the caller's memory with
/// [`Memory::add_slice`], [`Memory::add_slice_mut`] or (for memory the
/// borrow checker cannot see, such as shared map pages) [`Memory::add_region`].
pub struct Memory<'a> {
    regions: Vec<Region>,
    stack: Stack,
    /// Frames `0..=depth` are live.
    depth: usize,
    check_uninit: bool,
    _borrow: PhantomData<&'a mut [u8]>,
}

impl std::fmt::Debug for Memory<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory")
            .field("regions", &self.regions)
            .field("stack_base", &format_args!("{:#x}", self.stack.base()))
            .field("depth", &self.depth)
            .finish()
    }
}

impl Default for Memory<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> Memory<'a> {
    /// A memory with no regions but the stack.
    pub fn new() -> Self {
        Memory {
            regions: Vec::new(),
            stack: Stack::new(),
            depth: 0,
            check_uninit: true,
            _borrow: PhantomData,
        }
    }

    /// Registers a read-only slice; returns its address (what the program
    /// gets in a register).
    pub fn add_slice(&mut self, data: &'a [u8], kind: RegionKind) -> u64 {
        let start = data.as_ptr() as u64;
        self.regions.push(Region {
            start,
            len: data.len() as u64,
            writable: false,
            kind,
        });
        start
    }

    /// Registers a writable slice; returns its address.
    pub fn add_slice_mut(&mut self, data: &'a mut [u8], kind: RegionKind) -> u64 {
        let start = data.as_mut_ptr() as u64;
        self.regions.push(Region {
            start,
            len: data.len() as u64,
            writable: true,
            kind,
        });
        start
    }

    /// Registers a raw region.
    ///
    /// Registering a region equal to one already there does nothing, so a
    /// helper may register the same map value on every lookup. Regions stay
    /// registered across runs.
    ///
    /// # Safety
    ///
    /// `[region.start, region.start + region.len)` must be memory that is
    /// valid for reads (and for writes when `region.writable`) for as long as
    /// this `Memory` is used to run programs, and no Rust reference to it may
    /// be used while a program runs, except through atomics.
    pub unsafe fn add_region(&mut self, region: Region) {
        if !self.regions.contains(&region) {
            self.regions.push(region);
        }
    }

    /// The registered regions (stack frames excluded).
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// Turns the uninitialised-stack-read check on (the default) or off; each
    /// run sets it from its [`Options`](super::Options).
    pub(crate) fn set_check_uninit(&mut self, on: bool) {
        self.check_uninit = on;
    }

    /// The region of stack frame `frame` (whether live or not).
    pub fn stack_frame(&self, frame: usize) -> Region {
        Region {
            start: self.stack.base() + Stack::frame_lo(frame.min(MAX_CALL_DEPTH - 1)) as u64,
            len: STACK_SIZE as u64,
            writable: true,
            kind: RegionKind::Stack { frame },
        }
    }

    /// The frame pointer (`r10`) of frame `frame`: one past its highest byte.
    pub fn frame_pointer(&self, frame: usize) -> u64 {
        let r = self.stack_frame(frame);
        r.start + r.len
    }

    /// The bytes of stack frame `frame` as the last run left them, lowest
    /// address first (`fp-512` .. `fp-1`); `None` for bytes never written in
    /// that run. For comparing engines.
    pub fn stack_bytes(&self, frame: usize) -> Vec<Option<u8>> {
        let frame = frame.min(MAX_CALL_DEPTH - 1);
        let lo = Stack::frame_lo(frame);
        let start = self.stack.base() + lo as u64;
        (0..STACK_SIZE)
            .map(|i| {
                self.stack.init[lo + i].then(|| {
                    // SAFETY: `start + i` lies inside our own stack buffer
                    // (frame_lo(frame) + i < STACK_TOTAL), valid for reads.
                    unsafe { *((start + i as u64) as *const u8) }
                })
            })
            .collect()
    }

    /// Resets the stack for a new run: only frame 0 live, nothing initialised.
    pub(crate) fn reset_stack(&mut self) {
        self.depth = 0;
        self.stack.init.fill(false);
    }

    /// Makes frame `depth` live with an uninitialised stack.
    pub(crate) fn push_frame(&mut self, depth: usize) {
        debug_assert!(depth < MAX_CALL_DEPTH);
        self.depth = depth;
        let lo = Stack::frame_lo(depth);
        self.stack.init[lo..lo + STACK_SIZE].fill(false);
    }

    /// Makes frame `depth` the innermost live one.
    pub(crate) fn pop_frame(&mut self, depth: usize) {
        self.depth = depth;
    }

    /// Finds where `[addr, addr+size)` lives. For the stack, returns the byte
    /// index in the stack buffer; otherwise `None` after a successful check.
    fn locate(&self, addr: u64, size: u64, write: bool) -> Result<Option<usize>, AccessError> {
        let oob = AccessError::OutOfBounds { addr, size, write };
        for frame in 0..=self.depth {
            let r = self.stack_frame(frame);
            if r.contains(addr, size) {
                return Ok(Some((addr - self.stack.base()) as usize));
            }
        }
        let found = self
            .regions
            .iter()
            .any(|r| r.contains(addr, size) && (!write || r.writable));
        if found {
            Ok(None)
        } else {
            Err(oob)
        }
    }

    fn check_init(&self, idx: usize, size: usize) -> Result<(), AccessError> {
        if !self.check_uninit {
            return Ok(());
        }
        if let Some(i) = (idx..idx + size).find(|&i| !self.stack.init[i]) {
            let frame = MAX_CALL_DEPTH - 1 - i / STACK_SIZE;
            let fp = Stack::frame_lo(frame) + STACK_SIZE;
            return Err(AccessError::UninitRead {
                frame,
                offset: i as i64 - fp as i64,
            });
        }
        Ok(())
    }

    /// Checks that a read of `size` bytes at `addr` is allowed (in a region,
    /// initialised if on the stack).
    pub fn check_read(&self, addr: u64, size: u64) -> Result<(), AccessError> {
        if let Some(idx) = self.locate(addr, size, false)? {
            self.check_init(idx, size as usize)?;
        }
        Ok(())
    }

    /// Checks that a write of `size` bytes at `addr` is allowed.
    pub fn check_write(&self, addr: u64, size: u64) -> Result<(), AccessError> {
        self.locate(addr, size, true).map(|_| ())
    }

    fn mark_init(&mut self, idx: Option<usize>, size: usize) {
        if let Some(i) = idx {
            self.stack.init[i..i + size].fill(true);
        }
    }

    /// Reads `out.len()` bytes at `addr` after checking the access.
    pub fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), AccessError> {
        let size = out.len() as u64;
        if let Some(idx) = self.locate(addr, size, false)? {
            self.check_init(idx, out.len())?;
        }
        // SAFETY: `locate` proved the range lies inside a live stack frame
        // (our own buffer) or a registered region, which `add_slice*` /
        // `add_region`'s contract keeps valid for reads while `self` lives.
        unsafe { std::ptr::copy(addr as *const u8, out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    /// Writes `data` at `addr` after checking the access; marks stack bytes
    /// initialised.
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), AccessError> {
        let idx = self.locate(addr, data.len() as u64, true)?;
        // SAFETY: `locate` proved the range lies inside a live stack frame or
        // a writable registered region, valid for writes by the contract of
        // `add_slice_mut` / `add_region`; `copy` allows `data` to overlap it.
        unsafe { std::ptr::copy(data.as_ptr(), addr as *mut u8, data.len()) };
        self.mark_init(idx, data.len());
        Ok(())
    }

    /// Loads an unsigned little-endian value of 1, 2, 4 or 8 bytes.
    pub fn load(&self, addr: u64, size: usize) -> Result<u64, AccessError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b[..size])?;
        Ok(u64::from_le_bytes(b))
    }

    /// Stores the low `size` bytes of `value` little-endian.
    pub fn store(&mut self, addr: u64, size: usize, value: u64) -> Result<(), AccessError> {
        self.write(addr, &value.to_le_bytes()[..size])
    }

    /// Atomically replaces the 4- or 8-byte value at `addr` by `f(old)` when
    /// `f` returns `Some`, returning the old value. Aligned accesses use host
    /// atomics (map values may be shared with other threads); unaligned ones
    /// fall back to a plain read-modify-write.
    pub fn atomic_rmw(
        &mut self,
        addr: u64,
        size: usize,
        f: impl Fn(u64) -> Option<u64>,
    ) -> Result<u64, AccessError> {
        use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
        let idx = self.locate(addr, size as u64, true)?;
        if let Some(i) = idx {
            self.check_init(i, size)?;
        }
        let old = if size == 8 && addr.is_multiple_of(8) {
            // SAFETY: the range is checked writable memory (see `write`) and
            // 8-aligned; other threads touch shared regions only via atomics.
            let a = unsafe { AtomicU64::from_ptr(addr as *mut u64) };
            match a.fetch_update(SeqCst, SeqCst, &f) {
                Ok(v) | Err(v) => v,
            }
        } else if size == 4 && addr.is_multiple_of(4) {
            // SAFETY: as above, 4-aligned.
            let a = unsafe { AtomicU32::from_ptr(addr as *mut u32) };
            match a.fetch_update(SeqCst, SeqCst, |v| f(v.into()).map(|n| n as u32)) {
                Ok(v) | Err(v) => v.into(),
            }
        } else {
            let old = self.load(addr, size)?;
            if let Some(new) = f(old) {
                self.store(addr, size, new)?;
            }
            old
        };
        Ok(old)
    }
}
