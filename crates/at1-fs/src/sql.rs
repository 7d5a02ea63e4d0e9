//! `.at1/sql`: write a query, read its result.
//!
//! - **As the caller.** A query reads its table with the rights of the
//!   process that wrote it (uid, gid, supplementary groups): the path is
//!   resolved inside the store, never on the host, judging search and read
//!   permission as `open(O_RDONLY)` through the mount would
//!   (`store::resolve_as`). A refusal fails the write with EACCES and reads
//!   back as `{"error": "permission denied: PATH"}`.
//! - **Never on a FUSE thread, never holding the file.** A query is first
//!   *prepared* (parsed, its table found and opened as the caller, planned)
//!   on a thread of its own; the request that started it — the write that
//!   completes it, or a close that finds one pending — is answered then,
//!   with the query's error if it has one. It then runs on the query pool
//!   (`query::pool`: bounded, fair between users, with memory and time
//!   limits), and a read of its result waits for it. Writes to one file
//!   are serialized by the kernel, so a write must not wait for a whole
//!   query: one user's long query would hold every other user's write.
//! - **Results.** On one handle opened read-write, a read returns the
//!   result of the query written on it. A new handle (`cat`) returns the
//!   latest result of its session for its user: results are kept by
//!   session id, uid and the session leader's start time, so another user
//!   in the same session, or a later session that got the same id, never
//!   sees them. A refused query reads back as `{"error": "..."}` and fails
//!   its write: EINVAL (a bad query), EACCES, EFBIG (text over 1 MiB). A
//!   query stopped while it runs (over `--query-memory` or
//!   `--query-timeout`, or too many waiting) reads back as its error.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fuser::{Errno, ReplyData, ReplyEmpty, ReplyWrite};

use at1_core::reader::BlockCache;
use at1_query::pool::{release_freed_memory, QueryPool, QUERY_STACK};
use at1_query::{self as query, Limits, OutputFormat, QueryError, VolumeSource};
use at1_volume::access::Caller;
use at1_volume::stats::Stats;
use at1_volume::Volume;

/// Results larger than this go to a temp file rather than memory.
const RESULT_IN_MEMORY: usize = 8 << 20;
/// A session's result is dropped after this long, or when its session is
/// gone, or when results hold more than `RESULTS_TOTAL` bytes.
const RESULT_TTL: Duration = Duration::from_secs(600);
const RESULTS_TOTAL: u64 = 512 << 20;

/// How queries run in a mount.
#[derive(Debug, Clone)]
pub struct SqlConfig {
    pub limits: Limits,
    /// Queries running at once at most.
    pub workers: usize,
}

/// What the `.at1/sql` file needs, shared with the query threads.
pub struct SqlService {
    /// Tables are found in the volume, as the caller.
    volume: Arc<Volume>,
    /// Where results, spilled sorts and encoded plain files go.
    scratch: PathBuf,
    cache: Arc<BlockCache>,
    stats: Arc<Stats>,
    limits: Limits,
    pool: QueryPool,
    sessions: Sessions,
}

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
            ResultBytes::Memory(v) => Ok(v.get(start as usize..end as usize).unwrap_or_default().to_vec()),
            ResultBytes::Spilled { file, .. } => {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; (end - start) as usize];
                file.read_exact_at(&mut buf, start)?;
                Ok(buf)
            }
        }
    }

    fn error(e: &QueryError) -> ResultBytes {
        ResultBytes::Memory(query::output::error_json(e).into_bytes())
    }
}

/// A `Write` that keeps bytes in memory up to a bound, then spills them.
struct ResultBuffer {
    mem: Vec<u8>,
    file: Option<std::fs::File>,
    len: u64,
    scratch: PathBuf,
}

impl Write for ResultBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.file.is_none() && self.mem.len() + buf.len() > RESULT_IN_MEMORY {
            let mut f = tempfile::tempfile_in(&self.scratch)?;
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

impl ResultBuffer {
    fn finish(self) -> ResultBytes {
        match self.file {
            Some(file) => ResultBytes::Spilled { file, len: self.len },
            None => ResultBytes::Memory(self.mem),
        }
    }
}

/// Whose results these are: a session (by id, and its leader's start
/// time, so a new session that got a reused id is another session) and a
/// user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey {
    sid: i32,
    uid: u32,
    /// Which process leads the session: 0 when the leader has exited —
    /// then no later leader can match it.
    leader_start: LeaderId,
}

/// A process, told apart from any later one given the same pid: its start
/// time (clock ticks since boot) and its pidfs inode number (unique for the
/// whole boot, 0 where the kernel has no pidfs). The start time alone is
/// 10 ms coarse: a pid handed out again within one tick (ns_last_pid does
/// that at once) would match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
struct LeaderId {
    start: u64,
    pidfs_ino: u64,
}

