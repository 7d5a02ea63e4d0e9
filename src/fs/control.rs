//! The virtual `.at1/` directory at the mount root. Its files are served
//! with direct I/O (their size is not known in advance):
//!
//! - `stats`: JSON counters, generated at each open;
//! - `sql`: write a query, read its result. On one handle opened
//!   read-write, a read returns the result of the query written on it; a
//!   new handle (`cat`) returns the latest result of the caller's session
//!   (`getsid`), so two shells never see each other's results. A bad query
//!   fails its write with EINVAL and reads back as `{"error": "..."}`.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::error::{errno, FsError, FsResult};
use super::At1Fs;
use crate::query::{self, OutputFormat, StoreSource};
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

// ---------------------------------------------------------------- .at1/sql

/// Results larger than this go to a temp file rather than memory.
const RESULT_IN_MEMORY: usize = 8 << 20;
/// A session's result is dropped after this long, or when its session is
/// gone, or when results hold more than `RESULTS_TOTAL` bytes.
const RESULT_TTL: Duration = Duration::from_secs(600);
const RESULTS_TOTAL: u64 = 512 << 20;

/// A query result (or an error JSON): in memory, or spilled to a temp file.
#[derive(Debug)]
pub enum ResultBytes {
    Memory(Vec<u8>),
    Spilled { file: std::fs::File, len: u64 },
}

impl ResultBytes {
    pub fn len(&self) -> u64 {
        match self {
            ResultBytes::Memory(v) => v.len() as u64,
            ResultBytes::Spilled { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn read_at(&self, offset: u64, size: u32) -> std::io::Result<Vec<u8>> {
        let start = offset.min(self.len());
        let end = offset.saturating_add(u64::from(size)).min(self.len());
        match self {
            ResultBytes::Memory(v) => Ok(v[start as usize..end as usize].to_vec()),
            ResultBytes::Spilled { file, .. } => {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; (end - start) as usize];
                file.read_exact_at(&mut buf, start)?;
                Ok(buf)
            }
        }
    }
}

/// A `Write` that keeps bytes in memory up to a bound, then spills them.
struct ResultBuffer<'a> {
    mem: Vec<u8>,
    file: Option<std::fs::File>,
    len: u64,
    store: &'a crate::store::Store,
}

impl Write for ResultBuffer<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.file.is_none() && self.mem.len() + buf.len() > RESULT_IN_MEMORY {
            let mut f = self.store.new_staging_file()?;
            f.write_all(&self.mem)?;
            self.mem = Vec::new();
            self.file = Some(f);
        }
        match &mut self.file {
            Some(f) => f.write_all(buf)?,
            None => self.mem.extend_from_slice(buf),
        }
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ResultBuffer<'_> {
    fn finish(self) -> ResultBytes {
        match self.file {
            Some(file) => ResultBytes::Spilled { file, len: self.len },
            None => ResultBytes::Memory(self.mem),
        }
    }
}

/// The latest result of each session (by session id of the caller).
#[derive(Debug, Default)]
pub struct Sessions {
    latest: Mutex<HashMap<i32, (Arc<ResultBytes>, Instant)>>,
}

impl Sessions {
    fn get(&self, sid: i32) -> Option<Arc<ResultBytes>> {
        self.latest.lock().ok()?.get(&sid).map(|(r, _)| r.clone())
    }

    fn put(&self, sid: i32, r: Arc<ResultBytes>) {
        let Ok(mut map) = self.latest.lock() else { return };
        map.insert(sid, (r, Instant::now()));
        // Forget sessions that ended or went quiet, then the oldest while
        // results take too much.
        map.retain(|_, (_, at)| at.elapsed() < RESULT_TTL);
        if let Some(live) = live_sessions() {
            map.retain(|s, _| *s == sid || live.contains(s));
        }
        while map.values().map(|(r, _)| r.len()).sum::<u64>() > RESULTS_TOTAL && map.len() > 1 {
            let oldest = map.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| *k);
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
    }
}

/// The sessions that still have a process. A session outlives its leader
/// (a script started by `setsid` or a CI runner whose leader exited), so
/// the leader's pid is no test of it: every process's session is.
/// `None` when /proc cannot be read: then only age and size evict.
fn live_sessions() -> Option<HashSet<i32>> {
    let dir = std::fs::read_dir("/proc").ok()?;
    let sessions = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        // SAFETY: getsid has no memory effects.
        .map(|pid| unsafe { libc::getsid(pid) })
        .filter(|&sid| sid >= 0)
        .collect();
    Some(sessions)
}

