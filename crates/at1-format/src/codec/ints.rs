//! Integer streams: every integer sequence a column chunk stores (values,
//! decimal mantissas and scales, timestamps, string lengths, dictionary
//! indices) goes through here (docs/FORMAT.md §5.3).
//!
//! Candidates:
//! - `Constant` and `Sequence` (start, step): a generator of a few bytes for
//!   columns such as a row id or a constant year, whatever the row count;
//! - frame-of-reference (value − min) and delta (deltas − min delta), each
//!   either bit-packed or split into byte planes (all low bytes, then all
//!   next bytes, ...). Planes keep values on byte boundaries, where the
//!   zstd/LZMA2 match finders see repeats, and put the nearly constant high
//!   bytes of 2-byte values in one run instead of between the noisy low
//!   bytes: the clock times and delays of flights.csv shrink 11-16% against
//!   interleaved little-endian words;
//! - a dictionary of the distinct values plus an index per value: a column
//!   with few distinct wide values (distances, delays) becomes one byte per
//!   row.
//!
//! Which candidate ends up smallest after the backend depends on the data,
//! so `IntPacking::Trial` compresses each candidate with zstd level 1 and
//! keeps the smallest: on flights.csv that picks within 0.4% of what
//! choosing by the column level (9) would, for a fraction of its cost.

use crate::format::wire::{WireReader, WireWriter};

use super::backend::quick_size;
use super::CodecError;

const CONSTANT: u8 = 0;
const SEQUENCE: u8 = 1;
const FOR_BITS: u8 = 2;
const DELTA_BITS: u8 = 3;
const FOR_BYTES: u8 = 4;
const DELTA_BYTES: u8 = 5;
const FOR_PLANES: u8 = 6;
const DELTA_PLANES: u8 = 7;
const DICTIONARY: u8 = 8;

/// How packed streams are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntPacking {
    /// Minimal bit widths (for stored blocks, where no backend follows).
    Bits,
    /// Widths rounded up to 1, 2, 4 or 8 bytes, little-endian words.
    Bytes,
    /// The smallest of the bit-packed, byte-plane and dictionary forms after
    /// a fast zstd pass (for blocks a backend compresses).
    Trial,
}

/// A dictionary is tried only when the distinct values are at most
/// 1/DICT_MAX_SHARE of the stream: with more, its table costs about as much
/// as the values it replaces.
const DICT_MAX_SHARE: usize = 2;

/// Appends the encoding of `values` to `w`. The count is not written: the
/// reader knows it from context.
pub fn encode_ints(w: &mut WireWriter, values: &[i64], packing: IntPacking) {
    if encode_generator(w, values) {
        return;
    }
    match packing {
        IntPacking::Bits | IntPacking::Bytes => encode_packed(w, values, packing),
        IntPacking::Trial => encode_trial(w, values),
    }
}

/// Writes a constant or an arithmetic sequence; false when `values` is
/// neither.
fn encode_generator(w: &mut WireWriter, values: &[i64]) -> bool {
    let Some(&first) = values.first() else {
        w.u8(CONSTANT);
        w.zigzag(0);
        return true;
    };
    if values.iter().all(|&v| v == first) {
        w.u8(CONSTANT);
        w.zigzag(first);
        return true;
    }
    if let Some(step) = arithmetic_step(values) {
        w.u8(SEQUENCE);
        w.zigzag(first);
        w.zigzag(step);
        return true;
    }
    false
}

