//! Splitting CSV/TSV text into records and fields *without losing a byte*:
//! every field is a raw span of the input (quotes included), so the codec can
//! compare a value's canonical text with exactly what was written.
//!
//! Why not the `csv` crate: it returns unescaped field values, not the raw
//! spans and quoting of each field, and a byte-exact codec needs both. The
//! state machine here is RFC 4180's, plus a defined behaviour for malformed
//! input (a quote that closes mid-field): the field keeps its raw bytes and
//! is marked malformed, which the codec stores as an exception.

use memchr::{memchr, memchr2};

use crate::format::{Dialect, LineTerminator};
use crate::value;

/// One field: `buf[start..end]` including its quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpan {
    pub start: usize,
    pub end: usize,
    pub kind: FieldKind,
}

impl FieldSpan {
    /// The field's bytes in `buf`, the buffer it was scanned from (empty
    /// for any other buffer too short to hold it).
    pub fn text<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start..self.end).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Bare,
    /// Enclosed in quotes, properly closed.
    Quoted,
    /// Starts with a quote that closes before the field ends, or never closes.
    Malformed,
}

/// One record: fields, then `buf[content_end..end]` is its terminator
/// (`\n`, `\r\n`, or nothing for a last record without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSpan {
    pub start: usize,
    pub content_end: usize,
    pub end: usize,
}

/// Scans the record starting at `start`, appending its fields to `fields`.
/// Returns `None` when the record is not complete in `buf` and more input
/// may follow (`at_eof == false`). At EOF the last record may lack a
/// terminator or a closing quote.
pub fn scan_record(buf: &[u8], start: usize, delimiter: u8, quote: Option<u8>, at_eof: bool, fields: &mut Vec<FieldSpan>) -> Option<RecordSpan> {
    let first_field = fields.len();
    let incomplete = |fields: &mut Vec<FieldSpan>| {
        fields.truncate(first_field);
        None
    };
    let mut pos = start;
    loop {
        let field_start = pos;
        let mut kind = FieldKind::Bare;
        if let Some(q) = quote.filter(|&q| buf.get(pos) == Some(&q)) {
            match close_quote(buf, pos + 1, q) {
                None if !at_eof => return incomplete(fields),
                None => {
                    // An unclosed quote at EOF: the rest is this field.
                    fields.push(FieldSpan { start: field_start, end: buf.len(), kind: FieldKind::Malformed });
                    return Some(RecordSpan { start, content_end: buf.len(), end: buf.len() });
                }
                Some(after) => pos = after,
            }
            // What follows the closing quote decides whether it really closed
            // (a quote as the last byte may be the first of a doubled pair).
            match buf.get(pos) {
                None if !at_eof => return incomplete(fields),
                None => {
                    fields.push(FieldSpan { start: field_start, end: pos, kind: FieldKind::Quoted });
                    return Some(RecordSpan { start, content_end: pos, end: pos });
                }
                Some(&b) if b == delimiter => {
                    fields.push(FieldSpan { start: field_start, end: pos, kind: FieldKind::Quoted });
                    pos += 1;
                    continue;
                }
                Some(b'\n') => {
                    fields.push(FieldSpan { start: field_start, end: pos, kind: FieldKind::Quoted });
                    return Some(RecordSpan { start, content_end: pos, end: pos + 1 });
                }
                Some(b'\r') if buf.get(pos + 1) == Some(&b'\n') => {
                    fields.push(FieldSpan { start: field_start, end: pos, kind: FieldKind::Quoted });
                    return Some(RecordSpan { start, content_end: pos, end: pos + 2 });
                }
                Some(b'\r') if pos + 1 == buf.len() && !at_eof => return incomplete(fields),
                Some(_) => kind = FieldKind::Malformed,
            }
        }
        // A bare field, or the rest of a malformed quoted one.
        match memchr2(delimiter, b'\n', buf.get(pos..).unwrap_or_default()).map(|i| pos + i) {
            Some(i) if buf.get(i) == Some(&delimiter) => {
                fields.push(FieldSpan { start: field_start, end: i, kind });
                pos = i + 1;
            }
            Some(i) => {
                // A CR right before the newline belongs to the terminator.
                let content_end = if i > field_start && buf.get(i - 1) == Some(&b'\r') { i - 1 } else { i };
                fields.push(FieldSpan { start: field_start, end: content_end, kind });
                return Some(RecordSpan { start, content_end, end: i + 1 });
            }
            None if !at_eof => return incomplete(fields),
            None => {
                fields.push(FieldSpan { start: field_start, end: buf.len(), kind });
                return Some(RecordSpan { start, content_end: buf.len(), end: buf.len() });
            }
        }
    }
}

