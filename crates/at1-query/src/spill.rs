//! Result rows kept in an unnamed temp file instead of memory, read back
//! by offset: how a large sorted result is put in order without holding
//! it (`exec::Exec::emit_spilled`).
//!
//! A row is written as a u32 length, then each value: a tag byte and its
//! payload (little-endian). The file has no name, so it goes with the
//! query whatever happens.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::expr::Datum;
use super::QueryError;
use crate::value::{Decimal, Scalar};

fn io(e: std::io::Error) -> QueryError {
    QueryError::Io(format!("spilling a sorted result: {e}"))
}

pub struct RowSpill {
    out: BufWriter<File>,
    /// Bytes written so far: the next row's offset.
    len: u64,
    flushed: bool,
    buf: Vec<u8>,
}

impl RowSpill {
    /// A new spill file in `dir` (the system's temp directory if `None`).
    pub fn new(dir: Option<&Path>) -> Result<RowSpill, QueryError> {
        let file = match dir {
            Some(d) => tempfile::tempfile_in(d),
            None => tempfile::tempfile(),
        }
        .map_err(io)?;
        Ok(RowSpill { out: BufWriter::with_capacity(1 << 20, file), len: 0, flushed: false, buf: Vec::new() })
    }

    /// Appends a row; returns its offset.
    pub fn write(&mut self, row: &[Datum]) -> Result<u64, QueryError> {
        self.buf.clear();
        for d in row {
            encode(d, &mut self.buf);
        }
        let at = self.len;
        let len = u32::try_from(self.buf.len()).map_err(|_| QueryError::Io("a result row over 4 GiB".into()))?;
        self.out.write_all(&len.to_le_bytes()).map_err(io)?;
        self.out.write_all(&self.buf).map_err(io)?;
        self.len += 4 + u64::from(len);
        Ok(at)
    }

    /// Reads the row at `at` into `row`.
    pub fn read(&mut self, at: u64, row: &mut Vec<Datum>) -> Result<(), QueryError> {
        if !self.flushed {
            self.out.flush().map_err(io)?;
            self.flushed = true;
        }
        let file = self.out.get_ref();
        let mut len = [0u8; 4];
        file.read_exact_at(&mut len, at).map_err(io)?;
        self.buf.resize(u32::from_le_bytes(len) as usize, 0);
        file.read_exact_at(&mut self.buf, at + 4).map_err(io)?;
        row.clear();
        let mut rest = &self.buf[..];
        while !rest.is_empty() {
            row.push(decode(&mut rest).ok_or_else(|| QueryError::Io("a spilled row reads back malformed".into()))?);
        }
        Ok(())
    }
}

fn encode(d: &Datum, out: &mut Vec<u8>) {
    match d {
        None => out.push(0),
        Some(Scalar::Int(v)) => {
            out.push(1);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Some(Scalar::Decimal(v)) => {
            out.push(2);
            out.extend_from_slice(&v.mantissa.to_le_bytes());
            out.push(v.scale);
        }
        Some(Scalar::Float(v)) => {
            out.push(3);
            out.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        Some(Scalar::Timestamp(v)) => {
            out.push(4);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Some(Scalar::Date(v)) => {
            out.push(5);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Some(Scalar::Bool(v)) => out.extend_from_slice(&[6, u8::from(*v)]),
        Some(Scalar::Str(s)) => {
            out.push(7);
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            out.extend_from_slice(s);
        }
    }
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, tail) = rest.split_at_checked(n)?;
    *rest = tail;
    Some(head)
}

fn take_array<const N: usize>(rest: &mut &[u8]) -> Option<[u8; N]> {
    take(rest, N)?.try_into().ok()
}

fn decode(rest: &mut &[u8]) -> Option<Datum> {
    let tag = take_array::<1>(rest)?[0];
    Some(match tag {
        0 => None,
        1 => Some(Scalar::Int(i64::from_le_bytes(take_array(rest)?))),
        2 => {
            let mantissa = i64::from_le_bytes(take_array(rest)?);
            Some(Scalar::Decimal(Decimal { mantissa, scale: take_array::<1>(rest)?[0] }))
        }
        3 => Some(Scalar::Float(f64::from_bits(u64::from_le_bytes(take_array(rest)?)))),
        4 => Some(Scalar::Timestamp(i64::from_le_bytes(take_array(rest)?))),
        5 => Some(Scalar::Date(i32::from_le_bytes(take_array(rest)?))),
        6 => Some(Scalar::Bool(take_array::<1>(rest)?[0] != 0)),
        7 => {
            let n = usize::try_from(u64::from_le_bytes(take_array(rest)?)).ok()?;
            Some(Scalar::Str(take(rest, n)?.to_vec()))
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_back_as_written_in_any_order() {
        let rows: Vec<Vec<Datum>> = vec![
            vec![None, Some(Scalar::Int(-5)), Some(Scalar::Str(b"a,\"b\"".to_vec()))],
            vec![Some(Scalar::Decimal(Decimal { mantissa: 12345, scale: 2 })), Some(Scalar::Float(1e300)), Some(Scalar::Bool(true))],
            vec![Some(Scalar::Timestamp(1_356_998_400)), Some(Scalar::Date(-3)), Some(Scalar::Str(Vec::new()))],
            vec![],
        ];
        let mut spill = RowSpill::new(None).unwrap();
        let offsets: Vec<u64> = rows.iter().map(|r| spill.write(r).unwrap()).collect();
        let mut got = Vec::new();
        for i in [2, 0, 3, 1] {
            spill.read(offsets[i], &mut got).unwrap();
            assert_eq!(got, rows[i]);
        }
    }
}