/// The original choice: FOR or delta by `spread_cost`, then bit-packed or
/// little-endian words.
fn encode_packed(w: &mut WireWriter, values: &[i64], packing: IntPacking) {
    let first = values.first().copied().unwrap_or(0);
    let (min, max) = min_max(values);
    let for_range = (max as i128 - min as i128) as u128;
    let deltas = deltas(values);
    let (dmin, dmax) = min_max(&deltas);
    let delta_range = (dmax as i128 - dmin as i128) as u128;
    // Choose by the bits the values need one by one, not by the widest:
    // deltas of a mostly-sorted column are small except at a few jumps, and
    // the backend's entropy coder turns many small values into few bits
    // whatever the packed width.
    let use_delta = spread_cost(deltas.iter().map(|&d| zigzag(d))) < spread_cost(values.iter().map(|&v| (v as i128 - min as i128) as u64));
    let (base, range, body): (i64, u128, Vec<u64>) = if use_delta {
        (dmin, delta_range, deltas.iter().map(|&d| (d as i128 - dmin as i128) as u64).collect())
    } else {
        (min, for_range, values.iter().map(|&v| (v as i128 - min as i128) as u64).collect())
    };
    let kind = match (use_delta, packing) {
        (false, IntPacking::Bytes) => FOR_BYTES,
        (true, IntPacking::Bytes) => DELTA_BYTES,
        (false, _) => FOR_BITS,
        (true, _) => DELTA_BITS,
    };
    w.u8(kind);
    if use_delta {
        w.zigzag(first);
    }
    w.zigzag(base);
    let bits = bit_width(range);
    match packing {
        IntPacking::Bits | IntPacking::Trial => {
            w.u8(bits);
            pack_bits(w, &body, bits);
        }
        IntPacking::Bytes => {
            let bytes = byte_width(bits);
            w.u8(bytes);
            for v in &body {
                w.raw(v.to_le_bytes().get(..usize::from(bytes)).unwrap_or_default());
            }
        }
    }
}

/// Writes whichever non-generator form of `values` is smallest after a fast
/// zstd pass. Forms that cannot win are not tried: bit packing at a whole
/// number of bytes is the planes' layout or worse, and a dictionary whose
/// indices are as wide as the FOR offsets only adds its table.
fn encode_trial(w: &mut WireWriter, values: &[i64]) {
    let mut candidates = Vec::with_capacity(6);
    let for_bits = {
        let body = for_body(values);
        push_packings(&mut candidates, &body, |_| {});
        body.bits
    };
    push_packings(&mut candidates, &delta_body(values), |_| {});
    if let Some((distinct, indices)) = dictionary(values).filter(|(d, _)| bit_width(d.len() as u128 - 1) < for_bits) {
        let head = written(|c| {
            c.u8(DICTIONARY);
            c.varint(distinct.len() as u64);
            encode_ints(c, &distinct, IntPacking::Bits);
        });
        push_packings(&mut candidates, &for_body(&indices), |c| c.raw(&head));
    }
    let best = candidates.into_iter().map(|c| (quick_size(&c), c)).min_by_key(|(size, c)| (*size, c.len()));
    if let Some((_, bytes)) = best {
        w.raw(&bytes);
    }
}

/// Adds `body` byte-planed and, unless its width is whole bytes, bit-packed,
/// each after `head`.
fn push_packings(candidates: &mut Vec<Vec<u8>>, body: &Body, head: impl Fn(&mut WireWriter)) {
    candidates.push(written(|c| {
        head(c);
        write_planes(c, body);
    }));
    if body.bits % 8 != 0 {
        candidates.push(written(|c| {
            head(c);
            write_bits(c, body);
        }));
    }
}

fn written(f: impl FnOnce(&mut WireWriter)) -> Vec<u8> {
    let mut w = WireWriter::new();
    f(&mut w);
    w.into_bytes()
}

/// A frame-of-reference or delta form before packing: `x_i = base + offsets_i`
/// (FOR) or `x_i = x_{i-1} + base + offsets_{i-1}` after `first` (delta).
struct Body {
    delta: bool,
    first: i64,
    base: i64,
    offsets: Vec<u64>,
    bits: u8,
}

fn for_body(values: &[i64]) -> Body {
    let (min, max) = min_max(values);
    let offsets = values.iter().map(|&v| (v as i128 - min as i128) as u64).collect();
    Body { delta: false, first: 0, base: min, offsets, bits: bit_width((max as i128 - min as i128) as u128) }
}

fn delta_body(values: &[i64]) -> Body {
    let deltas = deltas(values);
    let (min, max) = min_max(&deltas);
    let offsets = deltas.iter().map(|&d| (d as i128 - min as i128) as u64).collect();
    Body { delta: true, first: values.first().copied().unwrap_or(0), base: min, offsets, bits: bit_width((max as i128 - min as i128) as u128) }
}

