//! Per-file string dictionaries (docs/FORMAT.md §5.4.2): for a string
//! column whose values repeat across the file (aircraft tail numbers,
//! airport codes), the distinct values are stored once in a *column
//! dictionary* block, and each row group stores only indices into it plus
//! the few values it lacks.
//!
//! Why not a dictionary per row group only: a 128 KiB row group of
//! flights.csv holds ~1,400 rows but ~900 distinct tail numbers, so its own
//! dictionary is mostly first occurrences and costs as much as the indices;
//! every row group paid for the same strings again. Why not a zstd
//! dictionary: the entries would still be written per row group and matched
//! back at ~20 bits each, against ~12 bits for an index, and xz has none.
//!
//! A reader of one column chunk that uses a dictionary reads that one extra
//! block (a few KiB, cached) besides the chunk.

use std::borrow::Cow;
use std::collections::HashMap;

use super::chunk::infer_type;
use super::scan::{scan_record, unquote, FieldKind, FieldSpan};
use crate::codec::ints::{decode_ints, encode_ints, IntPacking};
use crate::codec::CodecError;
use crate::format::wire::{WireReader, WireWriter};
use crate::format::Dialect;
use crate::value::{ValueType, NULL_TOKENS};

/// Most entry bytes one column dictionary keeps (the most frequent values
/// first): the 3,713 tail numbers in the first 8 MiB of flights.csv take
/// 22 KiB, about 7 KiB once compressed.
pub const MAX_DICTIONARY_BYTES: usize = 32 << 10;
/// Values a column must repeat on average in the sample for a dictionary to
/// pay for its block.
const MIN_REPEATS: usize = 4;
/// Values the column type is judged on (the rest of the sample is counted
/// only for the columns that are strings).
const TYPE_SAMPLE_ROWS: usize = 1000;
/// A dictionary must save the sample's row groups this many times its own
/// entry bytes: below that, the block may cost more than it saves (where
/// row groups end up raw, or where entries stay in the first row groups).
const MIN_SAVING: usize = 4;

/// One column's dictionary: distinct strings, ascending, and the block that
/// holds them.
#[derive(Debug, Clone)]
pub struct SharedStrings {
    /// Block id of the column dictionary in the object.
    pub block: u32,
    /// `bytes[offsets[i]..offsets[i+1]]` is entry `i`.
    offsets: Vec<u32>,
    bytes: Vec<u8>,
    /// Entry index by string, for the writer (every value of a chunk is
    /// looked up); readers only index, and leave it empty.
    lookup: HashMap<Box<[u8]>, u32>,
}

impl PartialEq for SharedStrings {
    fn eq(&self, other: &Self) -> bool {
        (self.block, &self.offsets, &self.bytes) == (other.block, &other.offsets, &other.bytes)
    }
}

impl SharedStrings {
    /// `entries` must be distinct and ascending.
    pub fn new(block: u32, entries: &[&[u8]]) -> Self {
        let mut offsets = Vec::with_capacity(entries.len() + 1);
        let mut bytes = Vec::new();
        offsets.push(0);
        for e in entries {
            bytes.extend_from_slice(e);
            offsets.push(bytes.len() as u32);
        }
        let lookup = entries.iter().enumerate().map(|(i, e)| (Box::from(*e), i as u32)).collect();
        Self { block, offsets, bytes, lookup }
    }

    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entry `i`; `None` past the end.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let (&start, &end) = (self.offsets.get(i)?, self.offsets.get(i + 1)?);
        self.bytes.get(start as usize..end as usize)
    }

    /// The index of `s`: by hash for a writer's dictionary, else by binary
    /// search over the ascending entries.
    pub fn find(&self, s: &[u8]) -> Option<u32> {
        if !self.lookup.is_empty() {
            return self.lookup.get(s).copied();
        }
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.get(mid)?.cmp(s) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid as u32),
            }
        }
        None
    }

    /// The block payload: `varint entries`, a stream of entry lengths, the
    /// concatenated entry bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = WireWriter::new();
        w.varint(self.len() as u64);
        let lengths: Vec<i64> = self.offsets.iter().zip(self.offsets.iter().skip(1)).map(|(a, b)| i64::from(b - a)).collect();
        encode_ints(&mut w, &lengths, IntPacking::Trial);
        w.raw(&self.bytes);
        w.into_bytes()
    }

    pub fn decode(block: u32, payload: &[u8]) -> Result<Self, CodecError> {
        let malformed = |what: &str| CodecError::Malformed(format!("column dictionary: {what}"));
        let mut r = WireReader::new(payload);
        let n = r.count("dictionary entries", payload.len() as u64)?;
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0u32);
        let mut total: u64 = 0;
        for l in decode_ints(&mut r, n)? {
            total = u64::try_from(l).ok().and_then(|l| total.checked_add(l)).ok_or_else(|| malformed("entry length"))?;
            offsets.push(u32::try_from(total).map_err(|_| malformed("entries too long"))?);
        }
        let bytes = r.take(usize::try_from(total).map_err(|_| malformed("entries too long"))?)?.to_vec();
        if !r.is_at_end() {
            return Err(malformed("trailing bytes"));
        }
        let dict = Self { block, offsets, bytes, lookup: HashMap::new() };
        // Lookups by binary search need ascending, distinct entries.
        if (1..dict.len()).any(|i| dict.get(i - 1) >= dict.get(i)) {
            return Err(malformed("entries are not ascending"));
        }
        Ok(dict)
    }
}

