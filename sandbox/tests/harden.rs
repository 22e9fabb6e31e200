//! The seccomp hardening filter: its program checked against a model by a
//! small classic-BPF interpreter (property test), and the real filter applied
//! in forked children (needs no PKU: seccomp decides on arguments only).

mod common;

use pkbpf_sandbox::harden::Hardening;
use proptest::prelude::*;

const ALLOW: u32 = 0x7fff_0000;
const EPERM: u32 = 0x0005_0000 | libc::EPERM as u32;
const KILL: u32 = 0x8000_0000;
const X86_64: u32 = 0xc000_003e;

/// Runs a classic-BPF seccomp program over `seccomp_data`.
fn run(prog: &[libc::sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
    run_at(prog, nr, arch, args, 0)
}

/// [`run`] with the calling instruction's address.
fn run_at(prog: &[libc::sock_filter], nr: u32, arch: u32, args: [u64; 6], ip: u64) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_le_bytes());
    data[4..8].copy_from_slice(&arch.to_le_bytes());
    data[8..16].copy_from_slice(&ip.to_le_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
    }
    let word = |k: u32| u32::from_le_bytes(data[k as usize..k as usize + 4].try_into().unwrap());
    let (mut a, mut x, mut m) = (0u32, 0u32, [0u32; 16]);
    let mut pc = 0usize;
    loop {
        let i = prog[pc];
        pc += 1;
        let k = i.k;
        let mut cond = |c: bool| {
            if c {
                pc += i.jt as usize
            } else {
                pc += i.jf as usize
            }
        };
        match i.code {
            0x20 => a = word(k),
            0x60 => a = m[k as usize],
            0x02 => m[k as usize] = a,
            0x07 => x = a,
            0x0c => a = a.wrapping_add(x),
            0x04 => a = a.wrapping_add(k),
            0x15 => cond(a == k),
            0x25 => cond(a > k),
            0x35 => cond(a >= k),
            0x45 => cond(a & k != 0),
            0x3d => cond(a >= x),
            0x05 => pc += k as usize,
            0x06 => return k,
            c => panic!("unexpected opcode {c:#x} at {}", pc - 1),
        }
    }
}

/// What the base filter must answer; `trusted`: the call comes from the
/// sandbox's trusted system-call site.
fn model(ranges: &[(u64, u64)], nr: i64, args: [u64; 6], trusted: bool) -> u32 {
    let hits = |a: u64, l: u64| ranges.iter().any(|&(s, e)| a < e && a.wrapping_add(l) > s);
    let deny = match nr {
        libc::SYS_pkey_free
        | libc::SYS_process_vm_writev
        | libc::SYS_process_vm_readv
        | 440 // process_madvise
        | libc::SYS_io_uring_setup
        | libc::SYS_ptrace => true,
        libc::SYS_pkey_alloc => !trusted,
        libc::SYS_pkey_mprotect => !trusted || hits(args[0], args[1]),
        libc::SYS_shmat => args[2] & 0x4000 != 0,
        libc::SYS_mprotect
        | libc::SYS_munmap
        | libc::SYS_madvise
        | libc::SYS_remap_file_pages => hits(args[0], args[1]),
        libc::SYS_mremap => hits(args[0], args[1]) || (args[3] & 2 != 0 && hits(args[4], args[2])),
        libc::SYS_mmap => args[3] & 0x10 != 0 && hits(args[0], args[1]),
        _ => false,
    };
    if deny {
        EPERM
    } else {
        ALLOW
    }
}

const CALLS: [i64; 17] = [
    libc::SYS_pkey_alloc,
    libc::SYS_process_vm_readv,
    440,
    libc::SYS_io_uring_setup,
    libc::SYS_shmat,
    libc::SYS_remap_file_pages,
    libc::SYS_getpid,
    libc::SYS_mprotect,
    libc::SYS_munmap,
    libc::SYS_madvise,
    libc::SYS_mremap,
    libc::SYS_mmap,
    libc::SYS_pkey_mprotect,
    libc::SYS_pkey_free,
    libc::SYS_process_vm_writev,
    libc::SYS_ptrace,
    libc::SYS_read,
];

