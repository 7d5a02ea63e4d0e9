//! The one read path: the mount, SQL and the CLI all read objects through
//! [`Reader`].
//!
//! - [`Object`] maps a file, checks header, trailer and footer, and hands out
//!   blocks only after their CRC-32C matched;
//! - [`Reader`] serves byte ranges (decoding only the segments they touch),
//!   column chunks, and point / range / aggregate lookups pruned by the zone
//!   maps, through a shared [`BlockCache`];
//! - every call reports an [`AccessCost`]: the bytes it read from the object
//!   and the bytes it decoded — the *recall cost*.
//!
//! Bytes leave the reader only after the CRC-32C of the original bytes of
//! their segment matched, so a decoder bug or a corruption the block CRC
//! could not see still gives an error, never wrong bytes.

// Bytes of an object are untrusted: nothing here may panic on them. Every
// index is checked (`get`, checked ranges, iterators) or carries an
// `allow` with the reason it cannot fail. Test modules may unwrap.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

pub mod cache;
mod lookup;

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use thiserror::Error;

pub use cache::BlockCache;
use cache::{CacheEntry, CacheKey, ObjectKey, Piece};
pub use lookup::{logical_value, may_contain, stats_apply, Aggregate, AggregateResult, Fold, Row};

use crate::source::{FileRange, RangeRead};

use crate::codec::columnar::{self, ColumnChunk};
use crate::codec::ints::IntPacking;
use crate::codec::{backend, decode_segment, BlockSource, CodecError};
use crate::format::{
    check_header, crc32c, decode_footer, BlockDesc, BlockRole, Footer, FormatError, RowGroupMeta, RowGroupStorage, SegmentKind, Table, Trailer, VerifiedBlock,
    HEADER_LEN, TRAILER_LEN,
};

/// Why a read failed.
#[derive(Debug, Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Codec(CodecError),
    #[error("segment {segment} (original bytes {offset}..{end}) decoded to bytes that fail their checksum")]
    SegmentMismatch { segment: usize, offset: u64, end: u64 },
    #[error("the object is not a table (it was not stored with the columnar codec)")]
    NotATable,
    #[error("no column named {0:?}")]
    UnknownColumn(String),
}

impl From<CodecError> for ReadError {
    fn from(e: CodecError) -> Self {
        match e {
            CodecError::Format(f) => ReadError::Format(f),
            CodecError::Io(e) => ReadError::Io(e),
            other => ReadError::Codec(other),
        }
    }
}

/// What an access cost: bytes read from the object (block payloads as
/// stored, plus metadata where the caller counts it) and bytes decoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccessCost {
    pub bytes_read: u64,
    pub bytes_decoded: u64,
    pub blocks_decoded: u64,
    pub cache_hits: u64,
}

impl AccessCost {
    pub fn add(&mut self, other: AccessCost) {
        self.bytes_read += other.bytes_read;
        self.bytes_decoded += other.bytes_decoded;
        self.blocks_decoded += other.blocks_decoded;
        self.cache_hits += other.cache_hits;
    }
}

/// A parsed, checked `.at1` object.
pub struct Object {
    /// Where the bytes are read from, a range at a time.
    source: Arc<dyn RangeRead>,
    trailer: Trailer,
    footer: Footer,
    key: ObjectKey,
    /// Segment index of each row group (for row groups stored raw).
    row_group_segment: Vec<usize>,
    /// Decoded dictionaries by block id, loaded on first use.
    dictionaries: Mutex<HashMap<u32, Arc<Vec<u8>>>>,
    /// Decoded column dictionaries by block id, loaded on first use.
    column_dictionaries: Mutex<HashMap<u32, Arc<columnar::SharedStrings>>>,
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Object").field("len", &self.source.len()).field("original_len", &self.trailer.original_len).finish()
    }
}

impl Object {
    /// Opens and checks the object at `path`.
    pub fn open(path: &Path) -> Result<Object, ReadError> {
        Self::open_file(File::open(path)?)
    }

