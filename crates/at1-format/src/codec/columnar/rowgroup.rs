//! A row group: its records cut into column chunks plus the few rows the
//! column model cannot hold (docs/FORMAT.md §5.1), and the way back to the
//! exact text.
//!
//! A row is *regular* when it has exactly one field per column and ends with
//! the dialect's terminator; its text is then the fields joined by the
//! delimiter. Every other row (ragged, another line ending, the last row
//! without a newline) is kept verbatim in the row layout, while its fields
//! still go to the column chunks so SQL sees them.

use super::chunk::{decode_chunk, encode_chunk, ColumnChunk, EncodedChunk, FieldRef, SharedResolver};
use super::dictionary::SharedStrings;
use super::scan::{scan_record, FieldSpan};
use crate::codec::ints::IntPacking;
use crate::codec::CodecError;
use crate::format::wire::{WireReader, WireWriter};
use crate::format::Dialect;

/// The encoded pieces of one row group, before backend compression.
pub struct EncodedRowGroup {
    pub rows: u64,
    pub columns: Vec<EncodedChunk>,
    /// Present when some rows are irregular.
    pub layout: Option<Vec<u8>>,
}

/// Irregular rows of a row group: (row, exact bytes incl. terminator).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RowLayout {
    pub rows: Vec<(u32, Vec<u8>)>,
}

/// Splits `text` (whole records) into column chunks for `n_columns` columns.
/// `at_eof` tells whether the text ends the file (its last record may then
/// lack a terminator). `shared[c]` is the file's dictionary for column `c`
/// (a missing entry means none).
pub fn encode_row_group(
    text: &[u8],
    dialect: &Dialect,
    n_columns: usize,
    at_eof: bool,
    packing: IntPacking,
    shared: &[Option<std::sync::Arc<SharedStrings>>],
) -> Result<EncodedRowGroup, CodecError> {
    let mut spans: Vec<FieldSpan> = Vec::new();
    // field_range[row] = range of this row's fields in `spans`.
    let mut rows: Vec<(usize, usize)> = Vec::new();
    let mut layout = RowLayout::default();
    let terminator = dialect.terminator.bytes();
    let mut pos = 0;
    while pos < text.len() {
        let first = spans.len();
        let rec = scan_record(text, pos, dialect.delimiter, dialect.quote, at_eof, &mut spans)
            .ok_or_else(|| CodecError::Malformed("row group text ends inside a record".into()))?;
        let n_fields = spans.len() - first;
        let regular = n_fields == n_columns && text.get(rec.content_end..rec.end) == Some(terminator);
        if !regular {
            layout.rows.push((rows.len() as u32, text.get(rec.start..rec.end).unwrap_or_default().to_vec()));
        }
        rows.push((first, spans.len()));
        pos = rec.end;
    }
    let columns = (0..n_columns)
        .map(|c| {
            // A row's fields are `spans[a..b]`; a short row lacks column `c`.
            let fields: Vec<Option<FieldRef<'_>>> =
                rows.iter().map(|&(a, b)| spans.get(a..b).and_then(|row| row.get(c)).map(|s| FieldRef { raw: s.text(text), kind: s.kind })).collect();
            encode_chunk(&fields, dialect, packing, shared.get(c).and_then(|s| s.as_deref()))
        })
        .collect();
    let layout = (!layout.rows.is_empty()).then(|| encode_layout(&layout));
    Ok(EncodedRowGroup { rows: rows.len() as u64, columns, layout })
}

fn encode_layout(layout: &RowLayout) -> Vec<u8> {
    let mut w = WireWriter::new();
    w.varint(layout.rows.len() as u64);
    let mut prev = 0u32;
    for (row, bytes) in &layout.rows {
        w.varint(u64::from(row - prev));
        w.bytes(bytes);
        prev = *row;
    }
    w.into_bytes()
}

pub fn decode_layout(payload: &[u8], rows: u64) -> Result<RowLayout, CodecError> {
    let mut r = WireReader::new(payload);
    // Each irregular row takes at least two bytes (its row delta and
    // length): a count beyond that is corrupt, and is refused before the
    // list is allocated.
    let n = r.count("irregular row count", rows.min(payload.len() as u64 / 2))?;
    let mut out = Vec::with_capacity(n);
    let mut row = 0u64;
    for i in 0..n {
        let gap = r.varint()?;
        if i > 0 && gap == 0 {
            return Err(CodecError::Malformed("row layout repeats a row".into()));
        }
        row = row.checked_add(gap).filter(|&r| r < rows).ok_or_else(|| CodecError::Malformed("row layout row out of range".into()))?;
        out.push((row as u32, r.bytes()?.to_vec()));
    }
    if !r.is_at_end() {
        return Err(CodecError::Malformed("trailing bytes in a row layout".into()));
    }
    Ok(RowLayout { rows: out })
}

