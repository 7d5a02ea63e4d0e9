//! The footer: settings, block descriptors, the segment index from original
//! byte offsets to blocks, and (for tables) the schema, row groups and zone
//! maps. Encoding in docs/FORMAT.md §6.

use super::wire::{WireReader, WireWriter};
use super::{FormatError, Trailer, HEADER_LEN, MAX_BLOCK_BYTES, MAX_ROW_GROUP_ROWS};
use crate::value::{Decimal, Scalar, ValueType};

/// Everything a reader needs to find and check any piece of an object.
#[derive(Debug, Clone, PartialEq)]
pub struct Footer {
    pub settings: Settings,
    pub blocks: Vec<BlockDesc>,
    pub segments: Vec<Segment>,
    pub table: Option<Table>,
}

/// The settings an object was written with (recorded so that the object
/// explains itself; readers do not need them to decode).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub codec: CodecChoice,
    pub backend: Backend,
    /// Level of raw frames.
    pub level: i32,
    /// Level of column chunks and row layouts.
    pub column_level: i32,
    pub frame_size: u64,
    pub row_group_rows: u64,
    pub row_group_bytes: u64,
    pub chunk_lines: u64,
    pub keep_queryable: bool,
    /// The program that wrote the object, e.g. `at1fs 0.1.0`.
    pub writer: String,
}

/// The codec asked for at write time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecChoice {
    Auto = 0,
    Columnar = 1,
    Raw = 2,
}

impl CodecChoice {
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Columnar => "columnar",
            Self::Raw => "raw",
        }
    }
}

/// The general-purpose compressor applied to a block payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Payload stored as is (incompressible data).
    Stored = 0,
    /// A zstd frame.
    Zstd = 1,
    /// A raw LZMA2 stream (no .xz container).
    Xz = 2,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Zstd => "zstd",
            Self::Xz => "xz",
        }
    }
}

/// What a block holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockRole {
    /// A run of original bytes (raw codec, or a row group kept raw).
    Frame = 0,
    /// One column of one row group.
    Column = 1,
    /// The rows of a row group that the column model cannot express.
    RowLayout = 2,
    /// A zstd dictionary other blocks are compressed with.
    Dictionary = 3,
    /// The distinct strings of one column, shared by its chunks.
    ColumnDictionary = 4,
}

impl BlockRole {
    pub fn name(self) -> &'static str {
        match self {
            Self::Frame => "frame",
            Self::Column => "column",
            Self::RowLayout => "row layout",
            Self::Dictionary => "dictionary",
            Self::ColumnDictionary => "column dictionary",
        }
    }
}

/// Where a block is and how to check and decode it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDesc {
    /// Object offset; not stored (blocks are contiguous from the header on).
    pub offset: u64,
    pub stored_len: u64,
    /// Payload length after the backend decompressed it.
    pub decoded_len: u64,
    /// CRC-32C of the stored bytes.
    pub crc32c: u32,
    pub backend: Backend,
    pub role: BlockRole,
    /// The dictionary block this block was compressed with.
    pub dict: Option<u32>,
}

/// A contiguous range of the original bytes and where its bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Original offset; not stored (segments tile the original in order).
    pub offset: u64,
    pub len: u64,
    /// CRC-32C of these original bytes, checked after every decode.
    pub crc32c: u32,
    pub kind: SegmentKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentKind {
    /// Bytes kept in the footer itself (a CSV header line, a BOM).
    Literal(Vec<u8>),
    /// One frame block.
    Frame(u32),
    /// One row group of the table.
    RowGroup(u32),
}

/// A CSV/TSV file's dialect, schema and row groups.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub dialect: Dialect,
    pub columns: Vec<ColumnDef>,
    pub row_groups: Vec<RowGroupMeta>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    pub delimiter: u8,
    /// The quote byte, or `None` when fields are never quoted.
    pub quote: Option<u8>,
    pub terminator: LineTerminator,
    pub has_header: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineTerminator {
    Lf = 0,
    CrLf = 1,
}

