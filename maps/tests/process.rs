//! Cross-process: a forked child maps the region again from
//! `/proc/self/fd/N` (a second, independent mapping at another address) and
//! talks to the parent through the maps only.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use pkbpf_maps::{MapDef, MapError, MapType, Region, RegionBuilder, RingBufConsumer, BPF_ANY};

fn build() -> Region {
    let mut b = RegionBuilder::new();
    b.add(MapDef::new("flags", MapType::Array, 4, 8, 4))
        .unwrap();
    b.add(MapDef::new("h", MapType::Hash, 4, 8, 256)).unwrap();
    b.add(MapDef::new("rb", MapType::RingBuf, 0, 0, 64 * 1024))
        .unwrap();
    b.add(MapDef::new("q", MapType::Queue, 0, 4, 16)).unwrap();
    b.build().unwrap()
}

fn reopen(region: &Region) -> Region {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/self/fd/{}", region.fd().as_raw_fd()))
        .unwrap();
    Region::open(OwnedFd::from(f)).unwrap()
}

/// Runs `child` in a forked process; returns its exit status (0 = passed).
fn fork_run(child: impl FnOnce() -> bool) -> i32 {
    // SAFETY: the child only runs `child` (map operations, allocation) and
    // leaves with `_exit`, never returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(false);
        // SAFETY: _exit ends the child without running the parent's atexit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: pid is our child; status is a valid out pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child died: status {status:#x}");
    libc::WEXITSTATUS(status)
}

fn wait_flag(region: &Region, idx: u32, want: u64) -> bool {
    let m = region.map("flags").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if m.lookup(&idx.to_ne_bytes()).unwrap() == Some(want.to_ne_bytes().to_vec()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

#[test]
fn child_updates_parent_reads() {
    let region = build();
    let status = fork_run(|| {
        let r = reopen(&region);
        assert_ne!(
            r.as_range().addr,
            region.as_range().addr,
            "a second mapping"
        );
        let h = r.map("h").unwrap();
        for k in 0..100u32 {
            h.update(&k.to_ne_bytes(), &(k as u64 * 3).to_ne_bytes(), BPF_ANY)
                .unwrap();
        }
        r.map("q").unwrap().push(&7u32.to_ne_bytes(), 0).unwrap();
        r.map("h").unwrap().freeze();
        true
    });
    assert_eq!(status, 0);
    let h = region.map("h").unwrap();
    for k in 0..100u32 {
        assert_eq!(
            h.lookup(&k.to_ne_bytes()).unwrap(),
            Some((k as u64 * 3).to_ne_bytes().to_vec())
        );
    }
    assert_eq!(h.keys().count(), 100);
    assert_eq!(
        region.map("q").unwrap().pop().unwrap(),
        Some(7u32.to_ne_bytes().to_vec())
    );
    // The child's freeze is visible here too.
    assert!(matches!(
        h.update(&1u32.to_ne_bytes(), &0u64.to_ne_bytes(), BPF_ANY),
        Err(MapError::Frozen { .. })
    ));
}

#[test]
fn parent_updates_child_reads() {
    let region = build();
    let child_region = region.clone();
    // SAFETY: as in fork_run; the parent writes after the fork, so the child
    // can only see the values through the shared mapping.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let r = reopen(&child_region);
            if !wait_flag(&r, 0, 1) {
                return false;
            }
            let h = r.map("h").unwrap();
            let all = (0..50u32).all(|k| {
                h.lookup(&k.to_ne_bytes()).unwrap() == Some((k as u64 + 9).to_ne_bytes().to_vec())
            });
            // Program-side pointer access in the child's own mapping.
            // SAFETY: 4-byte key; non-null points to the 8-byte value.
            let p = unsafe { h.raw().lookup(3u32.to_ne_bytes().as_ptr()) };
            // SAFETY: read only when non-null: the 8-byte value.
            all && !p.is_null() && unsafe { std::ptr::read(p as *const u64) } == 12
        }))
        .unwrap_or(false);
        // SAFETY: see fork_run.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let h = region.map("h").unwrap();
    for k in 0..50u32 {
        h.update(&k.to_ne_bytes(), &(k as u64 + 9).to_ne_bytes(), BPF_ANY)
            .unwrap();
    }
    region
        .map("flags")
        .unwrap()
        .update(&0u32.to_ne_bytes(), &1u64.to_ne_bytes(), BPF_ANY)
        .unwrap();
    let mut status = 0;
    // SAFETY: pid is our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed: {status:#x}"
    );
}

