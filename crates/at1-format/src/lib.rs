//! The `.at1` object format and its codecs: pure functions from original
//! bytes to block payloads and back. No files, no threads, no I/O — the
//! gate and the reader (`at1-core`) bring those.
//!
//! - [`value`]: typed field values and their canonical texts;
//! - [`format`]: the byte layout (header, blocks, footer, trailer;
//!   docs/FORMAT.md);
//! - [`codec`]: backends, integer streams, the columnar CSV codec, and
//!   `decode_segment`, the one way back to original bytes.

pub mod codec;
pub mod format;
pub mod value;
