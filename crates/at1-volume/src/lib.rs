//! The volume: what a mounted store *means*. Namespace operations (lookup,
//! create, link, unlink, rename, ...), open files and their commits through
//! the gate, the journal, durability (group commit), crash recovery and
//! garbage collection — over a metadata engine and an object store
//! (`at1-store`). No FUSE or HTTP types: the FUSE adapter, the query
//! engine, the command line and the S3 gateway all call this.
//!
//! - [`volume`]: the volume and its namespace operations;
//! - [`files`]: open files, staging, commits, reads;
//! - [`resolve`]: a path resolved as a caller (queries), with [`access`];
//! - [`journal`]: the hash-chained event log;
//! - [`check`]: `at1 verify`; [`fsck`]: `at1 fsck` (and its repair);
//! - [`durability`]: group commit; [`recovery`]: what a crash leaves;
//! - [`layout`]: the store directory, its lock and version; [`upgrade`]:
//!   a layout-1 store converted in place;
//! - [`error`]: every failure, with its errno.

pub mod access;
pub mod check;
pub mod contents;
pub mod durability;
pub mod error;
pub mod extents;
pub mod files;
pub mod fsck;
pub mod import;
pub mod journal;
pub mod layout;
pub mod recompress;
pub mod recovery;
pub mod resolve;
pub mod staging;
pub mod stats;
pub mod upgrade;
pub mod volume;
pub mod xattr;

pub use at1_store::{Ino, Kind};
pub use error::{VResult, VolumeError};
pub use files::{OpenFile, OpenFlags};
pub use import::BringIn;
pub use resolve::{ResolveError, Resolved};
pub use volume::{now, Attr, FsStats, Owner, RenameMode, SetAttr, TimeSet, Volume, VolumeConfig};