/// A child produces ringbuf records; the parent, blocked in `wait`, gets
/// every one in order.
#[test]
fn ringbuf_across_processes() {
    let region = build();
    let mut consumer = RingBufConsumer::new(&region.map("rb").unwrap()).unwrap();
    const N: u32 = 20_000;
    let child_region = region.clone();
    // SAFETY: as in fork_run.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let r = reopen(&child_region);
        let raw = r.raw(r.index_of("rb").unwrap()).unwrap();
        let mut i = 0u32;
        let deadline = Instant::now() + Duration::from_secs(60);
        while i < N && Instant::now() < deadline {
            let p = raw.ringbuf_reserve(4 + (i % 13) as u64, 0);
            if p.is_null() {
                std::thread::yield_now();
                continue;
            }
            // SAFETY: the record has at least 4 bytes; submitted once.
            unsafe {
                std::ptr::write_unaligned(p as *mut u32, i);
                r.ringbuf_commit(p, 0, false);
            }
            i += 1;
        }
        // SAFETY: see fork_run.
        unsafe { libc::_exit(if i == N { 0 } else { 1 }) };
    }
    let mut next = 0u32;
    let deadline = Instant::now() + Duration::from_secs(60);
    while next < N && Instant::now() < deadline {
        consumer.wait(Duration::from_millis(200));
        consumer.poll(|d| {
            assert_eq!(d.len() as u32, 4 + next % 13);
            assert_eq!(u32::from_ne_bytes(d[..4].try_into().unwrap()), next);
            next += 1;
        });
    }
    let mut status = 0;
    // SAFETY: pid is our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert_eq!(next, N, "records lost");
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
}

fn memfd_with(bytes: &[u8]) -> OwnedFd {
    // SAFETY: NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"junk".as_ptr(), 0) };
    assert!(fd >= 0);
    // SAFETY: fresh fd we own.
    let f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    std::io::Write::write_all(&mut &f, bytes).unwrap();
    f.into()
}

#[test]
fn open_rejects_foreign_or_corrupt_regions() {
    assert!(matches!(
        Region::open(memfd_with(&[0u8; 16])),
        Err(MapError::BadRegion { .. })
    ));
    assert!(matches!(
        Region::open(memfd_with(&[0xabu8; 8192])),
        Err(MapError::BadRegion { .. })
    ));
    // A valid region whose header is then corrupted: the stored layout no
    // longer matches the definitions.
    let region = build();
    let base = region.as_range().addr as *mut u8;
    // Map 0's max_entries (entry at 64, name is 64 bytes, then type, key, value, max).
    // SAFETY: inside the header page of our own mapping; nobody else uses it.
    unsafe { std::ptr::write_unaligned(base.add(64 + 64 + 12) as *mut u32, 1 << 30) };
    let err = Region::open(reopen_fd(&region)).unwrap_err();
    assert!(matches!(err, MapError::BadRegion { .. }), "{err}");
}

fn reopen_fd(region: &Region) -> OwnedFd {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/self/fd/{}", region.fd().as_raw_fd()))
        .unwrap()
        .into()
}

/// A process that dies holding a hash bucket's lock (here the child takes
/// the lock and exits, as one killed in the middle of an update would) does
/// not wedge the map: the parent's next lookup and update of a key in that
/// bucket find the holder gone, release its lock, succeed, and the map
/// reports that it may be inconsistent.
#[test]
fn a_lock_abandoned_by_a_dead_process_is_recovered() {
    let region = build();
    let h = region.map("h").unwrap();
    let key = 7u32.to_ne_bytes();
    h.update(&key, &1u64.to_ne_bytes(), BPF_ANY).unwrap();
    h.update(&8u32.to_ne_bytes(), &8u64.to_ne_bytes(), BPF_ANY)
        .unwrap();
    assert!(!h.possibly_inconsistent());
    let status = fork_run(|| {
        let h = region.map("h").unwrap();
        // SAFETY: a 4-byte key; this process exits right after.
        unsafe { h.raw().abandon_bucket_lock(key.as_ptr()) };
        true
    });
    assert_eq!(status, 0);
    // fork_run reaped the child: its thread id no longer exists.
    assert_eq!(h.lookup(&key).unwrap(), Some(1u64.to_ne_bytes().to_vec()));
    assert!(h.possibly_inconsistent());
    h.update(&key, &2u64.to_ne_bytes(), BPF_ANY).unwrap();
    assert_eq!(h.lookup(&key).unwrap(), Some(2u64.to_ne_bytes().to_vec()));
    assert_eq!(
        h.lookup(&8u32.to_ne_bytes()).unwrap(),
        Some(8u64.to_ne_bytes().to_vec())
    );
    h.delete(&key).unwrap();
    assert_eq!(h.lookup(&key).unwrap(), None);
}