impl LineTerminator {
    pub fn bytes(self) -> &'static [u8] {
        match self {
            Self::Lf => b"\n",
            Self::CrLf => b"\r\n",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    pub name: String,
    /// The join of the column's chunk types: what SQL sees.
    pub logical_type: ValueType,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RowGroupMeta {
    /// Index of the first row; not stored (cumulative).
    pub first_row: u64,
    pub row_count: u64,
    pub storage: RowGroupStorage,
    /// One per column, in schema order.
    pub stats: Vec<ColumnStats>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowGroupStorage {
    /// One block per column plus an optional row-layout block.
    Columnar { layout: Option<u32>, columns: Vec<u32> },
    /// The row group's text as one frame (it compressed better raw); the
    /// zone maps still describe its values.
    Raw { block: u32 },
}

/// Zone map and roll-ups of one column in one row group.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnStats {
    /// The type the chunk was stored as.
    pub storage_type: ValueType,
    /// Non-NULL values (typed values and exceptions).
    pub values: u64,
    pub nulls: u64,
    /// Lower and upper bounds of the values, when known. A string bound may
    /// be absent (too long to keep); the bounds are then not used to prune.
    pub min: Option<Scalar>,
    pub max: Option<Scalar>,
    pub sum: Option<Sum>,
}

/// An exact sum of a numeric column chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sum {
    Int(i128),
    Decimal { mantissa: i128, scale: u8 },
}

/// Longest string kept as a zone-map bound. Longer minimums are cut to this
/// length (a prefix is still a lower bound), longer maximums are dropped (a
/// prefix is not an upper bound); a minimum of exactly this length may
/// therefore be a prefix rather than a value.
pub const STRING_BOUND_LIMIT: usize = 64;

// Corrupt counts must not allocate without bound: nothing in a footer can
// be more numerous than its bytes.
const MAX_COLUMNS: u64 = 1 << 20;

impl Footer {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = WireWriter::new();
        encode_settings(&mut w, &self.settings);
        w.varint(self.blocks.len() as u64);
        for b in &self.blocks {
            w.varint(b.stored_len);
            w.varint(b.decoded_len);
            w.u32_le(b.crc32c);
            w.u8(b.backend as u8);
            w.u8(b.role as u8);
            w.varint(b.dict.map_or(0, |d| u64::from(d) + 1));
        }
        w.varint(self.segments.len() as u64);
        for s in &self.segments {
            w.varint(s.len);
            w.u32_le(s.crc32c);
            match &s.kind {
                SegmentKind::Literal(bytes) => {
                    w.u8(0);
                    w.raw(bytes);
                }
                SegmentKind::Frame(b) => {
                    w.u8(1);
                    w.varint(u64::from(*b));
                }
                SegmentKind::RowGroup(rg) => {
                    w.u8(2);
                    w.varint(u64::from(*rg));
                }
            }
        }
        match &self.table {
            None => w.u8(0),
            Some(t) => {
                w.u8(1);
                encode_table(&mut w, t);
            }
        }
        w.into_bytes()
    }

    pub fn decode(body: &[u8]) -> Result<Footer, FormatError> {
        let mut r = WireReader::new(body);
        let limit = body.len() as u64;
        let settings = decode_settings(&mut r)?;
        let n_blocks = r.count("block count", limit)?;
        let mut blocks = Vec::with_capacity(n_blocks);
        let mut offset = HEADER_LEN;
        for _ in 0..n_blocks {
            let stored_len = r.varint()?;
            let decoded_len = r.varint()?;
            let crc32c = r.u32_le()?;
            let backend = decode_backend(r.u8()?)?;
            let role = decode_role(r.u8()?)?;
            let dict = match r.varint()? {
                0 => None,
                d => Some(u32::try_from(d - 1).map_err(|_| bad("dictionary id"))?),
            };
            blocks.push(BlockDesc { offset, stored_len, decoded_len, crc32c, backend, role, dict });
            offset = offset.checked_add(stored_len).ok_or_else(|| bad("block lengths overflow"))?;
        }
        let n_segments = r.count("segment count", limit)?;
        let mut segments = Vec::with_capacity(n_segments);
        let mut original_offset = 0u64;
        for _ in 0..n_segments {
            let len = r.varint()?;
            let crc32c = r.u32_le()?;
            let kind = match r.u8()? {
                0 => SegmentKind::Literal(r.take(usize::try_from(len).map_err(|_| bad("literal length"))?)?.to_vec()),
                1 => SegmentKind::Frame(decode_id(&mut r)?),
                2 => SegmentKind::RowGroup(decode_id(&mut r)?),
                k => return Err(bad(&format!("unknown segment kind {k}"))),
            };
            segments.push(Segment { offset: original_offset, len, crc32c, kind });
            original_offset = original_offset.checked_add(len).ok_or_else(|| bad("segment lengths overflow"))?;
        }
        let table = match r.u8()? {
            0 => None,
            1 => Some(decode_table(&mut r, limit)?),
            k => return Err(bad(&format!("unknown table flag {k}"))),
        };
        if !r.is_at_end() {
            return Err(bad("trailing bytes after the footer body"));
        }
        Ok(Footer { settings, blocks, segments, table })
    }

