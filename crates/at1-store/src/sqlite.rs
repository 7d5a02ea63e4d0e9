//! The metadata engine in one SQLite database (WAL mode).
//!
//! One connection writes (transactions are serialized, as SQLite's are
//! anyway); a few more read, so lookups and `stat`s never wait for a
//! write. Commits are not fsync'd one by one (`synchronous=NORMAL`):
//! [`MetaStore::sync`] makes all of them durable at once, for a group
//! commit. The schema is plain SQL (INTEGER, BLOB, TEXT; no SQLite-only
//! constructs in the tables) so a PostgreSQL engine can share it.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::meta::{Content, DirEntry, Event, Extent, Ino, Inode, Kind, MetaError, MetaRead, MetaStore, MetaTxn, Totals, ROOT_INO};
use crate::objects::ObjectId;

/// The schema, created on first open.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inodes (
    ino INTEGER PRIMARY KEY AUTOINCREMENT,
    kind INTEGER NOT NULL,
    perm INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    size INTEGER NOT NULL,
    atime INTEGER NOT NULL,
    mtime INTEGER NOT NULL,
    ctime INTEGER NOT NULL,
    nlink INTEGER NOT NULL,
    rdev INTEGER NOT NULL,
    parent INTEGER NOT NULL,
    object BLOB,
    stored_len INTEGER,
    sha256 BLOB
);
CREATE TABLE IF NOT EXISTS entries (
    parent INTEGER NOT NULL,
    name BLOB NOT NULL,
    ino INTEGER NOT NULL,
    PRIMARY KEY (parent, name)
);
CREATE INDEX IF NOT EXISTS entries_by_ino ON entries (ino);
CREATE INDEX IF NOT EXISTS inodes_by_object ON inodes (object);
CREATE TABLE IF NOT EXISTS symlinks (ino INTEGER PRIMARY KEY, target BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS xattrs (ino INTEGER NOT NULL, name BLOB NOT NULL, value BLOB NOT NULL, PRIMARY KEY (ino, name));
CREATE TABLE IF NOT EXISTS orphans (ino INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS garbage (object BLOB PRIMARY KEY, released_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS recompress (object BLOB PRIMARY KEY, ino INTEGER NOT NULL, queued_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS extents (
    ino INTEGER NOT NULL,
    start INTEGER NOT NULL,
    len INTEGER NOT NULL,
    object BLOB NOT NULL,
    stored_len INTEGER NOT NULL,
    sha256 BLOB NOT NULL,
    PRIMARY KEY (ino, start)
);
CREATE INDEX IF NOT EXISTS extents_by_object ON extents (object);
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    op TEXT NOT NULL,
    detail TEXT NOT NULL,
    hash BLOB NOT NULL
);
";

/// Stores made before extents kept a file's one object in its inode row
/// (`inodes.object`, `stored_len`, `sha256`): moved into `extents` as one
/// extent at open, in one transaction. Reads still understand such a row
/// (a read-only open of a store not yet migrated).
const MIGRATE_TO_EXTENTS: &str = "
BEGIN IMMEDIATE;
INSERT INTO extents (ino, start, len, object, stored_len, sha256)
    SELECT ino, 0, size, object, stored_len, sha256 FROM inodes WHERE object IS NOT NULL AND stored_len IS NOT NULL AND sha256 IS NOT NULL;
UPDATE inodes SET object = NULL, stored_len = NULL, sha256 = NULL WHERE object IS NOT NULL AND stored_len IS NOT NULL AND sha256 IS NOT NULL;
COMMIT;
";

/// Reader connections besides the writer.
const READERS: usize = 4;

fn engine(e: rusqlite::Error) -> MetaError {
    MetaError::Engine(e.to_string())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Metadata in `STORE/meta.db`.
pub struct SqliteMeta {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteMeta")
    }
}

fn connect(path: &Path) -> Result<Connection, MetaError> {
    let conn = Connection::open(path).map_err(engine)?;
    conn.busy_timeout(Duration::from_secs(30)).map_err(engine)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(engine)?;
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(engine)?;
    Ok(conn)
}

impl SqliteMeta {
    /// Opens (and on first use creates) the database at `path`, with the
    /// root directory (`root` gives its attributes).
    pub fn open(path: &Path, root: &Inode) -> Result<SqliteMeta, MetaError> {
        let writer = connect(path)?;
        writer.execute_batch(SCHEMA).map_err(engine)?;
        let legacy: bool = writer.query_row("SELECT EXISTS (SELECT 1 FROM inodes WHERE object IS NOT NULL)", [], |r| r.get(0)).map_err(engine)?;
        if legacy {
            if let Err(e) = writer.execute_batch(MIGRATE_TO_EXTENTS) {
                let _ = writer.execute_batch("ROLLBACK");
                return Err(engine(e));
            }
        }
        let has_root: bool = writer.query_row("SELECT EXISTS (SELECT 1 FROM inodes WHERE ino = ?1)", [ROOT_INO as i64], |r| r.get(0)).map_err(engine)?;
        if !has_root {
            let mut root = root.clone();
            root.ino = ROOT_INO;
            insert_inode(&writer, &root, Some(ROOT_INO))?;
        }
        let readers = (0..READERS).map(|_| connect(path).map(Mutex::new)).collect::<Result<_, _>>()?;
        Ok(SqliteMeta { writer: Mutex::new(writer), readers })
    }

    /// Opens the database at `path` to read it beside the process that
    /// writes it: a read-only connection (every write fails), no schema
    /// made.
    pub fn open_read_only(path: &Path) -> Result<SqliteMeta, MetaError> {
        use rusqlite::OpenFlags;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connect = || -> Result<Connection, MetaError> {
            let conn = Connection::open_with_flags(path, flags).map_err(engine)?;
            conn.busy_timeout(Duration::from_secs(30)).map_err(engine)?;
            // A store not yet opened for writing since extents came has no
            // `extents` table: an empty one in the connection's own
            // temporary schema stands in (its inode rows hold the objects).
            let has_extents: bool =
                conn.query_row("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'extents')", [], |r| r.get(0)).map_err(engine)?;
            if !has_extents {
                conn.execute_batch(
                    "CREATE TEMP TABLE extents (ino INTEGER NOT NULL, start INTEGER NOT NULL, len INTEGER NOT NULL, object BLOB NOT NULL, \
                     stored_len INTEGER NOT NULL, sha256 BLOB NOT NULL, PRIMARY KEY (ino, start))",
                )
                .map_err(engine)?;
            }
            Ok(conn)
        };
        let writer = connect()?;
        let readers = (0..READERS).map(|_| connect().map(Mutex::new)).collect::<Result<_, _>>()?;
        Ok(SqliteMeta { writer: Mutex::new(writer), readers })
    }

    /// A free reader connection, or the first one.
    fn reader(&self) -> MutexGuard<'_, Connection> {
        for r in &self.readers {
            if let Ok(guard) = r.try_lock() {
                return guard;
            }
        }
        match self.readers.first() {
            Some(r) => lock(r),
            None => lock(&self.writer),
        }
    }
}

/// Reads on one connection.
struct Reader<'a> {
    conn: MutexGuard<'a, Connection>,
}

/// A transaction on the writer connection.
struct Txn<'a> {
    conn: MutexGuard<'a, Connection>,
    open: bool,
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

impl MetaStore for SqliteMeta {
    fn read(&self) -> Result<Box<dyn MetaRead + '_>, MetaError> {
        Ok(Box::new(Reader { conn: self.reader() }))
    }

    fn write(&self) -> Result<Box<dyn MetaTxn + '_>, MetaError> {
        let conn = lock(&self.writer);
        conn.execute_batch("BEGIN IMMEDIATE").map_err(engine)?;
        Ok(Box::new(Txn { conn, open: true }))
    }

    fn sync(&self) -> Result<(), MetaError> {
        // A commit with synchronous=FULL fsyncs the write-ahead log, and
        // with it every commit before this one.
        let conn = lock(&self.writer);
        conn.pragma_update(None, "synchronous", "FULL").map_err(engine)?;
        let result = conn
            .execute(
                "INSERT INTO settings (key, value) VALUES ('syncs', '1') ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)",
                [],
            )
            .map_err(engine);
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(engine)?;
        result.map(|_| ())
    }
}