    /// [`Object::open`] for a file already open (found by a caller's
    /// lookup, so never opened again by path).
    pub fn open_file(file: File) -> Result<Object, ReadError> {
        Self::open_source(Arc::new(FileRange::new(file)?))
    }

    pub fn from_vec(bytes: Vec<u8>) -> Result<Object, ReadError> {
        Self::open_source(Arc::new(bytes))
    }

    /// Reads and checks the header, trailer and footer of the object that
    /// `source` reads; blocks are read when a read needs them. Objects are
    /// immutable once written, so nothing read here goes stale.
    pub fn open_source(source: Arc<dyn RangeRead>) -> Result<Object, ReadError> {
        let len = source.len();
        if len == 0 {
            return Err(FormatError::NotAt1.into());
        }
        let truncated = || FormatError::Truncated(format!("{len} bytes is less than a header and a trailer"));
        let header = source.read_range(0, (HEADER_LEN).min(len) as usize)?;
        check_header(&header)?;
        let trailer_at = len.checked_sub(TRAILER_LEN).filter(|&at| at >= HEADER_LEN).ok_or_else(truncated)?;
        let trailer = Trailer::decode(&source.read_range(trailer_at, TRAILER_LEN as usize)?, len)?;
        // Trailer::decode checked that the footer lies in [16, trailer_at).
        let footer_len = usize::try_from(trailer_at.checked_sub(trailer.footer_offset).ok_or_else(truncated)?).map_err(|_| truncated())?;
        let footer = decode_footer(&source.read_range(trailer.footer_offset, footer_len)?, &trailer)?;
        // The layout check made the k-th row group segment name row group k.
        let row_group_segment = footer.segments.iter().enumerate().filter(|(_, s)| matches!(s.kind, SegmentKind::RowGroup(_))).map(|(i, _)| i).collect();
        let sha_prefix = u64::from_le_bytes(*trailer.original_sha256.first_chunk().unwrap_or(&[0; 8]));
        let key = ObjectKey { sha_prefix, footer_crc: trailer.footer_crc32c };
        Ok(Object {
            source,
            trailer,
            footer,
            key,
            row_group_segment,
            dictionaries: Mutex::new(HashMap::new()),
            column_dictionaries: Mutex::new(HashMap::new()),
        })
    }

    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    pub fn trailer(&self) -> &Trailer {
        &self.trailer
    }

    pub fn table(&self) -> Option<&Table> {
        self.footer.table.as_ref()
    }

    pub fn original_len(&self) -> u64 {
        self.trailer.original_len
    }

    pub fn stored_len(&self) -> u64 {
        self.source.len()
    }

    /// Bytes a reader must read before it can locate any block: header,
    /// footer and trailer.
    pub fn metadata_len(&self) -> u64 {
        HEADER_LEN + self.trailer.footer_stored_len + TRAILER_LEN
    }

