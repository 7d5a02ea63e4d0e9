//! at1fs: every file a verified, queryable, compressed `.at1` object.
//!
//! Layers, bottom up (see docs/ARCHITECTURE.md):
//! - [`value`]: typed field values and their canonical texts;
//! - [`access`]: callers' credentials and the one permission check;
//! - [`format`]: the `.at1` byte layout (docs/FORMAT.md);
//! - [`codec`]: original bytes to block payloads and back;
//! - [`gate`]: the one verified write path: encode, decode-check, SHA-256,
//!   atomic commit;
//! - [`reader`]: the one read path: byte ranges, columns, point/range/
//!   aggregate lookups, with a block cache and recall-cost accounting;
//! - [`store`]: the backing directory of a mount and its layout;
//! - [`fs`]: the FUSE filesystem over store, gate and reader;
//! - [`stats`]: counters shown by the mount's `.at1/stats`.

pub mod access;
pub mod codec;
pub mod format;
pub mod fs;
pub mod gate;
pub mod query;
pub mod reader;
pub mod stats;
pub mod store;
pub mod value;
