//! Typed values of CSV fields: the types a column can have, how a field's
//! text becomes a value, and the one *canonical* text of each value.
//!
//! The columnar codec stores a value instead of its text only when the
//! canonical text of the value is byte-for-byte the original field; any other
//! spelling (`007`, `+5`, `1e3`) is kept verbatim as an exception and parsed
//! leniently when SQL needs its value. The query engine uses the same parsers
//! for literals, so a value means the same thing on both sides.

use std::cmp::Ordering;
use std::fmt;

/// The type of a column (per row-group chunk, and per file as the join of
/// its chunks). The numeric ids are part of the file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// Every field is NULL; no values to type.
    Null = 0,
    Int = 1,
    Decimal = 2,
    Timestamp = 3,
    Date = 4,
    Bool = 5,
    String = 6,
}

impl ValueType {
    pub fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Self::Null,
            1 => Self::Int,
            2 => Self::Decimal,
            3 => Self::Timestamp,
            4 => Self::Date,
            5 => Self::Bool,
            6 => Self::String,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Int => "integer",
            Self::Decimal => "decimal",
            Self::Timestamp => "timestamp",
            Self::Date => "date",
            Self::Bool => "boolean",
            Self::String => "string",
        }
    }

    /// The narrowest type that holds values of both `self` and `other`.
    pub fn join(self, other: ValueType) -> ValueType {
        use ValueType::*;
        match (self, other) {
            (a, b) if a == b => a,
            (Null, x) | (x, Null) => x,
            (Int, Decimal) | (Decimal, Int) => Decimal,
            (Date, Timestamp) | (Timestamp, Date) => Timestamp,
            _ => String,
        }
    }

    pub fn is_numeric(self) -> bool {
        matches!(self, Self::Int | Self::Decimal)
    }
}

/// An exact decimal number: `mantissa × 10^-scale`. Kept exact (never a
/// float) so that sums and comparisons are exact and the text round-trips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decimal {
    pub mantissa: i64,
    pub scale: u8,
}

/// The largest scale a decimal may have (digits after the point).
pub const MAX_DECIMAL_SCALE: u8 = 18;

impl Decimal {
    pub fn to_f64(self) -> f64 {
        // Parsing the canonical text gives the correctly rounded double.
        format_decimal(self).parse().unwrap_or(f64::NAN)
    }

    /// The mantissa rescaled to `scale` (which must be >= self.scale).
    pub fn mantissa_at(self, scale: u8) -> i128 {
        i128::from(self.mantissa) * pow10_i128(scale.saturating_sub(self.scale))
    }
}

pub fn pow10_i128(exp: u8) -> i128 {
    10i128.pow(u32::from(exp.min(38)))
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        let scale = self.scale.max(other.scale);
        self.mantissa_at(scale).cmp(&other.mantissa_at(scale))
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One typed value.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Int(i64),
    Decimal(Decimal),
    /// Only for numbers no decimal can hold exactly (`1e300`, `inf`): met in
    /// exception texts and SQL literals, never stored as a column's value.
    Float(f64),
    /// Seconds since 1970-01-01T00:00:00Z.
    Timestamp(i64),
    /// Days since 1970-01-01.
    Date(i32),
    Bool(bool),
    Str(Vec<u8>),
}

