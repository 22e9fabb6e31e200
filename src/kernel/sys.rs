//! The raw `bpf(2)` layer: one `union bpf_attr` variant per command used,
//! laid out as `linux/bpf.h` declares it (fields pkbpf does not use are
//! left zero), and the one `unsafe` syscall. See bpf(2) and
//! `Documentation/bpf/` in the kernel tree.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// `enum bpf_cmd` values used here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub(crate) enum Cmd {
    MapCreate = 0,
    MapLookupElem = 1,
    MapUpdateElem = 2,
    ProgLoad = 5,
    ProgTestRun = 10,
    MapFreeze = 22,
}

impl Cmd {
    /// The kernel's name of the command, for errors.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Cmd::MapCreate => "BPF_MAP_CREATE",
            Cmd::MapLookupElem => "BPF_MAP_LOOKUP_ELEM",
            Cmd::MapUpdateElem => "BPF_MAP_UPDATE_ELEM",
            Cmd::ProgLoad => "BPF_PROG_LOAD",
            Cmd::ProgTestRun => "BPF_PROG_TEST_RUN",
            Cmd::MapFreeze => "BPF_MAP_FREEZE",
        }
    }
}

/// `BPF_MAP_CREATE` attributes.
#[repr(C)]
#[derive(Default)]
pub(crate) struct MapCreateAttr {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub inner_map_fd: u32,
    pub numa_node: u32,
    pub map_name: [u8; 16],
}

/// `BPF_MAP_*_ELEM` attributes.
#[repr(C)]
#[derive(Default)]
pub(crate) struct MapElemAttr {
    pub map_fd: u32,
    pub _pad: u32,
    pub key: u64,
    pub value: u64,
    pub flags: u64,
}

/// `BPF_MAP_FREEZE` attributes.
#[repr(C)]
#[derive(Default)]
pub(crate) struct MapFdAttr {
    pub map_fd: u32,
}

/// `BPF_PROG_LOAD` attributes.
#[repr(C)]
#[derive(Default)]
pub(crate) struct ProgLoadAttr {
    pub prog_type: u32,
    pub insn_cnt: u32,
    pub insns: u64,
    pub license: u64,
    pub log_level: u32,
    pub log_size: u32,
    pub log_buf: u64,
    pub kern_version: u32,
    pub prog_flags: u32,
    pub prog_name: [u8; 16],
}

/// `BPF_PROG_TEST_RUN` attributes.
#[repr(C)]
#[derive(Default)]
pub(crate) struct TestRunAttr {
    pub prog_fd: u32,
    pub retval: u32,
    pub data_size_in: u32,
    pub data_size_out: u32,
    pub data_in: u64,
    pub data_out: u64,
    pub repeat: u32,
    pub duration: u32,
    pub ctx_size_in: u32,
    pub ctx_size_out: u32,
    pub ctx_in: u64,
    pub ctx_out: u64,
    pub flags: u32,
    pub cpu: u32,
    pub batch_size: u32,
    pub _pad: u32,
}

// The offsets linux/bpf.h gives these fields (a wrong layout would make the
// kernel read the wrong pointer as a buffer).
const _: () = {
    use std::mem::offset_of;
    assert!(offset_of!(MapCreateAttr, map_name) == 28);
    assert!(offset_of!(MapElemAttr, key) == 8 && offset_of!(MapElemAttr, flags) == 24);
    assert!(offset_of!(ProgLoadAttr, log_buf) == 32);
    assert!(offset_of!(ProgLoadAttr, kern_version) == 40);
    assert!(offset_of!(ProgLoadAttr, prog_name) == 48);
    assert!(offset_of!(TestRunAttr, data_in) == 16);
    assert!(offset_of!(TestRunAttr, repeat) == 32);
    assert!(offset_of!(TestRunAttr, ctx_in) == 48);
    assert!(offset_of!(TestRunAttr, flags) == 64);
    assert!(std::mem::size_of::<TestRunAttr>() == 80);
};

/// Marker for the attribute structs above: plain `repr(C)` data the kernel
/// may read (and, for some commands, write back) whole.
///
/// # Safety
///
/// Implementors are `repr(C)` prefixes of `union bpf_attr` for their
/// command, with every pointer-typed (`u64`) field either 0 or an address
/// the caller keeps valid for the length the kernel is told.
pub(crate) unsafe trait Attr {}
// SAFETY: each is a repr(C) prefix of `union bpf_attr` (linux/bpf.h) for its command.
unsafe impl Attr for MapCreateAttr {}
// SAFETY: as above.
unsafe impl Attr for MapElemAttr {}
// SAFETY: as above.
unsafe impl Attr for MapFdAttr {}
// SAFETY: as above.
unsafe impl Attr for ProgLoadAttr {}
// SAFETY: as above.
unsafe impl Attr for TestRunAttr {}

/// Calls `bpf(cmd, attr, sizeof attr)`; returns the non-negative result or
/// the `errno`.
///
/// # Safety
///
/// Every address stored in `attr` must point to memory valid for the access
/// the kernel makes for `cmd` (reads of the sizes given, writes of the
/// output buffers' sizes) for the duration of the call.
pub(crate) unsafe fn bpf<A: Attr>(cmd: Cmd, attr: &mut A) -> Result<i64, io::Error> {
    // SAFETY: `attr` is a live, exclusively borrowed attribute struct of the
    // size passed; the addresses inside it are valid per this function's
    // contract.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut A,
            std::mem::size_of::<A>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as i64)
    }
}

/// Wraps a file descriptor the kernel returned from `bpf()`.
pub(crate) fn owned_fd(raw: i64) -> OwnedFd {
    // SAFETY: `raw` is a fresh descriptor that `bpf()` just returned to this
    // process; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(raw as i32) }
}

/// A kernel object name: up to 15 bytes of `[A-Za-z0-9_.]`, NUL-padded
/// (the kernel rejects other characters).
pub(crate) fn obj_name(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (o, b) in out
        .iter_mut()
        .zip(
            name.bytes()
                .filter(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.'),
        )
        .take(15)
    {
        *o = b;
    }
    out
}
