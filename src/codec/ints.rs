//! Integer streams: every integer sequence a column chunk stores (values,
//! decimal mantissas and scales, timestamps, string lengths, dictionary
//! indices) goes through here (docs/FORMAT.md §5.3).
//!
//! Candidates, smallest encoded size wins:
//! - `Constant` and `Sequence` (start, step): a generator of a few bytes for
//!   columns such as a row id or a constant year, whatever the row count;
//! - frame-of-reference (value − min) and delta (deltas − min delta), each
//!   either bit-packed or byte-aligned. Byte-aligned widths cost more bits but
//!   keep values on byte boundaries, where the zstd/LZMA2 match finders see
//!   repeats; which one ends up smaller after the backend depends on the
//!   data, so the writer chooses per stream (see `IntPacking`).

use crate::format::wire::{WireReader, WireWriter};

use super::CodecError;

const CONSTANT: u8 = 0;
const SEQUENCE: u8 = 1;
const FOR_BITS: u8 = 2;
const DELTA_BITS: u8 = 3;
const FOR_BYTES: u8 = 4;
const DELTA_BYTES: u8 = 5;

/// How packed streams are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntPacking {
    /// Minimal bit widths.
    Bits,
    /// Widths rounded up to 1, 2, 4 or 8 bytes.
    Bytes,
}

/// Appends the encoding of `values` to `w`. The count is not written: the
/// reader knows it from context.
pub fn encode_ints(w: &mut WireWriter, values: &[i64], packing: IntPacking) {
    let Some(&first) = values.first() else {
        w.u8(CONSTANT);
        w.zigzag(0);
        return;
    };
    if values.iter().all(|&v| v == first) {
        w.u8(CONSTANT);
        w.zigzag(first);
        return;
    }
    if let Some(step) = arithmetic_step(values) {
        w.u8(SEQUENCE);
        w.zigzag(first);
        w.zigzag(step);
        return;
    }
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
        (false, IntPacking::Bits) => FOR_BITS,
        (true, IntPacking::Bits) => DELTA_BITS,
        (false, IntPacking::Bytes) => FOR_BYTES,
        (true, IntPacking::Bytes) => DELTA_BYTES,
    };
    w.u8(kind);
    if use_delta {
        w.zigzag(first);
    }
    w.zigzag(base);
    let bits = bit_width(range);
    match packing {
        IntPacking::Bits => {
            w.u8(bits);
            pack_bits(w, &body, bits);
        }
        IntPacking::Bytes => {
            let bytes = byte_width(bits);
            w.u8(bytes);
            for v in &body {
                w.raw(&v.to_le_bytes()[..usize::from(bytes)]);
            }
        }
    }
}

/// Reads `n` integers written by [`encode_ints`].
pub fn decode_ints(r: &mut WireReader<'_>, n: usize) -> Result<Vec<i64>, CodecError> {
    let kind = r.u8()?;
    match kind {
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
            if !is_delta {
                return Ok(body.iter().map(|&v| base.wrapping_add(v as i64)).collect());
            }
            if n == 0 {
                return Ok(Vec::new());
            }
            let mut out = Vec::with_capacity(n);
            let mut cur = first;
            out.push(cur);
            for v in body {
                cur = cur.wrapping_add(base.wrapping_add(v as i64));
                out.push(cur);
            }
            Ok(out)
        }
        k => Err(CodecError::Malformed(format!("unknown integer encoding {k}"))),
    }
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
    let step = values.get(1)?.checked_sub(values[0])?;
    values.windows(2).all(|w| w[1].checked_sub(w[0]) == Some(step)).then_some(step)
}

fn min_max(values: &[i64]) -> (i64, i64) {
    values.iter().fold((i64::MAX, i64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

fn deltas(values: &[i64]) -> Vec<i64> {
    // Deltas wrap like the decoder's additions do, so any i64 sequence
    // round-trips even where a true delta would overflow.
    values.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect()
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
        2 => raw.chunks_exact(2).map(|c| u64::from(u16::from_le_bytes([c[0], c[1]]))).collect(),
        4 => raw.chunks_exact(4).map(|c| u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect(),
        _ => raw.chunks_exact(8).map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect(),
    }
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

    #[test]
    fn extremes_round_trip() {
        for p in [IntPacking::Bits, IntPacking::Bytes] {
            round_trip(&[i64::MIN, i64::MAX, 0, -1], p);
            round_trip(&[i64::MAX, i64::MIN, i64::MAX], p);
            round_trip(&[], p);
            round_trip(&[5], p);
        }
    }

    proptest! {
        #[test]
        fn any_sequence_round_trips(values in prop::collection::vec(any::<i64>(), 0..300), small in prop::collection::vec(-50i64..50, 0..300)) {
            for p in [IntPacking::Bits, IntPacking::Bytes] {
                round_trip(&values, p);
                round_trip(&small, p);
            }
        }
    }
}
