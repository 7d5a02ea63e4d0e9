//! The decoded-block cache: bounded by bytes, LRU, sharded so that parallel
//! reads of different blocks do not queue on one lock. The lock is held only
//! to look up or insert, never while decoding.
//!
//! Keys are content-addressed (the object's identity plus the piece), so a
//! replaced object never serves its predecessor's bytes, and two names of one
//! object share entries.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
    pub counters: CacheCounters,
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
            counters: CacheCounters::default(),
        }
    }

    fn shard(&self, key: &CacheKey) -> &Mutex<Shard> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        &self.shards[(h.finish() as usize) % self.shards.len()]
    }

    pub fn get(&self, key: &CacheKey) -> Option<CacheEntry> {
        let hit = self.shard(key).lock().ok()?.lru.get(key).cloned();
        let counter = if hit.is_some() { &self.counters.hits } else { &self.counters.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
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
