//! The primitive encodings every footer field is built from: LEB128 varints,
//! zigzag signed varints, fixed little-endian integers and length-prefixed
//! byte strings (see docs/FORMAT.md §2).
//!
//! The decoder side never trusts a length: every read is bounds-checked and a
//! short or malformed input is a [`WireError`], never a panic, because footers
//! come from files that may be corrupt.

use thiserror::Error;

/// A malformed encoding met while decoding metadata.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("metadata ends early: needed {needed} more bytes at offset {at}")]
    Truncated { at: usize, needed: usize },
    #[error("varint at offset {at} is longer than 10 bytes")]
    VarintOverflow { at: usize },
    #[error("{what} at offset {at} is out of range ({value})")]
    OutOfRange { what: &'static str, at: usize, value: u64 },
}

/// Appends primitive encodings to a byte vector.
#[derive(Default, Debug)]
pub struct WireWriter {
    buf: Vec<u8>,
}

impl WireWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn u32_le(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn varint(&mut self, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.buf.push(byte);
                return;
            }
            self.buf.push(byte | 0x80);
        }
    }

    pub fn zigzag(&mut self, v: i64) {
        self.varint(zigzag_encode(v));
    }

    /// A signed 128-bit value (sums) as two zigzag halves: low 64 bits as an
    /// unsigned varint, then the high 64 bits as a signed varint.
    pub fn i128(&mut self, v: i128) {
        self.varint(v as u64);
        self.zigzag((v >> 64) as i64);
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    pub fn raw(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
}

/// Reads primitive encodings from a byte slice, with bounds checks.
#[derive(Debug, Clone)]
pub struct WireReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> WireReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub fn is_at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    pub fn u8(&mut self) -> Result<u8, WireError> {
        let b = *self.buf.get(self.pos).ok_or(WireError::Truncated { at: self.pos, needed: 1 })?;
        self.pos += 1;
        Ok(b)
    }

    /// The next byte, without consuming it.
    pub fn peek_u8(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    pub fn u32_le(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.take_array()?))
    }

    pub fn varint(&mut self) -> Result<u64, WireError> {
        let start = self.pos;
        let mut value: u64 = 0;
        for i in 0..10 {
            let byte = self.u8()?;
            let part = u64::from(byte & 0x7f);
            if i == 9 && byte > 1 {
                return Err(WireError::VarintOverflow { at: start });
            }
            value |= part << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError::VarintOverflow { at: start })
    }

    pub fn zigzag(&mut self) -> Result<i64, WireError> {
        Ok(zigzag_decode(self.varint()?))
    }

    pub fn i128(&mut self) -> Result<i128, WireError> {
        let low = self.varint()?;
        let high = self.zigzag()?;
        Ok((i128::from(high) << 64) | i128::from(low))
    }

    /// A varint that must fit `usize` and not exceed `limit` (used for counts
    /// and lengths, so a corrupt count cannot trigger a huge allocation).
    pub fn count(&mut self, what: &'static str, limit: u64) -> Result<usize, WireError> {
        let at = self.pos;
        let v = self.varint()?;
        if v > limit {
            return Err(WireError::OutOfRange { what, at, value: v });
        }
        usize::try_from(v).map_err(|_| WireError::OutOfRange { what, at, value: v })
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.count("byte string length", self.remaining() as u64)?;
        self.take(len)
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let s = self.pos.checked_add(n).and_then(|end| self.buf.get(self.pos..end));
        let s = s.ok_or(WireError::Truncated { at: self.pos, needed: n })?;
        self.pos += n;
        Ok(s)
    }

    /// The next `N` bytes as an array.
    pub fn take_array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let a = *rest.first_chunk::<N>().ok_or(WireError::Truncated { at: self.pos, needed: N })?;
        self.pos += N;
        Ok(a)
    }
}

pub fn zigzag_encode(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn zigzag_decode(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        let values = [0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX];
        let mut w = WireWriter::new();
        for v in values {
            w.varint(v);
        }
        let bytes = w.into_bytes();
        let mut r = WireReader::new(&bytes);
        for v in values {
            assert_eq!(r.varint().unwrap(), v);
        }
        assert!(r.is_at_end());
    }

    #[test]
    fn signed_values_round_trip() {
        let mut w = WireWriter::new();
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            w.zigzag(v);
        }
        for v in [0i128, -1, i128::from(i64::MIN) * 7, i128::MAX, i128::MIN] {
            w.i128(v);
        }
        let bytes = w.into_bytes();
        let mut r = WireReader::new(&bytes);
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(r.zigzag().unwrap(), v);
        }
        for v in [0i128, -1, i128::from(i64::MIN) * 7, i128::MAX, i128::MIN] {
            assert_eq!(r.i128().unwrap(), v);
        }
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert!(WireReader::new(&[0x80]).varint().is_err());
        assert!(WireReader::new(&[0xff; 11]).varint().is_err());
        assert!(WireReader::new(&[5, 1, 2]).bytes().is_err());
        assert!(WireReader::new(&[1, 2]).u32_le().is_err());
    }
}