#[cfg(test)]
impl LeaderId {
    fn is_known(&self) -> bool {
        self.start > 0
    }
}

impl SessionKey {
    /// The key of the process `pid` (a FUSE request's caller), acting as
    /// `uid`.
    pub fn of(pid: u32, uid: u32) -> SessionKey {
        // SAFETY: getsid has no memory effects.
        let sid = unsafe { libc::getsid(pid as i32) };
        let sid = if sid < 0 { pid as i32 } else { sid };
        SessionKey { sid, uid, leader_start: leader_start(sid) }
    }
}

/// Which process `sid` is, if it is the leader of session `sid`.
fn leader_start(sid: i32) -> LeaderId {
    let pidfs_ino = pidfs_ino(sid);
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{sid}/stat")) else { return LeaderId::default() };
    // After the command name (which may hold spaces and parentheses):
    // state is field 3, session field 6, start time field 22.
    let Some((_, rest)) = stat.rsplit_once(')') else { return LeaderId::default() };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    match (fields.get(3).and_then(|s| s.parse::<i32>().ok()), fields.get(19).and_then(|s| s.parse::<u64>().ok())) {
        (Some(session), Some(start)) if session == sid => LeaderId { start, pidfs_ino },
        _ => LeaderId::default(),
    }
}

/// The pidfs inode number of process `pid` (0 if none): taken before the
/// stat is read, so a pid reused in between gives a pair that matches no
/// one.
fn pidfs_ino(pid: i32) -> u64 {
    // SAFETY: pidfd_open takes a pid and flags; the descriptor is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return 0;
    }
    // SAFETY: a descriptor just opened and owned here only.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    std::fs::File::from(fd).metadata().map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap_or(0)
}

/// One query's result as it comes: a reader that arrives while the query
/// runs waits for it (its reply is kept, not its thread).
pub struct ResultSlot {
    state: Mutex<SlotState>,
}

type Waiter = Box<dyn FnOnce(&Arc<ResultBytes>) + Send>;

enum SlotState {
    Running(Vec<Waiter>),
    Done(Arc<ResultBytes>),
}

impl std::fmt::Debug for ResultSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResultSlot")
    }
}

impl ResultSlot {
    fn running() -> Arc<ResultSlot> {
        Arc::new(ResultSlot { state: Mutex::new(SlotState::Running(Vec::new())) })
    }

    /// Sets the result and answers everyone waiting for it.
    fn finish(&self, result: ResultBytes) {
        let result = Arc::new(result);
        let waiters = match std::mem::replace(&mut *lock(&self.state), SlotState::Done(result.clone())) {
            SlotState::Running(w) => w,
            SlotState::Done(_) => Vec::new(),
        };
        for w in waiters {
            w(&result);
        }
    }

    /// Calls `f` with the result: now, or when the query ends.
    fn when_done(&self, f: impl FnOnce(&Arc<ResultBytes>) + Send + 'static) {
        let mut state = lock(&self.state);
        match &mut *state {
            SlotState::Running(waiters) => waiters.push(Box::new(f)),
            SlotState::Done(r) => {
                let r = r.clone();
                drop(state);
                f(&r);
            }
        }
    }

    /// Bytes held (a running query's result is not counted yet).
    fn len(&self) -> u64 {
        match &*lock(&self.state) {
            SlotState::Done(r) => r.len(),
            SlotState::Running(_) => 0,
        }
    }
}

/// The latest query of each session and user.
#[derive(Debug, Default)]
struct Sessions {
    latest: Mutex<HashMap<SessionKey, (Arc<ResultSlot>, Instant)>>,
}

impl Sessions {
    fn get(&self, key: SessionKey) -> Option<Arc<ResultSlot>> {
        self.latest.lock().ok()?.get(&key).map(|(r, _)| r.clone())
    }

