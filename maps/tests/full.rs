//! Full-map behaviour for every type, frozen maps, layout ranges, typed
//! views and definition errors.

use pkbpf_maps::typed::{Array, HashMap, PerCpuArray, Queue};
use pkbpf_maps::{
    Map, MapDef, MapError, MapType, Region, RegionBuilder, BPF_ANY, BPF_EXIST, BPF_F_RDONLY_PROG,
    BPF_NOEXIST,
};

fn map(def: MapDef) -> Map {
    let mut b = RegionBuilder::new();
    b.add(def.clone()).unwrap();
    b.build().unwrap().map(&def.name).unwrap()
}

fn errno<T>(r: Result<T, MapError>) -> i32 {
    r.err().map_or(0, |e| e.errno())
}

#[test]
fn full_hash_maps_answer_e2big_and_lru_evicts() {
    for ty in [
        MapType::Hash,
        MapType::PerCpuHash,
        MapType::LruHash,
        MapType::LruPerCpuHash,
    ] {
        let m = map(MapDef::new("h", ty, 4, 4, 3));
        let v = vec![0u8; m.value_buffer_size()];
        for k in 0..3u32 {
            m.update(&k.to_ne_bytes(), &v, BPF_NOEXIST).unwrap();
        }
        let r = m.update(&9u32.to_ne_bytes(), &v, BPF_ANY);
        if ty.name().starts_with("lru") {
            r.unwrap();
            // Key 0 was least recently used.
            assert_eq!(m.lookup(&0u32.to_ne_bytes()).unwrap(), None, "{ty}");
            assert_eq!(m.keys().count(), 3);
        } else {
            assert_eq!(errno(r), libc::E2BIG, "{ty}");
            // Updating an existing key of a full map still works.
            m.update(&1u32.to_ne_bytes(), &v, BPF_EXIST).unwrap();
            // Program side too.
            let key = 9u32.to_ne_bytes();
            // SAFETY: 4-byte key, value of at least value_size bytes.
            let r = unsafe { m.raw().update(key.as_ptr(), v.as_ptr(), BPF_ANY) };
            assert_eq!(r, -(libc::E2BIG as i64));
        }
    }
}

#[test]
fn full_array_like_maps() {
    let a = map(MapDef::new("a", MapType::Array, 4, 4, 2));
    assert_eq!(
        errno(a.update(&2u32.to_ne_bytes(), &[0; 4], BPF_ANY)),
        libc::E2BIG
    );
    assert_eq!(
        errno(a.update(&0u32.to_ne_bytes(), &[0; 4], BPF_NOEXIST)),
        libc::EEXIST
    );
    assert_eq!(
        errno(a.update(&0u32.to_ne_bytes(), &[0; 4], 7)),
        libc::EINVAL
    );
    assert_eq!(a.lookup(&2u32.to_ne_bytes()).unwrap(), None);
    // SAFETY: 4-byte key.
    assert!(unsafe { a.raw().lookup(5u32.to_ne_bytes().as_ptr()) }.is_null());
    let pa = map(MapDef::new("pa", MapType::PerCpuArray, 4, 4, 2));
    let buf = vec![0u8; pa.value_buffer_size()];
    assert_eq!(
        errno(pa.update(&2u32.to_ne_bytes(), &buf, BPF_ANY)),
        libc::E2BIG
    );
    assert_eq!(
        errno(pa.update(&1u32.to_ne_bytes(), &buf, BPF_NOEXIST)),
        libc::EEXIST
    );
    assert_eq!(pa.lookup_percpu(&2u32.to_ne_bytes()).unwrap(), None);
    // SAFETY: 4-byte key, 4-byte value.
    let r = unsafe {
        pa.raw()
            .update(2u32.to_ne_bytes().as_ptr(), [0u8; 4].as_ptr(), BPF_ANY)
    };
    assert_eq!(r, -(libc::E2BIG as i64));
    let p = map(MapDef::new("p", MapType::ProgArray, 4, 4, 2));
    assert_eq!(
        errno(p.update(&2u32.to_ne_bytes(), &1u32.to_ne_bytes(), BPF_ANY)),
        libc::E2BIG
    );
    assert_eq!(p.raw().prog_array_get(2), None);
}