/// Index just past the closing quote of a quoted field whose content starts
/// at `from`, skipping doubled quotes.
fn close_quote(buf: &[u8], mut from: usize, q: u8) -> Option<usize> {
    loop {
        let i = from + memchr(q, buf.get(from..)?)?;
        if buf.get(i + 1) == Some(&q) {
            from = i + 2;
        } else {
            return Some(i + 1);
        }
    }
}

/// The value of a field: quotes removed and doubled quotes undone when it is
/// properly quoted, its raw bytes otherwise.
pub fn unquote(raw: &[u8], quote: Option<u8>) -> std::borrow::Cow<'_, [u8]> {
    match quote {
        Some(q) if raw.len() >= 2 && raw.first() == Some(&q) && raw.last() == Some(&q) => {
            let inner = raw.get(1..raw.len() - 1).unwrap_or_default();
            if memchr(q, inner).is_none() {
                std::borrow::Cow::Borrowed(inner)
            } else {
                let mut out = Vec::with_capacity(inner.len());
                let mut bytes = inner.iter().copied().peekable();
                while let Some(b) = bytes.next() {
                    out.push(b);
                    if b == q {
                        bytes.next_if_eq(&q);
                    }
                }
                std::borrow::Cow::Owned(out)
            }
        }
        _ => std::borrow::Cow::Borrowed(raw),
    }
}

/// Appends the canonical (minimal-quoting) text of a string value: quoted
/// when it contains the delimiter, a quote, CR or LF, or is empty (an empty
/// bare field means NULL).
pub fn write_canonical_string(value: &[u8], dialect: &Dialect, out: &mut Vec<u8>) {
    let Some(q) = dialect.quote else {
        out.extend_from_slice(value);
        return;
    };
    let needs_quotes = value.is_empty() || value.iter().any(|&b| b == dialect.delimiter || b == q || b == b'\r' || b == b'\n');
    if !needs_quotes {
        out.extend_from_slice(value);
        return;
    }
    out.push(q);
    for &b in value {
        out.push(b);
        if b == q {
            out.push(q);
        }
    }
    out.push(q);
}

pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// What sniffing learned from the start of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sniffed {
    pub dialect: Dialect,
    /// Bytes before the first data row: a BOM and/or the header record.
    pub prefix_len: usize,
    pub column_names: Vec<String>,
}

const DELIMITER_CANDIDATES: [u8; 4] = [b',', b'\t', b';', b'|'];
const SNIFF_RECORDS: usize = 500;

/// Decides whether `sample` (the start of a file) is a delimited table, and
/// with which dialect. `None` means "treat as opaque bytes".
///
/// A delimiter wins when at least 90% of the sampled records have the same
/// field count (>= 2) and at most 1% of fields are malformed; ties go to the
/// earlier candidate. A header is assumed when every field of the first
/// record is a distinct, non-empty text that is not a number, date, time or
/// boolean while some later field is typed.
///
/// JSON is never a table, even where its lines hold the same number of
/// commas (a pretty-printed array of flat objects does): the columns would
/// be `"key": value` fragments, which only cost a per-file dictionary and a
/// columnar trial before the row groups fall back to raw.
pub fn sniff(sample: &[u8], at_eof: bool) -> Option<Sniffed> {
    let body_start = if sample.starts_with(UTF8_BOM) { UTF8_BOM.len() } else { 0 };
    if starts_like_json(sample.get(body_start..).unwrap_or_default()) {
        return None;
    }
    let mut best: Option<(u8, usize, f64)> = None;
    for &d in &DELIMITER_CANDIDATES {
        if let Some((width, score)) = score_delimiter(sample, body_start, d, at_eof) {
            if best.is_none_or(|(_, _, s)| score > s) {
                best = Some((d, width, score));
            }
        }
    }
    let (delimiter, width, _) = best?;
    let quote = Some(b'"');
    let mut fields = Vec::new();
    let first = scan_record(sample, body_start, delimiter, quote, at_eof, &mut fields)?;
    let terminator = majority_terminator(sample, body_start, delimiter, quote, at_eof);
    let first_fields: Vec<Vec<u8>> = fields.iter().map(|f| unquote(f.text(sample), quote).into_owned()).collect();
    let has_header = first_fields.len() == width && looks_like_header(&first_fields, sample, first.end, delimiter, quote, at_eof);
    let dialect = Dialect { delimiter, quote, terminator, has_header };
    let (prefix_len, column_names) =
        if has_header { (first.end, unique_names(&first_fields)) } else { (body_start, (0..width).map(|i| format!("c{i}")).collect()) };
    Some(Sniffed { dialect, prefix_len, column_names })
}