// ---------------------------------------------------------------- rows

const INODE_COLUMNS: &str = "ino, kind, perm, uid, gid, size, atime, mtime, ctime, nlink, rdev, parent, object, stored_len, sha256";

fn to_u64(v: i64, what: &str) -> Result<u64, MetaError> {
    u64::try_from(v).map_err(|_| MetaError::Corrupt(format!("{what} {v} is negative")))
}

fn to_u32(v: i64, what: &str) -> Result<u32, MetaError> {
    u32::try_from(v).map_err(|_| MetaError::Corrupt(format!("{what} {v} is out of range")))
}

/// The raw columns of an inode row, checked into an [`Inode`] afterwards
/// (rusqlite's row closures cannot return our error).
struct InodeRow {
    ints: [i64; 12],
    object: Option<Vec<u8>>,
    stored_len: Option<i64>,
    sha256: Option<Vec<u8>>,
}

fn inode_row(r: &Row<'_>) -> rusqlite::Result<InodeRow> {
    let mut ints = [0i64; 12];
    for (i, slot) in ints.iter_mut().enumerate() {
        *slot = r.get(i)?;
    }
    Ok(InodeRow { ints, object: r.get(12)?, stored_len: r.get(13)?, sha256: r.get(14)? })
}

impl InodeRow {
    fn check(self) -> Result<Inode, MetaError> {
        let [ino, kind, perm, uid, gid, size, atime, mtime, ctime, nlink, rdev, parent] = self.ints;
        let kind = Kind::from_code(kind).ok_or_else(|| MetaError::Corrupt(format!("inode {ino} has unknown kind {kind}")))?;
        // A row of a store not yet migrated: its one object is the whole
        // file.
        let legacy = match (self.object, self.stored_len, self.sha256) {
            (None, _, _) => None,
            (Some(object), Some(stored_len), Some(sha)) => {
                Some(Extent { start: 0, len: to_u64(size, "size")?, content: content_of(ino, object, stored_len, sha)? })
            }
            _ => return Err(MetaError::Corrupt(format!("inode {ino} has a partial content reference"))),
        };
        Ok(Inode {
            ino: to_u64(ino, "inode number")?,
            kind,
            perm: to_u32(perm, "mode")?,
            uid: to_u32(uid, "uid")?,
            gid: to_u32(gid, "gid")?,
            size: to_u64(size, "size")?,
            atime,
            mtime,
            ctime,
            nlink: to_u32(nlink, "link count")?,
            rdev: to_u32(rdev, "rdev")?,
            parent: to_u64(parent, "parent")?,
            extents: legacy.into_iter().collect(),
        })
    }
}