fn write_body_head(w: &mut WireWriter, body: &Body, for_kind: u8, delta_kind: u8) {
    w.u8(if body.delta { delta_kind } else { for_kind });
    if body.delta {
        w.zigzag(body.first);
    }
    w.zigzag(body.base);
}

fn write_bits(w: &mut WireWriter, body: &Body) {
    write_body_head(w, body, FOR_BITS, DELTA_BITS);
    w.u8(body.bits);
    pack_bits(w, &body.offsets, body.bits);
}

/// Byte planes: byte 0 of every offset, then byte 1 of every offset, ...,
/// as many planes as the widest offset needs (at least one).
fn write_planes(w: &mut WireWriter, body: &Body) {
    write_body_head(w, body, FOR_PLANES, DELTA_PLANES);
    let planes = body.bits.div_ceil(8).max(1);
    w.u8(planes);
    let mut plane = Vec::with_capacity(body.offsets.len());
    for k in 0..u32::from(planes) {
        plane.clear();
        plane.extend(body.offsets.iter().map(|&v| (v >> (8 * k)) as u8));
        w.raw(&plane);
    }
}

/// The distinct values ascending and each value's index among them, when
/// there are few enough distinct values for an index stream to pay.
fn dictionary(values: &[i64]) -> Option<(Vec<i64>, Vec<i64>)> {
    let (min, max) = min_max(values);
    let range = (max as i128 - min as i128) as u128;
    if range < BITMAP_RANGE {
        return dictionary_by_bitmap(values, min, range as usize);
    }
    let mut distinct = values.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() * DICT_MAX_SHARE > values.len() {
        return None;
    }
    let indices = values.iter().map(|v| distinct.binary_search(v).map_or(0, |i| i as i64)).collect();
    Some((distinct, indices))
}

/// Ranges below this find their distinct values with a bitmap and ranks
/// instead of a sort: most streams (clock times, delays, small ids) do, and
/// it is several times faster.
const BITMAP_RANGE: u128 = 1 << 16;

fn dictionary_by_bitmap(values: &[i64], min: i64, range: usize) -> Option<(Vec<i64>, Vec<i64>)> {
    let offset = |v: i64| (v as i128 - min as i128) as usize;
    // Every offset is at most `range`: word `o / 64` exists.
    let mut bits = vec![0u64; range / 64 + 1];
    for &v in values {
        let o = offset(v);
        if let Some(word) = bits.get_mut(o / 64) {
            *word |= 1 << (o % 64);
        }
    }
    let distinct_count: usize = bits.iter().map(|w| w.count_ones() as usize).sum();
    if distinct_count * DICT_MAX_SHARE > values.len() {
        return None;
    }
    // ranks[w] = number of set bits before word w.
    let mut ranks = Vec::with_capacity(bits.len());
    let mut distinct = Vec::with_capacity(distinct_count);
    for (w, &word) in bits.iter().enumerate() {
        ranks.push(distinct.len());
        let mut rest = word;
        while rest != 0 {
            let bit = rest.trailing_zeros() as usize;
            distinct.push(min.wrapping_add((w * 64 + bit) as i64));
            rest &= rest - 1;
        }
    }
    let indices = values
        .iter()
        .map(|&v| {
            let o = offset(v);
            let (word, rank) = (bits.get(o / 64).copied().unwrap_or(0), ranks.get(o / 64).copied().unwrap_or(0));
            let below = word & ((1u64 << (o % 64)) - 1);
            (rank + below.count_ones() as usize) as i64
        })
        .collect();
    Some((distinct, indices))
}

