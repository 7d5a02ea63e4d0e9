//! One column of one row group: typing, encoding, decoding, and giving back
//! each field's exact text or its typed value (docs/FORMAT.md §5.2).
//!
//! A field is stored in one of three ways, recorded per row in a code:
//! - a NULL token (`NA`, empty, ...) — only its token number;
//! - a typed value whose canonical text is exactly the field — the value;
//! - anything else — an *exception*: the raw field bytes, verbatim.
//!
//! Exceptions are how the column model stays byte-exact for text it cannot
//! express (`007`, `"5"`, a malformed quote) without giving up the typed
//! encoding of the other rows; SQL reads an exception's value by parsing its
//! text leniently as the chunk's type.

use std::borrow::Cow;
use std::sync::Arc;

use super::dictionary::SharedStrings;
use super::scan::{unquote, write_canonical_string, FieldKind};
use super::stats::StatsBuilder;
use crate::codec::ints::{decode_ints, encode_ints, IntPacking};
use crate::codec::CodecError;
use crate::format::wire::{WireReader, WireWriter};
use crate::format::{ColumnStats, Dialect, MAX_ROW_GROUP_ROWS};
use crate::value::{self, Decimal, Scalar, TimestampFormat, ValueType, NULL_TOKENS};

/// Row code: the field is a typed value.
pub const CODE_VALUE: u8 = 0;
/// Row codes 1..=6: the field is `NULL_TOKENS[code - 1]`.
const CODE_FIRST_NULL: u8 = 1;
/// Row code: the field is an exception (raw bytes kept).
pub const CODE_EXCEPTION: u8 = 254;
/// Row code: the row has no such field (a short, ragged row).
pub const CODE_MISSING: u8 = 255;

/// At most this share of a chunk's values may be exceptions for it to keep a
/// typed encoding; past it, the column is text in this row group.
const MAX_EXCEPTION_SHARE: usize = 8;

/// A field as the scanner found it.
#[derive(Debug, Clone, Copy)]
pub struct FieldRef<'a> {
    pub raw: &'a [u8],
    pub kind: FieldKind,
}

/// The typed values of a chunk, one per `CODE_VALUE` row.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    Null,
    Int(Vec<i64>),
    Decimal { mantissas: Vec<i64>, scales: Vec<u8> },
    Timestamp { format: TimestampFormat, seconds: Vec<i64> },
    Date(Vec<i64>),
    Bool { spelling: u8, bits: Vec<bool> },
    Str(StrValues),
}

/// Strings as offsets into one buffer; dictionary-encoded chunks keep the
/// distinct strings plus an index per value.
#[derive(Debug, Clone, PartialEq)]
pub struct StrValues {
    /// `bytes[offsets[i]..offsets[i+1]]` is string `i` (of the dictionary, or
    /// of the values when there is none).
    pub offsets: Vec<u32>,
    pub bytes: Vec<u8>,
    /// Present for a dictionary-encoded chunk: the entry of each value.
    pub indices: Option<Vec<u32>>,
    /// The file's dictionary for the column, when the chunk uses it: entries
    /// below its length are its entries, the chunk's own ones follow.
    pub shared: Option<Arc<SharedStrings>>,
}

impl StrValues {
    /// String `value` (through the dictionaries); `None` past the end.
    #[inline]
    pub fn get(&self, value: usize) -> Option<&[u8]> {
        let mut entry = match &self.indices {
            Some(ix) => *ix.get(value)? as usize,
            None => value,
        };
        if let Some(shared) = &self.shared {
            if entry < shared.len() {
                return shared.get(entry);
            }
            entry -= shared.len();
        }
        let (&start, &end) = (self.offsets.get(entry)?, self.offsets.get(entry + 1)?);
        self.bytes.get(start as usize..end as usize)
    }

