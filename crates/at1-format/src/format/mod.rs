//! The `.at1` byte layout: header, blocks, footer, trailer. Parse and write,
//! nothing else — encoding data into blocks is `codec`'s job, deciding what
//! to keep is `gate`'s, reading pieces back is `reader`'s.
//!
//! The normative spec is `docs/FORMAT.md`; section numbers below refer to it.
//!
//! ```text
//! [header 16 B][block 0][block 1]...[block n-1][footer][trailer 80 B]
//! ```
//!
//! Every byte of an object is covered by a CRC-32C: the header and trailer by
//! their own, each block by the one in its descriptor, the footer by the one
//! in the trailer. A flipped bit anywhere is therefore found before any byte
//! that depends on it is used.

// Bytes of an object are untrusted: nothing here may panic on them. Every
// index is checked (`get`, checked ranges, iterators) or carries an
// `allow` with the reason it cannot fail. Test modules may unwrap.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod footer;
pub mod wire;

pub use footer::*;

use thiserror::Error;

use wire::WireError;

/// First 8 bytes of every object (PNG-style: a high byte, CR LF, ^Z, LF, so
/// text-mode mangling is detected).
pub const MAGIC: [u8; 8] = *b"\x89AT1\r\n\x1a\n";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;
pub const HEADER_LEN: u64 = 16;
pub const TRAILER_LEN: u64 = 80;
/// Last 4 bytes of every object.
pub const TRAILER_MAGIC: [u8; 4] = *b"AT1$";

/// Sanity bound on a footer's decoded size; a larger claim is corruption.
pub const MAX_FOOTER_BYTES: u64 = 1 << 30;
/// Most bytes a block may decode to, and most original bytes one segment
/// may hold (§6.2, §6.3): what one decode may allocate, whatever an object
/// claims. Writers cut frames and row groups far smaller (128 KiB).
pub const MAX_BLOCK_BYTES: u64 = 1 << 30;
/// Most rows one row group may hold (§6.5): what decoding one column chunk
/// may allocate per value, whatever an object claims. Writers cut row
/// groups at 65,536 rows by default and never above this.
pub const MAX_ROW_GROUP_ROWS: u64 = 1 << 20;

