//! Process-wide hardening (`harden::harden_process`, `protect_ranges`) and
//! the Landlock layer against `/proc/self/mem` writes, each in a forked
//! child (hardening is irreversible). Needs no PKU for the filter and
//! Landlock; the key steps run where PKU exists.
#![cfg_attr(
    pkbpf_force_disabled_mpk,
    allow(unreachable_code, unused_variables, unused_imports, dead_code)
)]

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use pkbpf_sandbox::harden::{self, HardenOptions};
use pkbpf_sandbox::landlock::ProcWrites;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Ends the child with `code` when `ok` is false, printing `what`.
fn check(ok: bool, code: i32, what: &str) {
    if !ok {
        eprintln!("step {code} failed: {what} (errno {})", errno());
        // SAFETY: ends the forked child.
        unsafe { libc::_exit(code) };
    }
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = rel.trim().split(|c: char| !c.is_ascii_digit());
    let ma: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let mi: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (ma, mi) >= (major, minor)
}

fn open_errno(path: &str, flags: i32) -> i32 {
    let c = std::ffi::CString::new(path).unwrap();
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd >= 0 {
        // SAFETY: our fd.
        unsafe { libc::close(fd) };
        0
    } else {
        errno()
    }
}

#[test]
fn hardened_process_keeps_working_and_refuses_the_escapes() {
    let status = common::in_child(|| {
        // A thread that exists before hardening; it must be covered too.
        let (thread_in, mut to_thread) = std::io::pipe().unwrap();
        let (mut from_thread, thread_out) = std::io::pipe().unwrap();
        let t = std::thread::spawn(move || {
            let (mut rx, mut tx) = (thread_in, thread_out);
            let mut b = [0u8; 1];
            rx.read_exact(&mut b).unwrap();
            let e = open_errno("/proc/self/mem", libc::O_RDWR);
            tx.write_all(&e.to_ne_bytes()).unwrap();
        });
        let report = harden::harden_process(HardenOptions::default());
        if let Err(e) = &report {
            if !common::pku_required() {
                // A sandbox without seccomp (some containers): nothing to test.
                println!("skipped: hardened_process_keeps_working_and_refuses_the_escapes: {e}");
                // SAFETY: ends the forked child; 77 = skipped.
                unsafe { libc::_exit(77) };
            }
        }
        check(report.is_ok(), 1, "harden_process");
        let report = report.unwrap();
        check(report.seccomp && harden::is_hardened(), 2, "seccomp");
        let landlock = match report.proc_writes {
            ProcWrites::Denied { restricted, missed } => {
                check(missed == 0 && restricted >= 2, 3, "every thread restricted");
                true
            }
            ProcWrites::Unavailable { .. } => false,
            ProcWrites::Allowed => {
                check(false, 3, "proc writes were asked to be denied");
                false
            }
        };
        if landlock {
            check(
                open_errno("/proc/self/mem", libc::O_RDWR) == libc::EACCES,
                4,
                "open /proc/self/mem for writing",
            );
            to_thread.write_all(&[1]).unwrap();
            let mut e = [0u8; 4];
            from_thread.read_exact(&mut e).unwrap();
            check(
                i32::from_ne_bytes(e) == libc::EACCES,
                5,
                "other thread's open",
            );
        } else {
            to_thread.write_all(&[1]).unwrap();
            println!("skipped: /proc/self/mem part: {:?}", report.proc_writes);
        }
        t.join().unwrap();
        // Ordinary work goes on: reading /proc, writing files elsewhere,
        // reopening a memfd through /proc/self/fd for writing.
        check(
            std::fs::read_to_string("/proc/self/status").is_ok(),
            6,
            "read /proc/self/status",
        );
        let dir = std::env::temp_dir().join(format!("pkbpf-harden-{}", std::process::id()));
        check(std::fs::write(&dir, b"ok").is_ok(), 7, "write a temp file");
        let _ = std::fs::remove_file(&dir);
        // SAFETY: a NUL-terminated name.
        let memfd = unsafe { libc::memfd_create(c"t".as_ptr(), libc::MFD_CLOEXEC) };
        check(memfd >= 0, 8, "memfd_create");
        // SAFETY: a fresh fd.
        let memfd = unsafe { OwnedFd::from_raw_fd(memfd) };
        check(
            open_errno(
                &format!("/proc/self/fd/{}", memfd.as_raw_fd()),
                libc::O_RDWR,
            ) == 0,
            9,
            "reopen a memfd for writing",
        );
        // The escapes: key calls from anywhere but the sandbox's own site.
        // SAFETY: (all below) system calls whose refusal is the point.
        unsafe {
            check(
                libc::syscall(libc::SYS_pkey_alloc, 0, 0) == -1 && errno() == libc::EPERM,
                10,
                "pkey_alloc",
            );
            check(
                libc::syscall(libc::SYS_process_vm_readv, 0, 0, 0, 0, 0, 0) == -1
                    && errno() == libc::EPERM,
                11,
                "process_vm_readv",
            );
        }
        // A protected range: no unmapping, no re-protection, sealed where
        // the kernel has mseal.
        let page = common::map_page();
        // SAFETY: our own page, kept for the child's life.
        let done = unsafe { harden::protect_ranges(&[(page as usize, 4096)]) };
        check(done == Ok(true), 12, "protect_ranges");
        // SAFETY: calls on our own page that must be refused.
        unsafe {
            check(
                libc::munmap(page.cast(), 4096) == -1 && errno() == libc::EPERM,
                13,
                "munmap protected",
            );
            check(
                libc::mprotect(page.cast(), 4096, libc::PROT_READ) == -1 && errno() == libc::EPERM,
                14,
                "mprotect protected",
            );
            std::ptr::write_volatile(page, 1);
        }
        let after = harden::report().unwrap();
        check(after.range_filters == 1, 15, "one stacked filter");
        // mseal exists from Linux 6.10 (here 6.18, the VM 6.12).
        check(
            after.sealed == u32::from(kernel_at_least(6, 10)),
            19,
            "the range is sealed where the kernel has mseal",
        );
        if pkbpf_sandbox::is_active() {
            // Keys still come from the trusted site, and fresh pages can be
            // tagged; protected ones cannot.
            let key = pkbpf_sandbox::Keys::alloc_extension();
            check(key.is_ok(), 16, "alloc_extension after hardening");
            let key = key.unwrap();
            let fresh = common::map_page();
            // SAFETY: our own pages.
            unsafe {
                check(
                    pkbpf_sandbox::protect(fresh as usize, 4096, key).is_ok(),
                    17,
                    "protect a fresh page",
                );
                check(
                    pkbpf_sandbox::protect(page as usize, 4096, key).is_err(),
                    18,
                    "re-tag a protected page",
                );
            }
        }
    });
    if common::exit_code(status) == Some(77) {
        return;
    }
    assert_eq!(
        common::exit_code(status),
        Some(0),
        "status {status:#x} (the child printed the failed step)"
    );
}

#[test]
fn proc_writes_can_be_left_alone() {
    let status = common::in_child(|| {
        let r = harden::harden_process(HardenOptions { proc_writes: false });
        if r.is_err() && !common::pku_required() {
            println!("skipped: proc_writes_can_be_left_alone: {r:?}");
            return;
        }
        check(
            r.map(|r| r.proc_writes == ProcWrites::Allowed) == Ok(true),
            1,
            "harden without landlock",
        );
        check(
            open_errno("/proc/self/mem", libc::O_RDWR) == 0,
            2,
            "open /proc/self/mem",
        );
    });
    assert_eq!(common::exit_code(status), Some(0), "status {status:#x}");
}