/// Addresses at or next to the test ranges' edges (in bytes and pages),
/// including edges across the 32-bit word boundary, or anything.
fn addr() -> impl Strategy<Value = u64> {
    const EDGES: [u64; 8] = [
        0xffff_f000,
        0x1_0000_1000,
        0x7fff_f000_0000,
        0x7fff_f000_3000,
        0x5000,
        0x6000,
        0,
        0xffff_ffff_ffff_f000,
    ];
    prop_oneof![
        any::<u64>(),
        (0usize..EDGES.len(), -2i64..=2, -2i64..=2)
            .prop_map(|(e, bytes, pages)| EDGES[e].wrapping_add((bytes + pages * 0x1000) as u64)),
    ]
}

/// An `(addr, len)` pair whose start and end both tend to sit near edges.
fn span() -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![
        (addr(), addr()).prop_map(|(a, end)| (a, end.wrapping_sub(a))),
        (addr(), any::<u64>()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]
    #[test]
    fn filter_matches_the_model(
        nr in proptest::sample::select(CALLS.to_vec()),
        (a0, a1) in span(), (a4, a2) in span(), a3 in any::<u64>(),
        ip_kind in 0u8..4,
    ) {
        let h = Hardening::new()
            .protect_range(0x1_0000_0000 - 0x1000, 0x2000).unwrap()
            .protect_range(0x7fff_f000_0000, 0x3000).unwrap()
            .protect_range(0x5000, 0x1000).unwrap();
        let prog = h.program().unwrap();
        let args = [a0, a1, a2, a3, a4, 0];
        // The trusted address, one that shares its low or high half, or 0.
        let t = h.trusted_ip();
        let ip = [t, t ^ 0x10, t ^ (1 << 40), 0][ip_kind as usize];
        prop_assert_eq!(
            run_at(&prog, nr as u32, X86_64, args, ip),
            model(h.ranges(), nr, args, ip == t)
        );
    }

    #[test]
    fn ranges_only_filter_matches_the_model(
        nr in proptest::sample::select(CALLS.to_vec()),
        (a0, a1) in span(), (a4, a2) in span(), a3 in any::<u64>(),
    ) {
        let h = Hardening::ranges_only()
            .protect_range(0x7fff_f000_0000, 0x3000).unwrap()
            .protect_range(0x5000, 0x1000).unwrap();
        let prog = h.program().unwrap();
        let args = [a0, a1, a2, a3, a4, 0];
        // Only range checks: the base filter answers everything else.
        let expect = match nr {
            libc::SYS_pkey_mprotect
            | libc::SYS_mprotect
            | libc::SYS_munmap
            | libc::SYS_madvise
            | libc::SYS_remap_file_pages
            | libc::SYS_mremap
            | libc::SYS_mmap => model(h.ranges(), nr, args, true),
            _ => ALLOW,
        };
        prop_assert_eq!(run_at(&prog, nr as u32, X86_64, args, h.trusted_ip()), expect);
    }
}

#[test]
fn filter_boundaries_and_abi() {
    let h = Hardening::new()
        .protect_range(0x7fff_0000_1000, 0x1000)
        .unwrap();
    assert_eq!(h.ranges(), &[(0x7fff_0000_1000, 0x7fff_0000_2000)]);
    let p = h.program().unwrap();
    let mp = libc::SYS_mprotect as u32;
    // Ending exactly at the start, or starting exactly at the end: allowed.
    assert_eq!(
        run(&p, mp, X86_64, [0x7fff_0000_0000, 0x1000, 0, 0, 0, 0]),
        ALLOW
    );
    assert_eq!(
        run(&p, mp, X86_64, [0x7fff_0000_2000, 0x1000, 0, 0, 0, 0]),
        ALLOW
    );
    // One byte in: denied; covering it from far below: denied.
    assert_eq!(
        run(&p, mp, X86_64, [0x7fff_0000_0000, 0x1001, 0, 0, 0, 0]),
        EPERM
    );
    assert_eq!(
        run(&p, mp, X86_64, [0x1000, 0x7fff_0000_1000, 0, 0, 0, 0]),
        EPERM
    );
    // mmap without MAP_FIXED may pass any hint.
    let mm = libc::SYS_mmap as u32;
    assert_eq!(
        run(&p, mm, X86_64, [0x7fff_0000_1000, 0x1000, 3, 0x22, 0, 0]),
        ALLOW
    );
    assert_eq!(
        run(&p, mm, X86_64, [0x7fff_0000_1000, 0x1000, 3, 0x32, 0, 0]),
        EPERM
    );
    // Another ABI is killed; x32 numbers are refused.
    assert_eq!(run(&p, mp, 0x4000_0003, [0; 6]), KILL);
    assert_eq!(run(&p, 0x4000_0000 | mp, X86_64, [0; 6]), EPERM);
    // Unrelated calls pass.
    assert_eq!(run(&p, libc::SYS_getpid as u32, X86_64, [0; 6]), ALLOW);
}