/// Reads `n` integers written by [`encode_ints`].
pub fn decode_ints(r: &mut WireReader<'_>, n: usize) -> Result<Vec<i64>, CodecError> {
    let kind = r.u8()?;
    match kind {
        DICTIONARY => decode_dictionary(r, n),
        FOR_PLANES | DELTA_PLANES => {
            let is_delta = kind == DELTA_PLANES;
            let first = if is_delta { r.zigzag()? } else { 0 };
            let base = r.zigzag()?;
            let body_len = if is_delta { n.saturating_sub(1) } else { n };
            let body = unpack_planes(r, body_len)?;
            Ok(rebuild(is_delta, first, base, body, n))
        }
        CONSTANT => {
            let v = r.zigzag()?;
            Ok(vec![v; n])
        }
        SEQUENCE => {
            let start = r.zigzag()?;
            let step = r.zigzag()?;
            (0..n as i64)
                .map(|i| step.checked_mul(i).and_then(|d| start.checked_add(d)))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| CodecError::Malformed("sequence overflows".into()))
        }
        FOR_BITS | DELTA_BITS | FOR_BYTES | DELTA_BYTES => {
            let is_delta = kind == DELTA_BITS || kind == DELTA_BYTES;
            let first = if is_delta { r.zigzag()? } else { 0 };
            let base = r.zigzag()?;
            let body_len = if is_delta { n.saturating_sub(1) } else { n };
            let body = if kind == FOR_BITS || kind == DELTA_BITS {
                let bits = r.u8()?;
                if bits > 64 {
                    return Err(CodecError::Malformed(format!("bit width {bits}")));
                }
                unpack_bits(r, body_len, bits)?
            } else {
                let bytes = r.u8()?;
                if !matches!(bytes, 1 | 2 | 4 | 8) {
                    return Err(CodecError::Malformed(format!("byte width {bytes}")));
                }
                let raw = r.take(body_len.checked_mul(usize::from(bytes)).ok_or_else(too_long)?)?;
                unpack_bytes(raw, bytes)
            };
            Ok(rebuild(is_delta, first, base, body, n))
        }
        k => Err(CodecError::Malformed(format!("unknown integer encoding {k}"))),
    }
}

/// Values from a FOR or delta body.
fn rebuild(is_delta: bool, first: i64, base: i64, body: Vec<u64>, n: usize) -> Vec<i64> {
    if !is_delta {
        return body.iter().map(|&v| base.wrapping_add(v as i64)).collect();
    }
    if n == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(n);
    let mut cur = first;
    out.push(cur);
    for v in body {
        cur = cur.wrapping_add(base.wrapping_add(v as i64));
        out.push(cur);
    }
    out
}

fn unpack_planes(r: &mut WireReader<'_>, n: usize) -> Result<Vec<u64>, CodecError> {
    let planes = r.u8()?;
    if !(1..=8).contains(&planes) {
        return Err(CodecError::Malformed(format!("byte planes {planes}")));
    }
    // Check the length before allocating: `n` comes from a corrupt payload
    // as easily as from a good one.
    if n.checked_mul(usize::from(planes)).is_none_or(|len| len > r.remaining()) {
        return Err(CodecError::Malformed("byte planes end early".into()));
    }
    let mut out = vec![0u64; n];
    for k in 0..u32::from(planes) {
        let plane = r.take(n)?;
        for (v, &b) in out.iter_mut().zip(plane) {
            *v |= u64::from(b) << (8 * k);
        }
    }
    Ok(out)
}

/// A dictionary stream: the distinct values, then an index per value. The
/// two inner streams are never dictionaries themselves, which bounds the
/// recursion.
fn decode_dictionary(r: &mut WireReader<'_>, n: usize) -> Result<Vec<i64>, CodecError> {
    let d = r.count("dictionary size", n as u64)?;
    let no_nesting = |r: &mut WireReader<'_>, count: usize| {
        if r.peek_u8() == Some(DICTIONARY) {
            return Err(CodecError::Malformed("nested integer dictionary".into()));
        }
        decode_ints(r, count)
    };
    let distinct = no_nesting(r, d)?;
    let indices = no_nesting(r, n)?;
    indices
        .iter()
        .map(|&i| usize::try_from(i).ok().and_then(|i| distinct.get(i).copied()))
        .collect::<Option<Vec<i64>>>()
        .ok_or_else(|| CodecError::Malformed("integer dictionary index".into()))
}

