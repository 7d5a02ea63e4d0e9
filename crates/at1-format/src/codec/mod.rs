//! Turning original bytes into block payloads and back. Pure functions over
//! byte slices: no files, no threads (those are `gate`'s and `reader`'s).
//!
//! - [`backend`]: zstd / LZMA2 / stored, under every block;
//! - [`ints`]: integer streams (frame-of-reference, delta, bit packing,
//!   generators);
//! - [`columnar`]: CSV/TSV row groups as typed column chunks.
//!
//! The raw codec needs nothing of its own: a frame block is the backend
//! applied to a run of original bytes.
//!
//! [`decode_segment`] is the single way back from blocks to original bytes;
//! the reader calls it on objects and the gate on freshly encoded blocks, so
//! what the gate verifies is exactly what readers will run.

// Bytes of an object are untrusted: nothing here may panic on them. Every
// index is checked (`get`, checked ranges, iterators) or carries an
// `allow` with the reason it cannot fail. Test modules may unwrap.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

pub mod backend;
pub mod columnar;
pub mod ints;

use std::sync::Arc;

use thiserror::Error;

use crate::format::wire::WireError;
use crate::format::{FormatError, RowGroupStorage, SegmentKind, Table};

/// Why a block could not be decoded.
#[derive(Debug, Error)]
pub enum CodecError {
    /// A checksum or layout check failed: the stored bytes are corrupt.
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("compressor error: {0}")]
    Backend(String),
    /// The payload passed its checksum but does not decode: a bug or an
    /// object written by something else.
    #[error("malformed payload: {0}")]
    Malformed(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<WireError> for CodecError {
    fn from(e: WireError) -> Self {
        CodecError::Malformed(e.to_string())
    }
}

/// Where decoding gets block payloads from: checked against their CRC and
/// decompressed (with their dictionary). The reader implements it over an
/// object with a cache; the gate over blocks it has just encoded.
pub trait BlockSource {
    fn payload(&self, block: u32) -> Result<Arc<Vec<u8>>, CodecError>;
    /// The column dictionary in `block` (a block of role column dictionary),
    /// decoded.
    fn column_dictionary(&self, block: u32) -> Result<Arc<columnar::SharedStrings>, CodecError>;
}

/// Appends the original bytes of one segment to `out`.
pub fn decode_segment(src: &dyn BlockSource, kind: &SegmentKind, table: Option<&Table>, out: &mut Vec<u8>) -> Result<(), CodecError> {
    match kind {
        SegmentKind::Literal(bytes) => out.extend_from_slice(bytes),
        SegmentKind::Frame(block) => out.extend_from_slice(&src.payload(*block)?),
        SegmentKind::RowGroup(rg) => {
            let table = table.ok_or_else(|| CodecError::Malformed("row group segment without a table".into()))?;
            let meta = table.row_groups.get(*rg as usize).ok_or_else(|| CodecError::Malformed(format!("missing row group {rg}")))?;
            match &meta.storage {
                RowGroupStorage::Raw { block } => out.extend_from_slice(&src.payload(*block)?),
                RowGroupStorage::Columnar { layout, columns } => {
                    let chunks =
                        columns.iter().map(|&b| columnar::decode_column(&src.payload(b)?, &|d| src.column_dictionary(d))).collect::<Result<Vec<_>, _>>()?;
                    let layout = match layout {
                        Some(b) => Some(columnar::decode_layout(&src.payload(*b)?, meta.row_count)?),
                        None => None,
                    };
                    columnar::write_row_group(&chunks, layout.as_ref(), &table.dialect, meta.row_count, out)?;
                }
            }
        }
    }
    Ok(())
}