/// Chooses the columns of `text` (whole records, the start of a table) that
/// deserve a dictionary and returns each one's entries (ascending), `None`
/// for the others. `group_bytes` is the row group size the dictionary will
/// serve.
pub fn choose_entries(text: &[u8], dialect: &Dialect, n_columns: usize, group_bytes: usize) -> Vec<Option<Vec<Vec<u8>>>> {
    let sample = Sample::scan(text, dialect, n_columns, group_bytes.max(1));
    (0..n_columns).map(|c| sample.column_entries(c)).collect()
}

/// The regular records of the start of a table: their fields' spans, flat,
/// and the row group each record would fall in.
struct Sample<'a> {
    text: &'a [u8],
    quote: Option<u8>,
    n_columns: usize,
    spans: Vec<FieldSpan>,
    groups: Vec<usize>,
}

/// How often a value occurs in the sample, and in how many row groups.
struct Occurrences {
    count: usize,
    groups: usize,
    last_group: usize,
}

impl<'a> Sample<'a> {
    fn scan(text: &'a [u8], dialect: &Dialect, n_columns: usize, group_bytes: usize) -> Self {
        let mut spans = Vec::new();
        let mut groups = Vec::new();
        let mut pos = 0;
        while pos < text.len() {
            let first = spans.len();
            let Some(rec) = scan_record(text, pos, dialect.delimiter, dialect.quote, false, &mut spans) else { break };
            if spans.len() - first == n_columns {
                groups.push(pos / group_bytes);
            } else {
                spans.truncate(first);
            }
            pos = rec.end;
        }
        Self { text, quote: dialect.quote, n_columns, spans, groups }
    }

    /// The unquoted value of a field, `None` for NULL tokens and malformed
    /// fields (which never become dictionary strings).
    fn value(&self, s: &FieldSpan) -> Option<Cow<'a, [u8]>> {
        let raw = s.text(self.text);
        match s.kind {
            FieldKind::Malformed => None,
            FieldKind::Bare if NULL_TOKENS.contains(&raw) => None,
            FieldKind::Bare => Some(Cow::Borrowed(raw)),
            FieldKind::Quoted => Some(unquote(raw, self.quote)),
        }
    }

    fn column(&self, c: usize) -> impl Iterator<Item = (usize, &FieldSpan)> + '_ {
        self.groups.iter().enumerate().filter_map(move |(row, &g)| Some((g, self.spans.get(row * self.n_columns + c)?)))
    }

    /// A column gets a dictionary when it holds strings, its values repeat,
    /// and the row groups' own dictionaries would repeat its entries: the
    /// strings it saves them must outweigh its own size several times.
    fn column_entries(&self, c: usize) -> Option<Vec<Vec<u8>>> {
        let head: Vec<Cow<'_, [u8]>> = self.column(c).take(TYPE_SAMPLE_ROWS).filter_map(|(_, s)| self.value(s)).collect();
        if infer_type(&head) != ValueType::String {
            return None;
        }
        let mut seen: HashMap<Cow<'a, [u8]>, Occurrences> = HashMap::new();
        let mut values = 0usize;
        for (group, span) in self.column(c) {
            let Some(v) = self.value(span) else { continue };
            values += 1;
            let o = seen.entry(v).or_insert(Occurrences { count: 0, groups: 0, last_group: usize::MAX });
            o.count += 1;
            if o.last_group != group {
                o.groups += 1;
                o.last_group = group;
            }
        }
        if seen.len() < 2 || seen.len() * MIN_REPEATS > values {
            return None;
        }
        let mut by_count: Vec<(Cow<'a, [u8]>, Occurrences)> = seen.into_iter().collect();
        by_count.sort_unstable_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0)));
        let (mut size, mut saved) = (0, 0);
        let mut entries: Vec<Vec<u8>> = Vec::new();
        for (v, o) in by_count {
            if size + v.len() > MAX_DICTIONARY_BYTES {
                break;
            }
            size += v.len();
            saved += v.len() * o.groups;
            entries.push(v.into_owned());
        }
        if saved < size * MIN_SAVING {
            return None;
        }
        entries.sort_unstable();
        Some(entries)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::format::LineTerminator;

    const D: Dialect = Dialect { delimiter: b',', quote: Some(b'"'), terminator: LineTerminator::Lf, has_header: false };

    #[test]
    fn payload_round_trips_and_finds() {
        let d = SharedStrings::new(3, &[b"ABQ", b"ATL", b"BOS"]);
        let back = SharedStrings::decode(3, &d.encode()).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.find(b"ATL"), Some(1));
        assert_eq!(back.find(b"AAA"), None);
        assert!(SharedStrings::decode(3, &SharedStrings::new(3, &[b"B", b"A"]).encode()).is_err());
    }

    #[test]
    fn only_repeating_string_columns_get_entries() {
        let text: String = (0..400).map(|i| format!("{i},{},x{i}\n", ["EWR", "JFK", "LGA"][i % 3])).collect();
        let chosen = choose_entries(text.as_bytes(), &D, 3, 1000);
        assert_eq!(chosen[0], None); // integers
        assert_eq!(chosen[1], Some(vec![b"EWR".to_vec(), b"JFK".to_vec(), b"LGA".to_vec()]));
        assert_eq!(chosen[2], None); // all distinct
    }
}
