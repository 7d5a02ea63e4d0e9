//! The general-purpose compressors under every block: zstd frames and raw
//! LZMA2 streams, plus "stored" for payloads they cannot shrink.
//!
//! Frames carry no checksum, content size or dictionary id of their own: the
//! block descriptor already holds the CRC-32C, the decoded length and the
//! dictionary block (docs/FORMAT.md §4.2), and at ~1,000 blocks per file the
//! bytes add up.

use liblzma::stream::{Action, Filters, LzmaOptions, Status, Stream, PRESET_EXTREME};
use zstd::zstd_safe::CParameter;

use super::CodecError;
use crate::format::{Backend, VerifiedBlock, MAX_BLOCK_BYTES};

/// The xz level that means `-9e` (preset 9 with the extreme flag).
pub const XZ_EXTREME_LEVEL: i32 = 10;

/// A reusable compressor for one worker thread: zstd contexts are costly to
/// build at high levels, so each worker keeps its own.
pub struct BlockCompressor {
    backend: Backend,
    level: i32,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    dict_id: Option<u32>,
}

impl BlockCompressor {
    pub fn new(backend: Backend, level: i32) -> Self {
        Self { backend, level, zstd: None, dict_id: None }
    }

    /// Compresses `payload`, with `dict` (block id, dictionary bytes) when
    /// given. Returns the stored bytes and the backend actually used: a
    /// payload the backend cannot shrink is stored as is, so no block costs
    /// more than its payload.
    pub fn compress(&mut self, payload: &[u8], dict: Option<(u32, &[u8])>) -> Result<(Vec<u8>, Backend), CodecError> {
        let compressed = match self.backend {
            Backend::Stored => return Ok((payload.to_vec(), Backend::Stored)),
            Backend::Zstd => self.zstd_compress(payload, dict)?,
            Backend::Xz => xz_compress(payload, self.level)?,
        };
        if compressed.len() >= payload.len() {
            Ok((payload.to_vec(), Backend::Stored))
        } else {
            Ok((compressed, self.backend))
        }
    }

    fn zstd_compress(&mut self, payload: &[u8], dict: Option<(u32, &[u8])>) -> Result<Vec<u8>, CodecError> {
        let want = dict.map(|(id, _)| id);
        if self.zstd.is_none() || self.dict_id != want {
            let mut c = match dict {
                Some((_, bytes)) => zstd::bulk::Compressor::with_dictionary(self.level, bytes),
                None => zstd::bulk::Compressor::new(self.level),
            }
            .map_err(backend_error)?;
            for p in [CParameter::ChecksumFlag(false), CParameter::ContentSizeFlag(false), CParameter::DictIdFlag(false)] {
                c.set_parameter(p).map_err(backend_error)?;
            }
            self.zstd = Some(c);
            self.dict_id = want;
        }
        let c = self.zstd.as_mut().ok_or_else(|| CodecError::Backend("no zstd context".into()))?;
        c.compress(payload).map_err(backend_error)
    }
}

fn backend_error(e: std::io::Error) -> CodecError {
    CodecError::Backend(e.to_string())
}

/// LZMA2 dictionary size for a payload of `len` bytes. The decoder derives
/// the same value from the descriptor's decoded length (§4.2), and a
/// dictionary no bigger than the payload keeps an encoder at a few MiB
/// instead of the 674 MiB preset 9 would take.
fn xz_dict_size(len: u64) -> u32 {
    len.clamp(4096, 1 << 30).next_power_of_two().min(1 << 30) as u32
}

fn xz_filters(level: i32, len: u64) -> Result<Filters, CodecError> {
    let preset = if level >= XZ_EXTREME_LEVEL { 9 | PRESET_EXTREME } else { level.clamp(0, 9) as u32 };
    let mut opts = LzmaOptions::new_preset(preset).map_err(|e| CodecError::Backend(e.to_string()))?;
    opts.dict_size(xz_dict_size(len));
    let mut filters = Filters::new();
    filters.lzma2(&opts);
    Ok(filters)
}

