//! at1fs: every file a verified, queryable, compressed `.at1` object.
//!
//! The work is done in the workspace's crates, which follow the data
//! (docs/ARCHITECTURE.md); this facade gives the `at1` command and the
//! integration tests one set of names for them:
//!
//! - `at1-format` ([`value`], [`format`], [`codec`]): the object format
//!   and codecs, no I/O;
//! - `at1-core` ([`gate`], [`reader`], [`source`]): the one write path and
//!   the one read path;
//! - `at1-store` ([`store`]): the metadata engine and the object store;
//! - `at1-volume` ([`volume`]): namespace, commits, journal, recovery;
//! - `at1-query` ([`query`]): SQL;
//! - `at1-fs` ([`fs`]): the FUSE adapter.

pub use at1_core::{gate, reader, source};
pub use at1_format::{codec, format, value};
pub use at1_fs as fs;
pub use at1_query as query;
pub use at1_store as store;
pub use at1_volume as volume;