impl Scalar {
    pub fn value_type(&self) -> ValueType {
        match self {
            Scalar::Int(_) => ValueType::Int,
            Scalar::Decimal(_) | Scalar::Float(_) => ValueType::Decimal,
            Scalar::Timestamp(_) => ValueType::Timestamp,
            Scalar::Date(_) => ValueType::Date,
            Scalar::Bool(_) => ValueType::Bool,
            Scalar::Str(_) => ValueType::String,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Scalar::Int(v) => Some(*v as f64),
            Scalar::Decimal(d) => Some(d.to_f64()),
            Scalar::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// Compares two values of compatible types: numbers with numbers
    /// (exactly where both are exact), instants with instants, strings
    /// bytewise. `None` when the types cannot be compared.
    pub fn compare(&self, other: &Scalar) -> Option<Ordering> {
        use Scalar::*;
        match (self, other) {
            (Int(a), Int(b)) => Some(a.cmp(b)),
            (Int(a), Decimal(b)) => Some(crate::value::Decimal { mantissa: *a, scale: 0 }.cmp(b)),
            (Decimal(a), Int(b)) => Some(a.cmp(&crate::value::Decimal { mantissa: *b, scale: 0 })),
            (Decimal(a), Decimal(b)) => Some(a.cmp(b)),
            (Float(_), _) | (_, Float(_)) => self.as_f64()?.partial_cmp(&other.as_f64()?),
            (Timestamp(a), Timestamp(b)) => Some(a.cmp(b)),
            (Date(a), Date(b)) => Some(a.cmp(b)),
            (Timestamp(a), Date(b)) => Some(a.cmp(&(i64::from(*b) * 86_400))),
            (Date(a), Timestamp(b)) => Some((i64::from(*a) * 86_400).cmp(b)),
            (Bool(a), Bool(b)) => Some(a.cmp(b)),
            (Str(a), Str(b)) => Some(a.as_slice().cmp(b.as_slice())),
            _ => None,
        }
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Int(v) => write!(f, "{v}"),
            Scalar::Decimal(d) => f.write_str(&format_decimal(*d)),
            Scalar::Float(v) => write!(f, "{v}"),
            Scalar::Timestamp(s) => f.write_str(&format_timestamp_iso(*s)),
            Scalar::Date(d) => f.write_str(&format_date(*d)),
            Scalar::Bool(b) => f.write_str(if *b { "true" } else { "false" }),
            Scalar::Str(s) => f.write_str(&String::from_utf8_lossy(s)),
        }
    }
}

/// Field texts that mean NULL in every column (DuckDB's and R's usual
/// spellings). An empty *unquoted* field is NULL; a quoted `""` is an empty
/// string.
pub const NULL_TOKENS: [&[u8]; 6] = [b"", b"NA", b"N/A", b"NULL", b"null", b"\\N"];

pub fn is_null_token(text: &[u8]) -> bool {
    NULL_TOKENS.contains(&text)
}

// ---------------------------------------------------------------- integers

/// Parses the canonical text of an i64: `-?(0|[1-9][0-9]*)`, no `-0`.
pub fn parse_canonical_int(text: &[u8]) -> Option<i64> {
    let (negative, digits) = split_sign(text);
    if digits.is_empty() || digits.len() > 19 || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    let v = negated_digits(digits)?;
    if negative {
        (v != 0).then_some(v)
    } else {
        v.checked_neg()
    }
}

fn split_sign(text: &[u8]) -> (bool, &[u8]) {
    match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    }
}

/// The value of a run of ASCII digits, negated: accumulating downwards lets
/// `i64::MIN` parse too. `None` for a non-digit or overflow.
fn negated_digits(digits: &[u8]) -> Option<i64> {
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    Some(v)
}

