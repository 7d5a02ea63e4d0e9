//! The core of at1fs: the one way bytes become an `.at1` object and the one
//! way they come back.
//!
//! - [`gate`]: encode, decode every block back and compare, SHA-256 —
//!   only then is an object written (to a file, a stream, an object store's
//!   temp file);
//! - [`reader`]: an object over ranged reads ([`source::RangeRead`], no
//!   mmap): byte ranges decoding only the blocks they touch, columns,
//!   lookups, through a bounded [`reader::BlockCache`];
//! - [`source`]: where an object's bytes come from (a file, memory, later
//!   an object store's ranged GETs).

pub mod gate;
pub mod reader;
pub mod source;

// The layers below, under the names the gate and reader use for them.
pub use at1_format::{codec, format, value};
