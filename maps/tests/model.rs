//! Model-based property tests: random operation sequences against each map
//! type and a `std::collections` model, comparing every answer.

use std::collections::{BTreeMap, HashMap, VecDeque};

use pkbpf_maps::{
    Map, MapDef, MapError, MapType, Region, RegionBuilder, BPF_ANY, BPF_EXIST, BPF_NOEXIST,
};
use proptest::prelude::*;

fn region_with(def: MapDef) -> (Region, Map) {
    let mut b = RegionBuilder::new();
    b.add(def.clone()).unwrap();
    let r = b.build().unwrap();
    let m = r.map(&def.name).unwrap();
    (r, m)
}

#[derive(Clone, Debug)]
enum HOp {
    Update(u8, u64, u64),
    Delete(u8),
    Lookup(u8),
    ProgLookup(u8),
    ProgUpdate(u8, u64, u64),
}

fn hop() -> impl Strategy<Value = HOp> {
    hop_in(24)
}

/// Operations on keys `0..keys`.
fn hop_in(keys: u16) -> impl Strategy<Value = HOp> {
    let k = move |x: u16| (x % keys) as u8;
    prop_oneof![
        4 => (any::<u16>(), any::<u64>(), 0u64..4).prop_map(move |(x, v, f)| HOp::Update(k(x), v, f)),
        2 => any::<u16>().prop_map(move |x| HOp::Delete(k(x))),
        2 => any::<u16>().prop_map(move |x| HOp::Lookup(k(x))),
        2 => any::<u16>().prop_map(move |x| HOp::ProgLookup(k(x))),
        2 => (any::<u16>(), any::<u64>(), 0u64..4).prop_map(move |(x, v, f)| HOp::ProgUpdate(k(x), v, f)),
    ]
}

/// Key: 6 bytes (not a multiple of 8, to exercise padding), value u64.
fn key_of(k: u8) -> [u8; 6] {
    [k, 0xa5, k.wrapping_mul(3), 0, 1, 2]
}

/// Key `k` as `ks` bytes: [`key_of`] for 6, else `k` followed by bytes
/// derived from it (the 4- and 8-byte specialised paths, and the general
/// multi-word one for 12).
fn key_bytes(k: u8, ks: usize) -> Vec<u8> {
    if ks == 6 {
        return key_of(k).to_vec();
    }
    (0..ks)
        .map(|i| {
            if i == 0 {
                k
            } else {
                k.wrapping_mul(i as u8 * 2 + 1) ^ (i as u8)
            }
        })
        .collect()
}

/// The model of a hash map: values plus recency order (front = least recent).
struct HashModel<V> {
    max: usize,
    lru: bool,
    vals: HashMap<u8, V>,
    order: VecDeque<u8>,
}

impl<V> HashModel<V> {
    fn touch(&mut self, k: u8) {
        if self.lru {
            self.order.retain(|&x| x != k);
            self.order.push_back(k);
        }
    }
    /// Returns the errno the map must answer.
    fn update(&mut self, k: u8, v: V, flags: u64) -> i64 {
        if flags > BPF_EXIST {
            return -(libc::EINVAL as i64);
        }
        let exists = self.vals.contains_key(&k);
        if exists && flags == BPF_NOEXIST {
            return -(libc::EEXIST as i64);
        }
        if !exists && flags == BPF_EXIST {
            return -(libc::ENOENT as i64);
        }
        if !exists && self.vals.len() == self.max {
            if !self.lru {
                return -(libc::E2BIG as i64);
            }
            for _ in 0..pkbpf_maps::lru_batch(self.max as u32) {
                let victim = self.order.pop_front().unwrap();
                self.vals.remove(&victim);
            }
        }
        self.vals.insert(k, v);
        self.touch(k);
        0
    }
    fn delete(&mut self, k: u8) -> i64 {
        if self.vals.remove(&k).is_some() {
            self.order.retain(|&x| x != k);
            0
        } else {
            -(libc::ENOENT as i64)
        }
    }
}

