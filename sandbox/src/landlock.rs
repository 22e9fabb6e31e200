//! Closing `/proc/self/mem` (attack 6 of the isolation suite) with Landlock.
//!
//! Writes through `/proc/<pid>/mem` reach the process's memory with the
//! kernel's remote-access path (`access_remote_vm`, `FOLL_REMOTE`), which
//! does not apply protection keys, so they bypass every domain. A seccomp
//! filter cannot refuse them (it sees no paths), and `PR_SET_DUMPABLE` does
//! not help: the kernel always lets a process open its own `mem`.
//!
//! What works is Landlock (Linux ≥ 5.13, ABI 1 suffices): a ruleset that
//! handles `LANDLOCK_ACCESS_FS_WRITE_FILE` and grants it beneath every entry
//! of `/` except `/proc`. Opening any file under `/proc` for writing then
//! fails with `EACCES`, `/proc/self/mem` included; everything else stays
//! writable: files anywhere else, devices under `/dev`, and files reopened
//! through `/proc/self/fd/N` (the kernel checks the file the link resolves
//! to; memfds and pipes live on internal mounts, which Landlock leaves
//! alone). Reading is not restricted.
//!
//! Landlock restricts the calling thread (and threads it creates later), not
//! the whole process, and kernels before 6.19 have no flag to apply a
//! ruleset to every thread. [`deny_proc_writes`] therefore restricts itself
//! and then asks every other thread to do the same from a signal handler
//! (real-time signal [`signal`]), listing `/proc/self/task` until no new
//! thread appears; new threads inherit the restriction from their creator.
//!
//! Residual risk, stated honestly:
//! - a thread that blocks the signal for the whole broadcast stays
//!   unrestricted (the result counts it in `missed`; it is restricted when it
//!   unblocks, since the handler stays installed);
//! - an fd opened on `/proc/self/mem` *before* hardening keeps working;
//! - reads through `/proc/self/mem` still bypass the keys (confidentiality;
//!   `process_vm_readv` is denied by the seccomp filter, but Landlock's read
//!   rights cannot exempt `/proc/self/mem` without breaking the many
//!   `/proc` reads of ordinary programs);
//! - writes under `/proc` fail for the host too (e.g. `/proc/self/oom_score_adj`,
//!   `/proc/self/attr/*`), and so do writes to entries of `/` created after
//!   hardening; hosts that need them opt out (`HardenOptions::proc_writes`).

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
const LANDLOCK_ACCESS_FS_WRITE_FILE: u64 = 1 << 1;
const LANDLOCK_RULE_PATH_BENEATH: u32 = 1;
const PROC_SUPER_MAGIC: libc::__fsword_t = 0x9fa0;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// What became of writes under `/proc` (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcWrites {
    /// Not restricted, by request.
    Allowed,
    /// Landlock refuses them on `restricted` threads; `missed` threads did
    /// not take the restriction during the broadcast (they blocked the
    /// signal).
    Denied {
        /// Threads that applied the ruleset (the caller included).
        restricted: u32,
        /// Threads that did not answer in time.
        missed: u32,
    },
    /// The kernel has no usable Landlock: writes stay possible.
    Unavailable {
        /// The errno of the failing call.
        errno: i32,
        /// The failing call.
        call: &'static str,
    },
}

impl ProcWrites {
    /// Whether `/proc/self/mem` writes are refused on every thread found.
    pub fn is_denied(&self) -> bool {
        matches!(self, ProcWrites::Denied { missed: 0, .. })
    }
}

/// The real-time signal the broadcast uses (`SIGRTMAX - 2`).
pub fn signal() -> i32 {
    libc::SIGRTMAX() - 2
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The ruleset every thread applies (-1 until built).
static RULESET: AtomicI32 = AtomicI32::new(-1);
/// Threads that applied it from the signal handler.
static ACKS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_signal(_sig: i32) {
    let fd = RULESET.load(Ordering::Acquire);
    if fd < 0 {
        return;
    }
    // SAFETY: prctl and landlock_restrict_self take integers only and are
    // async-signal-safe system calls.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        if libc::syscall(libc::SYS_landlock_restrict_self, fd, 0) == 0 {
            ACKS.fetch_add(1, Ordering::AcqRel);
        }
    }
}

