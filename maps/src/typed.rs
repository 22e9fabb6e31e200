//! Typed views over a [`Map`], checked once at conversion (aya's shape):
//! `HashMap::<u32, u64>::try_from(&map)?`.

use std::marker::PhantomData;

use crate::{Map, MapError, MapType};

/// Plain data that may be copied to and from map bytes.
///
/// # Safety
/// The type has no padding bytes, no pointers that must stay valid, and every
/// bit pattern of its size is a valid value.
pub unsafe trait Pod: Copy + 'static {}

macro_rules! pod {
    ($($t:ty),*) => { $(
        // SAFETY: primitive integers have no padding and accept every bit pattern.
        unsafe impl Pod for $t {}
    )* };
}
pod!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128, usize, isize);
// SAFETY: an array of Pod has no padding between elements and is valid for
// every bit pattern when its element is.
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}

fn bytes_of<T: Pod>(t: &T) -> &[u8] {
    // SAFETY: T is Pod: all size_of::<T>() bytes are initialised.
    unsafe { std::slice::from_raw_parts(t as *const T as *const u8, std::mem::size_of::<T>()) }
}

fn from_bytes<T: Pod>(b: &[u8]) -> T {
    assert!(
        b.len() >= std::mem::size_of::<T>(),
        "caller sized the buffer from T"
    );
    // SAFETY: b holds size_of::<T>() bytes and every bit pattern is a valid T.
    unsafe { std::ptr::read_unaligned(b.as_ptr() as *const T) }
}

fn check_kv<K, V>(map: &Map, key: bool) -> Result<(), MapError> {
    let ks = if key { std::mem::size_of::<K>() } else { 0 };
    if map.def().key_size as usize != ks {
        return Err(MapError::InvalidKeySize {
            map: map.name().into(),
            size: ks,
            expected: map.def().key_size as usize,
        });
    }
    let vs = std::mem::size_of::<V>();
    if map.def().value_size as usize != vs {
        return Err(MapError::InvalidValueSize {
            map: map.name().into(),
            size: vs,
            expected: map.def().value_size as usize,
        });
    }
    Ok(())
}

fn check_type(map: &Map, ok: &[MapType], expected: &'static str) -> Result<(), MapError> {
    if ok.contains(&map.map_type()) {
        Ok(())
    } else {
        Err(MapError::WrongType {
            map: map.name().into(),
            expected,
            found: map.map_type(),
        })
    }
}

/// A `HASH` or `LRU_HASH` map with keys `K` and values `V`.
#[derive(Debug)]
pub struct HashMap<'a, K, V> {
    map: &'a Map,
    _t: PhantomData<(K, V)>,
}

impl<'a, K: Pod, V: Pod> TryFrom<&'a Map> for HashMap<'a, K, V> {
    type Error = MapError;
    fn try_from(map: &'a Map) -> Result<Self, MapError> {
        check_type(map, &[MapType::Hash, MapType::LruHash], "hash or lru_hash")?;
        check_kv::<K, V>(map, true)?;
        Ok(HashMap {
            map,
            _t: PhantomData,
        })
    }
}

impl<K: Pod, V: Pod> HashMap<'_, K, V> {
    /// The value of `key`, if present.
    pub fn get(&self, key: &K) -> Result<Option<V>, MapError> {
        Ok(self.map.lookup(bytes_of(key))?.map(|b| from_bytes(&b)))
    }
    /// Inserts or updates (`BPF_ANY`/`BPF_NOEXIST`/`BPF_EXIST`).
    pub fn insert(&self, key: &K, value: &V, flags: u64) -> Result<(), MapError> {
        self.map.update(bytes_of(key), bytes_of(value), flags)
    }
    /// Removes `key`.
    pub fn remove(&self, key: &K) -> Result<(), MapError> {
        self.map.delete(bytes_of(key))
    }
    /// The keys.
    pub fn keys(&self) -> impl Iterator<Item = Result<K, MapError>> + '_ {
        self.map.keys().map(|k| k.map(|b| from_bytes(&b)))
    }
}

/// An `ARRAY` map with values `V`.
#[derive(Debug)]
pub struct Array<'a, V> {
    map: &'a Map,
    _t: PhantomData<V>,
}