#[test]
fn full_queue_stack_and_lpm() {
    for ty in [MapType::Queue, MapType::Stack] {
        let q = map(MapDef::new("q", ty, 0, 4, 2));
        q.push(&1u32.to_ne_bytes(), BPF_ANY).unwrap();
        q.push(&2u32.to_ne_bytes(), BPF_ANY).unwrap();
        assert_eq!(
            errno(q.push(&3u32.to_ne_bytes(), BPF_ANY)),
            libc::E2BIG,
            "{ty}"
        );
        assert_eq!(
            errno(q.push(&3u32.to_ne_bytes(), BPF_NOEXIST)),
            libc::EINVAL,
            "{ty}"
        );
        // BPF_EXIST drops the oldest (1).
        q.push(&3u32.to_ne_bytes(), BPF_EXIST).unwrap();
        let mut out = Vec::new();
        while let Some(v) = q.pop().unwrap() {
            out.push(u32::from_ne_bytes(v.try_into().unwrap()));
        }
        assert_eq!(
            out,
            if ty == MapType::Queue {
                vec![2, 3]
            } else {
                vec![3, 2]
            }
        );
        assert_eq!(q.peek().unwrap(), None);
        let mut buf = [0u8; 4];
        // SAFETY: 4-byte output.
        let r = unsafe { q.raw().pop(buf.as_mut_ptr()) };
        assert_eq!(r, -(libc::ENOENT as i64));
    }
    let l = map(MapDef::new("l", MapType::LpmTrie, 8, 4, 1));
    let key = |p: u32, a: [u8; 4]| [p.to_ne_bytes(), a].concat();
    l.update(&key(8, [10, 0, 0, 0]), &[1; 4], BPF_ANY).unwrap();
    assert_eq!(
        errno(l.update(&key(16, [10, 1, 0, 0]), &[2; 4], BPF_ANY)),
        libc::E2BIG
    );
    assert_eq!(
        errno(l.update(&key(33, [10, 1, 0, 0]), &[2; 4], BPF_ANY)),
        libc::EINVAL
    );
    assert_eq!(l.lookup(&key(32, [10, 9, 9, 9])).unwrap(), Some(vec![1; 4]));
    assert_eq!(l.lookup(&key(32, [11, 9, 9, 9])).unwrap(), None);
}

#[test]
fn frozen_and_readonly_maps() {
    let mut b = RegionBuilder::new();
    b.add(MapDef {
        flags: BPF_F_RDONLY_PROG,
        ..MapDef::new(".rodata", MapType::Array, 4, 8, 1)
    })
    .unwrap();
    let r = b.build().unwrap();
    let m = r.map(".rodata").unwrap();
    m.update(&0u32.to_ne_bytes(), &5u64.to_ne_bytes(), BPF_ANY)
        .unwrap();
    m.freeze();
    assert!(m.is_frozen());
    assert!(matches!(
        m.update(&0u32.to_ne_bytes(), &6u64.to_ne_bytes(), BPF_ANY),
        Err(MapError::Frozen { .. })
    ));
    assert_eq!(
        errno(m.update(&0u32.to_ne_bytes(), &6u64.to_ne_bytes(), BPF_ANY)),
        libc::EPERM
    );
    let (key, val) = (0u32.to_ne_bytes(), 6u64.to_ne_bytes());
    // SAFETY: 4-byte key, 8-byte value.
    let r = unsafe { m.raw().update(key.as_ptr(), val.as_ptr(), BPF_ANY) };
    assert_eq!(r, -(libc::EPERM as i64));
    assert_eq!(
        m.lookup(&0u32.to_ne_bytes()).unwrap(),
        Some(5u64.to_ne_bytes().to_vec())
    );
}

#[test]
fn ringbuf_and_perf_refuse_element_ops() {
    let rb = map(MapDef::new("rb", MapType::RingBuf, 0, 0, 4096));
    assert!(matches!(
        rb.lookup(&[]),
        Err(MapError::Unsupported { op: "lookup", .. })
    ));
    assert!(matches!(
        rb.update(&[], &[], 0),
        Err(MapError::Unsupported { op: "update", .. })
    ));
    // SAFETY: zero-size key/value pointers are never read for a ringbuf.
    assert!(unsafe { rb.raw().lookup(std::ptr::null()) }.is_null());
}