    pub fn len(&self) -> usize {
        match &self.indices {
            Some(ix) => ix.len(),
            None => self.offsets.len().saturating_sub(1),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A decoded column chunk.
#[derive(Debug, Clone)]
pub struct ColumnChunk {
    pub storage_type: ValueType,
    pub codes: Vec<u8>,
    pub values: Values,
    /// (row, raw field bytes), rows ascending.
    pub exceptions: Vec<(u32, Vec<u8>)>,
    /// `value_index[row]`: index into `values` for `CODE_VALUE` rows. Built
    /// on first random access (SQL); rebuilding text walks the chunk with a
    /// [`TextCursor`] and never needs it.
    value_index: std::sync::OnceLock<Vec<u32>>,
    /// Rows with a typed value or an exception, counted while decoding.
    non_null: usize,
}

/// The result of encoding one chunk.
pub struct EncodedChunk {
    pub payload: Vec<u8>,
    pub stats: ColumnStats,
}

// ---------------------------------------------------------------- typing

fn null_code(field: &FieldRef<'_>) -> Option<u8> {
    if field.kind != FieldKind::Bare {
        return None;
    }
    NULL_TOKENS.iter().position(|t| *t == field.raw).map(|i| CODE_FIRST_NULL + i as u8)
}

/// Which types every non-NULL field of a chunk can be read as.
struct TypeVotes {
    int: bool,
    number: bool,
    timestamp: bool,
    date: bool,
    boolean: bool,
}

pub(crate) fn infer_type(contents: &[Cow<'_, [u8]>]) -> ValueType {
    if contents.is_empty() {
        return ValueType::Null;
    }
    let mut v = TypeVotes { int: true, number: true, timestamp: true, date: true, boolean: true };
    for c in contents {
        let text = c.as_ref();
        // Canonical spellings are the common case and cheap to recognise;
        // the lenient parsers run only for the others.
        if v.int && value::parse_canonical_int(text).is_none() && value::parse_lenient(ValueType::Int, text).is_none() {
            v.int = false;
        }
        if v.number && !v.int && value::parse_canonical_decimal(text).is_none() && value::parse_lenient(ValueType::Decimal, text).is_none() {
            v.number = false;
        }
        if v.date && value::parse_date(text).is_none() && value::parse_lenient(ValueType::Date, text).is_none() {
            v.date = false;
        }
        if v.timestamp && !v.date && value::parse_lenient(ValueType::Timestamp, text).is_none() {
            v.timestamp = false;
        }
        if v.boolean && value::parse_canonical_bool(text).is_none() && value::parse_lenient(ValueType::Bool, text).is_none() {
            v.boolean = false;
        }
        if !(v.int || v.number || v.timestamp || v.date || v.boolean) {
            return ValueType::String;
        }
    }
    // `0`/`1` columns read as booleans too; integers win.
    if v.int {
        ValueType::Int
    } else if v.number {
        ValueType::Decimal
    } else if v.date {
        ValueType::Date
    } else if v.timestamp {
        ValueType::Timestamp
    } else if v.boolean {
        ValueType::Bool
    } else {
        ValueType::String
    }
}

// ---------------------------------------------------------------- encoding

/// Accumulates the values of one chunk as they are classified.
struct ValueBuilder {
    ty: ValueType,
    ints: Vec<i64>,
    scales: Vec<u8>,
    ts_format: Option<TimestampFormat>,
    bool_spelling: Option<u8>,
    bools: Vec<bool>,
    strings: Vec<Vec<u8>>,
}

impl ValueBuilder {
    fn new(ty: ValueType) -> Self {
        Self { ty, ints: Vec::new(), scales: Vec::new(), ts_format: None, bool_spelling: None, bools: Vec::new(), strings: Vec::new() }
    }

    /// Takes the field as a typed value when its raw text is exactly the
    /// value's canonical text; returns false (an exception) otherwise.
    fn accept(&mut self, field: &FieldRef<'_>, content: &[u8], dialect: &Dialect) -> bool {
        if field.kind == FieldKind::Malformed {
            return false;
        }
        if self.ty == ValueType::String {
            let mut canonical = Vec::with_capacity(field.raw.len());
            write_canonical_string(content, dialect, &mut canonical);
            if canonical != field.raw {
                return false;
            }
            self.strings.push(content.to_vec());
            return true;
        }
        if field.kind != FieldKind::Bare {
            return false; // a quoted number is never canonical
        }
        let raw = field.raw;
        match self.ty {
            ValueType::Int => match value::parse_canonical_int(raw) {
                Some(v) => self.ints.push(v),
                None => return false,
            },
            ValueType::Decimal => match canonical_number(raw) {
                Some(d) => {
                    self.ints.push(d.mantissa);
                    self.scales.push(d.scale);
                }
                None => return false,
            },
            ValueType::Date => match value::parse_date(raw) {
                Some(d) => self.ints.push(i64::from(d)),
                None => return false,
            },
            ValueType::Timestamp => {
                let Some((t, format)) = value::parse_timestamp(raw) else { return false };
                if *self.ts_format.get_or_insert(format) != format || !round_trips_timestamp(raw, t, format) {
                    return false;
                }
                self.ints.push(t);
            }
            ValueType::Bool => {
                let Some((b, spelling)) = value::parse_canonical_bool(raw) else { return false };
                if *self.bool_spelling.get_or_insert(spelling) != spelling {
                    return false;
                }
                self.bools.push(b);
            }
            ValueType::Null | ValueType::String => return false,
        }
        true
    }
}

/// An integer or decimal text in canonical form, as a decimal (integers get
/// scale 0).
fn canonical_number(raw: &[u8]) -> Option<Decimal> {
    value::parse_canonical_int(raw).map(|m| Decimal { mantissa: m, scale: 0 }).or_else(|| value::parse_canonical_decimal(raw))
}

fn round_trips_timestamp(raw: &[u8], t: i64, format: TimestampFormat) -> bool {
    let mut out = Vec::with_capacity(raw.len());
    value::format_timestamp_into(t, format, &mut out);
    out == raw
}

/// Encodes one column chunk. `fields[row]` is `None` where a short row has
/// no such field; `shared` is the file's dictionary for the column, if any.
pub fn encode_chunk(fields: &[Option<FieldRef<'_>>], dialect: &Dialect, packing: IntPacking, shared: Option<&SharedStrings>) -> EncodedChunk {
    let quote = dialect.quote;
    let mut codes = vec![CODE_VALUE; fields.len()];
    let mut contents: Vec<Cow<'_, [u8]>> = Vec::with_capacity(fields.len());
    let mut content_rows = Vec::with_capacity(fields.len());
    for (row, (f, code)) in fields.iter().zip(&mut codes).enumerate() {
        match f {
            None => *code = CODE_MISSING,
            Some(f) => match null_code(f) {
                Some(null) => *code = null,
                None => {
                    contents.push(if f.kind == FieldKind::Quoted { unquote(f.raw, quote) } else { Cow::Borrowed(f.raw) });
                    content_rows.push(row);
                }
            },
        }
    }
    let mut ty = infer_type(&contents);
    let (mut builder, mut exceptions) = classify(ty, fields, &contents, &content_rows, &mut codes, dialect);
    if ty != ValueType::String && exceptions.len() * MAX_EXCEPTION_SHARE > contents.len() {
        ty = ValueType::String;
        (builder, exceptions) = classify(ty, fields, &contents, &content_rows, &mut codes, dialect);
    }
    let mut stats = StatsBuilder::new(ty);
    for c in &codes {
        if *c != CODE_VALUE && *c != CODE_EXCEPTION {
            stats.add_null();
        }
    }
    add_value_stats(&mut stats, &builder);
    for (_, raw) in &exceptions {
        stats.add_text(&unquote(raw, quote));
    }
    let mut w = WireWriter::new();
    w.u8(ty as u8);
    w.varint(fields.len() as u64);
    encode_codes(&mut w, &codes);
    w.varint(exceptions.len() as u64);
    let mut prev = 0u32;
    for (row, raw) in &exceptions {
        w.varint(u64::from(row - prev));
        w.bytes(raw);
        prev = *row;
    }
    encode_values(&mut w, &builder, packing, shared);
    EncodedChunk { payload: w.into_bytes(), stats: stats.finish() }
}

type Exceptions = Vec<(u32, Vec<u8>)>;

fn classify(
    ty: ValueType,
    fields: &[Option<FieldRef<'_>>],
    contents: &[Cow<'_, [u8]>],
    content_rows: &[usize],
    codes: &mut [u8],
    dialect: &Dialect,
) -> (ValueBuilder, Exceptions) {
    let mut builder = ValueBuilder::new(ty);
    let mut exceptions = Vec::new();
    for (content, &row) in contents.iter().zip(content_rows) {
        // `content_rows` are rows of `fields` (and `codes`) that hold a field.
        let (Some(Some(field)), Some(code)) = (fields.get(row), codes.get_mut(row)) else { continue };
        if builder.accept(field, content, dialect) {
            *code = CODE_VALUE;
        } else {
            *code = CODE_EXCEPTION;
            exceptions.push((row as u32, field.raw.to_vec()));
        }
    }
    (builder, exceptions)
}

fn add_value_stats(stats: &mut StatsBuilder, b: &ValueBuilder) {
    match b.ty {
        ValueType::Int => stats.add_ints(&b.ints),
        ValueType::Decimal => {
            for (&m, &s) in b.ints.iter().zip(&b.scales) {
                stats.add(&Scalar::Decimal(Decimal { mantissa: m, scale: s }));
            }
        }
        ValueType::Timestamp => b.ints.iter().for_each(|&v| stats.add(&Scalar::Timestamp(v))),
        ValueType::Date => b.ints.iter().for_each(|&v| stats.add(&Scalar::Date(v as i32))),
        ValueType::Bool => b.bools.iter().for_each(|&v| stats.add(&Scalar::Bool(v))),
        ValueType::String => b.strings.iter().for_each(|s| stats.add_str(s)),
        ValueType::Null => {}
    }
}

/// Codes are almost always all `CODE_VALUE`, or long runs of it broken by
/// NULL tokens: mode 0 = all values, mode 1 = run-length pairs.
fn encode_codes(w: &mut WireWriter, codes: &[u8]) {
    if codes.iter().all(|&c| c == CODE_VALUE) {
        w.u8(0);
        return;
    }
    w.u8(1);
    let mut runs: Vec<(u64, u8)> = Vec::new();
    for &c in codes {
        match runs.last_mut() {
            Some((n, code)) if *code == c => *n += 1,
            _ => runs.push((1, c)),
        }
    }
    w.varint(runs.len() as u64);
    for (n, c) in runs {
        w.varint(n);
        w.u8(c);
    }
}

fn encode_values(w: &mut WireWriter, b: &ValueBuilder, packing: IntPacking, shared: Option<&SharedStrings>) {
    match b.ty {
        ValueType::Null => {}
        ValueType::Int | ValueType::Date => encode_ints(w, &b.ints, packing),
        ValueType::Decimal => {
            encode_ints(w, &b.ints, packing);
            let scales: Vec<i64> = b.scales.iter().map(|&s| i64::from(s)).collect();
            encode_ints(w, &scales, packing);
        }
        ValueType::Timestamp => {
            let format = b.ts_format.unwrap_or(TimestampFormat { separator: b'T', has_seconds: true, zone: value::ZoneStyle::None });
            w.raw(&format.encode());
            encode_ints(w, &b.ints, packing);
        }
        ValueType::Bool => {
            w.u8(b.bool_spelling.unwrap_or(0));
            let bits: Vec<i64> = b.bools.iter().map(|&v| i64::from(v)).collect();
            encode_ints(w, &bits, IntPacking::Bits);
        }
        ValueType::String => encode_strings(w, &b.strings, packing, shared),
    }
}

/// Plain (lengths + bytes), the chunk's own dictionary (distinct strings +
/// indices) or the file's dictionary (indices, plus the strings it lacks),
/// whichever is smaller before the backend. A file dictionary that holds
/// nearly every value is taken without building the chunk's own: on the
/// corpus it always wins then, and the second hash pass is the costliest
/// part of encoding such a column.
fn encode_strings(w: &mut WireWriter, strings: &[Vec<u8>], packing: IntPacking, shared: Option<&SharedStrings>) {
    let plain_estimate = strings.iter().map(Vec::len).sum::<usize>();
    let mut best = None;
    if let Some(shared) = shared {
        let with_shared = StringDictionary::build(strings, Some(shared));
        if with_shared.entries.len() * SHARED_ENOUGH < strings.len() && with_shared.estimate < plain_estimate {
            with_shared.write(w, packing);
            return;
        }
        best = Some(with_shared);
    }
    let own = StringDictionary::build(strings, None);
    if best.as_ref().is_none_or(|b| own.estimate < b.estimate) {
        best = Some(own);
    }
    match best {
        Some(dict) if dict.estimate < plain_estimate => dict.write(w, packing),
        _ => plain_strings(w, strings, packing),
    }
}

/// A chunk's strings as dictionary indices: into the chunk's own entries
/// (mode 1), or into the file's dictionary followed by the entries it lacks
/// (mode 2).
struct StringDictionary<'a> {
    shared: Option<&'a SharedStrings>,
    entries: Vec<&'a [u8]>,
    indices: Vec<i64>,
    /// Bytes before the backend: entries plus fixed-width indices.
    estimate: usize,
}

impl<'a> StringDictionary<'a> {
    fn build(strings: &'a [Vec<u8>], shared: Option<&'a SharedStrings>) -> Self {
        let (entries, indices) = local_dictionary(strings, shared);
        let all = entries.len() + shared.map_or(0, |s| s.len());
        let estimate = entries.iter().map(|e| e.len()).sum::<usize>() + indices.len() * index_width(all);
        Self { shared, entries, indices, estimate }
    }

    fn write(&self, w: &mut WireWriter, packing: IntPacking) {
        w.u8(if self.shared.is_some() { 2 } else { 1 });
        if let Some(shared) = self.shared {
            w.varint(u64::from(shared.block));
        }
        w.varint(self.entries.len() as u64);
        let lengths: Vec<i64> = self.entries.iter().map(|e| e.len() as i64).collect();
        encode_ints(w, &lengths, packing);
        for e in &self.entries {
            w.raw(e);
        }
        encode_ints(w, &self.indices, packing);
    }
}

/// A file dictionary that lacks fewer than 1/SHARED_ENOUGH of a chunk's
/// values is used without trying the chunk's own.
const SHARED_ENOUGH: usize = 8;

/// The distinct strings not in `shared`, in order of first use, and each
/// string's index (shared entries first, then these).
fn local_dictionary<'a>(strings: &'a [Vec<u8>], shared: Option<&SharedStrings>) -> (Vec<&'a [u8]>, Vec<i64>) {
    let base = shared.map_or(0, |s| s.len());
    let mut dict: std::collections::HashMap<&[u8], u32> = std::collections::HashMap::new();
    let mut entries: Vec<&[u8]> = Vec::new();
    let mut indices = Vec::with_capacity(strings.len());
    for s in strings {
        if let Some(i) = shared.and_then(|d| d.find(s)) {
            indices.push(i64::from(i));
            continue;
        }
        let next = entries.len() as u32;
        let id = *dict.entry(s.as_slice()).or_insert_with(|| {
            entries.push(s.as_slice());
            next
        });
        indices.push((base + id as usize) as i64);
    }
    (entries, indices)
}

fn plain_strings(w: &mut WireWriter, strings: &[Vec<u8>], packing: IntPacking) {
    w.u8(0);
    let lengths: Vec<i64> = strings.iter().map(|s| s.len() as i64).collect();
    encode_ints(w, &lengths, packing);
    for s in strings {
        w.raw(s);
    }
}

fn index_width(entries: usize) -> usize {
    match entries {
        0..=256 => 1,
        257..=65_536 => 2,
        _ => 4,
    }
}

// ---------------------------------------------------------------- decoding

/// Where a chunk that uses a file dictionary gets it, by block id.
pub type SharedResolver<'a> = &'a dyn Fn(u32) -> Result<Arc<SharedStrings>, CodecError>;

/// A resolver for chunks that cannot name a file dictionary (a row group
/// re-encoded without one): any reference is malformed.
pub fn no_shared(block: u32) -> Result<Arc<SharedStrings>, CodecError> {
    Err(malformed(&format!("unexpected reference to dictionary block {block}")))
}

/// Decodes a column chunk payload (already checksum-verified and
/// decompressed). Malformed payloads are errors, never panics.
pub fn decode_chunk(payload: &[u8], shared: SharedResolver<'_>) -> Result<ColumnChunk, CodecError> {
    let mut r = WireReader::new(payload);
    let storage_type = ValueType::from_id(r.u8()?).ok_or_else(|| malformed("value type"))?;
    // Every row costs at least a bit of payload, so a larger count is
    // corrupt; and no row group holds more than the format's limit.
    let rows = r.count("row count", (payload.len() as u64).saturating_mul(8).clamp(1 << 16, MAX_ROW_GROUP_ROWS))?;
    let codes = decode_codes(&mut r, rows)?;
    // Each exception takes at least two bytes (its row delta and length).
    let n_exc = r.count("exception count", (rows as u64).min(r.remaining() as u64 / 2))?;
    let mut exceptions = Vec::with_capacity(n_exc);
    let mut row = 0u64;
    for i in 0..n_exc {
        // Ascending and distinct: every later delta is at least 1. The rows
        // are then one-to-one with the exception codes (counted below), and
        // sorted for the lookups by binary search.
        let delta = r.varint()?;
        if i > 0 && delta == 0 {
            return Err(malformed("exception rows repeat"));
        }
        row = row.checked_add(delta).ok_or_else(|| malformed("exception row"))?;
        let raw = r.bytes()?.to_vec();
        let r32 = u32::try_from(row).map_err(|_| malformed("exception row"))?;
        if codes.get(row as usize) != Some(&CODE_EXCEPTION) {
            return Err(malformed("exception row does not match its code"));
        }
        exceptions.push((r32, raw));
    }
    if codes.iter().filter(|&&c| c == CODE_EXCEPTION).count() != n_exc {
        return Err(malformed("exception count does not match the codes"));
    }
    let n = codes.iter().filter(|&&c| c == CODE_VALUE).count();
    let values = match storage_type {
        ValueType::Null if n == 0 => Values::Null,
        ValueType::Null => return Err(malformed("values in an all-NULL chunk")),
        ValueType::Int => Values::Int(decode_ints(&mut r, n)?),
        ValueType::Date => Values::Date(checked_dates(decode_ints(&mut r, n)?)?),
        ValueType::Decimal => {
            let mantissas = decode_ints(&mut r, n)?;
            let scales = decode_ints(&mut r, n)?
                .into_iter()
                .map(|s| u8::try_from(s).ok().filter(|&s| s <= value::MAX_DECIMAL_SCALE))
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| malformed("decimal scale"))?;
            Values::Decimal { mantissas, scales }
        }
        ValueType::Timestamp => {
            let code: [u8; 4] = r.take(4)?.try_into().map_err(|_| malformed("timestamp format"))?;
            let format = TimestampFormat::decode(code).ok_or_else(|| malformed("timestamp format"))?;
            Values::Timestamp { format, seconds: decode_ints(&mut r, n)? }
        }
        ValueType::Bool => {
            let spelling = r.u8()?;
            if usize::from(spelling) >= value::BOOL_SPELLINGS.len() {
                return Err(malformed("boolean spelling"));
            }
            let bits = decode_ints(&mut r, n)?
                .into_iter()
                .map(|b| match b {
                    0 => Some(false),
                    1 => Some(true),
                    _ => None,
                })
                .collect::<Option<Vec<bool>>>()
                .ok_or_else(|| malformed("boolean other than 0 or 1"))?;
            Values::Bool { spelling, bits }
        }
        ValueType::String => Values::Str(decode_strings(&mut r, n, shared)?),
    };
    if !r.is_at_end() {
        return Err(malformed("trailing bytes in a column chunk"));
    }
    Ok(ColumnChunk { storage_type, codes, values, exceptions, non_null: n + n_exc, value_index: std::sync::OnceLock::new() })
}

/// The token of a NULL row code (1..=6).
fn null_token(code: u8) -> Result<&'static [u8], CodecError> {
    code.checked_sub(CODE_FIRST_NULL).and_then(|i| NULL_TOKENS.get(usize::from(i))).copied().ok_or_else(|| malformed("row code"))
}

// Cold and out of line: errors are rare, and their formatting would
// otherwise crowd the per-field loops out of the inliner's budget.
#[cold]
#[inline(never)]
fn malformed(what: &str) -> CodecError {
    CodecError::Malformed(format!("column chunk: {what}"))
}

fn checked_dates(days: Vec<i64>) -> Result<Vec<i64>, CodecError> {
    if days.iter().any(|&d| i32::try_from(d).is_err()) {
        return Err(malformed("date out of range"));
    }
    Ok(days)
}

fn decode_codes(r: &mut WireReader<'_>, rows: usize) -> Result<Vec<u8>, CodecError> {
    match r.u8()? {
        0 => Ok(vec![CODE_VALUE; rows]),
        1 => {
            let n_runs = r.count("run count", rows as u64)?;
            let mut codes = Vec::with_capacity(rows);
            for _ in 0..n_runs {
                let n = r.count("run length", (rows - codes.len()) as u64)?;
                let code = r.u8()?;
                let valid = code == CODE_VALUE
                    || code == CODE_EXCEPTION
                    || code == CODE_MISSING
                    || (CODE_FIRST_NULL..CODE_FIRST_NULL + NULL_TOKENS.len() as u8).contains(&code);
                if !valid {
                    return Err(malformed("row code"));
                }
                codes.extend(std::iter::repeat_n(code, n));
            }
            if codes.len() != rows {
                return Err(malformed("runs do not cover the rows"));
            }
            Ok(codes)
        }
        m => Err(malformed(&format!("codes mode {m}"))),
    }
}

fn decode_strings(r: &mut WireReader<'_>, n: usize, resolve: SharedResolver<'_>) -> Result<StrValues, CodecError> {
    let mode = r.u8()?;
    let shared = match mode {
        2 => Some(resolve(u32::try_from(r.varint()?).map_err(|_| malformed("dictionary block"))?)?),
        _ => None,
    };
    let entries = match mode {
        0 => n,
        1 | 2 => r.count("dictionary size", n as u64)?,
        m => return Err(malformed(&format!("string mode {m}"))),
    };
    let lengths = decode_ints(r, entries)?;
    let mut offsets = Vec::with_capacity(entries + 1);
    let mut total: u64 = 0;
    offsets.push(0u32);
    for &l in &lengths {
        total = u64::try_from(l).ok().and_then(|l| total.checked_add(l)).ok_or_else(|| malformed("string length"))?;
        offsets.push(u32::try_from(total).map_err(|_| malformed("strings too long"))?);
    }
    let bytes = r.take(usize::try_from(total).map_err(|_| malformed("strings too long"))?)?.to_vec();
    let indices = if mode == 0 {
        None
    } else {
        let limit = entries + shared.as_ref().map_or(0, |s| s.len());
        let ix = decode_ints(r, n)?;
        let ix = ix
            .into_iter()
            .map(|i| u32::try_from(i).ok().filter(|&i| (i as usize) < limit))
            .collect::<Option<Vec<u32>>>()
            .ok_or_else(|| malformed("dictionary index"))?;
        Some(ix)
    };
    Ok(StrValues { offsets, bytes, indices, shared })
}

// ---------------------------------------------------------------- reading

impl ColumnChunk {
    pub fn rows(&self) -> usize {
        self.codes.len()
    }

    /// Index into the values of `row`, a `CODE_VALUE` row.
    #[inline]
    fn value_index(&self, row: usize) -> Option<usize> {
        let index = self.value_index.get_or_init(|| {
            let mut n = 0u32;
            self.codes
                .iter()
                .map(|&c| {
                    let i = n;
                    n += u32::from(c == CODE_VALUE);
                    i
                })
                .collect()
        });
        index.get(row).map(|&i| i as usize)
    }

    /// The string value of `row` without copying it, when the chunk stores
    /// strings and the row holds a typed value.
    #[inline]
    pub fn str_at(&self, row: usize) -> Option<&[u8]> {
        match (&self.values, self.codes.get(row)?) {
            (Values::Str(s), &CODE_VALUE) => s.get(self.value_index(row)?),
            _ => None,
        }
    }

    /// A cursor that writes the chunk's fields in row order.
    pub fn cursor(&self) -> TextCursor<'_> {
        TextCursor { chunk: self, row: 0, value: 0, exception: 0, memo_value: usize::MAX, memo: 0..0 }
    }

    /// Appends the exact original text of the field in `row`. `Err` for a
    /// missing field (the row layout must supply such rows) and for a row
    /// past the end.
    pub fn write_field(&self, row: usize, dialect: &Dialect, out: &mut Vec<u8>) -> Result<(), CodecError> {
        match *self.codes.get(row).ok_or_else(|| malformed("row past the end"))? {
            CODE_VALUE => self.value_index(row).and_then(|i| self.write_value(i, dialect, out)).ok_or_else(|| malformed("value past the end"))?,
            CODE_EXCEPTION => out.extend_from_slice(self.exception(row).ok_or_else(|| malformed("exception missing"))?),
            CODE_MISSING => return Err(malformed("a missing field in a regular row")),
            null => out.extend_from_slice(null_token(null)?),
        }
        Ok(())
    }

    fn exception(&self, row: usize) -> Option<&[u8]> {
        let i = self.exceptions.binary_search_by_key(&(row as u32), |(r, _)| *r).ok()?;
        self.exceptions.get(i).map(|(_, raw)| raw.as_slice())
    }

    /// Appends the canonical text of value `i`; `None` when there is no
    /// such value. (Decoding made one value per `CODE_VALUE` row, so a
    /// chunk's own rows always have theirs. An `Option`, not a `Result`:
    /// this runs once per field when text is rebuilt.)
    fn write_value(&self, i: usize, dialect: &Dialect, out: &mut Vec<u8>) -> Option<()> {
        match &self.values {
            Values::Null => {}
            Values::Int(v) => value::format_int(*v.get(i)?, out),
            Values::Decimal { mantissas, scales } => value::format_decimal_into(Decimal { mantissa: *mantissas.get(i)?, scale: *scales.get(i)? }, out),
            Values::Timestamp { format, seconds } => value::format_timestamp_into(*seconds.get(i)?, *format, out),
            Values::Date(days) => value::format_date_into(*days.get(i)? as i32, out),
            Values::Bool { spelling, bits } => {
                let (t, f) = value::BOOL_SPELLINGS.get(usize::from(*spelling))?;
                out.extend_from_slice(if *bits.get(i)? { t } else { f });
            }
            Values::Str(s) => write_canonical_string(s.get(i)?, dialect, out),
        }
        Some(())
    }

    /// The typed value of `row` as stored (`None` for NULL or missing).
    pub fn scalar(&self, row: usize, quote: Option<u8>) -> Option<Scalar> {
        match *self.codes.get(row)? {
            CODE_VALUE => self.value_scalar(self.value_index(row)?),
            CODE_EXCEPTION => {
                let raw = self.exception(row)?;
                value::parse_lenient(self.storage_type, &unquote(raw, quote))
            }
            _ => None,
        }
    }

    fn value_scalar(&self, i: usize) -> Option<Scalar> {
        Some(match &self.values {
            Values::Null => Scalar::Str(Vec::new()),
            Values::Int(v) => Scalar::Int(*v.get(i)?),
            Values::Decimal { mantissas, scales } => Scalar::Decimal(Decimal { mantissa: *mantissas.get(i)?, scale: *scales.get(i)? }),
            Values::Timestamp { seconds, .. } => Scalar::Timestamp(*seconds.get(i)?),
            Values::Date(days) => Scalar::Date(*days.get(i)? as i32),
            Values::Bool { bits, .. } => Scalar::Bool(*bits.get(i)?),
            Values::Str(s) => Scalar::Str(s.get(i)?.to_vec()),
        })
    }

    /// The field's text as SQL sees it when the column is a string column:
    /// the unquoted content (`None` for NULL or missing).
    pub fn text(&self, row: usize, dialect: &Dialect) -> Option<Vec<u8>> {
        match *self.codes.get(row)? {
            CODE_VALUE => {
                let i = self.value_index(row)?;
                if let Values::Str(s) = &self.values {
                    return Some(s.get(i)?.to_vec());
                }
                let mut out = Vec::new();
                self.write_value(i, dialect, &mut out)?;
                Some(out)
            }
            CODE_EXCEPTION => Some(unquote(self.exception(row)?, dialect.quote).into_owned()),
            _ => None,
        }
    }

    /// Rows holding a value (typed or exception): what the statistics
    /// count as values.
    pub fn non_null_count(&self) -> usize {
        self.non_null
    }

    /// Whether `row` holds no value (a NULL token, a missing field, or a
    /// row past the end).
    pub fn is_null(&self, row: usize) -> bool {
        !matches!(self.codes.get(row), Some(&(CODE_VALUE | CODE_EXCEPTION)))
    }
}

/// Writes a chunk's fields in row order without per-row lookups, reusing
/// the text of a value equal to the previous one (sorted and repetitive
/// columns are common: dates, codes, flags). Every call must pass the same
/// output buffer, which only grows: the text reused is copied from where
/// it was last written in it.
pub struct TextCursor<'a> {
    chunk: &'a ColumnChunk,
    row: usize,
    value: usize,
    exception: usize,
    /// Value index whose text was last written, and where it is in `out`.
    memo_value: usize,
    memo: std::ops::Range<usize>,
}

impl TextCursor<'_> {
    /// Writes the current row's field and moves to the next row.
    pub fn write_next(&mut self, dialect: &Dialect, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let chunk = self.chunk;
        let code = *chunk.codes.get(self.row).ok_or_else(|| malformed("past the last row"))?;
        self.row += 1;
        match code {
            CODE_VALUE => {
                let i = self.value;
                self.value += 1;
                let start = out.len();
                if self.memo_value != usize::MAX && self.memo.end <= start && chunk.same_value(self.memo_value, i) {
                    out.extend_from_within(self.memo.clone());
                } else {
                    chunk.write_value(i, dialect, out).ok_or_else(|| malformed("value past the end"))?;
                }
                self.memo = start..out.len();
                self.memo_value = i;
            }
            CODE_EXCEPTION => {
                let (_, raw) = chunk.exceptions.get(self.exception).ok_or_else(|| malformed("exception missing"))?;
                self.exception += 1;
                out.extend_from_slice(raw);
            }
            CODE_MISSING => return Err(malformed("a missing field in a regular row")),
            null => out.extend_from_slice(null_token(null)?),
        }
        Ok(())
    }

