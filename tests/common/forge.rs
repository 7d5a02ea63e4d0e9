//! Forged objects: a valid object taken apart into its blocks, footer and
//! trailer fields, edited, and put back together with every checksum
//! recomputed. What an object looks like when its checksums pass but its
//! layout lies, for the tests of the open-time checks and for the
//! `forge_object` fuzz target (which includes this file by path, so it uses
//! only the library's public API and no test-only crates).

use std::sync::Arc;

use at1::codec::columnar::SharedStrings;
use at1::codec::{backend, decode_segment, BlockSource, CodecError};
use at1::format::{self, crc32c, Backend, BlockDesc, Footer, Trailer, VerifiedBlock, HEADER_LEN};
use at1::reader::{Object, ReadError};
use sha2::{Digest, Sha256};

/// An object taken apart. Editing any field and calling [`Forged::to_bytes`]
/// gives an object whose header, block, footer and trailer checksums all
/// match; only what the fields say may be wrong.
#[derive(Debug, Clone)]
pub struct Forged {
    /// Stored bytes of each block, by block id.
    pub blocks: Vec<Vec<u8>>,
    pub footer: Footer,
    pub original_len: u64,
    pub original_sha256: [u8; 32],
    /// When set, stored as the footer body instead of `footer.encode()`:
    /// for edits the `Footer` type cannot express (a flag byte of 2, a
    /// name that is not UTF-8).
    pub footer_body: Option<Vec<u8>>,
}

impl Forged {
    /// Takes apart an object that opens.
    pub fn take_apart(object: &[u8]) -> Result<Forged, ReadError> {
        let parsed = Object::from_vec(object.to_vec())?;
        let footer = parsed.footer().clone();
        let blocks = footer
            .blocks
            .iter()
            .map(|b| object.get(b.offset as usize..(b.offset + b.stored_len) as usize).map(<[u8]>::to_vec))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ReadError::Format(format::FormatError::Truncated("a block lies outside the object".into())))?;
        let t = parsed.trailer();
        Ok(Forged { blocks, footer, original_len: t.original_len, original_sha256: t.original_sha256, footer_body: None })
    }

    /// The object's bytes: header, the blocks in id order, the footer and
    /// the trailer. Each descriptor gets the CRC-32C of its block's bytes;
    /// its lengths stay as edited (so a forged `stored_len` makes blocks
    /// that no longer tile the object, as it would on disk).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut footer = self.footer.clone();
        for (desc, bytes) in footer.blocks.iter_mut().zip(&self.blocks) {
            desc.crc32c = crc32c(bytes);
        }
        let mut out = format::encode_header().to_vec();
        for b in &self.blocks {
            out.extend_from_slice(b);
        }
        let footer_offset = out.len() as u64;
        // Stored uncompressed (§7 allows both): the fuzz target re-encodes
        // a footer per input, and zstd at the writer's level would be most
        // of its time.
        let stored = self.footer_body.clone().unwrap_or_else(|| footer.encode());
        let (raw_len, compression) = (stored.len() as u64, format::FooterCompression::None);
        let trailer = Trailer {
            footer_offset,
            footer_stored_len: stored.len() as u64,
            footer_raw_len: raw_len,
            footer_crc32c: crc32c(&stored),
            footer_compression: compression,
            original_len: self.original_len,
            original_sha256: self.original_sha256,
        };
        out.extend_from_slice(&stored);
        out.extend_from_slice(&trailer.encode());
        out
    }

    /// The decoded payload of block `id` (with its zstd dictionary).
    pub fn payload(&self, id: u32) -> Result<Vec<u8>, CodecError> {
        self.decoded(id, true)
    }

    /// A dictionary is loaded without a dictionary of its own, as the
    /// reader does: a forged dictionary chain cannot recurse.
    fn decoded(&self, id: u32, with_dict: bool) -> Result<Vec<u8>, CodecError> {
        let desc = self.desc(id)?;
        let dict = match desc.dict.filter(|_| with_dict) {
            Some(d) => Some(self.decoded(d, false)?),
            None => None,
        };
        let bytes = self.blocks.get(id as usize).ok_or_else(|| missing(id))?;
        let mut desc = desc.clone();
        desc.crc32c = crc32c(bytes);
        backend::decompress(&VerifiedBlock::check(id, &desc, bytes)?, dict.as_deref())
    }

    /// Replaces block `id` by `payload` stored as is (backend 0, no
    /// dictionary), lengths set to match.
    pub fn set_payload(&mut self, id: u32, payload: Vec<u8>) {
        if let (Some(desc), Some(bytes)) = (self.footer.blocks.get_mut(id as usize), self.blocks.get_mut(id as usize)) {
            desc.stored_len = payload.len() as u64;
            desc.decoded_len = payload.len() as u64;
            desc.backend = Backend::Stored;
            desc.dict = None;
            *bytes = payload;
        }
        self.fix_offsets();
    }

    /// Recomputes block offsets from the stored lengths (they are not
    /// stored; this keeps `footer` what a decoder would make of it).
    pub fn fix_offsets(&mut self) {
        let mut offset = HEADER_LEN;
        for b in &mut self.footer.blocks {
            b.offset = offset;
            offset = offset.saturating_add(b.stored_len);
        }
    }

    /// Makes every segment's length and CRC-32C, and the trailer's length
    /// and SHA-256, those of what the segments decode to now: after edits
    /// to payloads, the original-byte checksums pass too. Segments that do
    /// not decode keep their old values (and `false` is returned).
    pub fn reseal_segments(&mut self) -> bool {
        let mut texts = Vec::with_capacity(self.footer.segments.len());
        let mut all = true;
        for s in &self.footer.segments {
            let mut text = Vec::new();
            match decode_segment(self, &s.kind, self.footer.table.as_ref(), &mut text) {
                Ok(()) => texts.push(Some(text)),
                Err(_) => {
                    all = false;
                    texts.push(None);
                }
            }
        }
        let mut sha = Sha256::new();
        let mut offset = 0u64;
        for (s, text) in self.footer.segments.iter_mut().zip(texts) {
            if let Some(text) = text {
                s.len = text.len() as u64;
                s.crc32c = crc32c(&text);
                sha.update(&text);
            }
            s.offset = offset;
            offset = offset.saturating_add(s.len);
        }
        self.original_len = offset;
        if all {
            self.original_sha256 = sha.finalize().into();
        }
        all
    }

    fn desc(&self, id: u32) -> Result<&BlockDesc, CodecError> {
        self.footer.blocks.get(id as usize).ok_or_else(|| missing(id))
    }
}

fn missing(id: u32) -> CodecError {
    CodecError::Malformed(format!("no block {id}"))
}

impl BlockSource for Forged {
    fn payload(&self, block: u32) -> Result<Arc<Vec<u8>>, CodecError> {
        Forged::payload(self, block).map(Arc::new)
    }

    fn column_dictionary(&self, block: u32) -> Result<Arc<SharedStrings>, CodecError> {
        Ok(Arc::new(SharedStrings::decode(block, &Forged::payload(self, block)?)?))
    }
}
