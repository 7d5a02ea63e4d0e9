//! The virtual `.at1/` directory at the mount root: `stats` (JSON
//! counters, made at each open) and `sql` (queries, `sql.rs`). Its inode
//! numbers lie far above any the volume gives out.

use fuser::{FileAttr, FileType, INodeNo};
use serde_json::json;
use std::time::SystemTime;

use at1_volume::stats::Stats;

use crate::At1Fs;

const CONTROL_BASE: u64 = 0xA71F_0000_0000_0000;
/// `/.at1`.
pub const CONTROL_DIR: u64 = CONTROL_BASE + 2;
/// `/.at1/stats`.
pub const STATS_FILE: u64 = CONTROL_BASE + 3;
/// `/.at1/sql`.
pub const SQL_FILE: u64 = CONTROL_BASE + 4;
/// The control directory's name at the root.
pub const CONTROL_NAME: &str = ".at1";

pub fn is_control(ino: u64) -> bool {
    (CONTROL_BASE..CONTROL_BASE + 16).contains(&ino)
}

/// The attributes of a control entry, or `None` for other inodes.
pub fn control_attr(ino: u64, started: SystemTime) -> Option<FileAttr> {
    let (kind, perm) = match ino {
        CONTROL_DIR => (FileType::Directory, 0o555),
        STATS_FILE => (FileType::RegularFile, 0o444),
        SQL_FILE => (FileType::RegularFile, 0o666),
        _ => return None,
    };
    Some(FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: started,
        mtime: started,
        ctime: started,
        crtime: started,
        kind,
        perm,
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    })
}

impl At1Fs {
    /// The content of `.at1/stats`.
    pub(crate) fn stats_json(&self) -> String {
        let s = &self.stats;
        let t = self.volume.totals().unwrap_or_default();
        let c = &self.volume.cache().counters;
        let ratio = if t.stored_bytes == 0 { 0.0 } else { t.original_bytes as f64 / t.stored_bytes as f64 };
        let v = json!({
            "objects": t.files_with_content,
            "original_bytes": t.original_bytes,
            "stored_bytes": t.stored_bytes,
            "ratio": ratio,
            "inodes": t.inodes,
            "writes_committed": Stats::get(&s.writes_committed),
            "extents_written": Stats::get(&s.extents_written),
            "writes_rejected": Stats::get(&s.writes_rejected),
            "bytes_written": Stats::get(&s.bytes_written),
            "recompressed": Stats::get(&s.recompressed),
            "recompress_saved_bytes": Stats::get(&s.recompress_saved_bytes),
            "recompress_pending": t.recompress_pending,
            "reads": Stats::get(&s.reads),
            "bytes_served": Stats::get(&s.bytes_served),
            "bytes_decoded": Stats::get(&s.bytes_decoded),
            "cache_hits": Stats::get(&c.hits),
            "cache_misses": Stats::get(&c.misses),
            "cache_bytes": Stats::get(&c.bytes),
            "uptime_s": self.volume.uptime().as_secs_f64(),
            "queries": Stats::get(&s.queries),
            "query_bytes_read": Stats::get(&s.query_bytes_read),
            "query_bytes_total": Stats::get(&s.query_bytes_total),
        });
        let mut out = serde_json::to_string_pretty(&v).unwrap_or_default();
        out.push('\n');
        out
    }
}