/// Why bytes are not a valid `.at1` object (or not this part of one).
#[derive(Debug, Error)]
pub enum FormatError {
    #[error("not an .at1 object (bad magic)")]
    NotAt1,
    #[error("truncated object: {0}")]
    Truncated(String),
    #[error("unsupported .at1 format version {0} (this build reads version {FORMAT_VERSION})")]
    UnsupportedVersion(u16),
    #[error("header is corrupt (checksum mismatch)")]
    HeaderCorrupt,
    #[error("trailer is corrupt (checksum mismatch or bad end magic)")]
    TrailerCorrupt,
    #[error("footer is corrupt (checksum mismatch)")]
    FooterCorrupt,
    #[error("footer is malformed: {0}")]
    FooterMalformed(String),
    #[error("block {block} ({role}) is corrupt: checksum mismatch at object offset {offset}")]
    BlockCorrupt { block: u32, role: &'static str, offset: u64 },
    #[error("object layout is inconsistent: {0}")]
    Inconsistent(String),
}

impl From<WireError> for FormatError {
    fn from(e: WireError) -> Self {
        FormatError::FooterMalformed(e.to_string())
    }
}

pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

// ---------------------------------------------------------------- header §3

pub fn encode_header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    // bytes 10..12: flags, all zero in version 1
    let crc = crc32c(&h[..12]);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks the 16 header bytes. The magic is checked first so that a file that
/// is not an object at all gets the clearest error.
pub fn check_header(h: &[u8]) -> Result<(), FormatError> {
    if h.first_chunk::<8>() != Some(&MAGIC) {
        return Err(FormatError::NotAt1);
    }
    let h: &[u8; HEADER_LEN as usize] = h.first_chunk().ok_or_else(|| FormatError::Truncated("header is incomplete".into()))?;
    let stored_crc = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
    if crc32c(&h[..12]) != stored_crc {
        return Err(FormatError::HeaderCorrupt);
    }
    let version = u16::from_le_bytes([h[8], h[9]]);
    if version != FORMAT_VERSION {
        return Err(FormatError::UnsupportedVersion(version));
    }
    if h[10..12] != [0, 0] {
        return Err(FormatError::Inconsistent("header flags are set but version 1 defines none".into()));
    }
    Ok(())
}

// ---------------------------------------------------------------- trailer §7

/// The fixed-size record at the end of an object: where the footer is, and
/// the length and SHA-256 of the original bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trailer {
    pub footer_offset: u64,
    pub footer_stored_len: u64,
    pub footer_raw_len: u64,
    pub footer_crc32c: u32,
    pub footer_compression: FooterCompression,
    pub original_len: u64,
    pub original_sha256: [u8; 32],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FooterCompression {
    None = 0,
    Zstd = 1,
}

impl Trailer {
    pub fn encode(&self) -> [u8; TRAILER_LEN as usize] {
        let mut t = [0u8; TRAILER_LEN as usize];
        t[0..8].copy_from_slice(&self.footer_offset.to_le_bytes());
        t[8..16].copy_from_slice(&self.footer_stored_len.to_le_bytes());
        t[16..24].copy_from_slice(&self.footer_raw_len.to_le_bytes());
        t[24..28].copy_from_slice(&self.footer_crc32c.to_le_bytes());
        t[28] = self.footer_compression as u8;
        // 29..32 reserved, zero
        t[32..40].copy_from_slice(&self.original_len.to_le_bytes());
        t[40..72].copy_from_slice(&self.original_sha256);
        let crc = crc32c(&t[..72]);
        t[72..76].copy_from_slice(&crc.to_le_bytes());
        t[76..80].copy_from_slice(&TRAILER_MAGIC);
        t
    }

    /// Parses the trailer of an object of `object_len` bytes and checks that
    /// the footer it points at lies between the header and the trailer.
    pub fn decode(t: &[u8], object_len: u64) -> Result<Self, FormatError> {
        let t: &[u8; TRAILER_LEN as usize] = t.try_into().map_err(|_| FormatError::Truncated("trailer is incomplete".into()))?;
        let u64_at = |i: usize| u64::from_le_bytes(t.get(i..i + 8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]));
        let stored_crc = u32::from_le_bytes([t[72], t[73], t[74], t[75]]);
        if t[76..80] != TRAILER_MAGIC || crc32c(&t[..72]) != stored_crc {
            return Err(FormatError::TrailerCorrupt);
        }
        let footer_compression = match t[28] {
            0 => FooterCompression::None,
            1 => FooterCompression::Zstd,
            other => return Err(FormatError::Inconsistent(format!("unknown footer compression {other}"))),
        };
        if t[29..32] != [0, 0, 0] {
            return Err(FormatError::Inconsistent("reserved trailer bytes are not zero".into()));
        }
        let trailer = Trailer {
            footer_offset: u64_at(0),
            footer_stored_len: u64_at(8),
            footer_raw_len: u64_at(16),
            footer_crc32c: u32::from_le_bytes([t[24], t[25], t[26], t[27]]),
            footer_compression,
            original_len: u64_at(32),
            original_sha256: t[40..72].try_into().unwrap_or([0; 32]),
        };
        let footer_end = trailer.footer_offset.checked_add(trailer.footer_stored_len);
        let trailer_at = object_len.saturating_sub(TRAILER_LEN);
        if trailer.footer_offset < HEADER_LEN || footer_end != Some(trailer_at) {
            return Err(FormatError::Inconsistent(format!(
                "footer at {}+{} does not end where the trailer starts ({trailer_at})",
                trailer.footer_offset, trailer.footer_stored_len
            )));
        }
        if trailer.footer_raw_len > MAX_FOOTER_BYTES {
            return Err(FormatError::Inconsistent(format!("footer claims {} bytes", trailer.footer_raw_len)));
        }
        Ok(trailer)
    }
}