fn errno_of(r: Result<(), MapError>) -> i64 {
    match r {
        Ok(()) => 0,
        Err(e) => -(e.errno() as i64),
    }
}

fn run_hash(ty: MapType, ops: &[HOp]) -> Result<(), TestCaseError> {
    run_hash_sized(ty, ops, 8)
}

fn run_hash_sized(ty: MapType, ops: &[HOp], max: u32) -> Result<(), TestCaseError> {
    run_hash_keyed(ty, ops, max, 6)
}

fn run_hash_keyed(ty: MapType, ops: &[HOp], max: u32, ks: usize) -> Result<(), TestCaseError> {
    let key_of = |k: u8| key_bytes(k, ks);
    let (_r, m) = region_with(MapDef::new("h", ty, ks as u32, 8, max));
    let mut model = HashModel {
        max: max as usize,
        lru: matches!(ty, MapType::LruHash),
        vals: HashMap::new(),
        order: VecDeque::new(),
    };
    let raw = m.raw();
    for op in ops {
        match *op {
            HOp::Update(k, v, f) => {
                let got = errno_of(m.update(&key_of(k), &v.to_ne_bytes(), f));
                prop_assert_eq!(got, model.update(k, v, f), "{:?}", op);
            }
            HOp::ProgUpdate(k, v, f) => {
                // SAFETY: key and value buffers have the map's sizes.
                let got = unsafe { raw.update(key_of(k).as_ptr(), v.to_ne_bytes().as_ptr(), f) };
                prop_assert_eq!(got, model.update(k, v, f), "{:?}", op);
            }
            HOp::Delete(k) => {
                let got = errno_of(m.delete(&key_of(k)));
                prop_assert_eq!(got, model.delete(k), "{:?}", op);
            }
            HOp::Lookup(k) => {
                // Userspace lookups leave recency alone.
                let got = m
                    .lookup(&key_of(k))
                    .unwrap()
                    .map(|b| u64::from_ne_bytes(b.try_into().unwrap()));
                prop_assert_eq!(got, model.vals.get(&k).copied(), "{:?}", op);
            }
            HOp::ProgLookup(k) => {
                // SAFETY: key buffer has key_size bytes.
                let p = unsafe { raw.lookup(key_of(k).as_ptr()) };
                // SAFETY: a non-null lookup result points to the 8-byte value.
                let got = (!p.is_null()).then(|| unsafe { std::ptr::read(p as *const u64) });
                prop_assert_eq!(got, model.vals.get(&k).copied(), "{:?}", op);
                if got.is_some() {
                    model.touch(k);
                }
            }
        }
    }
    let mut keys: Vec<Vec<u8>> = m.keys().collect::<Result<_, _>>().unwrap();
    keys.sort();
    let mut want: Vec<Vec<u8>> = model.vals.keys().map(|&k| key_of(k).to_vec()).collect();
    want.sort();
    prop_assert_eq!(keys, want);
    Ok(())
}

#[derive(Clone, Debug)]
enum AOp {
    Update(u32, u32, u64),
    Lookup(u32),
    Delete(u32),
}

#[derive(Clone, Debug)]
enum QOp {
    Push(u32, bool),
    Pop,
    Peek,
}

#[derive(Clone, Debug)]
enum LOp {
    Update(u32, [u8; 4], u64, u64),
    Delete(u32, [u8; 4]),
    Lookup([u8; 4]),
}

fn masked(plen: u32, d: [u8; 4]) -> u32 {
    let v = u32::from_be_bytes(d);
    if plen == 0 {
        0
    } else {
        v & (u32::MAX << (32 - plen))
    }
}