    /// The stored bytes of block `id`, read from the source; their CRC-32C
    /// is checked by [`BlockBytes::verify`] before anything uses them.
    pub fn read_block(&self, id: u32) -> Result<BlockBytes<'_>, ReadError> {
        let desc = self.footer.blocks.get(id as usize).ok_or_else(|| FormatError::Inconsistent(format!("no block {id}")))?;
        // In range once the footer's layout check passed: blocks tile
        // [16, footer offset).
        let len = usize::try_from(desc.stored_len).map_err(|_| FormatError::Inconsistent(format!("block {id} is too large")))?;
        let bytes = self.source.read_range(desc.offset, len).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => ReadError::Format(FormatError::Inconsistent(format!("block {id} lies outside the object"))),
            _ => ReadError::Io(e),
        })?;
        Ok(BlockBytes { id, desc, bytes })
    }

    /// Checks every block's CRC-32C without decoding (a cheap scrub).
    pub fn check_all_blocks(&self) -> Result<(), ReadError> {
        for id in 0..self.footer.blocks.len() as u32 {
            self.read_block(id)?.verify()?;
        }
        Ok(())
    }

    fn dictionary(&self, id: u32, cost: &Cell<AccessCost>) -> Result<Arc<Vec<u8>>, CodecError> {
        if let Some(d) = self.dictionaries.lock().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok(d);
        }
        let raw = self.read_block(id).map_err(codec_error)?;
        let block = raw.verify()?;
        if block.desc().role != BlockRole::Dictionary {
            return Err(CodecError::Malformed(format!("block {id} is not a dictionary")));
        }
        let dict = Arc::new(backend::decompress(&block, None)?);
        charge(cost, block.desc().stored_len, dict.len() as u64);
        if let Ok(mut m) = self.dictionaries.lock() {
            m.insert(id, dict.clone());
        }
        Ok(dict)
    }

    fn column_dictionary(&self, id: u32, cost: &Cell<AccessCost>) -> Result<Arc<columnar::SharedStrings>, CodecError> {
        if let Some(d) = self.column_dictionaries.lock().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok(d);
        }
        let raw = self.read_block(id).map_err(codec_error)?;
        let block = raw.verify()?;
        if block.desc().role != BlockRole::ColumnDictionary {
            return Err(CodecError::Malformed(format!("block {id} is not a column dictionary")));
        }
        let payload = backend::decompress(&block, None)?;
        charge(cost, block.desc().stored_len, payload.len() as u64);
        let dict = Arc::new(columnar::SharedStrings::decode(id, &payload)?);
        if let Ok(mut m) = self.column_dictionaries.lock() {
            m.insert(id, dict.clone());
        }
        Ok(dict)
    }

    /// Which codec the object ended up using, judged by its segments:
    /// `raw`, `columnar`, `mixed` (a table with some parts raw) or `empty`.
    pub fn codec_summary(&self) -> &'static str {
        let segments = &self.footer.segments;
        let frames = segments.iter().filter(|s| matches!(s.kind, SegmentKind::Frame(_))).count();
        let tables = segments.iter().filter(|s| matches!(s.kind, SegmentKind::RowGroup(_))).count();
        match (frames, tables) {
            (0, 0) => "empty",
            (_, 0) => "raw",
            (0, _) => "columnar",
            _ => "mixed",
        }
    }

    /// Stored bytes a cold one-record lookup reads at most: the metadata,
    /// plus the blocks of the costliest single segment (a row group's
    /// columns, or a frame) and the dictionaries they need. From the footer
    /// alone; nothing is decoded. Which column dictionaries a chunk names is
    /// inside its payload, so a columnar row group is charged all of them.
    pub fn point_recall_bytes(&self) -> u64 {
        let block = |id: u32| self.footer.blocks.get(id as usize);
        let column_dictionaries: u64 = self.footer.blocks.iter().filter(|b| b.role == BlockRole::ColumnDictionary).map(|b| b.stored_len).sum();
        let with_dict = |id: u32| -> u64 { block(id).map_or(0, |b| b.stored_len + b.dict.and_then(block).map_or(0, |d| d.stored_len)) };
        let segment_bytes = |kind: &SegmentKind| -> u64 {
            match kind {
                SegmentKind::Literal(_) => 0,
                SegmentKind::Frame(b) => with_dict(*b),
                SegmentKind::RowGroup(rg) => match self.table().and_then(|t| t.row_groups.get(*rg as usize)).map(|r| &r.storage) {
                    Some(RowGroupStorage::Raw { block }) => with_dict(*block),
                    Some(RowGroupStorage::Columnar { layout, columns }) => {
                        column_dictionaries + layout.iter().chain(columns).map(|&b| with_dict(b)).sum::<u64>()
                    }
                    None => 0,
                },
            }
        };
        self.metadata_len() + self.footer.segments.iter().map(|s| segment_bytes(&s.kind)).max().unwrap_or(0)
    }

    /// Segment `index`, or an error naming it (an index from a caller or
    /// from a row group mapping; the footer's checks keep ours in range).
    fn segment(&self, index: usize) -> Result<&crate::format::Segment, FormatError> {
        self.footer.segments.get(index).ok_or_else(|| FormatError::Inconsistent(format!("no segment {index}")))
    }

    fn segment_index_at(&self, offset: u64) -> usize {
        self.footer.segments.partition_point(|s| s.offset + s.len <= offset)
    }
}