impl<'a, V: Pod> TryFrom<&'a Map> for Array<'a, V> {
    type Error = MapError;
    fn try_from(map: &'a Map) -> Result<Self, MapError> {
        check_type(map, &[MapType::Array], "array")?;
        check_kv::<u32, V>(map, true)?;
        Ok(Array {
            map,
            _t: PhantomData,
        })
    }
}

impl<V: Pod> Array<'_, V> {
    /// Element `index` (`Full` when out of range).
    pub fn get(&self, index: u32) -> Result<V, MapError> {
        match self.map.lookup(&index.to_ne_bytes())? {
            Some(b) => Ok(from_bytes(&b)),
            None => Err(MapError::Full {
                map: self.map.name().into(),
                max_entries: self.map.def().max_entries,
            }),
        }
    }
    /// Sets element `index`.
    pub fn set(&self, index: u32, value: &V, flags: u64) -> Result<(), MapError> {
        self.map
            .update(&index.to_ne_bytes(), bytes_of(value), flags)
    }
    /// Number of elements.
    pub fn len(&self) -> u32 {
        self.map.def().max_entries
    }
    /// Whether the array has no element (never, for a valid map).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A `PERCPU_ARRAY` (key `u32`) or `PERCPU_HASH`/`LRU_PERCPU_HASH` map:
/// one `V` per possible CPU.
#[derive(Debug)]
pub struct PerCpuHashMap<'a, K, V> {
    map: &'a Map,
    _t: PhantomData<(K, V)>,
}

/// A `PERCPU_ARRAY` map, viewed with `u32` keys.
pub type PerCpuArray<'a, V> = PerCpuHashMap<'a, u32, V>;

impl<'a, K: Pod, V: Pod> TryFrom<&'a Map> for PerCpuHashMap<'a, K, V> {
    type Error = MapError;
    fn try_from(map: &'a Map) -> Result<Self, MapError> {
        check_type(
            map,
            &[
                MapType::PerCpuArray,
                MapType::PerCpuHash,
                MapType::LruPerCpuHash,
            ],
            "percpu_array, percpu_hash or lru_percpu_hash",
        )?;
        check_kv::<K, V>(map, true)?;
        Ok(PerCpuHashMap {
            map,
            _t: PhantomData,
        })
    }
}

impl<K: Pod, V: Pod> PerCpuHashMap<'_, K, V> {
    /// Every CPU's value of `key`.
    pub fn get(&self, key: &K) -> Result<Option<Vec<V>>, MapError> {
        Ok(self
            .map
            .lookup_percpu(bytes_of(key))?
            .map(|vs| vs.iter().map(|b| from_bytes(b)).collect()))
    }
    /// Sets every CPU's value (`values.len()` = possible CPUs).
    pub fn insert(&self, key: &K, values: &[V], flags: u64) -> Result<(), MapError> {
        let bufs: Vec<&[u8]> = values.iter().map(bytes_of).collect();
        self.map.update_percpu(bytes_of(key), &bufs, flags)
    }
}

/// A `QUEUE` or `STACK` map of `V`.
#[derive(Debug)]
pub struct Queue<'a, V> {
    map: &'a Map,
    _t: PhantomData<V>,
}

impl<'a, V: Pod> TryFrom<&'a Map> for Queue<'a, V> {
    type Error = MapError;
    fn try_from(map: &'a Map) -> Result<Self, MapError> {
        check_type(map, &[MapType::Queue, MapType::Stack], "queue or stack")?;
        check_kv::<(), V>(map, false)?;
        Ok(Queue {
            map,
            _t: PhantomData,
        })
    }
}

impl<V: Pod> Queue<'_, V> {
    /// Pushes `value`.
    pub fn push(&self, value: &V, flags: u64) -> Result<(), MapError> {
        self.map.push(bytes_of(value), flags)
    }
    /// Pops the next value.
    pub fn pop(&self) -> Result<Option<V>, MapError> {
        Ok(self.map.pop()?.map(|b| from_bytes(&b)))
    }
    /// Peeks at the next value.
    pub fn peek(&self) -> Result<Option<V>, MapError> {
        Ok(self.map.peek()?.map(|b| from_bytes(&b)))
    }
}