fn lpm_key(plen: u32, d: [u8; 4]) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[..4].copy_from_slice(&plen.to_ne_bytes());
    k[4..].copy_from_slice(&d);
    k
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn hash_matches_model(ops in proptest::collection::vec(hop(), 1..120)) {
        run_hash(MapType::Hash, &ops)?;
    }

    /// The specialised 4- and 8-byte key paths and the multi-word one.
    #[test]
    fn hash_matches_model_for_key_sizes(
        ops in proptest::collection::vec(hop(), 1..120),
        ks in prop_oneof![Just(4usize), Just(8), Just(12)],
        lru in any::<bool>(),
    ) {
        let ty = if lru { MapType::LruHash } else { MapType::Hash };
        run_hash_keyed(ty, &ops, 8, ks)?;
    }

    /// 130 entries: full inserts evict the 2 least recently used at once.
    #[test]
    fn large_lru_hash_evicts_in_batches(ops in proptest::collection::vec(hop_in(256), 1..600)) {
        run_hash_sized(MapType::LruHash, &ops, 130)?;
    }

    #[test]
    fn lru_hash_matches_model_with_eviction_order(ops in proptest::collection::vec(hop(), 1..120)) {
        run_hash(MapType::LruHash, &ops)?;
    }

    #[test]
    fn percpu_hash_userspace_matches_model(ops in proptest::collection::vec((any::<u8>(), any::<u64>(), 0u64..3, any::<bool>()), 1..80)) {
        let (_r, m) = region_with(MapDef::new("pch", MapType::PerCpuHash, 4, 4, 6));
        let n = m.region().ncpus() as usize;
        let mut model: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (k, v, f, del) in ops {
            let k = (k % 10) as u32;
            if del {
                let got = errno_of(m.delete(&k.to_ne_bytes()));
                let want = if model.remove(&k).is_some() { 0 } else { -(libc::ENOENT as i64) };
                prop_assert_eq!(got, want);
                continue;
            }
            let vals: Vec<u32> = (0..n as u32).map(|c| (v as u32).wrapping_add(c)).collect();
            let bufs: Vec<[u8; 4]> = vals.iter().map(|x| x.to_ne_bytes()).collect();
            let refs: Vec<&[u8]> = bufs.iter().map(|b| &b[..]).collect();
            let mut hm = HashModel { max: 6, lru: false, vals: model.keys().map(|&k| (k as u8, 0)).collect(), order: VecDeque::new() };
            let want = hm.update(k as u8, 0, f);
            prop_assert_eq!(errno_of(m.update_percpu(&k.to_ne_bytes(), &refs, f)), want);
            if want == 0 {
                model.insert(k, vals);
            }
            let got = m.lookup_percpu(&k.to_ne_bytes()).unwrap()
                .map(|vs| vs.iter().map(|b| u32::from_ne_bytes(b[..4].try_into().unwrap())).collect::<Vec<_>>());
            prop_assert_eq!(got, model.get(&k).cloned());
        }
    }

    #[test]
    fn array_matches_model(ops in proptest::collection::vec(prop_oneof![
        (0u32..12, any::<u32>(), 0u64..4).prop_map(|(i, v, f)| AOp::Update(i, v, f)),
        (0u32..12).prop_map(AOp::Lookup),
        (0u32..12).prop_map(AOp::Delete),
    ], 1..100)) {
        let (_r, m) = region_with(MapDef::new("a", MapType::Array, 4, 4, 10));
        let mut model = [0u32; 10];
        for op in ops {
            match op {
                AOp::Update(i, v, f) => {
                    let want = if f > BPF_EXIST { -(libc::EINVAL as i64) } else if i >= 10 { -(libc::E2BIG as i64) }
                        else if f == BPF_NOEXIST { -(libc::EEXIST as i64) } else { model[i as usize] = v; 0 };
                    prop_assert_eq!(errno_of(m.update(&i.to_ne_bytes(), &v.to_ne_bytes(), f)), want);
                }
                AOp::Lookup(i) => {
                    let got = m.lookup(&i.to_ne_bytes()).unwrap().map(|b| u32::from_ne_bytes(b.try_into().unwrap()));
                    prop_assert_eq!(got, model.get(i as usize).copied());
                    // SAFETY: 4-byte key.
                    let p = unsafe { m.raw().lookup(i.to_ne_bytes().as_ptr()) };
                    prop_assert_eq!(p.is_null(), i >= 10);
                    if !p.is_null() {
                        // SAFETY: a non-null array lookup points to the 4-byte value.
                        prop_assert_eq!(unsafe { std::ptr::read(p as *const u32) }, model[i as usize]);
                    }
                }
                AOp::Delete(i) => {
                    prop_assert_eq!(m.delete(&i.to_ne_bytes()).unwrap_err().errno(), libc::EINVAL);
                }
            }
        }
        let keys: Vec<Vec<u8>> = m.keys().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(keys, (0u32..10).map(|i| i.to_ne_bytes().to_vec()).collect::<Vec<_>>());
    }

    #[test]
    fn queue_and_stack_match_model(stack in any::<bool>(), ops in proptest::collection::vec(prop_oneof![
        3 => (any::<u32>(), any::<bool>()).prop_map(|(v, e)| QOp::Push(v, e)),
        2 => Just(QOp::Pop),
        1 => Just(QOp::Peek),
    ], 1..100)) {
        let ty = if stack { MapType::Stack } else { MapType::Queue };
        let (_r, m) = region_with(MapDef::new("q", ty, 0, 4, 5));
        let mut model: VecDeque<u32> = VecDeque::new();
        let mut out = [0u8; 4];
        for op in ops {
            match op {
                QOp::Push(v, exist) => {
                    let flags = if exist { BPF_EXIST } else { BPF_ANY };
                    let want = if model.len() == 5 {
                        if exist { model.pop_front(); model.push_back(v); 0 } else { -(libc::E2BIG as i64) }
                    } else { model.push_back(v); 0 };
                    // SAFETY: 4-byte value.
                    prop_assert_eq!(unsafe { m.raw().push(v.to_ne_bytes().as_ptr(), flags) }, want);
                }
                QOp::Pop => {
                    let want = if stack { model.pop_back() } else { model.pop_front() };
                    let got = if stack { m.pop().unwrap().map(|b| u32::from_ne_bytes(b.try_into().unwrap())) } else {
                        // SAFETY: 4-byte output buffer.
                        let r = unsafe { m.raw().pop(out.as_mut_ptr()) };
                        (r == 0).then(|| u32::from_ne_bytes(out))
                    };
                    prop_assert_eq!(got, want);
                }
                QOp::Peek => {
                    let want = if stack { model.back() } else { model.front() }.copied();
                    prop_assert_eq!(m.peek().unwrap().map(|b| u32::from_ne_bytes(b.try_into().unwrap())), want);
                }
            }
        }
    }

    #[test]
    fn lpm_trie_matches_longest_prefix_model(ops in proptest::collection::vec(prop_oneof![
        3 => (0u32..=33, any::<[u8; 4]>(), any::<u64>(), 0u64..3).prop_map(|(p, d, v, f)| LOp::Update(p, d, v, f)),
        1 => (0u32..=32, any::<[u8; 4]>()).prop_map(|(p, d)| LOp::Delete(p, d)),
        3 => any::<[u8; 4]>().prop_map(LOp::Lookup),
    ], 1..80), seeds in proptest::collection::vec(any::<[u8; 4]>(), 4)) {
        let (_r, m) = region_with(MapDef::new("lpm", MapType::LpmTrie, 8, 8, 6));
        // (plen, masked prefix) -> value
        let mut model: BTreeMap<(u32, u32), u64> = BTreeMap::new();
        // Bias data to a few seeds so prefixes overlap.
        let pick = |d: [u8; 4]| { let s = seeds[d[3] as usize % 4]; [s[0], s[1], d[2] & 0xf0 | s[2] & 0x0f, d[3]] };
        for op in ops {
            match op {
                LOp::Update(p, d, v, f) => {
                    let d = pick(d);
                    let key = (p, masked(p.min(32), d));
                    let exists = model.contains_key(&key);
                    let want = if p > 32 { -(libc::EINVAL as i64) }
                        else if exists && f == BPF_NOEXIST { -(libc::EEXIST as i64) }
                        else if !exists && f == BPF_EXIST { -(libc::ENOENT as i64) }
                        else if !exists && model.len() == 6 { -(libc::ENOSPC as i64) }
                        else { model.insert(key, v); 0 };
                    // SAFETY: 8-byte key and value.
                    let got = unsafe { m.raw().update(lpm_key(p, d).as_ptr(), v.to_ne_bytes().as_ptr(), f) };
                    prop_assert_eq!(got, want);
                }
                LOp::Delete(p, d) => {
                    let d = pick(d);
                    let want = if model.remove(&(p, masked(p, d))).is_some() { 0 } else { -(libc::ENOENT as i64) };
                    prop_assert_eq!(errno_of(m.delete(&lpm_key(p, d))), want);
                }
                LOp::Lookup(d) => {
                    let d = pick(d);
                    let want = model.iter().filter(|((p, pre), _)| masked(*p, d) == *pre).max_by_key(|((p, _), _)| *p).map(|(_, v)| *v);
                    let got = m.lookup(&lpm_key(32, d)).unwrap().map(|b| u64::from_ne_bytes(b.try_into().unwrap()));
                    prop_assert_eq!(got, want);
                    // SAFETY: 8-byte key.
                    let p = unsafe { m.raw().lookup(lpm_key(32, d).as_ptr()) };
                    // SAFETY: non-null points to the 8-byte value.
                    prop_assert_eq!((!p.is_null()).then(|| unsafe { std::ptr::read(p as *const u64) }), want);
                }
            }
        }
        let mut keys: Vec<(u32, u32)> = m.keys().map(|k| { let k = k.unwrap(); (u32::from_ne_bytes(k[..4].try_into().unwrap()), u32::from_be_bytes(k[4..].try_into().unwrap())) }).collect();
        keys.sort();
        prop_assert_eq!(keys, model.keys().copied().collect::<Vec<_>>());
    }

    #[test]
    fn prog_array_matches_model(ops in proptest::collection::vec((0u32..6, proptest::option::of(0u32..100)), 1..60)) {
        let (_r, m) = region_with(MapDef::new("progs", MapType::ProgArray, 4, 4, 4));
        let mut model = [None::<u32>; 4];
        for (i, prog) in ops {
            match prog {
                Some(p) => {
                    let want = if i >= 4 { -(libc::E2BIG as i64) } else { model[i as usize] = Some(p); 0 };
                    prop_assert_eq!(errno_of(m.update(&i.to_ne_bytes(), &p.to_ne_bytes(), BPF_ANY)), want);
                }
                None => {
                    let want = if i >= 4 { -(libc::E2BIG as i64) } else if model[i as usize].take().is_some() { 0 } else { -(libc::ENOENT as i64) };
                    prop_assert_eq!(errno_of(m.delete(&i.to_ne_bytes())), want);
                }
            }
            prop_assert_eq!(m.raw().prog_array_get(i), model.get(i as usize).copied().flatten());
        }
    }
}

