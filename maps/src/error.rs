//! Errors of the userspace map API and of region construction.

use crate::MapType;

/// An error from the maps crate's safe API.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// A key buffer of the wrong size.
    #[error("map `{map}`: key is {size} bytes, expected {expected}")]
    InvalidKeySize {
        /// The map's name.
        map: String,
        /// The size given.
        size: usize,
        /// The map's key size.
        expected: usize,
    },
    /// A value buffer of the wrong size (for per-CPU maps: possible CPUs ×
    /// the value size rounded up to 8).
    #[error("map `{map}`: value is {size} bytes, expected {expected}")]
    InvalidValueSize {
        /// The map's name.
        map: String,
        /// The size given.
        size: usize,
        /// The size expected.
        expected: usize,
    },
    /// The key exists and `BPF_NOEXIST` was given (`-EEXIST`).
    #[error("map `{map}`: key already exists")]
    AlreadyExists {
        /// The map's name.
        map: String,
    },
    /// The key does not exist (`-ENOENT`): `BPF_EXIST` update, delete, pop of
    /// an empty queue.
    #[error("map `{map}`: no such key")]
    NotFound {
        /// The map's name.
        map: String,
    },
    /// The map is full (`-E2BIG`, or `-ENOSPC` for LPM tries), or an array
    /// index is out of range.
    #[error("map `{map}`: full or index out of range (max_entries {max_entries})")]
    Full {
        /// The map's name.
        map: String,
        /// The map's capacity.
        max_entries: u32,
    },
    /// Flags the operation does not accept (`-EINVAL`).
    #[error("map `{map}`: invalid flags {flags:#x}")]
    InvalidFlags {
        /// The map's name.
        map: String,
        /// The flags given.
        flags: u64,
    },
    /// The map was frozen: userspace may no longer write it (`-EPERM`).
    #[error("map `{map}` is frozen")]
    Frozen {
        /// The map's name.
        map: String,
    },
    /// The operation does not exist for this map type (`-EINVAL`, as the
    /// kernel answers an array delete).
    #[error("map `{map}`: {op} is not supported by {map_type} maps")]
    Unsupported {
        /// The map's name.
        map: String,
        /// The operation.
        op: &'static str,
        /// The map's type.
        map_type: MapType,
    },
    /// Another negative errno from the data plane.
    #[error("map `{map}`: {op} failed with errno {errno}")]
    Errno {
        /// The map's name.
        map: String,
        /// The operation.
        op: &'static str,
        /// The positive errno.
        errno: i32,
    },
    /// A typed wrapper was asked for over a map of another type.
    #[error("map `{map}` is a {found} map, expected {expected}")]
    WrongType {
        /// The map's name.
        map: String,
        /// The kinds the wrapper accepts, e.g. `hash or lru_hash`.
        expected: &'static str,
        /// The map's type.
        found: MapType,
    },
    /// A perf ring size that is not a power-of-two page multiple up to 1 GiB.
    #[error("invalid perf ring size {bytes}: need a power of two, at least a page, at most 1 GiB")]
    InvalidRingSize {
        /// The size asked for.
        bytes: u64,
    },
    /// A map definition the layout cannot honour.
    #[error("map definition `{name}` (index {index}): {reason}")]
    InvalidDefinition {
        /// The map's name.
        name: String,
        /// The definition's index in the builder.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// No map of that name or index in the region.
    #[error("no map named `{name}` in the region")]
    NoSuchMap {
        /// The name asked for.
        name: String,
    },
    /// A region whose header does not describe a valid layout.
    #[error("invalid map region: {reason}")]
    BadRegion {
        /// What is wrong.
        reason: String,
    },
    /// A system call failed.
    #[error("{op} failed")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl MapError {
    /// The kernel's errno for this error (positive), as `bpf(2)` would set it.
    pub fn errno(&self) -> i32 {
        match self {
            MapError::InvalidKeySize { .. }
            | MapError::InvalidValueSize { .. }
            | MapError::InvalidFlags { .. }
            | MapError::InvalidDefinition { .. }
            | MapError::InvalidRingSize { .. }
            | MapError::WrongType { .. }
            | MapError::BadRegion { .. } => libc::EINVAL,
            MapError::AlreadyExists { .. } => libc::EEXIST,
            MapError::NotFound { .. } | MapError::NoSuchMap { .. } => libc::ENOENT,
            MapError::Full { .. } => libc::E2BIG,
            MapError::Frozen { .. } => libc::EPERM,
            // The kernel's answer to most operations a map type lacks (array delete, ...).
            MapError::Unsupported { .. } => libc::EINVAL,
            MapError::Errno { errno, .. } => *errno,
            MapError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    /// Turns a data-plane return value (0 or a negative errno) into a result.
    pub(crate) fn check(
        ret: i64,
        map: &str,
        op: &'static str,
        max_entries: u32,
        flags: u64,
    ) -> Result<(), MapError> {
        let map = map.to_string();
        match -ret {
            0 => Ok(()),
            e if e == libc::EEXIST as i64 => Err(MapError::AlreadyExists { map }),
            e if e == libc::ENOENT as i64 => Err(MapError::NotFound { map }),
            e if e == libc::E2BIG as i64 || e == libc::ENOSPC as i64 => {
                Err(MapError::Full { map, max_entries })
            }
            e if e == libc::EINVAL as i64 && flags > crate::BPF_EXIST => {
                Err(MapError::InvalidFlags { map, flags })
            }
            e if e == libc::EPERM as i64 => Err(MapError::Frozen { map }),
            e => Err(MapError::Errno {
                map,
                op,
                errno: e as i32,
            }),
        }
    }
}