fn build_ruleset() -> Result<OwnedFd, ProcWrites> {
    let unavailable = |call| ProcWrites::Unavailable {
        errno: errno(),
        call,
    };
    // SAFETY: the version query takes no attribute.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if abi < 1 {
        return Err(unavailable("landlock_create_ruleset(VERSION)"));
    }
    let attr = RulesetAttr {
        handled_access_fs: LANDLOCK_ACCESS_FS_WRITE_FILE,
    };
    // SAFETY: `attr` is a valid ABI-1 ruleset attribute of the given size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0u32,
        )
    };
    if fd < 0 {
        return Err(unavailable("landlock_create_ruleset"));
    }
    // SAFETY: a fresh fd owned by nobody else.
    let ruleset = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let entries = std::fs::read_dir("/").map_err(|e| ProcWrites::Unavailable {
        errno: e.raw_os_error().unwrap_or(0),
        call: "read_dir(/)",
    })?;
    for entry in entries.flatten() {
        if entry.file_name() == "proc" {
            continue;
        }
        let Ok(path) = std::ffi::CString::new(entry.path().into_os_string().into_encoded_bytes())
        else {
            continue;
        };
        // SAFETY: a NUL-terminated path; O_PATH opens nothing for I/O.
        let raw = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if raw < 0 {
            continue;
        }
        // SAFETY: a fresh fd.
        let parent = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: zeroed statfs/stat are valid out-buffers.
        let (mut sfs, mut st): (libc::statfs, libc::stat) = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and out-pointers.
        let ok = unsafe {
            libc::fstatfs(parent.as_raw_fd(), &mut sfs) == 0
                && libc::fstat(parent.as_raw_fd(), &mut st) == 0
        };
        // A symlink into /proc (or a second procfs mount) stays ungranted.
        if !ok || sfs.f_type == PROC_SUPER_MAGIC {
            continue;
        }
        let kind = st.st_mode & libc::S_IFMT;
        if kind != libc::S_IFDIR && kind != libc::S_IFREG && kind != libc::S_IFCHR {
            continue;
        }
        let rule = PathBeneathAttr {
            allowed_access: LANDLOCK_ACCESS_FS_WRITE_FILE,
            parent_fd: parent.as_raw_fd(),
        };
        // SAFETY: a valid path-beneath rule for a valid ruleset fd.
        let r = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                ruleset.as_raw_fd(),
                LANDLOCK_RULE_PATH_BENEATH,
                &rule as *const PathBeneathAttr,
                0u32,
            )
        };
        if r != 0 {
            return Err(unavailable("landlock_add_rule"));
        }
    }
    Ok(ruleset)
}

fn threads() -> Vec<i32> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// Refuses writes under `/proc` on every thread of the process (see the
/// module docs). Applies at most once per process; later calls return the
/// first result.
pub fn deny_proc_writes() -> ProcWrites {
    static DONE: OnceLock<ProcWrites> = OnceLock::new();
    *DONE.get_or_init(apply_everywhere)
}

fn apply_everywhere() -> ProcWrites {
    let ruleset = match build_ruleset() {
        Ok(fd) => fd,
        Err(e) => return e,
    };
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    // SAFETY: a valid ruleset fd; restricts this thread only.
    if unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32) } != 0 {
        return ProcWrites::Unavailable {
            errno: errno(),
            call: "landlock_restrict_self",
        };
    }
    // The fd stays open for good: a thread that unblocks the signal later
    // still applies the ruleset from the handler.
    RULESET.store(
        std::os::fd::IntoRawFd::into_raw_fd(ruleset),
        Ordering::Release,
    );
    // SAFETY: a zeroed sigaction is valid; the handler is a plain
    // `extern "C" fn(i32)` that only makes two system calls.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(signal(), &sa, std::ptr::null_mut()) != 0 {
            return ProcWrites::Unavailable {
                errno: errno(),
                call: "sigaction",
            };
        }
    }
    // SAFETY: getpid/gettid have no preconditions.
    let (pid, me) = unsafe { (libc::getpid(), libc::gettid()) };
    let mut signalled: BTreeSet<i32> = BTreeSet::new();
    signalled.insert(me);
    let start_acks = ACKS.load(Ordering::Acquire);
    // Threads that were signalled (tgkill succeeded).
    let mut expected = 0u32;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fresh: Vec<i32> = threads()
            .into_iter()
            .filter(|t| !signalled.contains(t))
            .collect();
        if fresh.is_empty() {
            break;
        }
        for t in fresh {
            signalled.insert(t);
            // SAFETY: tgkill with integers; a thread that exited meanwhile
            // gives ESRCH and is not waited for.
            if unsafe { libc::syscall(libc::SYS_tgkill, pid, t, signal()) } == 0 {
                expected += 1;
            }
        }
        // Wait for the answers before listing again, so that threads the
        // signalled ones created in the meantime are found too.
        while ACKS.load(Ordering::Acquire) - start_acks < expected && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    let live: BTreeSet<i32> = threads().into_iter().collect();
    let acked = ACKS.load(Ordering::Acquire) - start_acks;
    let others = live.iter().filter(|t| **t != me).count() as u32;
    ProcWrites::Denied {
        restricted: acked + 1,
        missed: others.saturating_sub(acked),
    }
}