/// What a column chunk's payload says against what the footer says of it
/// (docs/FORMAT.md §6.5): a payload is decoded lazily, so these are checked
/// here rather than at open. Every reader of a chunk (SQL, lookups) then
/// may rely on the footer's row count and statistics.
fn check_chunk(chunk: &ColumnChunk, meta: &RowGroupMeta, rg: usize, col: usize) -> Result<(), FormatError> {
    let what = || format!("column {col} of row group {rg}");
    if chunk.rows() as u64 != meta.row_count {
        return Err(FormatError::Inconsistent(format!("{} has {} rows but the footer says {}", what(), chunk.rows(), meta.row_count)));
    }
    let stats = meta.stats.get(col).ok_or_else(|| FormatError::Inconsistent(format!("{} has no statistics", what())))?;
    if chunk.storage_type != stats.storage_type {
        return Err(FormatError::Inconsistent(format!(
            "{} is stored as {} but the footer says {}",
            what(),
            chunk.storage_type.name(),
            stats.storage_type.name()
        )));
    }
    let values = chunk.non_null_count() as u64;
    if values != stats.values {
        return Err(FormatError::Inconsistent(format!(
            "{} holds {values} values and {} NULLs but its statistics say {} and {}",
            what(),
            meta.row_count - values,
            stats.values,
            stats.nulls
        )));
    }
    Ok(())
}

fn charge(cost: &Cell<AccessCost>, read: u64, decoded: u64) {
    let mut c = cost.get();
    c.bytes_read += read;
    c.bytes_decoded += decoded;
    c.blocks_decoded += 1;
    cost.set(c);
}

/// [`BlockSource`] over an object, charging every block to a cost.
struct ObjectSource<'a> {
    object: &'a Object,
    cost: &'a Cell<AccessCost>,
}

impl BlockSource for ObjectSource<'_> {
    fn payload(&self, id: u32) -> Result<Arc<Vec<u8>>, CodecError> {
        let raw = self.object.read_block(id).map_err(codec_error)?;
        let block = raw.verify()?;
        let dict = match block.desc().dict {
            Some(d) => Some(self.object.dictionary(d, self.cost)?),
            None => None,
        };
        let payload = backend::decompress(&block, dict.as_deref().map(Vec::as_slice))?;
        charge(self.cost, block.desc().stored_len, payload.len() as u64);
        Ok(Arc::new(payload))
    }

    fn column_dictionary(&self, id: u32) -> Result<Arc<columnar::SharedStrings>, CodecError> {
        self.object.column_dictionary(id, self.cost)
    }
}

/// Reads one object through a shared cache.
#[derive(Clone)]
pub struct Reader {
    object: Arc<Object>,
    cache: Option<Arc<BlockCache>>,
}

impl Reader {
    pub fn new(object: Arc<Object>, cache: Option<Arc<BlockCache>>) -> Self {
        Self { object, cache }
    }

    pub fn open(path: &Path) -> Result<Reader, ReadError> {
        Ok(Self::new(Arc::new(Object::open(path)?), None))
    }

    pub fn object(&self) -> &Arc<Object> {
        &self.object
    }

    /// A piece from the cache, or made by `load` once however many threads
    /// ask at the same time (then cached); without a cache, just loaded.
    fn cached_or_loaded(
        &self,
        piece: Piece,
        cost: &mut AccessCost,
        load: impl FnOnce(&mut AccessCost) -> Result<CacheEntry, ReadError>,
    ) -> Result<CacheEntry, ReadError> {
        let Some(cache) = &self.cache else { return load(cost) };
        let (entry, hit) = cache.get_or_load(CacheKey { object: self.object.key, piece }, || load(cost))?;
        if hit {
            cost.cache_hits += 1;
        }
        Ok(entry)
    }

    fn remember(&self, piece: Piece, entry: CacheEntry) {
        if let Some(c) = &self.cache {
            c.insert(CacheKey { object: self.object.key, piece }, entry);
        }
    }