fn content_of(ino: i64, object: Vec<u8>, stored_len: i64, sha: Vec<u8>) -> Result<Content, MetaError> {
    Ok(Content {
        object: ObjectId::from_slice(&object).ok_or_else(|| MetaError::Corrupt(format!("inode {ino} names a malformed object id")))?,
        stored_len: to_u64(stored_len, "stored length")?,
        sha256: sha.try_into().map_err(|_| MetaError::Corrupt(format!("inode {ino} has a malformed SHA-256")))?,
    })
}

/// The extents of inode `ino`, in order.
fn read_extents(c: &Connection, ino: Ino) -> Result<Vec<Extent>, MetaError> {
    let mut s = c.prepare_cached("SELECT start, len, object, stored_len, sha256 FROM extents WHERE ino = ?1 ORDER BY start").map_err(engine)?;
    let rows = s
        .query_map([ino as i64], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?, r.get::<_, i64>(3)?, r.get::<_, Vec<u8>>(4)?)))
        .map_err(engine)?;
    rows.map(|r| {
        let (start, len, object, stored_len, sha) = r.map_err(engine)?;
        Ok(Extent { start: to_u64(start, "extent start")?, len: to_u64(len, "extent length")?, content: content_of(ino as i64, object, stored_len, sha)? })
    })
    .collect()
}

/// An inode row with its extents.
fn full_inode(c: &Connection, row: InodeRow) -> Result<Inode, MetaError> {
    let mut inode = row.check()?;
    if inode.kind == Kind::File {
        inode.extents.extend(read_extents(c, inode.ino)?);
    }
    Ok(inode)
}

fn write_extents(conn: &Connection, ino: Ino, extents: &[Extent]) -> Result<(), MetaError> {
    conn.prepare_cached("DELETE FROM extents WHERE ino = ?1").and_then(|mut s| s.execute([ino as i64])).map_err(engine)?;
    let mut s = conn.prepare_cached("INSERT INTO extents (ino, start, len, object, stored_len, sha256) VALUES (?1, ?2, ?3, ?4, ?5, ?6)").map_err(engine)?;
    for e in extents {
        s.execute(params![ino as i64, e.start as i64, e.len as i64, e.content.object.0.to_vec(), e.content.stored_len as i64, e.content.sha256.to_vec()])
            .map_err(engine)?;
    }
    Ok(())
}

fn insert_inode(conn: &Connection, i: &Inode, ino: Option<Ino>) -> Result<Ino, MetaError> {
    let (object, stored_len, sha): (Option<Vec<u8>>, Option<i64>, Option<Vec<u8>>) = (None, None, None);
    conn.prepare_cached(&format!("INSERT INTO inodes ({INODE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"))
        .and_then(|mut s| {
            s.execute(params![
                ino.map(|n| n as i64),
                i.kind.code(),
                i.perm,
                i.uid,
                i.gid,
                i.size as i64,
                i.atime,
                i.mtime,
                i.ctime,
                i.nlink,
                i.rdev,
                i.parent as i64,
                object,
                stored_len,
                sha
            ])
        })
        .map_err(engine)?;
    let ino = to_u64(conn.last_insert_rowid(), "inode number")?;
    if !i.extents.is_empty() {
        write_extents(conn, ino, &i.extents)?;
    }
    Ok(ino)
}

fn event_row(r: &Row<'_>) -> rusqlite::Result<(i64, i64, String, String, Vec<u8>)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn check_event((seq, time, op, detail, hash): (i64, i64, String, String, Vec<u8>)) -> Result<Event, MetaError> {
    let hash = hash.try_into().map_err(|_| MetaError::Corrupt(format!("journal event {seq} has a malformed hash")))?;
    Ok(Event { seq: to_u64(seq, "sequence number")?, time, op, detail, hash })
}

/// The reads, for any connection (a reader, or the writer inside a
/// transaction, which sees its own changes).
fn read_inode(c: &Connection, ino: Ino) -> Result<Option<Inode>, MetaError> {
    let row = c
        .prepare_cached(&format!("SELECT {INODE_COLUMNS} FROM inodes WHERE ino = ?1"))
        .and_then(|mut s| s.query_row([ino as i64], inode_row).optional())
        .map_err(engine)?;
    row.map(|r| full_inode(c, r)).transpose()
}

fn read_lookup(c: &Connection, parent: Ino, name: &[u8]) -> Result<Option<Ino>, MetaError> {
    let ino: Option<i64> = c
        .prepare_cached("SELECT ino FROM entries WHERE parent = ?1 AND name = ?2")
        .and_then(|mut s| s.query_row(params![parent as i64, name], |r| r.get(0)).optional())
        .map_err(engine)?;
    ino.map(|i| to_u64(i, "inode number")).transpose()
}

