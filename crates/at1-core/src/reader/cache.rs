//! The decoded-block cache: bounded by bytes, LRU, sharded so that parallel
//! reads of different blocks do not queue on one lock. The lock is held only
//! to look up or insert, never while decoding.
//!
//! A piece being decoded is decoded once: a thread that wants a piece
//! another thread is decoding waits for it (the read-ahead and the read it
//! runs ahead of often want the same segment at once).
//!
//! Keys are content-addressed (the object's identity plus the piece), so a
//! replaced object never serves its predecessor's bytes, and two names of one
//! object share entries.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use lru::LruCache;

use crate::codec::columnar::ColumnChunk;

/// Which object: the SHA-256 prefix of its original plus its footer CRC
/// (the same original encoded twice has two footers, hence two identities).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    pub sha_prefix: u64,
    pub footer_crc: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Piece {
    /// The verified original bytes of a segment.
    Segment(u32),
    /// A decoded column chunk: (row group, column).
    Column(u32, u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub object: ObjectKey,
    pub piece: Piece,
}

#[derive(Clone)]
pub enum CacheEntry {
    Text(Arc<Vec<u8>>),
    Column(Arc<ColumnChunk>),
}

impl CacheEntry {
    fn weight(&self) -> u64 {
        match self {
            CacheEntry::Text(t) => t.len() as u64 + 64,
            CacheEntry::Column(c) => column_weight(c),
        }
    }
}

fn column_weight(c: &ColumnChunk) -> u64 {
    use crate::codec::columnar::Values;
    let values = match &c.values {
        Values::Null => 0,
        Values::Int(v) | Values::Date(v) => v.len() * 8,
        Values::Decimal { mantissas, .. } => mantissas.len() * 9,
        Values::Timestamp { seconds, .. } => seconds.len() * 8,
        Values::Bool { bits, .. } => bits.len(),
        Values::Str(s) => s.bytes.len() + s.offsets.len() * 4 + s.indices.as_ref().map_or(0, |i| i.len() * 4),
    };
    let exceptions: usize = c.exceptions.iter().map(|(_, e)| e.len() + 32).sum();
    (values + exceptions + c.codes.len() * 5 + 64) as u64
}

/// Counters the stats file shows.
#[derive(Debug, Default)]
pub struct CacheCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub bytes: AtomicU64,
}

const MAX_SHARDS: u64 = 16;
/// Shards are at least this big, so that a small cache is one shard and
/// still holds whole blocks.
const MIN_SHARD_BYTES: u64 = 4 << 20;

/// One shard: its LRU list and the bytes it holds.
struct Shard {
    lru: LruCache<CacheKey, CacheEntry>,
    bytes: u64,
}

pub struct BlockCache {
    shards: Vec<Mutex<Shard>>,
    shard_capacity: u64,
    /// Pieces being decoded now, each with what its waiters wait on.
    in_flight: Mutex<HashMap<CacheKey, Arc<Flight>>>,
    pub counters: CacheCounters,
}

/// One decode under way; `done` turns true when it ends (well or not).
#[derive(Default)]
struct Flight {
    done: Mutex<bool>,
    ended: Condvar,
}

impl Flight {
    fn wait(&self) {
        let Ok(mut done) = self.done.lock() else { return };
        while !*done {
            match self.ended.wait(done) {
                Ok(d) => done = d,
                Err(_) => return,
            }
        }
    }
}

/// Ends a flight when the loader returns, fails or panics.
struct Landing<'a> {
    cache: &'a BlockCache,
    key: CacheKey,
    flight: Arc<Flight>,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.cache.in_flight.lock() {
            map.remove(&self.key);
        }
        if let Ok(mut done) = self.flight.done.lock() {
            *done = true;
        }
        self.flight.ended.notify_all();
    }
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache").field("capacity", &(self.shard_capacity * self.shards.len() as u64)).finish()
    }
}

impl BlockCache {
    /// A cache holding at most `capacity` bytes of decoded data (0 disables
    /// caching).
    pub fn new(capacity: u64) -> Self {
        let n_shards = (capacity / MIN_SHARD_BYTES).clamp(1, MAX_SHARDS);
        Self {
            shards: (0..n_shards).map(|_| Mutex::new(Shard { lru: LruCache::unbounded(), bytes: 0 })).collect(),
            shard_capacity: capacity / n_shards,
            in_flight: Mutex::default(),
            counters: CacheCounters::default(),
        }
    }

    /// Bytes of decoded data the cache may hold.
    pub fn capacity(&self) -> u64 {
        self.shard_capacity * self.shards.len() as u64
    }