/// Rebuilds the exact text of a row group from its decoded chunks.
pub fn write_row_group(columns: &[ColumnChunk], layout: Option<&RowLayout>, dialect: &Dialect, rows: u64, out: &mut Vec<u8>) -> Result<(), CodecError> {
    // The chunks' own row counts bound the loop below: without a chunk,
    // nothing would.
    if columns.is_empty() {
        return Err(CodecError::Malformed("a row group without columns".into()));
    }
    if columns.iter().any(|c| c.rows() as u64 != rows) {
        return Err(CodecError::Malformed("column chunks disagree on the row count".into()));
    }
    let irregular = layout.map_or(&[][..], |l| &l.rows[..]);
    let mut next_irregular = irregular.iter().peekable();
    let terminator = dialect.terminator.bytes();
    let mut cursors: Vec<_> = columns.iter().map(|c| c.cursor()).collect();
    for row in 0..rows as usize {
        if let Some((_, bytes)) = next_irregular.next_if(|(r, _)| *r as usize == row) {
            out.extend_from_slice(bytes);
            cursors.iter_mut().for_each(|c| c.skip());
            continue;
        }
        for (c, cursor) in cursors.iter_mut().enumerate() {
            if c > 0 {
                out.push(dialect.delimiter);
            }
            cursor.write_next(dialect, out)?;
        }
        out.extend_from_slice(terminator);
    }
    Ok(())
}

/// Decodes one column chunk payload (re-exported for the reader); `shared`
/// gives the file dictionary a chunk names.
pub fn decode_column(payload: &[u8], shared: SharedResolver<'_>) -> Result<ColumnChunk, CodecError> {
    decode_chunk(payload, shared)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::format::LineTerminator;

    fn round_trip(text: &[u8], n_columns: usize, terminator: LineTerminator) {
        let dialect = Dialect { delimiter: b',', quote: Some(b'"'), terminator, has_header: false };
        let enc = encode_row_group(text, &dialect, n_columns, true, IntPacking::Bytes, &[]).unwrap();
        let chunks: Vec<ColumnChunk> = enc.columns.iter().map(|c| decode_chunk(&c.payload, &super::super::chunk::no_shared).unwrap()).collect();
        let layout = enc.layout.as_ref().map(|l| decode_layout(l, enc.rows).unwrap());
        let mut out = Vec::new();
        write_row_group(&chunks, layout.as_ref(), &dialect, enc.rows, &mut out).unwrap();
        assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(text));
    }

    #[test]
    fn a_layout_claiming_more_rows_than_its_bytes_is_refused_before_allocating() {
        // varint 2^30 irregular rows, in a payload of 5 bytes.
        let payload = [0x80, 0x80, 0x80, 0x80, 0x04];
        let err = decode_layout(&payload, 1 << 30).unwrap_err();
        assert!(err.to_string().contains("irregular row count"), "{err}");
    }

    #[test]
    fn a_row_group_without_columns_is_refused_not_written_row_by_row() {
        let dialect = Dialect { delimiter: b',', quote: Some(b'"'), terminator: LineTerminator::Lf, has_header: false };
        let mut out = Vec::new();
        let err = write_row_group(&[], None, &dialect, 1 << 40, &mut out).unwrap_err();
        assert!(err.to_string().contains("without columns") && out.is_empty(), "{err}");
    }

    #[test]
    fn regular_and_irregular_rows_round_trip() {
        round_trip(b"1,a\n2,b\n", 2, LineTerminator::Lf);
        round_trip(b"1,a\n2\n3,c,extra\n4,\"multi\nline\"\r\n5,e", 2, LineTerminator::Lf);
        round_trip(b"1,a\r\n2,b\n", 2, LineTerminator::CrLf);
        round_trip(b"\xff\xfe,\x00\n,\n", 2, LineTerminator::Lf);
    }
}