fn read_entries(c: &Connection, dir: Ino, after: Option<&[u8]>, limit: usize) -> Result<Vec<DirEntry>, MetaError> {
    let mut s = c
        .prepare_cached(
            "SELECT e.name, e.ino, i.kind FROM entries e JOIN inodes i ON i.ino = e.ino WHERE e.parent = ?1 AND e.name > ?2 ORDER BY e.name LIMIT ?3",
        )
        .map_err(engine)?;
    let rows = s
        .query_map(params![dir as i64, after.unwrap_or(&[]), limit as i64], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))
        .map_err(engine)?;
    let mut out = Vec::new();
    for row in rows {
        let (name, ino, kind) = row.map_err(engine)?;
        let kind = Kind::from_code(kind).ok_or_else(|| MetaError::Corrupt(format!("inode {ino} has unknown kind {kind}")))?;
        out.push(DirEntry { name, ino: to_u64(ino, "inode number")?, kind });
    }
    Ok(out)
}

fn read_blob(c: &Connection, sql: &str, p: impl rusqlite::Params) -> Result<Option<Vec<u8>>, MetaError> {
    c.prepare_cached(sql).and_then(|mut s| s.query_row(p, |r| r.get(0)).optional()).map_err(engine)
}

fn read_events(c: &Connection, sql: &str, p: impl rusqlite::Params) -> Result<Vec<Event>, MetaError> {
    let mut s = c.prepare_cached(sql).map_err(engine)?;
    let rows = s.query_map(p, event_row).map_err(engine)?;
    rows.map(|r| r.map_err(engine).and_then(check_event)).collect()
}