    /// The verified original bytes of segment `index`, from the cache or
    /// decoded once however many threads ask at the same time.
    pub fn segment_text(&self, index: usize, cost: &mut AccessCost) -> Result<Arc<Vec<u8>>, ReadError> {
        if matches!(self.object.segment(index)?.kind, SegmentKind::Literal(_)) {
            return self.decode_segment_text(index, cost);
        }
        match self.cached_or_loaded(Piece::Segment(index as u32), cost, |cost| self.decode_segment_text(index, cost).map(CacheEntry::Text))? {
            CacheEntry::Text(text) => Ok(text),
            CacheEntry::Column(_) => Err(FormatError::Inconsistent(format!("segment {index} cached as a column")).into()),
        }
    }

    /// Whether segment `index` is decoded and cached already.
    pub fn segment_is_cached(&self, index: usize) -> bool {
        self.cache.as_ref().is_some_and(|c| c.contains(&CacheKey { object: self.object.key, piece: Piece::Segment(index as u32) }))
    }

    fn decode_segment_text(&self, index: usize, cost: &mut AccessCost) -> Result<Arc<Vec<u8>>, ReadError> {
        let segment = self.object.segment(index)?;
        let cell = Cell::new(AccessCost::default());
        let source = ObjectSource { object: &self.object, cost: &cell };
        let mut text = Vec::with_capacity(segment.len as usize);
        decode_segment(&source, &segment.kind, self.object.table(), &mut text)?;
        let mut spent = cell.get();
        if self.is_columnar_row_group(&segment.kind) {
            // The text is rebuilt from the column payloads: both were
            // materialized.
            spent.bytes_decoded += text.len() as u64;
        }
        cost.add(spent);
        if text.len() as u64 != segment.len || crc32c(&text) != segment.crc32c {
            return Err(ReadError::SegmentMismatch { segment: index, offset: segment.offset, end: segment.offset + segment.len });
        }
        Ok(Arc::new(text))
    }

    fn is_columnar_row_group(&self, kind: &SegmentKind) -> bool {
        match (kind, self.object.table()) {
            (SegmentKind::RowGroup(rg), Some(t)) => matches!(t.row_groups.get(*rg as usize).map(|r| &r.storage), Some(RowGroupStorage::Columnar { .. })),
            _ => false,
        }
    }

    /// Reads up to `len` original bytes from `offset`, decoding only the
    /// segments that overlap them. Short only at the end of the original.
    pub fn read_at(&self, offset: u64, len: usize, cost: &mut AccessCost) -> Result<Vec<u8>, ReadError> {
        let end = offset.saturating_add(len as u64).min(self.object.original_len());
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut index = self.object.segment_index_at(offset);
        let mut pos = offset;
        while pos < end {
            let segment = self.object.segment(index)?;
            let text = self.segment_text(index, cost)?;
            // Segments tile the original, so the one found for `pos` starts
            // at or before it, and its text is `segment.len` bytes.
            let from = pos.saturating_sub(segment.offset) as usize;
            let to = (end.saturating_sub(segment.offset) as usize).min(text.len());
            out.extend_from_slice(text.get(from..to).ok_or_else(|| FormatError::Inconsistent(format!("segment {index} does not hold offset {pos}")))?);
            pos = segment.offset + to as u64;
            index += 1;
        }
        Ok(out)
    }

    /// Index of the segment after the one holding `offset` (for read-ahead).
    pub fn next_segment_after(&self, offset: u64) -> Option<usize> {
        let i = self.object.segment_index_at(offset) + 1;
        (i < self.object.footer.segments.len()).then_some(i)
    }

    pub fn segment_count(&self) -> usize {
        self.object.footer.segments.len()
    }