    fn put(&self, key: SessionKey, r: Arc<ResultSlot>) {
        let Ok(mut map) = self.latest.lock() else { return };
        map.insert(key, (r, Instant::now()));
        // Forget sessions that ended or went quiet, then the oldest while
        // results take too much.
        map.retain(|_, (_, at)| at.elapsed() < RESULT_TTL);
        if let Some(live) = live_sessions() {
            map.retain(|k, _| *k == key || live.contains(&k.sid));
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

/// The query text written on a handle and not yet run.
#[derive(Debug, Default)]
struct Pending {
    text: Vec<u8>,
    /// The last byte of `text` that is not whitespace: whether the text
    /// ends in `;` is known without rescanning it on every write.
    last_significant: Option<u8>,
}

/// An open handle of `.at1/sql`: the query written on it and its result.
#[derive(Debug)]
pub struct SqlHandle {
    pending: Mutex<Pending>,
    /// The latest query of this handle (or, until one is written, of its
    /// session).
    slot: Mutex<Option<Arc<ResultSlot>>>,
    /// File position where the last query's text ended. The first read
    /// after a query decides how offsets map to the result: a plain `read`
    /// continues at this position and gets the result from its start; a
    /// `pread` (or read after `lseek`) at 0 reads it from 0.
    base: AtomicU64,
    /// The offset that maps to the result's first byte, once decided.
    shift: Mutex<Option<u64>>,
}

/// Who sent a request: for permissions and for the session its result
/// belongs to.
pub struct Requester {
    pub caller: Caller,
    pub session: SessionKey,
}

impl Requester {
    pub fn of(req: &fuser::Request) -> Requester {
        Requester { caller: Caller::of_request(req.uid(), req.gid(), req.pid()), session: SessionKey::of(req.pid(), req.uid()) }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A query that panicked (a bug): its caller gets this, and the mount
/// goes on.
fn unexpected() -> QueryError {
    log::error!("a query panicked; its caller got an error");
    QueryError::Io("the query failed unexpectedly (logged)".into())
}

fn errno_of(e: &QueryError) -> Errno {
    Errno::from_i32(e.errno())
}

impl SqlService {
    pub fn new(volume: Arc<Volume>, scratch: PathBuf, cache: Arc<BlockCache>, stats: Arc<Stats>, cfg: &SqlConfig) -> SqlService {
        SqlService { volume, scratch, cache, stats, limits: cfg.limits.clone(), pool: QueryPool::new(cfg.workers), sessions: Sessions::default() }
    }

    /// Opens `.at1/sql` for the session `key`: a fresh handle shows its
    /// session's latest result until a query is written on it.
    pub fn open(&self, key: SessionKey) -> SqlHandle {
        SqlHandle { pending: Mutex::default(), slot: Mutex::new(self.sessions.get(key)), base: AtomicU64::new(0), shift: Mutex::new(None) }
    }

    /// Starts the handle's pending query, if any: `prepared` is told the
    /// outcome of preparing it (at once when nothing is pending); the
    /// result goes to a new slot of the handle and of `who`'s session.
    fn start(self: &Arc<Self>, who: Requester, h: &SqlHandle, prepared: impl FnOnce(Result<(), QueryError>) + Send + 'static) {
        let text = std::mem::take(&mut *lock(&h.pending)).text;
        if text.trim_ascii().is_empty() {
            return prepared(Ok(()));
        }
        let slot = ResultSlot::running();
        *lock(&h.slot) = Some(slot.clone());
        *lock(&h.shift) = None;
        self.sessions.put(who.session, slot.clone());
        Stats::add(&self.stats.queries, 1);
        let service = self.clone();
        let failed = slot.clone();
        // Parsing recurses as deep as the query's operator chains: a large
        // stack, on a thread of its own.
        let thread = std::thread::Builder::new()
            .name("at1-prepare".into())
            .stack_size(QUERY_STACK)
            .spawn(move || service.prepare_then_run(who, slot, &String::from_utf8_lossy(&text), prepared));
        if let Err(e) = thread {
            failed.finish(ResultBytes::error(&QueryError::Io(format!("cannot start a query: {e}"))));
        }
    }

    /// Prepares a query (as its caller), reports that, then runs it on the
    /// pool into `slot`.
    fn prepare_then_run(self: Arc<Self>, who: Requester, slot: Arc<ResultSlot>, sql: &str, prepared: impl FnOnce(Result<(), QueryError>)) {
        let source = VolumeSource { volume: self.volume.clone(), caller: who.caller.clone() };
        let prepare = || query::prepare(sql, &source, Some(self.cache.clone()), OutputFormat::Json);
        let query = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(prepare)).unwrap_or_else(|_| Err(unexpected())) {
            Ok(q) => q,
            Err(e) => {
                log::info!("query refused: {e}");
                slot.finish(ResultBytes::error(&e));
                return prepared(Err(e));
            }
        };
        prepared(Ok(()));
        let service = self.clone();
        self.pool.submit(who.caller.uid, move |admitted| {
            let run = || admitted.and_then(|()| service.run(&query));
            // Whatever happens, the slot is finished: readers wait for it.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|_| Err(unexpected()));
            // The query's memory goes back before its result is shown.
            drop(query);
            release_freed_memory();
            slot.finish(result.unwrap_or_else(|e| {
                log::info!("query stopped: {e}");
                ResultBytes::error(&e)
            }));
        });
    }

    /// Runs a prepared query into a result. On the pool's thread.
    fn run(&self, query: &query::Prepared) -> Result<ResultBytes, QueryError> {
        let mut buf = ResultBuffer { mem: Vec::new(), file: None, len: 0, scratch: self.scratch.clone() };
        let limits = Limits { spill_dir: Some(self.scratch.clone()), ..self.limits.clone() };
        let stats = query.run(&limits, &mut buf)?;
        Stats::add(&self.stats.query_bytes_read, stats.bytes_read);
        Stats::add(&self.stats.query_bytes_total, stats.total_block_bytes);
        Ok(buf.finish())
    }

    /// A write appends to the handle's query; a complete query (ending in a
    /// newline or `;`) starts, and the write is answered once it is
    /// prepared (with its error, if it has one).
    pub fn write(self: &Arc<Self>, who: Requester, h: Arc<SqlHandle>, offset: u64, data: &[u8], reply: ReplyWrite) {
        let n = data.len() as u32;
        h.base.store(offset + u64::from(n), Ordering::Relaxed);
        let complete = {
            let mut p = lock(&h.pending);
            let total = p.text.len() + data.len();
            if total > query::MAX_QUERY_BYTES {
                // Refused before it can grow further; the text so far goes.
                *p = Pending::default();
                drop(p);
                let e = QueryError::TooLong(total);
                let slot = ResultSlot::running();
                slot.finish(ResultBytes::error(&e));
                *lock(&h.slot) = Some(slot.clone());
                *lock(&h.shift) = None;
                self.sessions.put(who.session, slot);
                return reply.error(errno_of(&e));
            }
            p.text.extend_from_slice(data);
            if let Some(&b) = data.iter().rev().find(|b| !b.is_ascii_whitespace()) {
                p.last_significant = Some(b);
            }
            data.ends_with(b"\n") || p.last_significant == Some(b';')
        };
        if !complete {
            return reply.written(n);
        }
        self.start(who, &h, move |outcome| match outcome {
            Ok(()) => reply.written(n),
            Err(e) => reply.error(errno_of(&e)),
        });
    }

    /// A read returns the handle's result, once its query has run; a query
    /// written without a terminator starts first.
    pub fn read(self: &Arc<Self>, who: Requester, h: Arc<SqlHandle>, offset: u64, size: u32, reply: ReplyData) {
        self.start(who, &h, |_| {});
        let slot = lock(&h.slot).clone();
        let Some(slot) = slot else {
            let text: &[u8] = b"{\"error\": \"no query was written in this session: write one to .at1/sql first\"}\n";
            let start = (offset as usize).min(text.len());
            let end = start.saturating_add(size as usize).min(text.len());
            return reply.data(text.get(start..end).unwrap_or_default());
        };
        slot.when_done(move |result| match read_result(&h, result, offset, size) {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => reply.error(Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))),
        });
    }

    /// A close (or fsync) starts a pending query and is answered once it is
    /// prepared.
    pub fn flush(self: &Arc<Self>, who: Requester, h: Arc<SqlHandle>, reply: ReplyEmpty) {
        self.start(who, &h, move |outcome| match outcome {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno_of(&e)),
        });
    }
}

/// The bytes of `result` that a read of handle `h` at `offset` gets.
fn read_result(h: &SqlHandle, result: &ResultBytes, offset: u64, size: u32) -> std::io::Result<Vec<u8>> {
    let base = h.base.load(Ordering::Relaxed);
    let shift = *lock(&h.shift).get_or_insert(if offset == base { base } else { 0 });
    result.read_at(offset.saturating_sub(shift), size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_kept_per_session_user_and_leader() {
        let sessions = Sessions::default();
        // SAFETY: getsid of the calling process.
        let sid = unsafe { libc::getsid(0) };
        let mine = SessionKey { sid, uid: 0, leader_start: LeaderId { start: 7, pidfs_ino: 70 } };
        sessions.put(mine, ResultSlot::running());
        assert!(sessions.get(mine).is_some());
        assert!(sessions.get(SessionKey { uid: 1000, ..mine }).is_none(), "another user of the same session");
        assert!(sessions.get(SessionKey { leader_start: LeaderId { start: 8, pidfs_ino: 70 }, ..mine }).is_none(), "a new session with a reused id");
        assert!(sessions.get(SessionKey { leader_start: LeaderId { start: 7, pidfs_ino: 71 }, ..mine }).is_none(), "the same tick, another process");
    }

    #[test]
    fn the_leader_start_time_is_read_for_a_leader_only() {
        // SAFETY: plain queries about this process.
        let (pid, sid) = unsafe { (libc::getpid(), libc::getsid(0)) };
        assert!(leader_start(sid).is_known() || std::fs::metadata(format!("/proc/{sid}")).is_err());
        if pid != sid {
            assert!(!leader_start(pid).is_known(), "not a session leader");
        }
    }
}