macro_rules! impl_reads {
    ($t:ty) => {
        impl MetaRead for $t {
            fn inode(&self, ino: Ino) -> Result<Option<Inode>, MetaError> {
                read_inode(&self.conn, ino)
            }

            fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Option<Ino>, MetaError> {
                read_lookup(&self.conn, parent, name)
            }

            fn entries(&self, dir: Ino, after: Option<&[u8]>, limit: usize) -> Result<Vec<DirEntry>, MetaError> {
                read_entries(&self.conn, dir, after, limit)
            }

            fn has_entries(&self, dir: Ino) -> Result<bool, MetaError> {
                self.conn
                    .prepare_cached("SELECT EXISTS (SELECT 1 FROM entries WHERE parent = ?1)")
                    .and_then(|mut s| s.query_row([dir as i64], |r| r.get(0)))
                    .map_err(engine)
            }

            fn a_name_of(&self, ino: Ino) -> Result<Option<(Ino, Vec<u8>)>, MetaError> {
                let row: Option<(i64, Vec<u8>)> = self
                    .conn
                    .prepare_cached("SELECT parent, name FROM entries WHERE ino = ?1 LIMIT 1")
                    .and_then(|mut s| s.query_row([ino as i64], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                    .map_err(engine)?;
                row.map(|(p, n)| Ok((to_u64(p, "parent")?, n))).transpose()
            }

            fn symlink_target(&self, ino: Ino) -> Result<Option<Vec<u8>>, MetaError> {
                read_blob(&self.conn, "SELECT target FROM symlinks WHERE ino = ?1", [ino as i64])
            }

            fn xattr(&self, ino: Ino, name: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
                read_blob(&self.conn, "SELECT value FROM xattrs WHERE ino = ?1 AND name = ?2", params![ino as i64, name])
            }

            fn xattr_names(&self, ino: Ino) -> Result<Vec<Vec<u8>>, MetaError> {
                let mut s = self.conn.prepare_cached("SELECT name FROM xattrs WHERE ino = ?1 ORDER BY name").map_err(engine)?;
                let rows = s.query_map([ino as i64], |r| r.get(0)).map_err(engine)?;
                rows.map(|r| r.map_err(engine)).collect()
            }

            fn orphans(&self) -> Result<Vec<Ino>, MetaError> {
                let mut s = self.conn.prepare_cached("SELECT ino FROM orphans ORDER BY ino").map_err(engine)?;
                let rows = s.query_map([], |r| r.get::<_, i64>(0)).map_err(engine)?;
                rows.map(|r| r.map_err(engine).and_then(|i| to_u64(i, "inode number"))).collect()
            }

            fn garbage(&self) -> Result<Vec<(ObjectId, u64)>, MetaError> {
                let mut s = self.conn.prepare_cached("SELECT object, released_at FROM garbage ORDER BY released_at").map_err(engine)?;
                let rows = s.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))).map_err(engine)?;
                rows.map(|r| {
                    let (object, at) = r.map_err(engine)?;
                    let id = ObjectId::from_slice(&object).ok_or_else(|| MetaError::Corrupt("a malformed object id in the garbage list".into()))?;
                    Ok((id, to_u64(at, "sequence number")?))
                })
                .collect()
            }

            fn events(&self, from: u64, limit: usize) -> Result<Vec<Event>, MetaError> {
                read_events(
                    &self.conn,
                    "SELECT seq, time, op, detail, hash FROM journal WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
                    params![from as i64, limit as i64],
                )
            }

            fn last_event(&self) -> Result<Option<Event>, MetaError> {
                Ok(read_events(&self.conn, "SELECT seq, time, op, detail, hash FROM journal ORDER BY seq DESC LIMIT 1", [])?.pop())
            }

            fn contents(&self, after: Ino, limit: usize) -> Result<Vec<(Ino, Vec<Extent>)>, MetaError> {
                let mut s = self
                    .conn
                    .prepare_cached(&format!(
                        "SELECT {INODE_COLUMNS} FROM inodes WHERE ino > ?1 AND (object IS NOT NULL OR EXISTS (SELECT 1 FROM extents x WHERE x.ino = inodes.ino)) \
                         ORDER BY ino LIMIT ?2"
                    ))
                    .map_err(engine)?;
                let rows = s.query_map(params![after as i64, limit as i64], inode_row).map_err(engine)?;
                let rows: Vec<InodeRow> = rows.collect::<Result<_, _>>().map_err(engine)?;
                let mut out = Vec::new();
                for row in rows {
                    let inode = full_inode(&self.conn, row)?;
                    if !inode.extents.is_empty() {
                        out.push((inode.ino, inode.extents));
                    }
                }
                Ok(out)
            }

            fn totals(&self) -> Result<Totals, MetaError> {
                let (inodes, files, original, stored, pending): (i64, i64, i64, i64, i64) = self
                    .conn
                    .prepare_cached(
                        "SELECT COUNT(*), COUNT(object) + (SELECT COUNT(DISTINCT ino) FROM extents), \
                         COALESCE(SUM(CASE WHEN kind = 1 THEN size ELSE 0 END), 0), \
                         COALESCE(SUM(stored_len), 0) + (SELECT COALESCE(SUM(stored_len), 0) FROM extents), \
                         (SELECT COUNT(*) FROM recompress) FROM inodes",
                    )
                    .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))))
                    .map_err(engine)?;
                Ok(Totals {
                    inodes: to_u64(inodes, "count")?,
                    files_with_content: to_u64(files, "count")?,
                    original_bytes: to_u64(original, "size")?,
                    stored_bytes: to_u64(stored, "size")?,
                    recompress_pending: to_u64(pending, "count")?,
                })
            }

            fn recompress_queue(&self, limit: usize) -> Result<Vec<(ObjectId, Ino)>, MetaError> {
                let mut s = self.conn.prepare_cached("SELECT object, ino FROM recompress ORDER BY queued_at LIMIT ?1").map_err(engine)?;
                let rows = s.query_map([limit as i64], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))).map_err(engine)?;
                rows.map(|r| {
                    let (object, ino) = r.map_err(engine)?;
                    let id = ObjectId::from_slice(&object).ok_or_else(|| MetaError::Corrupt("a malformed object id in the recompression queue".into()))?;
                    Ok((id, to_u64(ino, "inode number")?))
                })
                .collect()
            }

            fn setting(&self, key: &str) -> Result<Option<String>, MetaError> {
                self.conn
                    .prepare_cached("SELECT value FROM settings WHERE key = ?1")
                    .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
                    .map_err(engine)
            }

            fn inodes(&self, after: Ino, limit: usize) -> Result<Vec<Inode>, MetaError> {
                let mut s = self.conn.prepare_cached(&format!("SELECT {INODE_COLUMNS} FROM inodes WHERE ino > ?1 ORDER BY ino LIMIT ?2")).map_err(engine)?;
                let rows = s.query_map(params![after as i64, limit as i64], inode_row).map_err(engine)?;
                let rows: Vec<InodeRow> = rows.collect::<Result<_, _>>().map_err(engine)?;
                rows.into_iter().map(|r| full_inode(&self.conn, r)).collect()
            }

            fn names_count(&self, ino: Ino) -> Result<u64, MetaError> {
                let n: i64 = self
                    .conn
                    .prepare_cached("SELECT COUNT(*) FROM entries WHERE ino = ?1")
                    .and_then(|mut s| s.query_row([ino as i64], |r| r.get(0)))
                    .map_err(engine)?;
                to_u64(n, "count")
            }

            fn subdir_count(&self, dir: Ino) -> Result<u64, MetaError> {
                let n: i64 = self
                    .conn
                    .prepare_cached("SELECT COUNT(*) FROM entries e JOIN inodes i ON i.ino = e.ino WHERE e.parent = ?1 AND i.kind = ?2")
                    .and_then(|mut s| s.query_row(params![dir as i64, Kind::Dir.code()], |r| r.get(0)))
                    .map_err(engine)?;
                to_u64(n, "count")
            }

            fn all_entries(&self, after: Option<(Ino, &[u8])>, limit: usize) -> Result<Vec<(Ino, Vec<u8>, Ino)>, MetaError> {
                // Before every entry: parent 0 is no directory's number.
                let (parent, name) = after.unwrap_or((0, &[]));
                let mut s = self
                    .conn
                    .prepare_cached("SELECT parent, name, ino FROM entries WHERE (parent, name) > (?1, ?2) ORDER BY parent, name LIMIT ?3")
                    .map_err(engine)?;
                let rows = s
                    .query_map(params![parent as i64, name, limit as i64], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, i64>(2)?)))
                    .map_err(engine)?;
                rows.map(|r| {
                    let (parent, name, ino) = r.map_err(engine)?;
                    Ok((to_u64(parent, "parent")?, name, to_u64(ino, "inode number")?))
                })
                .collect()
            }

            fn object_user(&self, id: &ObjectId) -> Result<Option<Ino>, MetaError> {
                let ino: Option<i64> = self
                    .conn
                    .prepare_cached("SELECT ino FROM extents WHERE object = ?1 UNION ALL SELECT ino FROM inodes WHERE object = ?1 LIMIT 1")
                    .and_then(|mut s| s.query_row([id.0.to_vec()], |r| r.get(0)).optional())
                    .map_err(engine)?;
                ino.map(|i| to_u64(i, "inode number")).transpose()
            }
        }
    };
}