fn xz_compress(payload: &[u8], level: i32) -> Result<Vec<u8>, CodecError> {
    let filters = xz_filters(level, payload.len() as u64)?;
    let mut stream = Stream::new_raw_encoder(&filters).map_err(|e| CodecError::Backend(e.to_string()))?;
    let mut out = Vec::with_capacity(payload.len() / 2 + 64);
    let mut input = payload;
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(out.capacity().max(4096));
        }
        let before_in = stream.total_in();
        let status = stream.process_vec(input, &mut out, Action::Finish).map_err(|e| CodecError::Backend(e.to_string()))?;
        input = input.get((stream.total_in() - before_in) as usize..).unwrap_or_default();
        if status == Status::StreamEnd {
            return Ok(out);
        }
    }
}

fn xz_decompress(stored: &[u8], decoded_len: u64) -> Result<Vec<u8>, CodecError> {
    // The LZMA2 preset does not matter to the decoder; the dictionary size
    // must be at least the encoder's, which is a function of the length.
    let filters = xz_filters(0, decoded_len)?;
    let mut stream = Stream::new_raw_decoder(&filters).map_err(|e| CodecError::Backend(e.to_string()))?;
    let cap = usize::try_from(decoded_len).map_err(|_| CodecError::Malformed("decoded length".into()))?;
    let mut out = Vec::with_capacity(cap);
    let mut input = stored;
    loop {
        let before_in = stream.total_in();
        let before_out = out.len();
        let status = stream.process_vec(input, &mut out, Action::Finish).map_err(|e| CodecError::Malformed(format!("xz: {e}")))?;
        // liblzma consumed at most what it was given.
        input = input.get((stream.total_in() - before_in) as usize..).unwrap_or_default();
        if status == Status::StreamEnd {
            return Ok(out);
        }
        if out.len() == cap {
            // A full buffer without stream end: the stream claims more bytes
            // than the descriptor allows.
            return Err(CodecError::Malformed("xz stream is longer than its declared length".into()));
        }
        if out.len() == before_out && stream.total_in() == before_in {
            return Err(CodecError::Malformed("xz stream ends early".into()));
        }
    }
}

thread_local! {
    /// One zstd decompression context per thread: creating one costs more
    /// than decoding a small block.
    static ZSTD_DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
}

fn zstd_decompress(stored: &[u8], dict: Option<&[u8]>, len: usize) -> Result<Vec<u8>, CodecError> {
    ZSTD_DCTX.with(|cell| {
        let mut slot = cell.borrow_mut();
        let d = match slot.as_mut() {
            Some(d) => d,
            None => slot.insert(zstd::bulk::Decompressor::new().map_err(backend_error)?),
        };
        // Loading an empty dictionary clears a previous one.
        d.set_dictionary(dict.unwrap_or(&[])).map_err(backend_error)?;
        let mut out = Vec::with_capacity(len);
        d.decompress_to_buffer(stored, &mut out).map_err(|e| CodecError::Malformed(format!("zstd: {e}")))?;
        Ok(out)
    })
}

/// Decompresses a verified block into exactly `decoded_len` bytes.
pub fn decompress(block: &VerifiedBlock<'_>, dict: Option<&[u8]>) -> Result<Vec<u8>, CodecError> {
    let desc = block.desc();
    // Opening an object checks this too; here it guards every caller, since
    // the output buffer is allocated at this size before decoding.
    if desc.decoded_len > MAX_BLOCK_BYTES {
        return Err(CodecError::Malformed(format!("block {} claims {} decoded bytes, more than {MAX_BLOCK_BYTES}", block.id(), desc.decoded_len)));
    }
    let len = usize::try_from(desc.decoded_len).map_err(|_| CodecError::Malformed("decoded length".into()))?;
    let out = match desc.backend {
        Backend::Stored => block.bytes().to_vec(),
        Backend::Zstd => zstd_decompress(block.bytes(), dict, len)?,
        Backend::Xz => xz_decompress(block.bytes(), desc.decoded_len)?,
    };
    if out.len() != len {
        return Err(CodecError::Malformed(format!("block {} decoded to {} bytes, descriptor says {len}", block.id(), out.len())));
    }
    Ok(out)
}

/// The zstd level [`quick_size`] measures with: level 1 ranks alternative
/// encodings of a payload as the real levels do, at a fraction of their
/// cost.
const QUICK_LEVEL: i32 = 1;