#[test]
fn layout_ranges_are_page_aligned_and_disjoint() {
    let mut b = RegionBuilder::new();
    let defs = [
        MapDef::new("a", MapType::Array, 4, 12, 100),
        MapDef::new("h", MapType::Hash, 16, 40, 1000),
        MapDef::new("pa", MapType::PerCpuArray, 4, 8, 10),
        MapDef::new("rb", MapType::RingBuf, 0, 0, 8192),
        MapDef::new("q", MapType::Queue, 0, 8, 10),
        MapDef::new("pe", MapType::PerfEventArray, 4, 4, 2),
    ];
    for d in &defs {
        b.add(d.clone()).unwrap();
    }
    let r = b.build().unwrap();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let mut ranges = vec![r.header_range()];
    for i in 0..r.len() {
        let (v, n) = (r.values_range(i).unwrap(), r.internals_range(i).unwrap());
        for x in [v, n] {
            assert_eq!(x.offset % page, 0);
            assert_eq!(x.len % page, 0);
            assert_eq!(x.addr, r.as_range().addr + x.offset);
        }
        ranges.push(v);
        ranges.push(n);
    }
    ranges.retain(|x| x.len > 0);
    ranges.sort_by_key(|x| x.offset);
    for w in ranges.windows(2) {
        assert!(w[0].offset + w[0].len <= w[1].offset, "overlap {w:?}");
    }
    let last = ranges.last().unwrap();
    assert_eq!(last.offset + last.len, r.as_range().len);
    // Array values: base + idx * round_up(12, 8).
    let a = r.raw(0).unwrap();
    assert_eq!(a.value_stride(), 16);
    // SAFETY: 4-byte key.
    let p = unsafe { a.lookup(7u32.to_ne_bytes().as_ptr()) };
    assert_eq!(p, a.values_ptr().wrapping_add(7 * 16));
    // Hash values live in the values pages, not the internals.
    let h = r.map("h").unwrap();
    h.update(&[1; 16], &[2; 40], BPF_ANY).unwrap();
    // SAFETY: 16-byte key.
    let p = unsafe { h.raw().lookup([1u8; 16].as_ptr()) } as usize;
    assert!(h.values_range().contains(p, 40));
    // The ringbuf's data area is its values part.
    let rb = r.map("rb").unwrap();
    let rec = rb.raw().ringbuf_reserve(16, 0) as usize;
    assert!(rb.values_range().contains(rec, 16));
    assert_eq!(r.map("pe").unwrap().values_range().len, 0);
    assert_eq!(r.map_containing(p, 40), r.index_of("h"));
    assert_eq!(r.map_containing(rec, 16), r.index_of("rb"));
    assert_eq!(r.map_containing(r.as_range().addr, 1), None);
    let hv = h.values_range();
    assert_eq!(
        r.map_containing(hv.addr + hv.len - 8, 16),
        None,
        "straddles the end"
    );
}

#[test]
fn definition_errors_name_the_map() {
    let cases = [
        MapDef::new("a", MapType::Array, 8, 4, 1),
        MapDef::new("a", MapType::Array, 4, 0, 1),
        MapDef::new("h", MapType::Hash, 0, 4, 1),
        MapDef::new("h", MapType::Hash, 4, 4, 0),
        MapDef::new("q", MapType::Queue, 4, 4, 1),
        MapDef::new("l", MapType::LpmTrie, 4, 4, 1),
        MapDef::new("p", MapType::ProgArray, 4, 8, 1),
        MapDef::new("", MapType::Array, 4, 4, 1),
        MapDef::new("big", MapType::Array, 4, u32::MAX, 1),
        MapDef::new("pcbig", MapType::PerCpuArray, 4, 40 << 10, 1),
        MapDef::new("huge", MapType::Hash, 8, 1 << 20, 1 << 20),
        MapDef::new("q", MapType::Queue, 0, 4, u32::MAX),
    ];
    for d in cases {
        let err = RegionBuilder::new().add(d.clone()).unwrap_err();
        match &err {
            MapError::InvalidDefinition { name, index, .. } => {
                assert_eq!((name.as_str(), *index), (d.name.as_str(), 0));
            }
            e => panic!("{d:?}: {e}"),
        }
    }
    let mut b = RegionBuilder::new();
    b.add(MapDef::new("x", MapType::Array, 4, 4, 1)).unwrap();
    assert!(b
        .add(MapDef::new("x", MapType::Hash, 4, 4, 1))
        .unwrap_err()
        .to_string()
        .contains("duplicate"));
    // Huge maps are sized from their definitions, or refused: never a crash.
    let r = b.build().unwrap();
    assert!(matches!(r.map("nope"), Err(MapError::NoSuchMap { .. })));
}