    /// Column `col` of row group `rg`, decoded (and cached).
    pub fn column(&self, rg: usize, col: usize, cost: &mut AccessCost) -> Result<Arc<ColumnChunk>, ReadError> {
        match self.cached_or_loaded(Piece::Column(rg as u32, col as u32), cost, |cost| self.decode_column(rg, col, cost).map(CacheEntry::Column))? {
            CacheEntry::Column(chunk) => Ok(chunk),
            CacheEntry::Text(_) => Err(FormatError::Inconsistent(format!("column {col} of row group {rg} cached as text")).into()),
        }
    }

    fn decode_column(&self, rg: usize, col: usize, cost: &mut AccessCost) -> Result<Arc<ColumnChunk>, ReadError> {
        let table = self.object.table().ok_or(ReadError::NotATable)?;
        let meta = table.row_groups.get(rg).ok_or_else(|| FormatError::Inconsistent(format!("no row group {rg}")))?;
        match &meta.storage {
            RowGroupStorage::Columnar { columns, .. } => {
                let block = *columns.get(col).ok_or_else(|| ReadError::UnknownColumn(format!("#{col}")))?;
                let cell = Cell::new(AccessCost::default());
                let source = ObjectSource { object: &self.object, cost: &cell };
                let payload = source.payload(block)?;
                let chunk = columnar::decode_column(&payload, &|d| source.column_dictionary(d));
                cost.add(cell.get());
                let chunk = chunk?;
                check_chunk(&chunk, meta, rg, col)?;
                Ok(Arc::new(chunk))
            }
            RowGroupStorage::Raw { .. } => {
                // A row group kept raw: parse its verified text back into
                // columns with the codec's own encoder and decoder, so its
                // values are read exactly as a columnar one's would be.
                let segment = *self.object.row_group_segment.get(rg).ok_or_else(|| FormatError::Inconsistent(format!("row group {rg} has no segment")))?;
                let text = self.segment_text(segment, cost)?;
                let at_eof = segment + 1 == self.object.footer.segments.len();
                let encoded = columnar::encode_row_group(&text, &table.dialect, table.columns.len(), at_eof, IntPacking::Bytes, &[])?;
                // The other columns came for free: keep them too.
                let mut wanted = None;
                for (c, enc) in encoded.columns.iter().enumerate() {
                    let chunk = columnar::decode_column(&enc.payload, &columnar::no_shared)?;
                    check_chunk(&chunk, meta, rg, c)?;
                    let chunk = Arc::new(chunk);
                    if c == col {
                        wanted = Some(chunk);
                    } else {
                        self.remember(Piece::Column(rg as u32, c as u32), CacheEntry::Column(chunk));
                    }
                }
                wanted.ok_or_else(|| ReadError::UnknownColumn(format!("#{col}")))
            }
        }
    }

    /// Decodes every segment in order into `out`, then checks the SHA-256 of
    /// everything written against the trailer's. Segments are decoded on
    /// all cores (at most 8) and written in order; at most a few are held
    /// at once.
    pub fn extract(&self, out: &mut dyn io::Write, progress: impl FnMut(u64)) -> Result<AccessCost, ReadError> {
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(8);
        self.extract_with_threads(out, threads, progress)
    }