/// Program-side per-CPU writes land in the calling CPU's slot only; the
/// others of a new element are zero.
#[test]
fn percpu_program_writes_hit_current_cpu() {
    for ty in [
        MapType::PerCpuArray,
        MapType::PerCpuHash,
        MapType::LruPerCpuHash,
    ] {
        let (_r, m) = region_with(MapDef::new("pc", ty, 4, 8, 4));
        let m2 = m.clone();
        std::thread::spawn(move || {
            // Pin to CPU 0 so the CPU cannot change between update and check.
            // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
            let pinned = unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(0, &mut set);
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
            };
            if !pinned {
                println!(
                    "skipped: percpu_program_writes_hit_current_cpu: sched_setaffinity failed"
                );
                return;
            }
            let key = 1u32.to_ne_bytes();
            let val = 77u64.to_ne_bytes();
            // SAFETY: 4-byte key, 8-byte value.
            let r = unsafe { m2.raw().update(key.as_ptr(), val.as_ptr(), BPF_ANY) };
            assert_eq!(r, 0);
            let cpu = pkbpf_maps::cpu::current_cpu() as usize;
            assert_eq!(cpu, 0);
            let vals = m2.lookup_percpu(&key).unwrap().unwrap();
            assert_eq!(vals.len(), m2.region().ncpus() as usize);
            for (c, v) in vals.iter().enumerate() {
                assert_eq!(
                    u64::from_ne_bytes(v[..].try_into().unwrap()),
                    if c == cpu { 77 } else { 0 },
                    "{ty} cpu {c}"
                );
            }
            // SAFETY: 4-byte key; non-null result points to this CPU's 8 bytes.
            let p = unsafe { m2.raw().lookup(key.as_ptr()) };
            assert!(!p.is_null());
            // SAFETY: non-null: this CPU's 8-byte value.
            assert_eq!(unsafe { std::ptr::read(p as *const u64) }, 77);
            for c in 0..m2.region().ncpus() {
                // SAFETY: 4-byte key; non-null points to CPU c's 8 bytes.
                let p = unsafe { m2.raw().lookup_percpu(key.as_ptr(), c) };
                assert!(!p.is_null());
                // SAFETY: as above.
                let v = unsafe { std::ptr::read(p as *const u64) };
                assert_eq!(v, if c == 0 { 77 } else { 0 }, "{ty} cpu {c}");
            }
        })
        .join()
        .unwrap();
    }
}

