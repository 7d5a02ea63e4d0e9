//! Where a volume keeps what it knows: two interfaces and their local
//! implementations.
//!
//! - [`meta`]: the **metadata engine** — inodes, directory entries, symlink
//!   targets, xattrs, each regular file's extent map (content references), orphans,
//!   garbage and the journal, changed in transactions
//!   ([`meta::MetaStore`]). [`sqlite::SqliteMeta`] keeps them in one SQLite
//!   database in the store (WAL); the schema is plain SQL so that a
//!   PostgreSQL engine can follow.
//! - [`objects`]: the **object store** — immutable `.at1` objects by id:
//!   put-if-absent, ranged reads, head, delete, list
//!   ([`objects::ObjectStore`]). [`local::LocalObjects`] keeps them as files
//!   named by id; nothing relies on mmap, hard links or rename-over, so an
//!   S3-compatible bucket can stand in later.
//!
//! Neither knows paths, permissions or FUSE: names are bytes under a parent
//! inode, and objects are ids. Meaning lives in the volume above.

pub mod local;
pub mod meta;
pub mod objects;
pub mod sqlite;

pub use local::LocalObjects;
pub use meta::{Content, DirEntry, Event, Extent, Ino, Inode, Kind, MetaError, MetaRead, MetaStore, MetaTxn, Nanos, Totals, ROOT_INO};
pub use objects::{ObjectId, ObjectStore, TempObject};
pub use sqlite::SqliteMeta;