impl_reads!(Reader<'_>);
impl_reads!(Txn<'_>);

impl Txn<'_> {
    fn exec(&self, sql: &str, p: impl rusqlite::Params) -> Result<usize, MetaError> {
        self.conn.prepare_cached(sql).and_then(|mut s| s.execute(p)).map_err(engine)
    }
}

impl MetaTxn for Txn<'_> {
    fn create_inode(&mut self, inode: &Inode) -> Result<Ino, MetaError> {
        insert_inode(&self.conn, inode, None)
    }

    fn update_inode(&mut self, i: &Inode) -> Result<(), MetaError> {
        // The legacy columns are cleared: the extents say it all.
        let (object, stored_len, sha): (Option<Vec<u8>>, Option<i64>, Option<Vec<u8>>) = (None, None, None);
        let old_extents = match read_inode(&self.conn, i.ino)? {
            Some(old) => old.extents,
            None => return Err(MetaError::Corrupt(format!("inode {} is not there to update", i.ino))),
        };
        let n = self.exec(
            "UPDATE inodes SET kind = ?2, perm = ?3, uid = ?4, gid = ?5, size = ?6, atime = ?7, mtime = ?8, ctime = ?9, nlink = ?10, rdev = ?11, parent = ?12, \
             object = ?13, stored_len = ?14, sha256 = ?15 WHERE ino = ?1",
            params![
                i.ino as i64,
                i.kind.code(),
                i.perm,
                i.uid,
                i.gid,
                i.size as i64,
                i.atime,
                i.mtime,
                i.ctime,
                i.nlink,
                i.rdev,
                i.parent as i64,
                object,
                stored_len,
                sha
            ],
        )?;
        if n != 1 {
            return Err(MetaError::Corrupt(format!("inode {} is not there to update", i.ino)));
        }
        if old_extents != i.extents {
            write_extents(&self.conn, i.ino, &i.extents)?;
        }
        Ok(())
    }

    fn delete_inode(&mut self, ino: Ino) -> Result<(), MetaError> {
        for sql in [
            "DELETE FROM inodes WHERE ino = ?1",
            "DELETE FROM extents WHERE ino = ?1",
            "DELETE FROM symlinks WHERE ino = ?1",
            "DELETE FROM xattrs WHERE ino = ?1",
            "DELETE FROM orphans WHERE ino = ?1",
        ] {
            self.exec(sql, [ino as i64])?;
        }
        Ok(())
    }

    fn insert_entry(&mut self, parent: Ino, name: &[u8], ino: Ino) -> Result<(), MetaError> {
        match self
            .conn
            .prepare_cached("INSERT INTO entries (parent, name, ino) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute(params![parent as i64, name, ino as i64]))
        {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => Err(MetaError::Exists),
            Err(e) => Err(engine(e)),
        }
    }

    fn delete_entry(&mut self, parent: Ino, name: &[u8]) -> Result<(), MetaError> {
        self.exec("DELETE FROM entries WHERE parent = ?1 AND name = ?2", params![parent as i64, name]).map(|_| ())
    }

    fn set_symlink_target(&mut self, ino: Ino, target: &[u8]) -> Result<(), MetaError> {
        self.exec("INSERT INTO symlinks (ino, target) VALUES (?1, ?2) ON CONFLICT (ino) DO UPDATE SET target = excluded.target", params![ino as i64, target])
            .map(|_| ())
    }

    fn set_xattr(&mut self, ino: Ino, name: &[u8], value: &[u8]) -> Result<(), MetaError> {
        self.exec(
            "INSERT INTO xattrs (ino, name, value) VALUES (?1, ?2, ?3) ON CONFLICT (ino, name) DO UPDATE SET value = excluded.value",
            params![ino as i64, name, value],
        )
        .map(|_| ())
    }

    fn remove_xattr(&mut self, ino: Ino, name: &[u8]) -> Result<bool, MetaError> {
        Ok(self.exec("DELETE FROM xattrs WHERE ino = ?1 AND name = ?2", params![ino as i64, name])? > 0)
    }

    fn add_orphan(&mut self, ino: Ino) -> Result<(), MetaError> {
        self.exec("INSERT INTO orphans (ino) VALUES (?1) ON CONFLICT (ino) DO NOTHING", [ino as i64]).map(|_| ())
    }

    fn remove_orphan(&mut self, ino: Ino) -> Result<(), MetaError> {
        self.exec("DELETE FROM orphans WHERE ino = ?1", [ino as i64]).map(|_| ())
    }

    fn add_garbage(&mut self, object: &ObjectId, released_at: u64) -> Result<(), MetaError> {
        self.exec("INSERT INTO garbage (object, released_at) VALUES (?1, ?2) ON CONFLICT (object) DO NOTHING", params![object.0.to_vec(), released_at as i64])
            .map(|_| ())
    }

    fn remove_garbage(&mut self, object: &ObjectId) -> Result<(), MetaError> {
        self.exec("DELETE FROM garbage WHERE object = ?1", [object.0.to_vec()]).map(|_| ())
    }

    fn queue_recompress(&mut self, object: &ObjectId, ino: Ino, at: i64) -> Result<(), MetaError> {
        self.exec(
            "INSERT INTO recompress (object, ino, queued_at) VALUES (?1, ?2, ?3) ON CONFLICT (object) DO NOTHING",
            params![object.0.to_vec(), ino as i64, at],
        )
        .map(|_| ())
    }

    fn dequeue_recompress(&mut self, object: &ObjectId) -> Result<(), MetaError> {
        self.exec("DELETE FROM recompress WHERE object = ?1", [object.0.to_vec()]).map(|_| ())
    }

    fn append_event(&mut self, e: &Event) -> Result<(), MetaError> {
        self.exec(
            "INSERT INTO journal (seq, time, op, detail, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![e.seq as i64, e.time, e.op, e.detail, e.hash.to_vec()],
        )
        .map(|_| ())
    }

    fn set_setting(&mut self, key: &str, value: &str) -> Result<(), MetaError> {
        self.exec("INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value", params![key, value]).map(|_| ())
    }

    fn commit(mut self: Box<Self>) -> Result<(), MetaError> {
        self.conn.execute_batch("COMMIT").map_err(engine)?;
        self.open = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_inode(perm: u32) -> Inode {
        Inode { ino: 0, kind: Kind::Dir, perm, uid: 0, gid: 0, size: 0, atime: 1, mtime: 2, ctime: 3, nlink: 2, rdev: 0, parent: 0, extents: Vec::new() }
    }

    fn open(dir: &Path) -> SqliteMeta {
        SqliteMeta::open(&dir.join("meta.db"), &dir_inode(0o755)).unwrap()
    }

    #[test]
    fn a_transaction_commits_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(dir.path());
        let mut t = meta.write().unwrap();
        let file = Inode { kind: Kind::File, perm: 0o644, nlink: 1, ..dir_inode(0) };
        let ino = t.create_inode(&file).unwrap();
        t.insert_entry(ROOT_INO, b"a", ino).unwrap();
        assert!(matches!(t.insert_entry(ROOT_INO, b"a", ino), Err(MetaError::Exists)));
        assert_eq!(t.lookup(ROOT_INO, b"a").unwrap(), Some(ino), "a transaction sees its own changes");
        drop(t); // rolled back
        assert_eq!(meta.read().unwrap().lookup(ROOT_INO, b"a").unwrap(), None);
        let mut t = meta.write().unwrap();
        let ino = t.create_inode(&file).unwrap();
        t.insert_entry(ROOT_INO, b"a", ino).unwrap();
        t.set_xattr(ino, b"user.x", b"1").unwrap();
        t.commit().unwrap();
        let r = meta.read().unwrap();
        assert_eq!(r.lookup(ROOT_INO, b"a").unwrap(), Some(ino));
        assert_eq!(r.inode(ino).unwrap().unwrap().perm, 0o644);
        assert_eq!(r.xattr(ino, b"user.x").unwrap(), Some(b"1".to_vec()));
        assert_eq!(r.entries(ROOT_INO, None, 10).unwrap(), vec![DirEntry { name: b"a".to_vec(), ino, kind: Kind::File }]);
        drop(r);
        meta.sync().unwrap();
    }

    /// A store made before extents: a file's one object in its inode row.
    #[test]
    fn a_store_made_before_extents_is_migrated_at_open_and_read_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(dir.path());
        let mut t = meta.write().unwrap();
        let ino = t.create_inode(&Inode { kind: Kind::File, perm: 0o644, nlink: 1, size: 5, ..dir_inode(0) }).unwrap();
        t.commit().unwrap();
        drop(meta);
        // What the previous code wrote for a 5-byte file.
        let conn = Connection::open(dir.path().join("meta.db")).unwrap();
        conn.execute("UPDATE inodes SET object = ?1, stored_len = 77, sha256 = ?2 WHERE ino = ?3", params![vec![6u8; 16], vec![5u8; 32], ino as i64]).unwrap();
        conn.execute("DROP TABLE extents", []).unwrap();
        drop(conn);
        let want = vec![Extent { start: 0, len: 5, content: Content { object: ObjectId([6; 16]), stored_len: 77, sha256: [5; 32] } }];
        let read_only = SqliteMeta::open_read_only(&dir.path().join("meta.db")).unwrap();
        assert_eq!(read_only.read().unwrap().inode(ino).unwrap().unwrap().extents, want, "read before the migration");
        assert_eq!(read_only.read().unwrap().totals().unwrap().stored_bytes, 77);
        drop(read_only);
        let meta = open(dir.path());
        assert_eq!(meta.read().unwrap().inode(ino).unwrap().unwrap().extents, want);
        let conn = Connection::open(dir.path().join("meta.db")).unwrap();
        let (legacy, moved): (i64, i64) =
            conn.query_row("SELECT (SELECT COUNT(object) FROM inodes), (SELECT COUNT(*) FROM extents)", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert_eq!((legacy, moved), (0, 1), "moved into extents");
        assert_eq!(meta.read().unwrap().contents(0, 10).unwrap(), vec![(ino, want)]);
        assert_eq!(meta.read().unwrap().object_user(&ObjectId([6; 16])).unwrap(), Some(ino));
    }

    #[test]
    fn contents_events_and_garbage_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(dir.path());
        let object = ObjectId([7; 16]);
        let mut t = meta.write().unwrap();
        let extents = vec![
            Extent { start: 0, len: 4, content: Content { object, stored_len: 90, sha256: [3; 32] } },
            Extent { start: 4, len: 6, content: Content { object: ObjectId([8; 16]), stored_len: 9, sha256: [4; 32] } },
        ];
        let file = Inode { kind: Kind::File, perm: 0o600, nlink: 1, size: 10, extents, ..dir_inode(0) };
        let ino = t.create_inode(&file).unwrap();
        t.append_event(&Event { seq: 1, time: 5, op: "write".into(), detail: "{}".into(), hash: [9; 32] }).unwrap();
        t.add_garbage(&ObjectId([1; 16]), 1).unwrap();
        t.commit().unwrap();
        let r = meta.read().unwrap();
        assert_eq!(r.inode(ino).unwrap().unwrap().extents, file.extents);
        assert_eq!(r.contents(0, 10).unwrap(), vec![(ino, file.extents.clone())]);
        assert_eq!(r.object_user(&ObjectId([8; 16])).unwrap(), Some(ino));
        assert_eq!(r.last_event().unwrap().unwrap().hash, [9; 32]);
        assert_eq!(r.garbage().unwrap(), vec![(ObjectId([1; 16]), 1)]);
        assert_eq!(r.totals().unwrap(), Totals { inodes: 2, files_with_content: 1, original_bytes: 10, stored_bytes: 99, recompress_pending: 0 });
    }

    #[test]
    fn whole_namespace_scans_see_dangling_entries_counts_and_object_users() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(dir.path());
        let object = ObjectId([5; 16]);
        let mut t = meta.write().unwrap();
        let sub = t.create_inode(&Inode { kind: Kind::Dir, nlink: 2, parent: ROOT_INO, ..dir_inode(0o755) }).unwrap();
        t.insert_entry(ROOT_INO, b"sub", sub).unwrap();
        let extents = vec![Extent { start: 0, len: 1, content: Content { object, stored_len: 1, sha256: [0; 32] } }];
        let file = t.create_inode(&Inode { kind: Kind::File, nlink: 2, size: 1, extents, ..dir_inode(0o644) }).unwrap();
        t.insert_entry(ROOT_INO, b"f", file).unwrap();
        t.insert_entry(sub, b"g", file).unwrap();
        t.insert_entry(sub, b"gone", 999).unwrap();
        t.commit().unwrap();
        let r = meta.read().unwrap();
        assert_eq!(r.inodes(0, 10).unwrap().iter().map(|i| i.ino).collect::<Vec<_>>(), vec![ROOT_INO, sub, file]);
        assert_eq!(r.inodes(sub, 1).unwrap().len(), 1);
        assert_eq!(r.names_count(file).unwrap(), 2);
        assert_eq!(r.subdir_count(ROOT_INO).unwrap(), 1);
        assert_eq!(r.subdir_count(sub).unwrap(), 0);
        let all = r.all_entries(None, 10).unwrap();
        assert_eq!(all.len(), 4);
        assert!(all.contains(&(sub, b"gone".to_vec(), 999)), "an entry naming no inode is listed");
        let (p, n, _) = &all[1];
        assert_eq!(r.all_entries(Some((*p, n)), 10).unwrap(), all[2..].to_vec(), "pages continue after the key");
        assert_eq!(r.object_user(&object).unwrap(), Some(file));
        assert_eq!(r.object_user(&ObjectId([6; 16])).unwrap(), None);
    }

    #[test]
    fn entries_page_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(dir.path());
        let mut t = meta.write().unwrap();
        for name in ["c", "a", "b"] {
            let ino = t.create_inode(&Inode { kind: Kind::File, nlink: 1, ..dir_inode(0o644) }).unwrap();
            t.insert_entry(ROOT_INO, name.as_bytes(), ino).unwrap();
        }
        t.commit().unwrap();
        let r = meta.read().unwrap();
        let first: Vec<Vec<u8>> = r.entries(ROOT_INO, None, 2).unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(first, vec![b"a".to_vec(), b"b".to_vec()]);
        let rest: Vec<Vec<u8>> = r.entries(ROOT_INO, Some(b"b"), 2).unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(rest, vec![b"c".to_vec()]);
    }
}