pub fn format_int(v: i64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

// ---------------------------------------------------------------- decimals

/// Parses the canonical text of a decimal: `-?(0|[1-9][0-9]*)\.[0-9]+`
/// with at most 18 digits after the point and a mantissa that fits i64.
/// Integers are not decimals here (they are `Int`).
pub fn parse_canonical_decimal(text: &[u8]) -> Option<Decimal> {
    let dot = text.iter().position(|&b| b == b'.')?;
    let (int_part, frac) = (&text[..dot], &text[dot + 1..]);
    if frac.is_empty() || frac.len() > usize::from(MAX_DECIMAL_SCALE) || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let negative = int_part.first() == Some(&b'-');
    let int_digits = if negative { &int_part[1..] } else { int_part };
    if int_digits.is_empty() || !int_digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if int_digits.len() > 1 && int_digits[0] == b'0' {
        return None;
    }
    let mut mantissa: i64 = 0;
    for &d in int_digits.iter().chain(frac) {
        mantissa = mantissa.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    if negative {
        if mantissa == 0 {
            return None; // "-0.0" is not the canonical text of zero
        }
        mantissa = -mantissa;
    }
    Some(Decimal { mantissa, scale: frac.len() as u8 })
}

pub fn format_decimal_into(d: Decimal, out: &mut Vec<u8>) {
    let scale = usize::from(d.scale);
    if d.mantissa < 0 {
        out.push(b'-');
    }
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(d.mantissa.unsigned_abs()).as_bytes();
    if scale == 0 {
        out.extend_from_slice(digits);
        return;
    }
    if digits.len() > scale {
        let (int_part, frac) = digits.split_at(digits.len() - scale);
        out.extend_from_slice(int_part);
        out.push(b'.');
        out.extend_from_slice(frac);
    } else {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', scale - digits.len()));
        out.extend_from_slice(digits);
    }
}

pub fn format_decimal(d: Decimal) -> String {
    let mut out = Vec::new();
    format_decimal_into(d, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

// ---------------------------------------------------------------- timestamps

/// How a timestamp column spells its values. One format per column chunk;
/// values in another spelling are exceptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimestampFormat {
    /// `b'T'` or `b' '` between date and time.
    pub separator: u8,
    pub has_seconds: bool,
    pub zone: ZoneStyle,
}

/// The zone suffix of a timestamp's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ZoneStyle {
    /// No suffix: read as UTC.
    None,
    /// `Z`.
    Zulu,
    /// `+HH`, `+HHMM` or `+HH:MM` with a fixed offset in minutes.
    Offset { minutes: i16, style: OffsetStyle },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OffsetStyle {
    Hours = 0,
    HoursMinutes = 1,
    HoursColonMinutes = 2,
}

impl TimestampFormat {
    /// A compact code for the file format (docs/FORMAT.md §5.4).
    pub fn encode(self) -> [u8; 4] {
        let (zone, style, minutes) = match self.zone {
            ZoneStyle::None => (0u8, 0u8, 0i16),
            ZoneStyle::Zulu => (1, 0, 0),
            ZoneStyle::Offset { minutes, style } => (2, style as u8, minutes),
        };
        let m = minutes.to_le_bytes();
        [self.separator | (u8::from(self.has_seconds) << 7), zone | (style << 4), m[0], m[1]]
    }

    pub fn decode(code: [u8; 4]) -> Option<Self> {
        let separator = code[0] & 0x7f;
        if separator != b'T' && separator != b' ' {
            return None;
        }
        let has_seconds = code[0] & 0x80 != 0;
        let minutes = i16::from_le_bytes([code[2], code[3]]);
        let style = match code[1] >> 4 {
            0 => OffsetStyle::Hours,
            1 => OffsetStyle::HoursMinutes,
            2 => OffsetStyle::HoursColonMinutes,
            _ => return None,
        };
        let zone = match code[1] & 0x0f {
            0 => ZoneStyle::None,
            1 => ZoneStyle::Zulu,
            // unsigned_abs: -32768 has no i16 absolute value.
            2 if minutes.unsigned_abs() < 24 * 60 => ZoneStyle::Offset { minutes, style },
            _ => return None,
        };
        Some(Self { separator, has_seconds, zone })
    }

    fn offset_minutes(self) -> i64 {
        match self.zone {
            ZoneStyle::Offset { minutes, .. } => i64::from(minutes),
            _ => 0,
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn digits(text: &[u8], n: usize) -> Option<u32> {
    if text.len() < n {
        return None;
    }
    let mut v = 0u32;
    for &b in &text[..n] {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(b - b'0');
    }
    Some(v)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Parses `YYYY-MM-DD` exactly (a four-digit year, a valid date).
pub fn parse_date(text: &[u8]) -> Option<i32> {
    if text.len() != 10 || text[4] != b'-' || text[7] != b'-' {
        return None;
    }
    let y = i64::from(digits(text, 4)?);
    let m = digits(&text[5..], 2)?;
    let d = digits(&text[8..], 2)?;
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    i32::try_from(days_from_civil(y, m, d)).ok()
}

pub fn format_date_into(days: i32, out: &mut Vec<u8>) {
    let (y, m, d) = civil_from_days(i64::from(days));
    push_padded(out, y, 4);
    out.push(b'-');
    push_padded(out, i64::from(m), 2);
    out.push(b'-');
    push_padded(out, i64::from(d), 2);
}

pub fn format_date(days: i32) -> String {
    let mut out = Vec::new();
    format_date_into(days, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

fn push_padded(out: &mut Vec<u8>, v: i64, width: usize) {
    let mut buf = itoa::Buffer::new();
    let s = buf.format(v.unsigned_abs());
    if v < 0 {
        out.push(b'-');
    }
    out.extend(std::iter::repeat_n(b'0', width.saturating_sub(s.len())));
    out.extend_from_slice(s.as_bytes());
}

/// Parses a timestamp in one of the supported spellings and returns the
/// instant and the format it was written in. The text is canonical for that
/// format exactly when formatting the result gives it back, which the caller
/// checks.
pub fn parse_timestamp(text: &[u8]) -> Option<(i64, TimestampFormat)> {
    if text.len() < 16 {
        return None;
    }
    let days = i64::from(parse_date(&text[..10])?);
    let separator = text[10];
    if separator != b'T' && separator != b' ' {
        return None;
    }
    let hh = digits(&text[11..], 2)?;
    if text[13] != b':' {
        return None;
    }
    let mm = digits(&text[14..], 2)?;
    let mut rest = &text[16..];
    let mut ss = 0;
    let has_seconds = rest.first() == Some(&b':');
    if has_seconds {
        ss = digits(&rest[1..], 2)?;
        rest = &rest[3..];
    }
    if hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    let zone = parse_zone(rest)?;
    let format = TimestampFormat { separator, has_seconds, zone };
    let local = days * 86_400 + i64::from(hh * 3600 + mm * 60 + ss);
    Some((local - format.offset_minutes() * 60, format))
}

fn parse_zone(rest: &[u8]) -> Option<ZoneStyle> {
    match rest {
        [] => Some(ZoneStyle::None),
        [b'Z'] => Some(ZoneStyle::Zulu),
        [sign @ (b'+' | b'-'), tail @ ..] => {
            let (h, m, style) = match tail.len() {
                2 => (digits(tail, 2)?, 0, OffsetStyle::Hours),
                4 => (digits(tail, 2)?, digits(&tail[2..], 2)?, OffsetStyle::HoursMinutes),
                5 if tail[2] == b':' => (digits(tail, 2)?, digits(&tail[3..], 2)?, OffsetStyle::HoursColonMinutes),
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = (h * 60 + m) as i16;
            Some(ZoneStyle::Offset { minutes: if *sign == b'-' { -minutes } else { minutes }, style })
        }
        _ => None,
    }
}

pub fn format_timestamp_into(instant: i64, format: TimestampFormat, out: &mut Vec<u8>) {
    // Saturating: a stored instant may be any i64 (an object written by
    // something else); its text is then nonsense but not a panic.
    let local = instant.saturating_add(format.offset_minutes() * 60);
    let days = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    push_padded(out, y, 4);
    out.push(b'-');
    push_padded(out, i64::from(m), 2);
    out.push(b'-');
    push_padded(out, i64::from(d), 2);
    out.push(format.separator);
    push_padded(out, secs / 3600, 2);
    out.push(b':');
    push_padded(out, secs / 60 % 60, 2);
    if format.has_seconds {
        out.push(b':');
        push_padded(out, secs % 60, 2);
    }
    match format.zone {
        ZoneStyle::None => {}
        ZoneStyle::Zulu => out.push(b'Z'),
        ZoneStyle::Offset { minutes, style } => {
            out.push(if minutes < 0 { b'-' } else { b'+' });
            let abs = i64::from(minutes.unsigned_abs());
            push_padded(out, abs / 60, 2);
            match style {
                OffsetStyle::Hours => {}
                OffsetStyle::HoursMinutes => push_padded(out, abs % 60, 2),
                OffsetStyle::HoursColonMinutes => {
                    out.push(b':');
                    push_padded(out, abs % 60, 2);
                }
            }
        }
    }
}

/// ISO-8601 UTC text of an instant, as results print it.
pub fn format_timestamp_iso(instant: i64) -> String {
    let mut out = Vec::new();
    let format = TimestampFormat { separator: b'T', has_seconds: true, zone: ZoneStyle::Zulu };
    format_timestamp_into(instant, format, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

// ---------------------------------------------------------------- booleans

/// The spellings of a boolean column chunk (docs/FORMAT.md §5.4).
pub const BOOL_SPELLINGS: [(&[u8], &[u8]); 3] = [(b"TRUE", b"FALSE"), (b"true", b"false"), (b"True", b"False")];

/// Returns (value, spelling id) for a canonical boolean text.
pub fn parse_canonical_bool(text: &[u8]) -> Option<(bool, u8)> {
    BOOL_SPELLINGS.iter().enumerate().find_map(|(i, (t, f))| {
        if text == *t {
            Some((true, i as u8))
        } else if text == *f {
            Some((false, i as u8))
        } else {
            None
        }
    })
}

// ---------------------------------------------------------------- lenient

/// The value of a field's *text* (already unquoted) read as `ty`, accepting
/// spellings that are not canonical (`+5`, `007`, ` 3 `, `1e3`, `t`). Used
/// for exception texts and SQL literals. `None` when the text is not a value
/// of that type; NULL tokens are the caller's business.
pub fn parse_lenient(ty: ValueType, text: &[u8]) -> Option<Scalar> {
    let text = trim_ascii(text);
    match ty {
        ValueType::Null => None,
        ValueType::Int => lenient_int(text).map(Scalar::Int),
        ValueType::Decimal => lenient_number(text),
        ValueType::Timestamp => {
            parse_timestamp(text).map(|(t, _)| Scalar::Timestamp(t)).or_else(|| parse_date(text).map(|d| Scalar::Timestamp(i64::from(d) * 86_400)))
        }
        ValueType::Date => parse_date(text).map(Scalar::Date),
        ValueType::Bool => lenient_bool(text).map(Scalar::Bool),
        ValueType::String => Some(Scalar::Str(text.to_vec())),
    }
}

fn trim_ascii(text: &[u8]) -> &[u8] {
    let start = text.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(text.len());
    let end = text.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &text[start..end]
}

fn lenient_int(text: &[u8]) -> Option<i64> {
    let (negative, digits) = split_sign(text.strip_prefix(b"+").unwrap_or(text));
    if digits.is_empty() {
        return None;
    }
    let v = negated_digits(digits)?;
    if negative {
        Some(v)
    } else {
        v.checked_neg()
    }
}

/// A number as exact as it can be: an Int, else a Decimal, else a Float.
pub fn lenient_number(text: &[u8]) -> Option<Scalar> {
    if let Some(i) = lenient_int(text) {
        return Some(Scalar::Int(i));
    }
    let unsigned = text.strip_prefix(b"+").unwrap_or(text);
    if let Some(d) = lenient_decimal(unsigned) {
        return Some(Scalar::Decimal(d));
    }
    let f: f64 = std::str::from_utf8(text).ok()?.parse().ok()?;
    Some(Scalar::Float(f))
}

/// `-?[0-9]*\.[0-9]*` with at least one digit, leading zeros allowed.
fn lenient_decimal(text: &[u8]) -> Option<Decimal> {
    let (negative, body) = match text.strip_prefix(b"-") {
        Some(b) => (true, b),
        None => (false, text),
    };
    let dot = body.iter().position(|&b| b == b'.')?;
    let (int_part, frac) = (&body[..dot], &body[dot + 1..]);
    if int_part.len() + frac.len() == 0 || frac.len() > usize::from(MAX_DECIMAL_SCALE) {
        return None;
    }
    let mut mantissa: i64 = 0;
    for &d in int_part.iter().chain(frac) {
        if !d.is_ascii_digit() {
            return None;
        }
        mantissa = mantissa.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(Decimal { mantissa: if negative { -mantissa } else { mantissa }, scale: frac.len() as u8 })
}

fn lenient_bool(text: &[u8]) -> Option<bool> {
    match text.to_ascii_lowercase().as_slice() {
        b"true" | b"t" | b"yes" | b"y" | b"1" => Some(true),
        b"false" | b"f" | b"no" | b"n" | b"0" => Some(false),
        _ => None,
    }
}

impl Scalar {
    /// The JSON form of a value: numbers as JSON numbers written exactly
    /// (decimals keep every digit), instants as ISO-8601 UTC text, strings
    /// as UTF-8 (invalid bytes replaced).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::{Number, Value};
        match self {
            Scalar::Int(v) => Value::Number((*v).into()),
            Scalar::Decimal(d) => format_decimal(*d).parse::<Number>().map_or(Value::Null, Value::Number),
            Scalar::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Scalar::Bool(b) => Value::Bool(*b),
            other => Value::String(other.to_string()),
        }
    }
}

pub fn option_to_json(v: &Option<Scalar>) -> serde_json::Value {
    v.as_ref().map_or(serde_json::Value::Null, Scalar::to_json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_ints_are_exactly_the_round_tripping_texts() {
        for t in ["0", "7", "-7", "9223372036854775807", "-9223372036854775808"] {
            let v = parse_canonical_int(t.as_bytes()).unwrap();
            let mut out = Vec::new();
            format_int(v, &mut out);
            assert_eq!(out, t.as_bytes());
        }
        for t in ["", "-", "-0", "007", "+5", " 5", "5 ", "1e3", "9223372036854775808"] {
            assert_eq!(parse_canonical_int(t.as_bytes()), None, "{t:?}");
        }
    }

    #[test]
    fn canonical_decimals_round_trip() {
        for t in ["0.5", "-0.5", "1.50", "10.357019999999999", "0.000", "-12.0"] {
            let d = parse_canonical_decimal(t.as_bytes()).unwrap();
            assert_eq!(format_decimal(d), t);
        }
        for t in ["-0.0", ".5", "5.", "00.5", "1e3", "1.2.3", "1.0000000000000000000"] {
            assert_eq!(parse_canonical_decimal(t.as_bytes()), None, "{t:?}");
        }
    }

    #[test]
    fn a_timestamp_format_offset_of_i16_min_is_refused() {
        // Zone style 2 (fixed offset) with -32768 minutes: beyond ±1440.
        assert_eq!(TimestampFormat::decode([b'T', 0x02, 0x00, 0x80]), None);
        assert!(TimestampFormat::decode([b'T', 0x02, 0x3c, 0x00]).is_some(), "+60 minutes is a valid offset");
    }

    #[test]
    fn timestamps_round_trip_in_their_own_format() {
        for t in [
            "2013-01-01T10:00:00Z",
            "2013-12-31 23:59:59",
            "2013-12-31 23:59",
            "1969-07-20T20:17:40+02:00",
            "2000-02-29T00:00:00-0530",
            "2000-02-29T00:00:00+05",
        ] {
            let (instant, format) = parse_timestamp(t.as_bytes()).unwrap();
            let mut out = Vec::new();
            format_timestamp_into(instant, format, &mut out);
            assert_eq!(out, t.as_bytes());
            assert_eq!(TimestampFormat::decode(format.encode()), Some(format));
        }
        assert_eq!(parse_timestamp(b"2013-01-01T10:00:00Z").unwrap().0, 1_357_034_400);
        assert!(parse_timestamp(b"2013-02-30T10:00:00Z").is_none());
    }

    #[test]
    fn civil_days_are_inverse_over_a_wide_range() {
        for z in (-800_000..800_000).step_by(37) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn numbers_compare_exactly_across_representations() {
        let a = Scalar::Decimal(Decimal { mantissa: 150, scale: 2 });
        let b = Scalar::Decimal(Decimal { mantissa: 15, scale: 1 });
        assert_eq!(a.compare(&b), Some(Ordering::Equal));
        assert_eq!(Scalar::Int(2).compare(&a), Some(Ordering::Greater));
    }
}