fn too_long() -> CodecError {
    CodecError::Malformed("integer stream length overflows".into())
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Sum of the significant bits of each value: a cheap proxy for what an
/// entropy coder will make of the stream.
fn spread_cost(values: impl Iterator<Item = u64>) -> u64 {
    values.map(|v| u64::from(64 - v.leading_zeros())).sum()
}

fn arithmetic_step(values: &[i64]) -> Option<i64> {
    let step = values.get(1)?.checked_sub(*values.first()?)?;
    pairs(values).all(|(a, b)| b.checked_sub(a) == Some(step)).then_some(step)
}

fn min_max(values: &[i64]) -> (i64, i64) {
    values.iter().fold((i64::MAX, i64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

fn deltas(values: &[i64]) -> Vec<i64> {
    // Deltas wrap like the decoder's additions do, so any i64 sequence
    // round-trips even where a true delta would overflow.
    pairs(values).map(|(a, b)| b.wrapping_sub(a)).collect()
}

/// Each value with the next one.
fn pairs(values: &[i64]) -> impl Iterator<Item = (i64, i64)> + '_ {
    values.iter().copied().zip(values.iter().copied().skip(1))
}

fn bit_width(range: u128) -> u8 {
    (128 - range.leading_zeros()).min(64) as u8
}

fn byte_width(bits: u8) -> u8 {
    match bits {
        0..=8 => 1,
        9..=16 => 2,
        17..=32 => 4,
        _ => 8,
    }
}

fn pack_bits(w: &mut WireWriter, values: &[u64], bits: u8) {
    if bits == 0 {
        return;
    }
    let mut acc: u128 = 0;
    let mut filled: u32 = 0;
    let mut out = Vec::with_capacity((values.len() * usize::from(bits)).div_ceil(8));
    for &v in values {
        acc |= u128::from(v) << filled;
        filled += u32::from(bits);
        while filled >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            filled -= 8;
        }
    }
    if filled > 0 {
        out.push(acc as u8);
    }
    w.raw(&out);
}

/// Little-endian words of 1, 2, 4 or 8 bytes (a loop per width, which the
/// compiler vectorizes).
fn unpack_bytes(raw: &[u8], width: u8) -> Vec<u64> {
    match width {
        1 => raw.iter().map(|&b| u64::from(b)).collect(),
        2 => words(raw, |w| u64::from(u16::from_le_bytes(w))),
        4 => words(raw, |w| u64::from(u32::from_le_bytes(w))),
        _ => words(raw, u64::from_le_bytes),
    }
}

/// `raw` cut into `N`-byte words (`chunks_exact` yields only whole ones,
/// so the conversion to an array never fails and compiles away).
fn words<const N: usize>(raw: &[u8], word: impl Fn([u8; N]) -> u64) -> Vec<u64> {
    raw.chunks_exact(N).map(|c| <[u8; N]>::try_from(c).map_or(0, &word)).collect()
}

fn unpack_bits(r: &mut WireReader<'_>, n: usize, bits: u8) -> Result<Vec<u64>, CodecError> {
    if bits == 0 {
        return Ok(vec![0; n]);
    }
    let nbytes = n.checked_mul(usize::from(bits)).ok_or_else(too_long)?.div_ceil(8);
    let bytes = r.take(nbytes)?;
    let mask: u128 = if bits == 64 { u128::from(u64::MAX) } else { (1u128 << bits) - 1 };
    let mut out = Vec::with_capacity(n);
    let mut acc: u128 = 0;
    let mut filled: u32 = 0;
    let mut iter = bytes.iter();
    for _ in 0..n {
        while filled < u32::from(bits) {
            let b = iter.next().ok_or_else(|| CodecError::Malformed("bit-packed stream ends early".into()))?;
            acc |= u128::from(*b) << filled;
            filled += 8;
        }
        out.push((acc & mask) as u64);
        acc >>= bits;
        filled -= u32::from(bits);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(values: &[i64], packing: IntPacking) -> usize {
        let mut w = WireWriter::new();
        encode_ints(&mut w, values, packing);
        let bytes = w.into_bytes();
        let mut r = WireReader::new(&bytes);
        assert_eq!(decode_ints(&mut r, values.len()).unwrap(), values);
        assert!(r.is_at_end());
        bytes.len()
    }

    #[test]
    fn generators_cost_a_few_bytes_whatever_the_length() {
        let ids: Vec<i64> = (1000..101_000).collect();
        assert!(round_trip(&ids, IntPacking::Bits) <= 8);
        assert!(round_trip(&vec![2013; 100_000], IntPacking::Bytes) <= 4);
    }

    const ALL: [IntPacking; 3] = [IntPacking::Bits, IntPacking::Bytes, IntPacking::Trial];

    fn kind_of(values: &[i64], packing: IntPacking) -> u8 {
        let mut w = WireWriter::new();
        encode_ints(&mut w, values, packing);
        w.into_bytes()[0]
    }

    #[test]
    fn trials_pick_planes_dictionaries_and_bits() {
        // Clock times (HHMM): the trial form compresses smaller than the
        // little-endian words the writer used before.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut random = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let times: Vec<i64> = (0..1400)
            .map(|_| {
                let r = random();
                (5 + r % 19) as i64 * 100 + (r >> 32) as i64 % 60
            })
            .collect();
        let stored = |p| {
            let mut w = WireWriter::new();
            encode_ints(&mut w, &times, p);
            quick_size(&w.into_bytes())
        };
        assert!(stored(IntPacking::Trial) * 10 < stored(IntPacking::Bytes) * 9);
        // Few distinct wide values (distances): one byte of index per row.
        let distances: Vec<i64> = (0..1400).map(|_| [187, 719, 1028, 2475, 4983][random() as usize % 5]).collect();
        assert_eq!(kind_of(&distances, IntPacking::Trial), DICTIONARY);
        round_trip(&distances, IntPacking::Trial);
        // Three values: two bits each beat a byte each.
        let origins: Vec<i64> = (0..1400).map(|_| (random() % 3) as i64).collect();
        assert_eq!(kind_of(&origins, IntPacking::Trial), FOR_BITS);
    }

    #[test]
    fn corrupt_streams_are_errors() {
        let distances: Vec<i64> = (0..300).map(|i| [187, 719, 1028, 2475, 4983][i * 7 % 5]).collect();
        let times: Vec<i64> = (0..300).map(|i| 500 + (i * 37 % 1800)).collect();
        for values in [distances, times] {
            let mut w = WireWriter::new();
            encode_ints(&mut w, &values, IntPacking::Trial);
            let bytes = w.into_bytes();
            for len in 0..bytes.len() {
                let _ = decode_ints(&mut WireReader::new(&bytes[..len]), values.len());
                // must not panic
            }
            for i in 0..bytes.len() {
                let mut bad = bytes.clone();
                bad[i] ^= 0x55;
                let _ = decode_ints(&mut WireReader::new(&bad), values.len());
            }
        }
        // A dictionary inside a dictionary is refused, not recursed into.
        let nested = [DICTIONARY, 1, DICTIONARY, 1, CONSTANT, 0, CONSTANT, 0, CONSTANT, 0];
        assert!(decode_ints(&mut WireReader::new(&nested), 4).is_err());
    }

    #[test]
    fn extremes_round_trip() {
        for p in ALL {
            round_trip(&[i64::MIN, i64::MAX, 0, -1], p);
            round_trip(&[i64::MAX, i64::MIN, i64::MAX], p);
            round_trip(&[], p);
            round_trip(&[5], p);
        }
    }

    proptest! {
        #[test]
        fn any_sequence_round_trips(
            values in prop::collection::vec(any::<i64>(), 0..300),
            small in prop::collection::vec(-50i64..50, 0..300),
            sparse in prop::collection::vec(prop::sample::select(vec![i64::MIN, -1_000_000, 7, 4983, 1 << 40, i64::MAX]), 0..300),
        ) {
            for p in ALL {
                round_trip(&values, p);
                round_trip(&small, p);
                round_trip(&sparse, p);
            }
        }
    }
}
