//! Counters shared by every path (atomics: no lock on the hot path), shown
//! by the mount's `.at1/stats`.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Stats {
    pub writes_committed: AtomicU64,
    pub writes_rejected: AtomicU64,
    /// New extents (objects) commits made: each a sealed, verified piece
    /// of a file.
    pub extents_written: AtomicU64,
    /// Original bytes committed by the gate.
    pub bytes_written: AtomicU64,
    pub reads: AtomicU64,
    pub bytes_served: AtomicU64,
    /// Bytes the reader decoded to serve reads (payloads and rebuilt text).
    pub bytes_decoded: AtomicU64,
    /// Contents re-encoded in the background, and the bytes that saved.
    pub recompressed: AtomicU64,
    pub recompress_saved_bytes: AtomicU64,
    pub queries: AtomicU64,
    pub query_bytes_read: AtomicU64,
    pub query_bytes_total: AtomicU64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