    /// Moves past the current row (an irregular row, written verbatim).
    pub fn skip(&mut self) {
        match self.chunk.codes.get(self.row) {
            Some(&CODE_VALUE) => self.value += 1,
            Some(&CODE_EXCEPTION) => self.exception += 1,
            _ => {}
        }
        self.row += 1;
    }
}

impl ColumnChunk {
    /// Whether values `a` and `b` exist and are equal (so have the same
    /// text).
    fn same_value(&self, a: usize, b: usize) -> bool {
        fn same<T: PartialEq>(v: &[T], a: usize, b: usize) -> bool {
            matches!((v.get(a), v.get(b)), (Some(x), Some(y)) if x == y)
        }
        match &self.values {
            Values::Null => false,
            Values::Int(v) | Values::Date(v) => same(v, a, b),
            Values::Decimal { mantissas, scales } => same(mantissas, a, b) && same(scales, a, b),
            Values::Timestamp { seconds, .. } => same(seconds, a, b),
            Values::Bool { bits, .. } => same(bits, a, b),
            Values::Str(s) => s.indices.as_ref().is_some_and(|ix| same(ix, a, b)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::format::LineTerminator;

    const D: Dialect = Dialect { delimiter: b',', quote: Some(b'"'), terminator: LineTerminator::Lf, has_header: true };

    fn chunk_of(texts: &[&str]) -> (ColumnChunk, ColumnStats) {
        let fields: Vec<Option<FieldRef<'_>>> = texts
            .iter()
            .map(|t| {
                let kind = if t.starts_with('"') && t.ends_with('"') && t.len() >= 2 { FieldKind::Quoted } else { FieldKind::Bare };
                Some(FieldRef { raw: t.as_bytes(), kind })
            })
            .collect();
        let enc = encode_chunk(&fields, &D, IntPacking::Bits, None);
        let chunk = decode_chunk(&enc.payload, &no_shared).unwrap();
        for (row, t) in texts.iter().enumerate() {
            let mut out = Vec::new();
            chunk.write_field(row, &D, &mut out).unwrap();
            assert_eq!(out, t.as_bytes(), "row {row}");
        }
        (chunk, enc.stats)
    }

    #[test]
    fn integers_with_odd_spellings_stay_typed_and_exact() {
        let mut texts: Vec<String> = (0..100).map(|i| (i * 7 - 50).to_string()).collect();
        texts.extend(["007", "NA", "", "\"5\""].map(String::from));
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let (chunk, stats) = chunk_of(&refs);
        assert_eq!(chunk.storage_type, ValueType::Int);
        assert_eq!(chunk.scalar(100, D.quote), Some(Scalar::Int(7)));
        assert_eq!(chunk.scalar(103, D.quote), Some(Scalar::Int(5)));
        assert_eq!(chunk.scalar(101, D.quote), None);
        assert_eq!((stats.values, stats.nulls), (102, 2));
        assert_eq!(stats.min, Some(Scalar::Int(-50)));
    }

    #[test]
    fn decimals_timestamps_and_strings_round_trip() {
        let (c, s) = chunk_of(&["1012", "1012.3", "-0.50", "10.357019999999999"]);
        assert_eq!(c.storage_type, ValueType::Decimal);
        assert_eq!(s.max, Some(Scalar::Decimal(Decimal { mantissa: 10123, scale: 1 })));
        let mut stamps: Vec<String> = (0..20).map(|h| format!("2013-01-01T{:02}:00:00Z", h)).collect();
        stamps.push("2013-01-01 12:00:00".into());
        let refs: Vec<&str> = stamps.iter().map(String::as_str).collect();
        let (c, _) = chunk_of(&refs);
        assert_eq!(c.storage_type, ValueType::Timestamp);
        assert_eq!(c.scalar(20, D.quote), Some(Scalar::Timestamp(1_357_041_600)));
        let (c, _) = chunk_of(&["a", "\"b,c\"", "\"say \"\"hi\"\"\"", "\"\"", "\"quoted anyway\"", "x\"y"]);
        assert_eq!(c.storage_type, ValueType::String);
        assert_eq!(c.text(1, &D), Some(b"b,c".to_vec()));
        assert_eq!(c.text(3, &D), Some(Vec::new()));
    }

    #[test]
    fn strings_use_the_file_dictionary_and_add_what_it_lacks() {
        let shared = Arc::new(SharedStrings::new(7, &[b"EWR", b"JFK", b"LGA"]));
        let texts = ["JFK", "EWR", "\"LGA\"", "NA", "JFK", "SFO", "EWR", "JFK"];
        let fields: Vec<Option<FieldRef<'_>>> = texts
            .iter()
            .cycle()
            .take(400)
            .map(|t| Some(FieldRef { raw: t.as_bytes(), kind: if t.starts_with('"') { FieldKind::Quoted } else { FieldKind::Bare } }))
            .collect();
        let enc = encode_chunk(&fields, &D, IntPacking::Trial, Some(&shared));
        let resolve = |b: u32| if b == 7 { Ok(shared.clone()) } else { no_shared(b) };
        let chunk = decode_chunk(&enc.payload, &resolve).unwrap();
        let Values::Str(s) = &chunk.values else { panic!("not strings") };
        assert!(s.shared.is_some(), "the file dictionary was not used");
        for (row, t) in texts.iter().cycle().take(400).enumerate() {
            let mut out = Vec::new();
            chunk.write_field(row, &D, &mut out).unwrap();
            assert_eq!(out, t.as_bytes(), "row {row}");
        }
        assert!(decode_chunk(&enc.payload, &no_shared).is_err());
    }

    #[test]
    fn booleans_other_than_0_or_1_are_refused() {
        // type boolean, 2 rows, every row a value, no exceptions, spelling
        // TRUE/FALSE, then a constant stream: zigzag(1) = 2, zigzag(2) = 4.
        let ones = [ValueType::Bool as u8, 2, 0, 0, 0, 0, 2];
        let chunk = decode_chunk(&ones, &no_shared).unwrap();
        assert_eq!(chunk.scalar(1, None), Some(Scalar::Bool(true)));
        let twos = [ValueType::Bool as u8, 2, 0, 0, 0, 0, 4];
        let err = decode_chunk(&twos, &no_shared).unwrap_err();
        assert!(err.to_string().contains("boolean other than 0 or 1"), "{err}");
    }

    #[test]
    fn exception_rows_that_wrap_around_or_repeat_are_refused() {
        // integer, 2 rows, both exceptions (one run of code 254), then the
        // exception list, and an empty value stream (kind 0, value 0).
        let payload = |deltas: [&[u8]; 2]| {
            let mut p = vec![ValueType::Int as u8, 2, 1, 1, 2, CODE_EXCEPTION, 2];
            for (d, raw) in deltas.iter().zip([b'a', b'b']) {
                p.extend_from_slice(d);
                p.extend_from_slice(&[1, raw]);
            }
            p.extend_from_slice(&[0, 0]);
            p
        };
        let ok = decode_chunk(&payload([&[0], &[1]]), &no_shared).unwrap();
        assert_eq!(ok.exceptions, vec![(0, b"a".to_vec()), (1, b"b".to_vec())]);
        // 1, then 2^64 - 1: the second row wraps around to 0.
        let wrap = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        let err = decode_chunk(&payload([&[1], &wrap]), &no_shared).unwrap_err();
        assert!(err.to_string().contains("exception row"), "{err}");
        let err = decode_chunk(&payload([&[1], &[0]]), &no_shared).unwrap_err();
        assert!(err.to_string().contains("exception rows repeat"), "{err}");
    }

    #[test]
    fn corrupt_payloads_are_errors() {
        let fields = [Some(FieldRef { raw: b"12", kind: FieldKind::Bare }); 50];
        let enc = encode_chunk(&fields, &D, IntPacking::Bits, None);
        for len in 0..enc.payload.len() {
            let _ = decode_chunk(&enc.payload[..len], &no_shared); // must not panic
        }
        for i in 0..enc.payload.len() {
            let mut bad = enc.payload.clone();
            bad[i] ^= 0x55;
            let _ = decode_chunk(&bad, &no_shared);
        }
    }
}