/// `{` or `[` followed by what may open a JSON member or element: `"`, a
/// bracket, a digit, `-`, or a literal. A CSV header like `[id],name` is
/// not taken for JSON.
fn starts_like_json(text: &[u8]) -> bool {
    let mut bytes = text.iter().copied().filter(|b| !b.is_ascii_whitespace());
    match (bytes.next(), bytes.next()) {
        (Some(b'{'), Some(b'"' | b'}')) => true,
        (Some(b'['), Some(next)) => matches!(next, b'"' | b'{' | b'[' | b']' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n'),
        _ => false,
    }
}

fn score_delimiter(sample: &[u8], start: usize, delimiter: u8, at_eof: bool) -> Option<(usize, f64)> {
    let mut counts = std::collections::HashMap::new();
    let (mut records, mut fields_total, mut malformed) = (0usize, 0usize, 0usize);
    let mut pos = start;
    let mut fields = Vec::new();
    while pos < sample.len() && records < SNIFF_RECORDS {
        fields.clear();
        let Some(rec) = scan_record(sample, pos, delimiter, Some(b'"'), at_eof, &mut fields) else { break };
        *counts.entry(fields.len()).or_insert(0usize) += 1;
        fields_total += fields.len();
        malformed += fields.iter().filter(|f| f.kind == FieldKind::Malformed).count();
        records += 1;
        pos = rec.end;
    }
    let (&width, &modal) = counts.iter().max_by_key(|(w, c)| (**c, **w))?;
    let consistent = modal as f64 / records as f64;
    if width < 2 || records < 2 || consistent < 0.9 || malformed * 100 > fields_total {
        return None;
    }
    Some((width, consistent * width as f64))
}

fn majority_terminator(sample: &[u8], start: usize, delimiter: u8, quote: Option<u8>, at_eof: bool) -> LineTerminator {
    let (mut crlf, mut lf) = (0, 0);
    let mut pos = start;
    let mut fields = Vec::new();
    for _ in 0..SNIFF_RECORDS {
        fields.clear();
        let Some(rec) = scan_record(sample, pos, delimiter, quote, at_eof, &mut fields) else { break };
        match rec.end - rec.content_end {
            2 => crlf += 1,
            1 => lf += 1,
            _ => {}
        }
        if rec.end == pos || rec.end >= sample.len() {
            break;
        }
        pos = rec.end;
    }
    if crlf > lf {
        LineTerminator::CrLf
    } else {
        LineTerminator::Lf
    }
}

fn is_typed(text: &[u8]) -> bool {
    value::parse_canonical_int(text).is_some()
        || value::parse_canonical_decimal(text).is_some()
        || value::lenient_number(text).is_some()
        || value::parse_date(text).is_some()
        || value::parse_timestamp(text).is_some()
        || value::parse_canonical_bool(text).is_some()
}

fn looks_like_header(first: &[Vec<u8>], sample: &[u8], rest: usize, delimiter: u8, quote: Option<u8>, at_eof: bool) -> bool {
    let distinct: std::collections::HashSet<&Vec<u8>> = first.iter().collect();
    if distinct.len() != first.len() || first.iter().any(|f| f.is_empty() || is_typed(f)) {
        return false;
    }
    // Some later field must be typed; otherwise a table of names would
    // always lose its first row to a header.
    let mut pos = rest;
    let mut fields = Vec::new();
    for _ in 0..50 {
        fields.clear();
        let Some(rec) = scan_record(sample, pos, delimiter, quote, at_eof, &mut fields) else { break };
        if fields.iter().any(|f| is_typed(&unquote(f.text(sample), quote))) {
            return true;
        }
        if rec.end == pos {
            break;
        }
        pos = rec.end;
    }
    // All-text tables: a header is still likely when the first row's fields
    // are short identifiers.
    first.iter().all(|f| f.len() <= 32 && f.iter().all(|b| b.is_ascii_graphic() || *b == b' '))
}

/// Column names: the header's texts, with empty names replaced by `cN` and
/// repeats suffixed `_N` (DuckDB's convention), so every name is addressable.
fn unique_names(fields: &[Vec<u8>]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let base = if f.is_empty() { format!("c{i}") } else { String::from_utf8_lossy(f).into_owned() };
            let mut name = base.clone();
            let mut n = 1;
            while !seen.insert(name.clone()) {
                name = format!("{base}_{n}");
                n += 1;
            }
            name
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn split(text: &[u8], at_eof: bool) -> Vec<Vec<(String, FieldKind)>> {
        let mut out = Vec::new();
        let mut pos = 0;
        let mut fields = Vec::new();
        while pos < text.len() {
            fields.clear();
            let Some(rec) = scan_record(text, pos, b',', Some(b'"'), at_eof, &mut fields) else { break };
            out.push(fields.iter().map(|f| (String::from_utf8_lossy(&text[f.start..f.end]).into_owned(), f.kind)).collect());
            pos = rec.end;
        }
        out
    }

    #[test]
    fn quoted_fields_keep_their_raw_bytes() {
        let rows = split(b"a,\"b,c\",\"d\"\"e\"\r\n\"x\ny\",,z\n", true);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][1], ("\"b,c\"".into(), FieldKind::Quoted));
        assert_eq!(rows[0][2], ("\"d\"\"e\"".into(), FieldKind::Quoted));
        assert_eq!(rows[1][0], ("\"x\ny\"".into(), FieldKind::Quoted));
        assert_eq!(rows[1][1], ("".into(), FieldKind::Bare));
    }

    #[test]
    fn incomplete_records_wait_for_more_input() {
        assert!(split(b"a,b", false).is_empty());
        assert!(split(b"a,\"b\nc", false).is_empty());
        assert_eq!(split(b"a,b", true), vec![vec![("a".into(), FieldKind::Bare), ("b".into(), FieldKind::Bare)]]);
    }

    #[test]
    fn malformed_quotes_are_flagged_not_lost() {
        let rows = split(b"\"ab\"cd,e\n\"open", true);
        assert_eq!(rows[0][0], ("\"ab\"cd".into(), FieldKind::Malformed));
        assert_eq!(rows[1][0], ("\"open".into(), FieldKind::Malformed));
    }

    #[test]
    fn unquote_and_canonical_quoting_are_inverse() {
        let d = Dialect { delimiter: b',', quote: Some(b'"'), terminator: LineTerminator::Lf, has_header: false };
        for v in [&b"plain"[..], b"a,b", b"say \"hi\"", b"multi\nline", b""] {
            let mut out = Vec::new();
            write_canonical_string(v, &d, &mut out);
            assert_eq!(&*unquote(&out, d.quote), v);
        }
    }

    #[test]
    fn sniffs_delimiter_header_and_terminator() {
        let s = sniff(b"name\tage\r\nann\t31\r\nbob\t42\r\n", true).unwrap();
        assert_eq!(s.dialect.delimiter, b'\t');
        assert!(s.dialect.has_header);
        assert_eq!(s.dialect.terminator, LineTerminator::CrLf);
        assert_eq!(s.column_names, ["name", "age"]);
        assert_eq!(s.prefix_len, 10);
        let s = sniff(b"1,2\n3,4\n", true).unwrap();
        assert!(!s.dialect.has_header);
        assert_eq!(s.column_names, ["c0", "c1"]);
        assert!(sniff(b"just some text\nwithout delimiters\n", true).is_none());
    }

    #[test]
    fn json_is_not_a_table() {
        let array = b"[\r\n  {\"a\": 1, \"b\": 2},\r\n  {\"a\": 3, \"b\": 4},\r\n  {\"a\": 5, \"b\": 6}\r\n]\r\n";
        assert!(sniff(array, true).is_none());
        assert!(sniff(b"{\"a\": 1, \"b\": 2}\n{\"a\": 3, \"b\": 4}\n", true).is_none());
        assert!(sniff(b"[id],name\n1,ann\n2,bob\n", true).is_some());
    }
}
