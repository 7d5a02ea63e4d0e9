//! The virtual `.at1/` directory at the mount root. Its files are served
//! with direct I/O (their size is not known in advance):
//!
//! - `stats`: JSON counters, generated at each open;
//! - `sql`: write a query, read its result (`sql.rs`).

use std::os::unix::ffi::OsStrExt;

use serde_json::json;

use super::At1Fs;
use crate::stats::Stats;

/// Totals over the store's managed objects.
#[derive(Debug, Default)]
struct StoreTotals {
    objects: u64,
    original_bytes: u64,
    stored_bytes: u64,
}

impl At1Fs {
    /// Reads every managed object's trailer (80 bytes each, nothing
    /// decoded): fresh totals for each open of `stats`.
    fn store_totals(&self) -> StoreTotals {
        let mut t = StoreTotals::default();
        let Ok(dir) = std::fs::read_dir(self.store.objects_dir()) else { return t };
        for entry in dir.flatten() {
            let name = entry.file_name();
            if !name.as_bytes().ends_with(crate::store::OBJECT_SUFFIX.as_bytes()) {
                continue;
            }
            let (Ok(meta), Ok(trailer)) = (entry.metadata(), crate::reader::read_trailer(&entry.path())) else { continue };
            t.objects += 1;
            t.original_bytes += trailer.original_len;
            t.stored_bytes += meta.len();
        }
        t
    }

    /// The content of `.at1/stats`.
    pub(super) fn stats_json(&self) -> String {
        let s = &self.stats;
        let t = self.store_totals();
        let c = &self.cache.counters;
        let ratio = if t.stored_bytes == 0 { 0.0 } else { t.original_bytes as f64 / t.stored_bytes as f64 };
        let v = json!({
            "objects": t.objects,
            "original_bytes": t.original_bytes,
            "stored_bytes": t.stored_bytes,
            "ratio": ratio,
            "writes_committed": Stats::get(&s.writes_committed),
            "writes_rejected": Stats::get(&s.writes_rejected),
            "bytes_written": Stats::get(&s.bytes_written),
            "reads": Stats::get(&s.reads),
            "bytes_served": Stats::get(&s.bytes_served),
            "bytes_decoded": Stats::get(&s.bytes_decoded),
            "cache_hits": Stats::get(&c.hits),
            "cache_misses": Stats::get(&c.misses),
            "cache_bytes": Stats::get(&c.bytes),
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "queries": Stats::get(&s.queries),
            "query_bytes_read": Stats::get(&s.query_bytes_read),
            "query_bytes_total": Stats::get(&s.query_bytes_total),
        });
        let mut out = serde_json::to_string_pretty(&v).unwrap_or_default();
        out.push('\n');
        out
    }
}