/// An open handle of `.at1/sql`: the query written on it and its result.
#[derive(Debug)]
pub struct SqlHandle {
    sid: i32,
    text: Mutex<Vec<u8>>,
    result: Mutex<Option<Arc<ResultBytes>>>,
    /// File position where the last query's text ended. The first read
    /// after a query decides how offsets map to the result: a plain `read`
    /// continues at this position and gets the result from its start; a
    /// `pread` (or read after `lseek`) at 0 reads it from 0.
    base: std::sync::atomic::AtomicU64,
    /// The offset that maps to the result's first byte, once decided.
    shift: Mutex<Option<u64>>,
}

/// The session id of process `pid` (its shell session: `echo > sql` and
/// `cat sql` from one shell share it).
fn session_of(pid: u32) -> i32 {
    // SAFETY: getsid has no memory effects.
    let sid = unsafe { libc::getsid(pid as i32) };
    if sid < 0 {
        pid as i32
    } else {
        sid
    }
}

impl At1Fs {
    /// Opens `.at1/sql`: a fresh handle sees its session's latest result
    /// until a query is written on it.
    pub(super) fn open_sql(&self, pid: u32) -> SqlHandle {
        let sid = session_of(pid);
        SqlHandle { sid, text: Mutex::new(Vec::new()), result: Mutex::new(self.sessions.get(sid)), base: Default::default(), shift: Mutex::new(None) }
    }

    /// Runs a query and publishes its result (or error) to the handle and
    /// its session.
    fn run_sql(&self, h: &SqlHandle, sql: &str) -> FsResult<()> {
        let source = StoreSource { root: self.store.root().to_path_buf() };
        let mut buf = ResultBuffer { mem: Vec::new(), file: None, len: 0, store: &self.store };
        let outcome = query::execute(sql, &source, Some(self.cache.clone()), OutputFormat::Json, &mut buf);
        Stats::add(&self.stats.queries, 1);
        let (result, err) = match outcome {
            Ok(stats) => {
                Stats::add(&self.stats.query_bytes_read, stats.bytes_read);
                Stats::add(&self.stats.query_bytes_total, stats.total_block_bytes);
                (buf.finish(), None)
            }
            Err(e) => {
                log::info!("query refused: {e}");
                (ResultBytes::Memory(query::output::error_json(&e).into_bytes()), Some(e))
            }
        };
        let result = Arc::new(result);
        if let Ok(mut r) = h.result.lock() {
            *r = Some(result.clone());
        }
        if let Ok(mut shift) = h.shift.lock() {
            *shift = None;
        }
        self.sessions.put(h.sid, result);
        match err {
            None => Ok(()),
            Some(e) => Err(FsError::Query(e.to_string())),
        }
    }

    /// A write appends to the handle's query; a complete query (ending in a
    /// newline or `;`) runs at once, so a bad one fails its write.
    pub(super) fn write_sql(&self, h: &SqlHandle, offset: u64, data: &[u8]) -> FsResult<u32> {
        h.base.store(offset + data.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let complete = {
            let mut text = h.text.lock().map_err(|_| errno(libc::EIO))?;
            text.extend_from_slice(data);
            let trimmed = text.trim_ascii_end();
            data.ends_with(b"\n") || trimmed.ends_with(b";")
        };
        if complete {
            self.run_pending_sql(h)?;
        }
        Ok(data.len() as u32)
    }

    /// Runs the query written on the handle, if any is pending.
    pub(super) fn run_pending_sql(&self, h: &SqlHandle) -> FsResult<()> {
        let text = std::mem::take(&mut *h.text.lock().map_err(|_| errno(libc::EIO))?);
        let sql = String::from_utf8_lossy(&text);
        if sql.trim().is_empty() {
            return Ok(());
        }
        self.run_sql(h, &sql)
    }

    pub(super) fn read_sql(&self, h: &SqlHandle, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        // A query written without a terminator runs when it is read.
        let _ = self.run_pending_sql(h);
        let result = h.result.lock().map_err(|_| errno(libc::EIO))?.clone();
        let base = h.base.load(std::sync::atomic::Ordering::Relaxed);
        let shift = *h.shift.lock().map_err(|_| errno(libc::EIO))?.get_or_insert(if offset == base { base } else { 0 });
        let offset = offset.saturating_sub(shift);
        match result {
            Some(r) => Ok(r.read_at(offset, size)?),
            None if offset == 0 => Ok(b"{\"error\": \"no query was written in this session: write one to .at1/sql first\"}\n".to_vec()),
            None => Ok(Vec::new()),
        }
    }
}
