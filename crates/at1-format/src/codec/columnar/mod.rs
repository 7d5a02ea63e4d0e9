//! The columnar codec for CSV/TSV: sniffing the dialect, cutting records into
//! column chunks with typed, exception-tolerant encodings, zone maps, and the
//! exact text back (docs/FORMAT.md §5).

pub mod chunk;
pub mod dictionary;
pub mod rowgroup;
pub mod scan;
mod stats;

pub use chunk::{no_shared, ColumnChunk, SharedResolver, Values};
pub use dictionary::SharedStrings;
pub use rowgroup::{decode_column, decode_layout, encode_row_group, write_row_group, EncodedRowGroup, RowLayout};
pub use scan::{scan_record, sniff, unquote, FieldSpan, Sniffed};