    fn shard(&self, key: &CacheKey) -> &Mutex<Shard> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        // `new` makes at least one shard, and the index is taken modulo
        // their number.
        #[allow(clippy::indexing_slicing)]
        &self.shards[(h.finish() as usize) % self.shards.len()]
    }

    pub fn get(&self, key: &CacheKey) -> Option<CacheEntry> {
        let hit = self.shard(key).lock().ok()?.lru.get(key).cloned();
        let counter = if hit.is_some() { &self.counters.hits } else { &self.counters.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    /// The cached entry for `key`, without counting a hit or a miss.
    fn peek(&self, key: &CacheKey) -> Option<CacheEntry> {
        self.shard(key).lock().ok()?.lru.get(key).cloned()
    }

    /// Whether `key` is cached, without touching the LRU order or counters.
    pub fn contains(&self, key: &CacheKey) -> bool {
        self.shard(key).lock().is_ok_and(|s| s.lru.contains(key))
    }

    /// The cached entry for `key` (and `true`), or the one `load` makes
    /// (and `false`), which is then cached. While one thread loads a key,
    /// others asking for it wait and take its result; if the load failed
    /// (or its entry was too big to keep), each loads for itself.
    pub fn get_or_load<E>(&self, key: CacheKey, load: impl FnOnce() -> Result<CacheEntry, E>) -> Result<(CacheEntry, bool), E> {
        loop {
            if let Some(hit) = self.get(&key) {
                return Ok((hit, true));
            }
            let Ok(mut map) = self.in_flight.lock() else { break };
            let Some(flight) = map.get(&key).cloned() else {
                // A loader inserts before it lands: absent from both under
                // this lock means nobody has it, so load it here.
                if let Some(hit) = self.peek(&key) {
                    return Ok((hit, true));
                }
                let flight = Arc::new(Flight::default());
                map.insert(key, flight.clone());
                drop(map);
                let _landing = Landing { cache: self, key, flight };
                return self.load_and_keep(key, load);
            };
            drop(map);
            flight.wait();
        }
        self.load_and_keep(key, load)
    }

    fn load_and_keep<E>(&self, key: CacheKey, load: impl FnOnce() -> Result<CacheEntry, E>) -> Result<(CacheEntry, bool), E> {
        let entry = load()?;
        self.insert(key, entry.clone());
        Ok((entry, false))
    }

    pub fn insert(&self, key: CacheKey, entry: CacheEntry) {
        let weight = entry.weight();
        if weight > self.shard_capacity {
            return; // bigger than a shard: not worth evicting everything for
        }
        let Ok(mut shard) = self.shard(&key).lock() else { return };
        let mut delta: i64 = weight as i64;
        if let Some(old) = shard.lru.put(key, entry) {
            delta -= old.weight() as i64;
        }
        while shard.bytes.saturating_add_signed(delta) > self.shard_capacity {
            match shard.lru.pop_lru() {
                Some((k, e)) if k != key => delta -= e.weight() as i64,
                Some((k, e)) => {
                    // Only the new entry is left: keep it.
                    shard.lru.put(k, e);
                    break;
                }
                None => break,
            }
        }
        shard.bytes = shard.bytes.saturating_add_signed(delta);
        if delta >= 0 {
            self.counters.bytes.fetch_add(delta as u64, Ordering::Relaxed);
        } else {
            self.counters.bytes.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    fn key(n: u32) -> CacheKey {
        CacheKey { object: ObjectKey { sha_prefix: 1, footer_crc: 2 }, piece: Piece::Segment(n) }
    }

    fn text(bytes: &[u8]) -> CacheEntry {
        CacheEntry::Text(Arc::new(bytes.to_vec()))
    }

    /// Runs `first` as the loader of key 0, and once it is under way, a
    /// second `get_or_load` of the same key whose loader counts its calls.
    fn race(first: impl FnOnce() -> Result<CacheEntry, ()> + Send) -> (Result<(CacheEntry, bool), ()>, usize) {
        let cache = BlockCache::new(64 << 20);
        let second_loads = AtomicUsize::new(0);
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let _ = cache.get_or_load(key(0), || {
                    started_tx.send(()).unwrap();
                    std::thread::sleep(Duration::from_millis(200));
                    first()
                });
            });
            started_rx.recv().unwrap();
            let got = cache.get_or_load(key(0), || {
                second_loads.fetch_add(1, Ordering::SeqCst);
                Ok(text(b"second"))
            });
            (got, second_loads.load(Ordering::SeqCst))
        })
    }

    #[test]
    fn a_piece_being_loaded_is_waited_for_not_loaded_twice() {
        let (got, second_loads) = race(|| Ok(text(b"first")));
        let (entry, hit) = got.unwrap();
        assert!(matches!(entry, CacheEntry::Text(t) if t.as_slice() == b"first"));
        assert!(hit);
        assert_eq!(second_loads, 0);
    }

    #[test]
    fn a_failed_load_lets_the_waiter_load_for_itself() {
        let (got, second_loads) = race(|| Err(()));
        let (entry, hit) = got.unwrap();
        assert!(matches!(entry, CacheEntry::Text(t) if t.as_slice() == b"second"));
        assert!(!hit);
        assert_eq!(second_loads, 1);
    }

    #[test]
    fn a_panicking_loader_does_not_strand_its_waiters() {
        let cache = BlockCache::new(64 << 20);
        let loader = std::thread::scope(|s| s.spawn(|| cache.get_or_load::<()>(key(1), || panic!("loader fails"))).join());
        assert!(loader.is_err());
        // The flight ended with the panic: a later load runs at once.
        let (entry, hit) = cache.get_or_load::<()>(key(1), || Ok(text(b"x"))).unwrap();
        assert!(matches!(entry, CacheEntry::Text(t) if t.as_slice() == b"x") && !hit);
    }
}