#[test]
fn typed_views_check_sizes_and_types() {
    let mut b = RegionBuilder::new();
    b.add(MapDef::new("h", MapType::Hash, 4, 8, 16)).unwrap();
    b.add(MapDef::new("a", MapType::Array, 4, 8, 4)).unwrap();
    b.add(MapDef::new("pa", MapType::PerCpuArray, 4, 4, 4))
        .unwrap();
    b.add(MapDef::new("q", MapType::Queue, 0, 2, 4)).unwrap();
    let r: Region = b.build().unwrap();
    let h = r.map("h").unwrap();
    match HashMap::<u64, u64>::try_from(&h) {
        Err(MapError::InvalidKeySize {
            size: 8,
            expected: 4,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        HashMap::<u32, u32>::try_from(&h),
        Err(MapError::InvalidValueSize {
            size: 4,
            expected: 8,
            ..
        })
    ));
    let a = r.map("a").unwrap();
    assert!(matches!(
        HashMap::<u32, u64>::try_from(&a),
        Err(MapError::WrongType {
            found: MapType::Array,
            ..
        })
    ));
    let hm = HashMap::<u32, u64>::try_from(&h).unwrap();
    hm.insert(&1, &10, BPF_ANY).unwrap();
    hm.insert(&2, &20, BPF_ANY).unwrap();
    assert_eq!(hm.get(&2).unwrap(), Some(20));
    hm.remove(&1).unwrap();
    assert_eq!(hm.keys().collect::<Result<Vec<_>, _>>().unwrap(), vec![2]);
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = h.iter().collect::<Result<_, _>>().unwrap();
    assert_eq!(
        pairs,
        vec![(2u32.to_ne_bytes().to_vec(), 20u64.to_ne_bytes().to_vec())]
    );
    assert!(matches!(hm.remove(&1), Err(MapError::NotFound { .. })));
    let arr = Array::<u64>::try_from(&a).unwrap();
    arr.set(3, &99, BPF_ANY).unwrap();
    assert_eq!(arr.get(3).unwrap(), 99);
    assert!(matches!(arr.get(4), Err(MapError::Full { .. })));
    let pa = r.map("pa").unwrap();
    let pc = PerCpuArray::<u32>::try_from(&pa).unwrap();
    let n = r.ncpus() as usize;
    let vals: Vec<u32> = (0..n as u32).map(|c| c * 10 + 1).collect();
    pc.insert(&2, &vals, BPF_ANY).unwrap();
    assert_eq!(pc.get(&2).unwrap(), Some(vals));
    for c in 0..n as u32 {
        // SAFETY: 4-byte key; non-null points to CPU c's 4-byte value.
        let p = unsafe { pa.raw().lookup_percpu(2u32.to_ne_bytes().as_ptr(), c) };
        assert!(!p.is_null());
        // SAFETY: as above.
        assert_eq!(unsafe { std::ptr::read(p as *const u32) }, c * 10 + 1);
    }
    // SAFETY: 4-byte keys; only nullness is checked.
    unsafe {
        assert!(pa
            .raw()
            .lookup_percpu(2u32.to_ne_bytes().as_ptr(), n as u32)
            .is_null());
        assert!(pa
            .raw()
            .lookup_percpu(9u32.to_ne_bytes().as_ptr(), 0)
            .is_null());
        assert!(h
            .raw()
            .lookup_percpu(2u32.to_ne_bytes().as_ptr(), 0)
            .is_null());
    }
    assert!(
        matches!(
            pc.insert(&2, &[1], BPF_ANY),
            Err(MapError::InvalidValueSize { .. })
        ) || n == 1
    );
    let q = r.map("q").unwrap();
    let tq = Queue::<u16>::try_from(&q).unwrap();
    tq.push(&5, BPF_ANY).unwrap();
    assert_eq!(tq.peek().unwrap(), Some(5));
    assert_eq!(tq.pop().unwrap(), Some(5));
    assert_eq!(tq.pop().unwrap(), None);
    assert!(matches!(
        Queue::<u32>::try_from(&q),
        Err(MapError::InvalidValueSize { .. })
    ));
    // Wrong sizes through the untyped API.
    assert!(matches!(
        h.lookup(&[0; 3]),
        Err(MapError::InvalidKeySize {
            size: 3,
            expected: 4,
            ..
        })
    ));
    assert!(matches!(
        h.update(&[0; 4], &[0; 9], 0),
        Err(MapError::InvalidValueSize {
            size: 9,
            expected: 8,
            ..
        })
    ));
}

/// A full 256-entry LRU map evicts its 4 least recently used entries at
/// once; entries a program looked up are spared.
#[test]
fn large_lru_evicts_oldest_batch() {
    let m = map(MapDef::new("lru", MapType::LruHash, 4, 4, 256));
    assert_eq!(pkbpf_maps::lru_batch(256), 4);
    for k in 0..256u32 {
        m.update(&k.to_ne_bytes(), &k.to_ne_bytes(), BPF_NOEXIST)
            .unwrap();
    }
    for k in 0..10u32 {
        // SAFETY: 4-byte key.
        assert!(!unsafe { m.raw().lookup(k.to_ne_bytes().as_ptr()) }.is_null());
    }
    // A userspace lookup does not refresh recency.
    assert!(m.lookup(&10u32.to_ne_bytes()).unwrap().is_some());
    m.update(&1000u32.to_ne_bytes(), &[0; 4], BPF_ANY).unwrap();
    let gone: Vec<u32> = (0..256u32)
        .filter(|k| m.lookup(&k.to_ne_bytes()).unwrap().is_none())
        .collect();
    assert_eq!(gone, vec![10, 11, 12, 13]);
    assert_eq!(m.keys().count(), 253);
    // The freed slots are reused before another eviction.
    for k in 2000..2003u32 {
        m.update(&k.to_ne_bytes(), &[0; 4], BPF_NOEXIST).unwrap();
    }
    assert_eq!(m.keys().count(), 256);
    assert!(m.lookup(&14u32.to_ne_bytes()).unwrap().is_some());
}