// ---------------------------------------------------------------- footer §6

/// Decodes the stored footer bytes (already read from the object) after
/// checking them against the trailer's CRC.
pub fn decode_footer(stored: &[u8], trailer: &Trailer) -> Result<Footer, FormatError> {
    if crc32c(stored) != trailer.footer_crc32c {
        return Err(FormatError::FooterCorrupt);
    }
    let raw;
    let body: &[u8] = match trailer.footer_compression {
        FooterCompression::None => stored,
        FooterCompression::Zstd => {
            raw = zstd::bulk::decompress(stored, trailer.footer_raw_len as usize)
                .map_err(|e| FormatError::FooterMalformed(format!("footer does not decompress: {e}")))?;
            &raw
        }
    };
    if body.len() as u64 != trailer.footer_raw_len {
        return Err(FormatError::FooterMalformed("decoded footer has the wrong length".into()));
    }
    let footer = Footer::decode(body)?;
    footer.check_layout(trailer)?;
    Ok(footer)
}

/// Encodes a footer for storage: returns (stored bytes, raw length,
/// compression).
pub fn encode_footer(footer: &Footer) -> (Vec<u8>, u64, FooterCompression) {
    let body = footer.encode();
    let raw_len = body.len() as u64;
    // Zone maps and descriptors are repetitive; zstd roughly halves them.
    // Small footers are kept as they are: compression would not pay.
    if body.len() > 256 {
        if let Ok(z) = zstd::bulk::compress(&body, 19) {
            if z.len() < body.len() {
                return (z, raw_len, FooterCompression::Zstd);
            }
        }
    }
    (body, raw_len, FooterCompression::None)
}

// ---------------------------------------------------------------- blocks §4

/// Block payload bytes whose CRC-32C matched their descriptor. Decoders only
/// accept this type, so stored bytes that were not checked cannot be decoded
/// into something a caller sees (mountpoint-s3's `ChecksummedBytes` idea).
#[derive(Debug)]
pub struct VerifiedBlock<'a> {
    id: u32,
    desc: &'a BlockDesc,
    bytes: &'a [u8],
}

impl<'a> VerifiedBlock<'a> {
    /// Checks `bytes` (the stored bytes of block `id`) against `desc`.
    pub fn check(id: u32, desc: &'a BlockDesc, bytes: &'a [u8]) -> Result<Self, FormatError> {
        if bytes.len() as u64 != desc.stored_len || crc32c(bytes) != desc.crc32c {
            return Err(FormatError::BlockCorrupt { block: id, role: desc.role.name(), offset: desc.offset });
        }
        Ok(Self { id, desc, bytes })
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn desc(&self) -> &'a BlockDesc {
        self.desc
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_every_single_bit_flip() {
        let h = encode_header();
        check_header(&h).unwrap();
        for bit in 0..h.len() * 8 {
            let mut bad = h;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(check_header(&bad).is_err(), "bit {bit} not detected");
        }
    }

    #[test]
    fn trailer_round_trips_and_rejects_every_single_bit_flip() {
        let t = Trailer {
            footer_offset: 100,
            footer_stored_len: 20,
            footer_raw_len: 40,
            footer_crc32c: 7,
            footer_compression: FooterCompression::Zstd,
            original_len: 12345,
            original_sha256: [9; 32],
        };
        let object_len = 100 + 20 + TRAILER_LEN;
        let bytes = t.encode();
        assert_eq!(Trailer::decode(&bytes, object_len).unwrap(), t);
        for bit in 0..bytes.len() * 8 {
            let mut bad = bytes;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(Trailer::decode(&bad, object_len).is_err(), "bit {bit} not detected");
        }
    }
}
