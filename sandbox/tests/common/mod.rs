//! Helpers shared by the sandbox's integration tests.
#![allow(dead_code)]

use pkbpf_sandbox::{detect, PkuStatus};

/// True when `PKBPF_REQUIRE_PKU=1` (the MPK VM runner sets it): a test that
/// would skip for lack of PKU fails instead.
pub fn pku_required() -> bool {
    std::env::var("PKBPF_REQUIRE_PKU").as_deref() == Ok("1")
}

/// Returns false (after printing `skipped: <name>: no PKU: …`) when the test
/// cannot run here; panics instead under `PKBPF_REQUIRE_PKU=1`.
pub fn have_pku(name: &str) -> bool {
    match detect() {
        PkuStatus::Available => true,
        PkuStatus::Missing(m) => {
            assert!(!pku_required(), "{name}: PKBPF_REQUIRE_PKU=1 but {m}");
            println!("skipped: {name}: {m}");
            false
        }
    }
}

/// Skips the calling test (see [`have_pku`]).
#[macro_export]
macro_rules! require_pku {
    ($name:expr) => {
        if !$crate::common::have_pku($name) {
            return;
        }
    };
}

/// One fresh read+write anonymous page.
pub fn map_page() -> *mut u8 {
    // SAFETY: a fresh anonymous mapping aliases nothing.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap failed");
    p.cast()
}

/// Maps `code` read+execute in a fresh page and returns its address.
pub fn map_code(code: &[u8]) -> *mut u8 {
    let p = map_page();
    // SAFETY: `p` is a fresh writable page and `code` fits in it.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), p, code.len()) };
    // SAFETY: the page is ours; W^X: it stops being writable first.
    let r = unsafe { libc::mprotect(p.cast(), 4096, libc::PROT_READ | libc::PROT_EXEC) };
    assert_eq!(r, 0, "mprotect failed");
    p
}

/// Runs `f` in a forked child, which exits 0 when `f` returns; returns the
/// raw wait status. The child does only what `f` does, then `_exit`s.
pub fn in_child(f: impl FnOnce()) -> i32 {
    // SAFETY: the child runs `f` and `_exit`s without returning into the
    // test harness; `f` in these tests uses only memory, signals and
    // syscalls.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        f();
        // SAFETY: ends the child without running the parent's atexit state.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child with a valid status pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "waitpid failed");
    status
}

/// The signal that ended a child, if one did.
pub fn term_signal(status: i32) -> Option<i32> {
    libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status))
}

/// The exit code of a child that exited.
pub fn exit_code(status: i32) -> Option<i32> {
    libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
}

/// `mov rax, [rdi]; ret` — a stand-in for JIT code that loads through its
/// context argument.
pub const LOAD_THROUGH_ARG: [u8; 4] = [0x48, 0x8b, 0x07, 0xc3];

/// `mov qword [rdi], 0x2a; mov eax, 7; ret` — stores through its argument.
pub const STORE_THROUGH_ARG: [u8; 13] = [
    0x48, 0xc7, 0x07, 0x2a, 0x00, 0x00, 0x00, 0xb8, 0x07, 0x00, 0x00, 0x00, 0xc3,
];