thread_local! {
    /// One fast zstd context per thread: building one costs more than
    /// compressing a small payload, and the gate asks thousands of times.
    static QUICK_CCTX: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> = const { std::cell::RefCell::new(None) };
}

/// Bytes `payload` takes after a fast zstd pass (its own length if zstd
/// does not shrink it): the cheap estimate the encoder's choices rely on.
pub fn quick_size(payload: &[u8]) -> usize {
    QUICK_CCTX.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = zstd::bulk::Compressor::new(QUICK_LEVEL).ok();
        }
        slot.as_mut().and_then(|c| c.compress(payload).ok()).map_or(payload.len(), |c| c.len().min(payload.len()))
    })
}

/// Bytes zstd at `level` saves on `frames` with `dict` over without it
/// (negative when the dictionary makes them larger).
pub fn dictionary_gain(frames: &[&[u8]], dict: &[u8], level: i32) -> i64 {
    let (Ok(mut with), Ok(mut without)) = (zstd::bulk::Compressor::with_dictionary(level, dict), zstd::bulk::Compressor::new(level)) else { return i64::MIN };
    let size = |c: &mut zstd::bulk::Compressor, f: &[u8]| c.compress(f).map_or(f.len(), |c| c.len().min(f.len())) as i64;
    frames.iter().map(|f| size(&mut without, f) - size(&mut with, f)).sum()
}

/// Bytes `payload` takes compressed by zstd at `level` (its own length if
/// zstd does not shrink it).
pub fn zstd_size(payload: &[u8], level: i32) -> usize {
    zstd::bulk::compress(payload, level).map_or(payload.len(), |c| c.len().min(payload.len()))
}

/// Trains a zstd dictionary on samples of a file's first chunk. `None` when
/// zstd finds nothing worth a dictionary.
pub fn train_dictionary(samples: &[&[u8]], max_size: usize) -> Option<Vec<u8>> {
    let total: usize = samples.iter().map(|s| s.len()).sum();
    if samples.len() < 8 || total < max_size * 4 {
        return None;
    }
    zstd::dict::from_samples(samples, max_size).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::format::{crc32c, BlockDesc, BlockRole};

    fn round_trip(backend: Backend, level: i32, payload: &[u8]) {
        let mut c = BlockCompressor::new(backend, level);
        let (stored, used) = c.compress(payload, None).unwrap();
        let desc = BlockDesc {
            offset: 16,
            stored_len: stored.len() as u64,
            decoded_len: payload.len() as u64,
            crc32c: crc32c(&stored),
            backend: used,
            role: BlockRole::Frame,
            dict: None,
        };
        let block = VerifiedBlock::check(0, &desc, &stored).unwrap();
        assert_eq!(decompress(&block, None).unwrap(), payload);
    }

    #[test]
    fn every_backend_round_trips() {
        let text: Vec<u8> = (0..20_000u32).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
        for (b, l) in [(Backend::Zstd, 3), (Backend::Zstd, 19), (Backend::Xz, 6), (Backend::Xz, XZ_EXTREME_LEVEL), (Backend::Stored, 0)] {
            round_trip(b, l, &text);
            round_trip(b, l, b"");
            round_trip(b, l, b"x");
        }
    }

    #[test]
    fn a_block_claiming_more_than_the_limit_is_refused_before_allocating() {
        let stored = zstd::bulk::compress(b"tiny", 3).unwrap();
        for (backend, bytes) in [(Backend::Zstd, stored.as_slice()), (Backend::Xz, b"\x01\x00\x00x".as_slice())] {
            let desc = BlockDesc {
                offset: 16,
                stored_len: bytes.len() as u64,
                decoded_len: 1 << 50,
                crc32c: crc32c(bytes),
                backend,
                role: BlockRole::Frame,
                dict: None,
            };
            let err = decompress(&VerifiedBlock::check(0, &desc, bytes).unwrap(), None).unwrap_err();
            assert!(err.to_string().contains("more than 1073741824"), "{err}");
        }
    }

    #[test]
    fn incompressible_payloads_are_stored() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        let (stored, used) = BlockCompressor::new(Backend::Zstd, 19).compress(&noise, None).unwrap();
        assert_eq!(used, Backend::Stored);
        assert_eq!(stored, noise);
    }
}