/// Masks `d` to its first `plen` bits (network bit order).
fn mask_bytes(plen: u32, d: &[u8]) -> Vec<u8> {
    d.iter()
        .enumerate()
        .map(|(j, b)| {
            let bits = (plen as usize).saturating_sub(j * 8).min(8);
            if bits == 0 {
                0
            } else {
                b & (0xffu16 << (8 - bits)) as u8
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Wide keys (17 data bytes: three words, the last partial), many
    /// lengths, enough deletes to rebuild the index.
    #[test]
    fn wide_lpm_matches_model(ops in proptest::collection::vec(
        (0u8..4, 0u32..=140, any::<[u8; 17]>(), any::<u16>()), 1..200),
        base in any::<[u8; 17]>())
    {
        const DS: usize = 17;
        let (_r, m) = region_with(MapDef::new("lpm6", MapType::LpmTrie, 4 + DS as u32, 2, 40));
        let mut model: BTreeMap<(u32, Vec<u8>), u16> = BTreeMap::new();
        // Keys near `base` so that prefixes nest.
        let near = |d: [u8; 17]| -> Vec<u8> {
            let flip = d[0] as usize % (DS * 8);
            let mut v = base.to_vec();
            v[flip / 8] ^= 0x80 >> (flip % 8);
            v
        };
        for (kind, p, d, v) in ops {
            let data = near(d);
            let key = [p.to_ne_bytes().to_vec(), data.clone()].concat();
            match kind {
                0 | 1 => {
                    let k = (p, mask_bytes(p, &data));
                    let want = if p > (DS * 8) as u32 { -(libc::EINVAL as i64) }
                        else if !model.contains_key(&k) && model.len() == 40 { -(libc::ENOSPC as i64) }
                        else { model.insert(k, v); 0 };
                    // SAFETY: key of key_size bytes, 2-byte value.
                    let got = unsafe { m.raw().update(key.as_ptr(), v.to_ne_bytes().as_ptr(), BPF_ANY) };
                    prop_assert_eq!(got, want);
                }
                2 => {
                    let want = if p > (DS * 8) as u32 { -(libc::EINVAL as i64) }
                        else if model.remove(&(p, mask_bytes(p, &data))).is_some() { 0 } else { -(libc::ENOENT as i64) };
                    // SAFETY: key of key_size bytes.
                    prop_assert_eq!(unsafe { m.raw().delete(key.as_ptr()) }, want);
                }
                _ => {
                    let kp = p.min((DS * 8) as u32);
                    let want = model.iter()
                        .filter(|((pl, pre), _)| *pl <= kp && mask_bytes(*pl, &data) == *pre)
                        .max_by_key(|((pl, _), _)| *pl)
                        .map(|(_, v)| *v);
                    let got = m.lookup(&key).unwrap().map(|b| u16::from_ne_bytes(b.try_into().unwrap()));
                    prop_assert_eq!(got, want, "lookup /{} {:?}", p, data);
                }
            }
        }
        prop_assert_eq!(m.keys().count(), model.len());
    }
}

/// Pins the calling thread to CPU 0, so program-side per-CPU operations hit
/// slot 0 deterministically.
fn pin_cpu0() -> bool {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

fn run_percpu_hash(ty: MapType, ops: &[HOp]) -> Result<(), TestCaseError> {
    let max = 8;
    let (_r, m) = region_with(MapDef::new("h", ty, 6, 8, max));
    let n = m.region().ncpus() as usize;
    let mut model: HashModel<Vec<u64>> = HashModel {
        max: max as usize,
        lru: ty == MapType::LruPerCpuHash,
        vals: HashMap::new(),
        order: VecDeque::new(),
    };
    let raw = m.raw();
    for op in ops {
        match *op {
            HOp::Update(k, v, f) => {
                let vals: Vec<u64> = (0..n as u64).map(|c| v.wrapping_add(c)).collect();
                let bufs: Vec<[u8; 8]> = vals.iter().map(|x| x.to_ne_bytes()).collect();
                let refs: Vec<&[u8]> = bufs.iter().map(|b| &b[..]).collect();
                let got = errno_of(m.update_percpu(&key_of(k), &refs, f));
                prop_assert_eq!(got, model.update(k, vals, f), "{:?}", op);
            }
            HOp::ProgUpdate(k, v, f) => {
                // SAFETY: key and value buffers have the map's sizes.
                let got = unsafe { raw.update(key_of(k).as_ptr(), v.to_ne_bytes().as_ptr(), f) };
                // A program writes its CPU's slot (0, pinned); a new element's
                // other slots are zero.
                let prev = model.vals.get(&k).cloned();
                let mut fresh = vec![0; n];
                fresh[0] = v;
                let want = model.update(k, fresh, f);
                if let (0, Some(mut p)) = (want, prev) {
                    p[0] = v;
                    model.vals.insert(k, p);
                }
                prop_assert_eq!(got, want, "{:?}", op);
            }
            HOp::Delete(k) => {
                let got = errno_of(m.delete(&key_of(k)));
                prop_assert_eq!(got, model.delete(k), "{:?}", op);
            }
            HOp::Lookup(k) => {
                let got = m.lookup_percpu(&key_of(k)).unwrap().map(|vs| {
                    vs.iter()
                        .map(|b| u64::from_ne_bytes(b[..].try_into().unwrap()))
                        .collect::<Vec<_>>()
                });
                prop_assert_eq!(got, model.vals.get(&k).cloned(), "{:?}", op);
            }
            HOp::ProgLookup(k) => {
                // SAFETY: key buffer has key_size bytes.
                let p = unsafe { raw.lookup(key_of(k).as_ptr()) };
                // SAFETY: a non-null lookup result points to this CPU's 8-byte value.
                let got = (!p.is_null()).then(|| unsafe { std::ptr::read(p as *const u64) });
                prop_assert_eq!(got, model.vals.get(&k).map(|v| v[0]), "{:?}", op);
                if got.is_some() {
                    model.touch(k);
                }
            }
        }
    }
    prop_assert_eq!(m.keys().count(), model.vals.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn percpu_and_lru_percpu_hash_match_model(lru in any::<bool>(), ops in proptest::collection::vec(hop(), 1..100)) {
        if !pin_cpu0() {
            println!("skipped: percpu_and_lru_percpu_hash_match_model: sched_setaffinity failed");
            return Ok(());
        }
        run_percpu_hash(if lru { MapType::LruPerCpuHash } else { MapType::PerCpuHash }, &ops)?;
    }
}