    /// Checks every layout rule of docs/FORMAT.md §8 step 3 that the footer
    /// alone can tell: blocks tile the block region, segments tile the
    /// original, every reference points at an existing thing of the right
    /// kind, and counts and lengths agree. After this, nothing a reader
    /// derives from the footer can index out of range or claim more memory
    /// than the limits allow.
    pub fn check_layout(&self, trailer: &Trailer) -> Result<(), FormatError> {
        self.check_blocks(trailer)?;
        self.check_segments(trailer)?;
        if let Some(t) = &self.table {
            self.check_table(t)?;
        }
        Ok(())
    }

    /// §4, §6.2: tiling, lengths within the limit, stored blocks as long
    /// as their payload, dictionaries one level deep.
    fn check_blocks(&self, trailer: &Trailer) -> Result<(), FormatError> {
        let blocks_end = self.blocks.last().map_or(HEADER_LEN, |b| b.offset.saturating_add(b.stored_len));
        if blocks_end != trailer.footer_offset {
            return Err(inconsistent(format!("blocks end at {blocks_end} but the footer starts at {}", trailer.footer_offset)));
        }
        for (i, b) in self.blocks.iter().enumerate() {
            if b.decoded_len > MAX_BLOCK_BYTES {
                return Err(inconsistent(format!("block {i} decodes to more than {MAX_BLOCK_BYTES} bytes ({})", b.decoded_len)));
            }
            if b.backend == Backend::Stored && b.stored_len != b.decoded_len {
                return Err(inconsistent(format!("block {i} is stored but its lengths differ ({} stored, {} decoded)", b.stored_len, b.decoded_len)));
            }
            match (b.role, b.dict) {
                (BlockRole::Dictionary | BlockRole::ColumnDictionary, Some(_)) => {
                    return Err(inconsistent(format!("{} block {i} names a dictionary itself", b.role.name())));
                }
                (BlockRole::Dictionary, None) if b.backend == Backend::Xz => {
                    return Err(inconsistent(format!("dictionary block {i} is stored with xz, not zstd or as is")));
                }
                (_, Some(d)) => {
                    self.expect_block(d, BlockRole::Dictionary, &format!("block {i}'s dictionary"))?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// §6.3: segments tile the original, each within the limit; a frame
    /// segment names a frame block of its length; row group segments name
    /// the row groups in order, each exactly once.
    fn check_segments(&self, trailer: &Trailer) -> Result<(), FormatError> {
        let original_end = self.segments.last().map_or(0, |s| s.offset.saturating_add(s.len));
        if original_end != trailer.original_len {
            return Err(inconsistent(format!("segments cover {original_end} bytes but the original has {}", trailer.original_len)));
        }
        let n_rg = self.table.as_ref().map_or(0, |t| t.row_groups.len());
        let mut next_rg = 0usize;
        for (k, s) in self.segments.iter().enumerate() {
            if s.len > MAX_BLOCK_BYTES {
                return Err(inconsistent(format!("segment {k} is longer than {MAX_BLOCK_BYTES} bytes ({})", s.len)));
            }
            match &s.kind {
                SegmentKind::Literal(bytes) if bytes.len() as u64 != s.len => return Err(inconsistent(format!("literal segment {k} has the wrong length"))),
                SegmentKind::Literal(_) => {}
                SegmentKind::Frame(b) => self.expect_payload(*b, BlockRole::Frame, s.len, &format!("frame segment {k}"))?,
                SegmentKind::RowGroup(rg) if *rg as usize >= n_rg => return Err(inconsistent(format!("segment {k} names missing row group {rg}"))),
                SegmentKind::RowGroup(rg) if *rg as usize != next_rg => {
                    return Err(inconsistent(format!("segment {k} names row group {rg} where row group {next_rg} comes next")));
                }
                SegmentKind::RowGroup(_) => next_rg += 1,
            }
        }
        if next_rg != n_rg {
            return Err(inconsistent(format!("row group {next_rg} is named by no segment")));
        }
        Ok(())
    }

    /// §6.4, §6.5: each row group's blocks, row count and statistics, and
    /// each column's file type.
    fn check_table(&self, t: &Table) -> Result<(), FormatError> {
        if t.columns.is_empty() {
            return Err(inconsistent("the table has no columns".into()));
        }
        // Row group k is the k-th row group segment (checked above).
        let segments = self.segments.iter().filter(|s| matches!(s.kind, SegmentKind::RowGroup(_)));
        let mut joined = vec![ValueType::Null; t.columns.len()];
        for ((i, rg), segment) in t.row_groups.iter().enumerate().zip(segments) {
            if rg.stats.len() != t.columns.len() {
                return Err(inconsistent(format!("row group {i} has the wrong number of columns")));
            }
            if rg.row_count == 0 || rg.row_count > segment.len {
                return Err(inconsistent(format!("row group {i} has {} rows: none, or more rows than its segment has bytes ({})", rg.row_count, segment.len)));
            }
            if rg.row_count > MAX_ROW_GROUP_ROWS {
                return Err(inconsistent(format!("row group {i} has {} rows, more than {MAX_ROW_GROUP_ROWS}", rg.row_count)));
            }
            match &rg.storage {
                RowGroupStorage::Raw { block } => self.expect_payload(*block, BlockRole::Frame, segment.len, &format!("raw row group {i}"))?,
                RowGroupStorage::Columnar { layout, columns } => {
                    if columns.len() != t.columns.len() {
                        return Err(inconsistent(format!("row group {i} has the wrong number of column blocks")));
                    }
                    if let Some(l) = layout {
                        self.expect_block(*l, BlockRole::RowLayout, &format!("row group {i}'s row layout"))?;
                    }
                    for c in columns {
                        self.expect_block(*c, BlockRole::Column, &format!("row group {i}'s column chunk"))?;
                    }
                }
            }
            for (c, (s, join)) in rg.stats.iter().zip(&mut joined).enumerate() {
                check_stats(s, rg.row_count).map_err(|what| inconsistent(format!("row group {i} has {} rows but column {c}'s {what}", rg.row_count)))?;
                *join = join.join(s.storage_type);
            }
        }
        for (c, (def, join)) in t.columns.iter().zip(joined).enumerate() {
            if def.logical_type != join {
                return Err(inconsistent(format!("column {c} has type {} but its row groups join to {}", def.logical_type.name(), join.name())));
            }
        }
        Ok(())
    }

    fn expect_block(&self, id: u32, role: BlockRole, what: &str) -> Result<&BlockDesc, FormatError> {
        match self.blocks.get(id as usize) {
            Some(b) if b.role == role => Ok(b),
            Some(b) => Err(inconsistent(format!("{what} names block {id}, a {} block, not a {} block", b.role.name(), role.name()))),
            None => Err(inconsistent(format!("{what} names missing block {id}"))),
        }
    }

    /// A block whose payload is `len` original bytes (a frame).
    fn expect_payload(&self, id: u32, role: BlockRole, len: u64, what: &str) -> Result<(), FormatError> {
        let b = self.expect_block(id, role, what)?;
        if b.decoded_len != len {
            return Err(inconsistent(format!("{what} names block {id}, which decodes to {} bytes but its segment has {len}", b.decoded_len)));
        }
        Ok(())
    }

    /// Bytes of all blocks (the object minus header, footer and trailer).
    pub fn total_block_bytes(&self) -> u64 {
        self.blocks.iter().map(|b| b.stored_len).sum()
    }
}

fn bad(what: &str) -> FormatError {
    FormatError::FooterMalformed(what.to_string())
}

fn inconsistent(what: String) -> FormatError {
    FormatError::Inconsistent(what)
}

/// A chunk's statistics against its row group's row count (§6.5): every
/// row is a value or a NULL, and a sum is of the chunk's own numeric kind.
fn check_stats(s: &ColumnStats, rows: u64) -> Result<(), String> {
    if s.values.checked_add(s.nulls) != Some(rows) {
        return Err(format!("statistics count {} values and {} NULLs", s.values, s.nulls));
    }
    match (s.sum, s.storage_type) {
        (None, _) | (Some(Sum::Int(_)), ValueType::Int) | (Some(Sum::Decimal { .. }), ValueType::Decimal) => Ok(()),
        (Some(_), t) => Err(format!("statistics have a sum of the wrong kind for a {} chunk", t.name())),
    }
}

fn decode_id(r: &mut WireReader<'_>) -> Result<u32, FormatError> {
    u32::try_from(r.varint()?).map_err(|_| bad("id out of range"))
}

fn decode_backend(b: u8) -> Result<Backend, FormatError> {
    Ok(match b {
        0 => Backend::Stored,
        1 => Backend::Zstd,
        2 => Backend::Xz,
        _ => return Err(bad(&format!("unknown backend {b}"))),
    })
}

fn decode_role(b: u8) -> Result<BlockRole, FormatError> {
    Ok(match b {
        0 => BlockRole::Frame,
        1 => BlockRole::Column,
        2 => BlockRole::RowLayout,
        3 => BlockRole::Dictionary,
        4 => BlockRole::ColumnDictionary,
        _ => return Err(bad(&format!("unknown block role {b}"))),
    })
}

fn encode_settings(w: &mut WireWriter, s: &Settings) {
    w.u8(s.codec as u8);
    w.u8(s.backend as u8);
    w.zigzag(i64::from(s.level));
    w.zigzag(i64::from(s.column_level));
    w.varint(s.frame_size);
    w.varint(s.row_group_rows);
    w.varint(s.row_group_bytes);
    w.varint(s.chunk_lines);
    w.u8(u8::from(s.keep_queryable));
    w.bytes(s.writer.as_bytes());
}

fn decode_settings(r: &mut WireReader<'_>) -> Result<Settings, FormatError> {
    let codec = match r.u8()? {
        0 => CodecChoice::Auto,
        1 => CodecChoice::Columnar,
        2 => CodecChoice::Raw,
        c => return Err(bad(&format!("unknown codec setting {c}"))),
    };
    let backend = decode_backend(r.u8()?)?;
    let level = i32::try_from(r.zigzag()?).map_err(|_| bad("level"))?;
    let column_level = i32::try_from(r.zigzag()?).map_err(|_| bad("level"))?;
    Ok(Settings {
        codec,
        backend,
        level,
        column_level,
        frame_size: r.varint()?,
        row_group_rows: r.varint()?,
        row_group_bytes: r.varint()?,
        chunk_lines: r.varint()?,
        keep_queryable: decode_flag(r, "keep_queryable")?,
        writer: decode_text(r, "writer")?,
    })
}

fn encode_table(w: &mut WireWriter, t: &Table) {
    w.u8(t.dialect.delimiter);
    w.u8(t.dialect.quote.unwrap_or(0));
    w.u8(t.dialect.terminator as u8);
    w.u8(u8::from(t.dialect.has_header));
    w.varint(t.columns.len() as u64);
    for c in &t.columns {
        w.bytes(c.name.as_bytes());
        w.u8(c.logical_type as u8);
    }
    w.varint(t.row_groups.len() as u64);
    for rg in &t.row_groups {
        w.varint(rg.row_count);
        match &rg.storage {
            RowGroupStorage::Columnar { layout, columns } => {
                w.u8(0);
                w.varint(layout.map_or(0, |l| u64::from(l) + 1));
                for c in columns {
                    w.varint(u64::from(*c));
                }
            }
            RowGroupStorage::Raw { block } => {
                w.u8(1);
                w.varint(u64::from(*block));
            }
        }
        for s in &rg.stats {
            encode_stats(w, s);
        }
    }
}

fn decode_table(r: &mut WireReader<'_>, limit: u64) -> Result<Table, FormatError> {
    let delimiter = r.u8()?;
    let quote = match r.u8()? {
        0 => None,
        q => Some(q),
    };
    let terminator = match r.u8()? {
        0 => LineTerminator::Lf,
        1 => LineTerminator::CrLf,
        t => return Err(bad(&format!("unknown line terminator {t}"))),
    };
    let has_header = decode_flag(r, "has header")?;
    check_dialect(delimiter, quote)?;
    let n_columns = r.count("column count", limit.min(MAX_COLUMNS))?;
    let mut columns = Vec::with_capacity(n_columns);
    for _ in 0..n_columns {
        let name = decode_text(r, "column name")?;
        let logical_type = decode_type(r.u8()?)?;
        columns.push(ColumnDef { name, logical_type });
    }
    let n_rg = r.count("row group count", limit)?;
    let mut row_groups = Vec::with_capacity(n_rg);
    let mut first_row = 0u64;
    for _ in 0..n_rg {
        let row_count = r.varint()?;
        let storage = match r.u8()? {
            0 => {
                let layout = match r.varint()? {
                    0 => None,
                    l => Some(u32::try_from(l - 1).map_err(|_| bad("layout id"))?),
                };
                let columns = (0..n_columns).map(|_| decode_id(r)).collect::<Result<_, _>>()?;
                RowGroupStorage::Columnar { layout, columns }
            }
            1 => RowGroupStorage::Raw { block: decode_id(r)? },
            s => return Err(bad(&format!("unknown row group storage {s}"))),
        };
        let stats = (0..n_columns).map(|_| decode_stats(r)).collect::<Result<_, _>>()?;
        row_groups.push(RowGroupMeta { first_row, row_count, storage, stats });
        first_row = first_row.checked_add(row_count).ok_or_else(|| bad("row counts overflow"))?;
    }
    Ok(Table { dialect: Dialect { delimiter, quote, terminator, has_header }, columns, row_groups })
}

/// A flag byte: exactly 0 or 1 (§9: a reader rejects values it does not
/// know rather than guess).
fn decode_flag(r: &mut WireReader<'_>, what: &str) -> Result<bool, FormatError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        b => Err(bad(&format!("{what} flag is {b}, not 0 or 1"))),
    }
}

/// A text field (`bytes` that must be UTF-8).
fn decode_text(r: &mut WireReader<'_>, what: &str) -> Result<String, FormatError> {
    String::from_utf8(r.bytes()?.to_vec()).map_err(|_| bad(&format!("{what} is not UTF-8")))
}

fn decode_scale(r: &mut WireReader<'_>) -> Result<u8, FormatError> {
    let scale = r.u8()?;
    if scale > crate::value::MAX_DECIMAL_SCALE {
        return Err(bad(&format!("decimal scale {scale} is above {}", crate::value::MAX_DECIMAL_SCALE)));
    }
    Ok(scale)
}

/// The delimiter and the quote are distinct and neither ends a line: a
/// dialect the record splitter (§5.7) can cut raw row groups with.
fn check_dialect(delimiter: u8, quote: Option<u8>) -> Result<(), FormatError> {
    if matches!(delimiter, b'\n' | b'\r') || quote.is_some_and(|q| q == delimiter || matches!(q, b'\n' | b'\r')) {
        return Err(bad(&format!("dialect: delimiter {delimiter:#04x} and quote {:#04x} must differ and not be CR or LF", quote.unwrap_or(0))));
    }
    Ok(())
}

fn decode_type(b: u8) -> Result<ValueType, FormatError> {
    ValueType::from_id(b).ok_or_else(|| bad(&format!("unknown value type {b}")))
}

fn encode_stats(w: &mut WireWriter, s: &ColumnStats) {
    w.u8(s.storage_type as u8);
    w.varint(s.values);
    w.varint(s.nulls);
    encode_bound(w, s.min.as_ref());
    encode_bound(w, s.max.as_ref());
    match s.sum {
        None => w.u8(0),
        Some(Sum::Int(v)) => {
            w.u8(1);
            w.i128(v);
        }
        Some(Sum::Decimal { mantissa, scale }) => {
            w.u8(2);
            w.i128(mantissa);
            w.u8(scale);
        }
    }
}

fn decode_stats(r: &mut WireReader<'_>) -> Result<ColumnStats, FormatError> {
    let storage_type = decode_type(r.u8()?)?;
    let values = r.varint()?;
    let nulls = r.varint()?;
    let min = decode_bound(r)?;
    let max = decode_bound(r)?;
    let sum = match r.u8()? {
        0 => None,
        1 => Some(Sum::Int(r.i128()?)),
        2 => Some(Sum::Decimal { mantissa: r.i128()?, scale: decode_scale(r)? }),
        k => return Err(bad(&format!("unknown sum kind {k}"))),
    };
    Ok(ColumnStats { storage_type, values, nulls, min, max, sum })
}

/// A bound is a type tag (0 = absent) followed by the value (§6.5).
fn encode_bound(w: &mut WireWriter, v: Option<&Scalar>) {
    match v {
        None | Some(Scalar::Float(_)) => w.u8(0),
        Some(Scalar::Int(i)) => {
            w.u8(ValueType::Int as u8);
            w.zigzag(*i);
        }
        Some(Scalar::Decimal(d)) => {
            w.u8(ValueType::Decimal as u8);
            w.zigzag(d.mantissa);
            w.u8(d.scale);
        }
        Some(Scalar::Timestamp(t)) => {
            w.u8(ValueType::Timestamp as u8);
            w.zigzag(*t);
        }
        Some(Scalar::Date(d)) => {
            w.u8(ValueType::Date as u8);
            w.zigzag(i64::from(*d));
        }
        Some(Scalar::Bool(b)) => {
            w.u8(ValueType::Bool as u8);
            w.u8(u8::from(*b));
        }
        Some(Scalar::Str(s)) => {
            w.u8(ValueType::String as u8);
            w.bytes(s);
        }
    }
}

fn decode_bound(r: &mut WireReader<'_>) -> Result<Option<Scalar>, FormatError> {
    let tag = r.u8()?;
    Ok(Some(match ValueType::from_id(tag) {
        Some(ValueType::Null) => return Ok(None),
        Some(ValueType::Int) => Scalar::Int(r.zigzag()?),
        Some(ValueType::Decimal) => {
            let mantissa = r.zigzag()?;
            Scalar::Decimal(Decimal { mantissa, scale: decode_scale(r)? })
        }
        Some(ValueType::Timestamp) => Scalar::Timestamp(r.zigzag()?),
        Some(ValueType::Date) => Scalar::Date(i32::try_from(r.zigzag()?).map_err(|_| bad("date"))?),
        Some(ValueType::Bool) => Scalar::Bool(decode_flag(r, "boolean bound")?),
        Some(ValueType::String) => Scalar::Str(r.bytes()?.to_vec()),
        None => return Err(bad(&format!("unknown bound type {tag}"))),
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;

    pub(crate) fn sample_footer() -> Footer {
        Footer {
            settings: Settings {
                codec: CodecChoice::Auto,
                backend: Backend::Zstd,
                level: -3,
                column_level: 9,
                frame_size: 131072,
                row_group_rows: 65536,
                row_group_bytes: 262144,
                chunk_lines: 500_000,
                keep_queryable: true,
                writer: "test".into(),
            },
            blocks: vec![
                BlockDesc { offset: 16, stored_len: 10, decoded_len: 20, crc32c: 1, backend: Backend::Zstd, role: BlockRole::Dictionary, dict: None },
                BlockDesc { offset: 26, stored_len: 5, decoded_len: 7, crc32c: 2, backend: Backend::Zstd, role: BlockRole::Column, dict: Some(0) },
                BlockDesc { offset: 31, stored_len: 4, decoded_len: 4, crc32c: 3, backend: Backend::Stored, role: BlockRole::Frame, dict: None },
            ],
            segments: vec![
                Segment { offset: 0, len: 3, crc32c: 9, kind: SegmentKind::Literal(b"a\r\n".to_vec()) },
                Segment { offset: 3, len: 10, crc32c: 8, kind: SegmentKind::RowGroup(0) },
                Segment { offset: 13, len: 4, crc32c: 7, kind: SegmentKind::Frame(2) },
            ],
            table: Some(Table {
                dialect: Dialect { delimiter: b',', quote: Some(b'"'), terminator: LineTerminator::CrLf, has_header: true },
                columns: vec![ColumnDef { name: "a".into(), logical_type: ValueType::Decimal }],
                row_groups: vec![RowGroupMeta {
                    first_row: 0,
                    row_count: 2,
                    storage: RowGroupStorage::Columnar { layout: None, columns: vec![1] },
                    stats: vec![ColumnStats {
                        storage_type: ValueType::Decimal,
                        values: 2,
                        nulls: 0,
                        min: Some(Scalar::Decimal(Decimal { mantissa: -15, scale: 1 })),
                        max: Some(Scalar::Decimal(Decimal { mantissa: 25, scale: 1 })),
                        sum: Some(Sum::Decimal { mantissa: 10, scale: 1 }),
                    }],
                }],
            }),
        }
    }

    #[test]
    fn footer_round_trips() {
        let f = sample_footer();
        let decoded = Footer::decode(&f.encode()).unwrap();
        assert_eq!(decoded, f);
    }

    /// Where the table starts in `f`'s body: right after its table flag.
    fn table_start(f: &Footer) -> usize {
        Footer { table: None, ..f.clone() }.encode().len()
    }

    fn refused(body: &[u8], what: &str) {
        match Footer::decode(body) {
            Ok(_) => panic!("a footer with {what} decoded"),
            Err(e) => assert!(e.to_string().contains(what), "{e} does not name {what:?}"),
        }
    }

    #[test]
    fn flag_bytes_other_than_0_or_1_are_refused() {
        let f = sample_footer();
        let body = f.encode();
        let mut w = WireWriter::new();
        encode_settings(&mut w, &f.settings);
        // Settings end with the keep_queryable flag, then the writer's
        // length (one byte here) and bytes.
        let keep_queryable = w.len() - f.settings.writer.len() - 2;
        let has_header = table_start(&f) + 3;
        for (at, what) in [(keep_queryable, "keep_queryable flag is 2"), (has_header, "has header flag is 2"), (table_start(&f) - 1, "unknown table flag 2")] {
            let mut bad = body.clone();
            assert!(bad[at] <= 1, "byte {at} is a flag");
            bad[at] = 2;
            refused(&bad, what);
        }
        let bound = [ValueType::Bool as u8, 2];
        assert!(decode_bound(&mut WireReader::new(&bound)).unwrap_err().to_string().contains("boolean bound flag is 2"));
    }

    #[test]
    fn names_that_are_not_utf8_are_refused() {
        let mut f = sample_footer();
        f.settings.writer = "wxyz".into();
        f.table.as_mut().unwrap().columns[0].name = "qrst".into();
        let body = f.encode();
        for (name, what) in [(&b"wxyz"[..], "writer is not UTF-8"), (b"qrst", "column name is not UTF-8")] {
            let at = body.windows(4).position(|w| w == name).unwrap();
            let mut bad = body.clone();
            bad[at + 1] = 0xff;
            refused(&bad, what);
        }
    }

    #[test]
    fn decimal_scales_above_18_are_refused_in_bounds_and_sums() {
        let mut f = sample_footer();
        let stats = &mut f.table.as_mut().unwrap().row_groups[0].stats[0];
        stats.sum = Some(Sum::Decimal { mantissa: 1, scale: 19 });
        refused(&f.encode(), "decimal scale 19 is above 18");
        let mut f = sample_footer();
        f.table.as_mut().unwrap().row_groups[0].stats[0].max = Some(Scalar::Decimal(Decimal { mantissa: 1, scale: 40 }));
        refused(&f.encode(), "decimal scale 40 is above 18");
    }

    #[test]
    fn dialects_the_record_splitter_cannot_use_are_refused() {
        for (delimiter, quote) in [(b'"', Some(b'"')), (b'\n', Some(b'"')), (b',', Some(b'\r')), (b'\r', None)] {
            let mut f = sample_footer();
            let t = f.table.as_mut().unwrap();
            (t.dialect.delimiter, t.dialect.quote) = (delimiter, quote);
            refused(&f.encode(), "dialect");
        }
    }

    #[test]
    fn every_truncation_of_a_footer_is_an_error() {
        let bytes = sample_footer().encode();
        for len in 0..bytes.len() {
            assert!(Footer::decode(&bytes[..len]).is_err(), "truncation to {len} accepted");
        }
    }
}