    /// [`Reader::extract`] with `threads` decoders.
    ///
    /// Every way out ends the decoders promptly: an error of any segment
    /// stops them taking new ones, and the receiving end of their channel
    /// is dropped as soon as the writer stops (a write error, a corrupt
    /// segment), so a decoder blocked on a full channel gets an error from
    /// `send` instead of waiting for ever for a reader that is gone.
    pub fn extract_with_threads(&self, out: &mut dyn io::Write, threads: usize, mut progress: impl FnMut(u64)) -> Result<AccessCost, ReadError> {
        use sha2::Digest;
        let threads = threads.max(1);
        let mut sha = sha2::Sha256::new();
        let mut cost = AccessCost::default();
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let (tx, rx) = crossbeam_channel::bounded::<Decoded>(threads * 2);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                let (tx, next, stop) = (tx.clone(), &next, &stop);
                scope.spawn(move || self.decode_segments(next, stop, &tx));
            }
            drop(tx);
            let written = self.write_in_order(rx, out, &mut sha, &mut cost, &mut progress);
            if written.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            written
        })?;
        if sha.finalize()[..] != self.object.trailer.original_sha256 {
            return Err(ReadError::Format(FormatError::Inconsistent("SHA-256 of the decoded bytes does not match the trailer".into())));
        }
        Ok(cost)
    }

    /// A decoder of [`Reader::extract`]: takes the next segment until none
    /// is left or `stop` is set, and sends what it decoded (or its error).
    fn decode_segments(&self, next: &AtomicUsize, stop: &AtomicBool, tx: &crossbeam_channel::Sender<Decoded>) {
        let n = self.segment_count();
        // `stop` is read before a segment is taken, never after: a segment
        // taken is always sent, so the writer never waits for one that a
        // stopped decoder dropped.
        while !stop.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                return;
            }
            let mut cost = AccessCost::default();
            let text = self.segment_text(i, &mut cost);
            if text.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            if tx.send((i, text, cost)).is_err() {
                return;
            }
        }
    }

    /// The writer of [`Reader::extract`]: writes decoded segments in order.
    /// Owns the receiver, so that returning (on any error) closes the
    /// channel and unblocks every decoder.
    fn write_in_order(
        &self,
        rx: crossbeam_channel::Receiver<Decoded>,
        out: &mut dyn io::Write,
        sha: &mut sha2::Sha256,
        cost: &mut AccessCost,
        progress: &mut impl FnMut(u64),
    ) -> Result<(), ReadError> {
        use sha2::Digest;
        let mut pending = std::collections::BTreeMap::new();
        let mut expect = 0;
        for (i, text, c) in rx.iter() {
            cost.add(c);
            pending.insert(i, text);
            while let Some(text) = pending.remove(&expect) {
                let text = text?;
                sha.update(&text[..]);
                out.write_all(&text)?;
                progress(text.len() as u64);
                expect += 1;
            }
        }
        if expect != self.segment_count() {
            return Err(FormatError::Inconsistent(format!("segment {expect} was never decoded")).into());
        }
        Ok(())
    }
}

/// What a decoder of [`Reader::extract`] sends: a segment's index, its
/// verified text or the error, and what decoding it cost.
type Decoded = (usize, Result<Arc<Vec<u8>>, ReadError>, AccessCost);

/// Whole-object check: every block CRC, every segment decoded and checked,
/// and the SHA-256 of the whole. Names the first bad block or segment.
pub fn verify(object: Arc<Object>) -> Result<AccessCost, ReadError> {
    object.check_all_blocks()?;
    Reader::new(object, None).extract(&mut io::sink(), |_| {})
}

/// Reads and checks only the trailer of the object at `path` (80 bytes:
/// enough for its original length and SHA-256).
pub fn read_trailer(path: &Path) -> Result<Trailer, ReadError> {
    use std::os::unix::fs::FileExt;
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut head = [0u8; HEADER_LEN as usize];
    if len < HEADER_LEN + TRAILER_LEN {
        return Err(FormatError::Truncated(format!("{len} bytes is less than a header and a trailer")).into());
    }
    file.read_exact_at(&mut head, 0)?;
    check_header(&head)?;
    let mut t = [0u8; TRAILER_LEN as usize];
    file.read_exact_at(&mut t, len - TRAILER_LEN)?;
    Ok(Trailer::decode(&t, len)?)
}

/// The stored bytes of one block, as read; [`BlockBytes::verify`] checks
/// them against their CRC-32C before any decoder sees them.
pub struct BlockBytes<'a> {
    id: u32,
    desc: &'a BlockDesc,
    bytes: Vec<u8>,
}

impl BlockBytes<'_> {
    pub fn verify(&self) -> Result<VerifiedBlock<'_>, FormatError> {
        VerifiedBlock::check(self.id, self.desc, &self.bytes)
    }
}

/// A block read failure where a decoder's error is expected.
fn codec_error(e: ReadError) -> CodecError {
    match e {
        ReadError::Io(io) => CodecError::Io(io),
        ReadError::Format(f) => CodecError::Format(f),
        other => CodecError::Malformed(other.to_string()),
    }
}
