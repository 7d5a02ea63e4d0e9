//! Read-ahead for files read front to back: while a read is served, the
//! segments after it are decoded on other cores, so the next reads find
//! them in the block cache. Decoding, not I/O, is what a sequential read
//! waits for, so the work is spread over one thread per core; the cache's
//! single-flight makes a read that catches up with a segment being decoded
//! wait for it instead of decoding it twice.

use std::sync::Arc;

use crossbeam_channel::{bounded, Sender};

use at1_core::reader::{AccessCost, Reader};
use at1_volume::stats::Stats;

/// How many segments ahead of a sequential read are decoded: two per
/// worker keeps every worker busy while the reader consumes one.
const SEGMENTS_PER_WORKER: usize = 2;
/// A read this close to where the previous one ended counts as sequential
/// (the kernel sends read-ahead requests slightly out of order).
const SEQUENTIAL_SLACK: u64 = 1 << 20;

pub struct ReadAhead {
    tx: Sender<(Reader, usize)>,
    window: usize,
}

impl ReadAhead {
    /// Starts one decoding worker per core (none when not `enabled`: then
    /// requests are dropped). Their decoding counts in `stats`.
    pub fn start(enabled: bool, stats: Arc<Stats>) -> Self {
        let workers = if enabled { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { 0 };
        let window = workers * SEGMENTS_PER_WORKER;
        let (tx, rx) = bounded::<(Reader, usize)>(4 * window);
        for i in 0..workers {
            let (rx, stats) = (rx.clone(), stats.clone());
            let spawned = std::thread::Builder::new().name(format!("at1-readahead-{i}")).spawn(move || {
                for (reader, segment) in rx.iter() {
                    let mut cost = AccessCost::default();
                    // An error surfaces when the read itself comes; so does
                    // a panic (logged here), and the worker lives on.
                    let decode = std::panic::AssertUnwindSafe(|| reader.segment_text(segment, &mut cost).map(drop));
                    if std::panic::catch_unwind(decode).is_err() {
                        log::error!("read-ahead of segment {segment} panicked");
                    }
                    Stats::add(&stats.bytes_decoded, cost.bytes_decoded);
                }
            });
            if let Err(e) = spawned {
                log::warn!("read-ahead worker not started: {e}");
            }
        }
        Self { tx, window }
    }

    /// Whether a read at `offset` continues one that ended at `previous_end`.
    pub fn is_sequential(offset: u64, previous_end: u64) -> bool {
        offset == 0 || offset.abs_diff(previous_end) <= SEQUENTIAL_SLACK
    }

    /// Queues the decoding of the segments after the one holding `offset`
    /// that are not cached yet. A full queue drops requests: read-ahead is
    /// a hint, never a cause of waiting.
    pub fn after(&self, reader: &Reader, offset: u64) {
        let Some(first) = reader.next_segment_after(offset) else { return };
        let last = (first + self.window).min(reader.segment_count());
        for segment in first..last {
            if !reader.segment_is_cached(segment) && self.tx.try_send((reader.clone(), segment)).is_err() {
                return;
            }
        }
    }
}
