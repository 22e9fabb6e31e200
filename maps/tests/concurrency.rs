//! Concurrency: several threads hammer one map through the program-side and
//! userspace APIs; no update is lost, no value is torn, racing deletes and
//! updates leave a consistent map.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use pkbpf_maps::{Map, MapDef, MapType, RegionBuilder, BPF_ANY, BPF_NOEXIST};

const THREADS: usize = 4;

fn map(def: MapDef) -> Map {
    let mut b = RegionBuilder::new();
    b.add(def.clone()).unwrap();
    b.build().unwrap().map(&def.name).unwrap()
}

/// Atomic adds through value pointers returned by `lookup` lose nothing,
/// for arrays and hashes (the JIT's `lock xadd` on a map value).
#[test]
fn atomic_adds_through_value_pointers_lose_no_update() {
    const OPS: u64 = 20_000;
    for ty in [MapType::Array, MapType::Hash, MapType::LruHash] {
        let m = map(MapDef::new("ctr", ty, 4, 8, 16));
        for k in 0..16u32 {
            m.update(&k.to_ne_bytes(), &0u64.to_ne_bytes(), BPF_ANY)
                .unwrap();
        }
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for i in 0..OPS {
                        let k = ((i as usize + t) % 16) as u32;
                        // SAFETY: 4-byte key.
                        let p = unsafe { m.raw().lookup(k.to_ne_bytes().as_ptr()) };
                        assert!(!p.is_null());
                        // SAFETY: values are 8-aligned and 8 bytes; the element is never deleted here.
                        unsafe { AtomicU64::from_ptr(p as *mut u64) }
                            .fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let total: u64 = (0..16u32)
            .map(|k| {
                u64::from_ne_bytes(
                    m.lookup(&k.to_ne_bytes())
                        .unwrap()
                        .unwrap()
                        .try_into()
                        .unwrap(),
                )
            })
            .sum();
        assert_eq!(total, OPS * THREADS as u64, "{ty}");
    }
}

/// Writers store values made of one repeated word; userspace readers never
/// see two different words in one value (hash: in-place updates under the
/// bucket seqlock; array: per-element seqlock).
#[test]
fn values_are_never_torn() {
    const WORDS: usize = 64;
    for ty in [
        MapType::Hash,
        MapType::Array,
        MapType::PerCpuHash,
        MapType::PerCpuArray,
    ] {
        let m = map(MapDef::new("torn", ty, 4, (WORDS * 8) as u32, 4));
        let buf = m.value_buffer_size();
        for k in 0..4u32 {
            m.update(&k.to_ne_bytes(), &vec![0u8; buf], BPF_ANY)
                .unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..2)
            .map(|t| {
                let (m, stop) = (m.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let w = (i << 8) | t as u64;
                        let v: Vec<u8> = std::iter::repeat_n(w.to_ne_bytes(), buf / 8)
                            .flatten()
                            .collect();
                        let k = (i % 4) as u32;
                        if i.is_multiple_of(2) {
                            m.update(&k.to_ne_bytes(), &v, BPF_ANY).unwrap();
                        } else {
                            // Program-side update (per-CPU: this CPU's slot only).
                            let key = k.to_ne_bytes();
                            // SAFETY: 4-byte key, value of value_size bytes at least.
                            let r = unsafe { m.raw().update(key.as_ptr(), v.as_ptr(), BPF_ANY) };
                            assert_eq!(r, 0);
                        }
                    }
                })
            })
            .collect();
        let mut checked = 0;
        while checked < 20_000 {
            for k in 0..4u32 {
                let v = m.lookup(&k.to_ne_bytes()).unwrap().unwrap();
                // Per CPU, each slot must be uniform on its own.
                let stride = m.raw().value_stride();
                for slot in v.chunks(stride) {
                    let first = &slot[..8];
                    assert!(
                        slot.chunks(8).all(|w| w == first),
                        "{ty}: torn value {slot:?}"
                    );
                }
                checked += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
    }
}

/// Threads insert and delete overlapping keys; afterwards the map is
/// consistent: iteration yields distinct live keys, every element is
/// reachable or free (after deleting all, `max_entries` fresh keys fit).
#[test]
fn deletes_and_updates_race_safely() {
    const MAX: u32 = 64;
    for ty in [MapType::Hash, MapType::LruHash, MapType::PerCpuHash] {
        let m = map(MapDef::new("race", ty, 8, 8, MAX));
        let buf = m.value_buffer_size();
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    let mut x = 0x9e3779b97f4a7c15u64 ^ t as u64;
                    for _ in 0..20_000 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let k = (x % 96).to_ne_bytes();
                        match x % 3 {
                            0 => {
                                let _ = m.delete(&k);
                            }
                            1 => {
                                let v = vec![(x & 0xff) as u8; buf];
                                match m.update(&k, &v, BPF_ANY) {
                                    Ok(()) => {}
                                    Err(e) => assert_eq!(e.errno(), libc::E2BIG, "{ty}: {e}"),
                                }
                            }
                            _ => {
                                if let Some(v) = m.lookup(&k).unwrap() {
                                    assert!(v.iter().all(|b| *b == v[0]), "{ty}: torn");
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let keys: Vec<Vec<u8>> = m.keys().collect::<Result<_, _>>().unwrap();
        let mut dedup = keys.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), keys.len(), "{ty}: duplicate keys");
        assert!(keys.len() <= MAX as usize);
        for k in &keys {
            assert!(m.lookup(k).unwrap().is_some());
            m.delete(k).unwrap();
        }
        assert_eq!(m.keys().count(), 0);
        for k in 1000..1000 + MAX as u64 {
            m.update(&k.to_ne_bytes(), &vec![1u8; buf], BPF_NOEXIST)
                .unwrap();
        }
        if ty == MapType::Hash {
            assert_eq!(
                m.update(&5000u64.to_ne_bytes(), &vec![1u8; buf], BPF_ANY)
                    .unwrap_err()
                    .errno(),
                libc::E2BIG
            );
        }
    }
}

/// Many threads inserting fresh keys into a full LRU map always succeed
/// (eviction under contention, no deadlock) and the map stays at capacity.
#[test]
fn lru_eviction_under_contention() {
    let m = map(MapDef::new("lru", MapType::LruHash, 8, 8, 32));
    let threads: Vec<_> = (0..THREADS as u64)
        .map(|t| {
            let m = m.clone();
            std::thread::spawn(move || {
                for i in 0..5_000u64 {
                    let k = (t << 32 | i).to_ne_bytes();
                    m.update(&k, &i.to_ne_bytes(), BPF_ANY).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(m.keys().count(), 32);
}

/// Queue pushes and pops from several threads: every value comes out once.
#[test]
fn queue_push_pop_race() {
    let m = map(MapDef::new("q", MapType::Queue, 0, 8, 128));
    let producers: Vec<_> = (0..2u64)
        .map(|t| {
            let m = m.clone();
            std::thread::spawn(move || {
                for i in 0..5_000u64 {
                    let v = (t << 32 | i).to_ne_bytes();
                    while m.push(&v, BPF_ANY).is_err() {
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    let mut seen = vec![Vec::new(); 2];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while seen.iter().map(Vec::len).sum::<usize>() < 10_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "queue consumer timed out"
        );
        if let Some(v) = m.pop().unwrap() {
            let v = u64::from_ne_bytes(v.try_into().unwrap());
            seen[(v >> 32) as usize].push(v & 0xffff_ffff);
        }
    }
    for p in producers {
        p.join().unwrap();
    }
    for s in seen {
        assert_eq!(s, (0..5_000).collect::<Vec<_>>(), "FIFO order per producer");
    }
}

/// Lookups take no lock: readers race writers that update, insert and
/// delete keys sharing buckets with theirs (deleted elements are recycled
/// for other keys at once). A key that stays in the map is never missed by
/// the program-side lookup and keeps its element; userspace lookups (the
/// seqlock-checked copy) never return a torn value or another key's value.
/// Key sizes 4 and 8 take the specialised paths, 12 the general one.
#[test]
fn lock_free_lookups_never_see_a_wrong_or_torn_value() {
    const STABLE: u64 = 16;
    const IDS: u64 = 112;
    const MAGIC: u64 = 0x5eed_f00d_dead_beef;
    for ks in [4usize, 8, 12] {
        let m = map(MapDef::new("lockfree", MapType::Hash, ks as u32, 24, 64));
        let key = move |id: u64| -> Vec<u8> {
            let mut k = vec![0u8; ks];
            k[..4].copy_from_slice(&(id as u32).to_le_bytes());
            for (i, b) in k.iter_mut().enumerate().skip(4) {
                *b = (id as u8).wrapping_mul(31).wrapping_add(i as u8);
            }
            k
        };
        let value = |id: u64, n: u64| -> Vec<u8> {
            [id, n, id ^ n ^ MAGIC]
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .collect()
        };
        let check = move |id: u64, v: &[u8]| {
            let w = |i: usize| u64::from_le_bytes(v[8 * i..8 * i + 8].try_into().unwrap());
            assert_eq!(w(0), id, "key size {ks}: another key's value");
            assert_eq!(w(2), id ^ w(1) ^ MAGIC, "key size {ks}: torn value");
        };
        for id in 0..STABLE {
            m.update(&key(id), &value(id, 0), BPF_NOEXIST).unwrap();
        }
        // SAFETY: keys of key_size bytes.
        let homes: Vec<usize> = (0..STABLE)
            .map(|id| unsafe { m.raw().lookup(key(id).as_ptr()) } as usize)
            .collect();
        assert!(homes.iter().all(|&p| p != 0));
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (m, stop, homes) = (m.clone(), stop.clone(), homes.clone());
                std::thread::spawn(move || {
                    let mut rounds = 0u64;
                    while !stop.load(Ordering::Relaxed) || rounds < 100 {
                        rounds += 1;
                        for id in 0..IDS {
                            let k = key(id);
                            if id < STABLE {
                                // SAFETY: a key of key_size bytes.
                                let p = unsafe { m.raw().lookup(k.as_ptr()) } as usize;
                                assert_eq!(
                                    p, homes[id as usize],
                                    "key size {ks}: stable key {id} moved or missed"
                                );
                            }
                            match m.lookup(&k).unwrap() {
                                Some(v) => check(id, &v),
                                None => {
                                    assert!(id >= STABLE, "key size {ks}: stable key {id} missed")
                                }
                            }
                        }
                        if r == 0 {
                            // Iteration yields only keys of the id space.
                            for k in m.keys() {
                                let k = k.unwrap();
                                let id = u32::from_le_bytes(k[..4].try_into().unwrap()) as u64;
                                assert!(id < IDS && k == key(id), "key size {ks}: bad key {k:?}");
                            }
                        }
                    }
                })
            })
            .collect();
        let writers: Vec<_> = (0..2)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    let mut x = 0x2545_f491_4f6c_dd1du64 ^ (t as u64 + 1);
                    for n in 1..=20_000u64 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let id = x % IDS;
                        if id < STABLE || x & 0x100 == 0 {
                            match m.update(&key(id), &value(id, n), BPF_ANY) {
                                Ok(()) => {}
                                Err(e) => assert_eq!(e.errno(), libc::E2BIG),
                            }
                        } else {
                            let _ = m.delete(&key(id));
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
        for id in 0..STABLE {
            check(id, &m.lookup(&key(id)).unwrap().unwrap());
        }
    }
}