#[test]
fn range_limit_is_a_typed_error_and_full_filters_fit() {
    use pkbpf_sandbox::harden::MAX_PROTECTED_RANGES;
    use pkbpf_sandbox::SandboxError;
    let mut h = Hardening::new();
    for i in 0..MAX_PROTECTED_RANGES {
        h = h.protect_range(0x10_0000 + i * 0x2000, 0x1000).unwrap();
    }
    let prog = h.program().expect("a full filter fits classic BPF");
    // The last range still works, through the long jumps.
    let last = (0x10_0000 + (MAX_PROTECTED_RANGES - 1) * 0x2000) as u64;
    let mp = libc::SYS_mmap as u32;
    assert_eq!(run(&prog, mp, X86_64, [last, 0x1000, 3, 0x32, 0, 0]), EPERM);
    assert_eq!(
        run(&prog, mp, X86_64, [last + 0x1000, 0x1000, 3, 0x32, 0, 0]),
        ALLOW
    );
    assert_eq!(
        h.protect_range(0x9000_0000, 0x1000),
        Err(SandboxError::TooManyRanges {
            max: MAX_PROTECTED_RANGES
        })
    );
}

fn errno_of(r: i64) -> i32 {
    if r == -1 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        0
    }
}

#[test]
fn applied_filter_denies_remapping_protected_pages() {
    let status = common::in_child(|| {
        // Three pages: the middle one is protected.
        // SAFETY: a fresh anonymous mapping.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                3 * 4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        } as usize;
        let mid = base + 4096;
        let h = Hardening::new().protect_range(mid, 4096).unwrap();
        if let Err(e) = h.apply() {
            println!("skipped: applied_filter_denies_remapping_protected_pages: {e}");
            // SAFETY: ends the child; 77 = skipped.
            unsafe { libc::_exit(77) };
        }
        let mut code = 0;
        let mut expect = |what: &str, r: i64, errno: i32| {
            code += 1;
            if errno_of(r) != errno {
                eprintln!("{what}: got {r} errno {}", errno_of(r));
                // SAFETY: ends the child with the failing step's number.
                unsafe { libc::_exit(code) };
            }
        };
        // SAFETY: (all calls below) system calls on our own mapping; the
        // filter is expected to refuse the ones over the middle page.
        unsafe {
            let rw = libc::PROT_READ | libc::PROT_WRITE;
            expect(
                "mprotect mid",
                libc::mprotect(mid as _, 4096, libc::PROT_READ) as i64,
                libc::EPERM,
            );
            expect(
                "mprotect span",
                libc::mprotect(base as _, 3 * 4096, rw) as i64,
                libc::EPERM,
            );
            expect(
                "mprotect first",
                libc::mprotect(base as _, 4096, rw) as i64,
                0,
            );
            expect(
                "munmap mid",
                libc::munmap(mid as _, 4096) as i64,
                libc::EPERM,
            );
            expect(
                "madvise mid",
                libc::madvise(mid as _, 4096, libc::MADV_DONTNEED) as i64,
                libc::EPERM,
            );
            let r = libc::mremap(mid as _, 4096, 8192, libc::MREMAP_MAYMOVE);
            expect(
                "mremap mid",
                if r == libc::MAP_FAILED { -1 } else { 0 },
                libc::EPERM,
            );
            let r = libc::mmap(
                mid as _,
                4096,
                rw,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            );
            expect(
                "mmap fixed mid",
                if r == libc::MAP_FAILED { -1 } else { 0 },
                libc::EPERM,
            );
            let r = libc::mmap(
                std::ptr::null_mut(),
                4096,
                rw,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            expect(
                "mmap anywhere",
                if r == libc::MAP_FAILED { -1 } else { 0 },
                0,
            );
            expect(
                "pkey_mprotect",
                libc::syscall(libc::SYS_pkey_mprotect, base, 4096, rw, 0),
                libc::EPERM,
            );
            expect(
                "pkey_free",
                libc::syscall(libc::SYS_pkey_free, 1),
                libc::EPERM,
            );
            let mut byte = 0u8;
            let local = libc::iovec {
                iov_base: (&mut byte as *mut u8).cast(),
                iov_len: 1,
            };
            let remote = libc::iovec {
                iov_base: base as _,
                iov_len: 1,
            };
            expect(
                "process_vm_writev",
                libc::process_vm_writev(libc::getpid(), &local, 1, &remote, 1, 0) as i64,
                libc::EPERM,
            );
            expect(
                "ptrace",
                libc::ptrace(libc::PTRACE_PEEKDATA, libc::getppid(), base, 0),
                libc::EPERM,
            );
            expect(
                "munmap last",
                libc::munmap((base + 8192) as _, 4096) as i64,
                0,
            );
            // The protected page is still mapped and writable.
            std::ptr::write_volatile(mid as *mut u8, 1);
        }
    });
    let code = common::exit_code(status);
    if code == Some(77) {
        assert!(!common::pku_required(), "seccomp unavailable in the VM");
        return;
    }
    assert_eq!(
        code,
        Some(0),
        "failed at step {code:?} (status {status:#x})"
    );
}

#[test]
fn jit_code_can_be_made_execute_only() {
    use pkbpf_sandbox::{copy_from_user, Domain, GateStub};
    // mov eax, 5; ret
    let code = common::map_code(&[0xb8, 5, 0, 0, 0, 0xc3]);
    // SAFETY: our own code page; read below only through the guarded copy.
    let xom = unsafe { pkbpf_sandbox::harden::execute_only(code as usize, 4096) }.unwrap();
    assert_eq!(xom, pkbpf_sandbox::is_active());
    // SAFETY: the page holds a C-ABI function.
    let f: unsafe extern "C" fn(usize) -> u64 = unsafe { std::mem::transmute(code) };
    let gate = GateStub::new(Domain::host(), Domain::host()).unwrap();
    // SAFETY: the function touches no memory.
    assert_eq!(unsafe { gate.call(f, 0) }, Ok(5));
    let mut b = [0u8; 6];
    let read = copy_from_user(&mut b, code as usize);
    if xom {
        let fault = read.unwrap_err();
        assert!(fault.is_pku(), "{fault}");
    } else {
        read.unwrap();
        assert_eq!(b, [0xb8, 5, 0, 0, 0, 0xc3]);
    }
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = rel.trim().split(|c: char| !c.is_ascii_digit());
    let ma: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let mi: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (ma, mi) >= (major, minor)
}

#[test]
fn sealed_mappings_cannot_be_changed() {
    let status = common::in_child(|| {
        let p = common::map_page() as usize;
        // SAFETY: our own page, never unmapped by this child.
        let sealed = unsafe { pkbpf_sandbox::harden::seal(p, 4096) }.expect("mseal");
        if !sealed {
            // SAFETY: ends the child; 77 = no mseal in this kernel.
            unsafe { libc::_exit(77) };
        }
        // SAFETY: calls on our own page that the seal must refuse.
        unsafe {
            if libc::mprotect(p as _, 4096, libc::PROT_READ) == 0 {
                libc::_exit(1);
            }
            if libc::munmap(p as _, 4096) == 0 {
                libc::_exit(2);
            }
            // Still mapped and writable.
            std::ptr::write_volatile(p as *mut u8, 7);
        }
    });
    match common::exit_code(status) {
        Some(77) => {
            assert!(!kernel_at_least(6, 10), "mseal missing on a >= 6.10 kernel");
            println!("skipped: sealed_mappings_cannot_be_changed: kernel has no mseal");
        }
        code => assert_eq!(code, Some(0), "status {status:#x}"),
    }
}
