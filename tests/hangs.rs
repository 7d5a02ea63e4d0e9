//! The decode pipeline ends promptly on every error and every closed
//! output (issue 7, B.1): a corrupt block late in a large object, an output
//! that blocks and then fails, a reader that stops early (`| head`).
//!
//! Each test runs under a time limit, so a hang is a failure, not a stuck
//! suite.

mod common;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use at1::format::{crc32c, encode_footer, BlockRole, CodecChoice, Trailer};
use at1::gate::GateConfig;
use at1::reader::{self, Object, Reader};
use common::*;

/// How long any of these runs may take before it counts as a hang (the
/// largest takes well under a second).
const LIMIT: Duration = Duration::from_secs(60);

/// ~24 MiB of text lines that compress like a log: 190+ raw frames of
/// 128 KiB, at zstd level 1 so that the test compresses it quickly.
fn big_object(dir: &Path) -> (PathBuf, Vec<u8>) {
    let mut text = Vec::with_capacity(25 << 20);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut i = 0u64;
    while text.len() < 24 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        writeln!(text, "{i},host{},GET /item/{},{},{}", x % 17, x % 100_003, x % 1000, (x >> 20) % 99_991).unwrap();
        i += 1;
    }
    let cfg = GateConfig { codec: CodecChoice::Raw, threads: 2, ..GateConfig::default() }.with_level(1);
    let (path, object) = compress_bytes(&text, dir, "big.at1", &cfg);
    assert!(object.footer().segments.len() > 150, "a large object: {} segments", object.footer().segments.len());
    (path, text)
}

/// The id of a frame block nine tenths into the object.
fn late_frame(object: &Object) -> usize {
    let frames: Vec<usize> = object.footer().blocks.iter().enumerate().filter(|(_, b)| b.role == BlockRole::Frame).map(|(i, _)| i).collect();
    frames[frames.len() * 9 / 10]
}

/// The object with bytes flipped in the middle of a late block (its CRC
/// no longer matches).
fn flip_late_block(object_bytes: &[u8]) -> Vec<u8> {
    let object = Object::from_vec(object_bytes.to_vec()).unwrap();
    let block = &object.footer().blocks[late_frame(&object)];
    let mut bad = object_bytes.to_vec();
    let mid = (block.offset + block.stored_len / 2) as usize;
    for b in &mut bad[mid..mid + 16] {
        *b ^= 0x5A;
    }
    bad
}

/// A structure-aware corruption: bytes of a late block changed and its
/// CRC, the footer and the trailer rewritten to match, so every checksum
/// but the decoded bytes' holds and only decoding finds it.
fn corrupt_late_block_keeping_checksums(object_bytes: &[u8]) -> Vec<u8> {
    let object = Object::from_vec(object_bytes.to_vec()).unwrap();
    let id = late_frame(&object);
    let mut footer = object.footer().clone();
    let mut bytes = flip_late_block(object_bytes);
    let desc = &mut footer.blocks[id];
    desc.crc32c = crc32c(&bytes[desc.offset as usize..(desc.offset + desc.stored_len) as usize]);
    let old = object.trailer().clone();
    bytes.truncate(old.footer_offset as usize);
    let (stored, raw_len, compression) = encode_footer(&footer);
    bytes.extend_from_slice(&stored);
    let trailer =
        Trailer { footer_stored_len: stored.len() as u64, footer_raw_len: raw_len, footer_crc32c: crc32c(&stored), footer_compression: compression, ..old };
    bytes.extend_from_slice(&trailer.encode());
    let reopened = Object::from_vec(bytes.clone()).expect("the rewritten object opens");
    reopened.check_all_blocks().expect("every block CRC holds");
    bytes
}

/// Runs `f` on its own thread and returns its result, failing the test if
/// it takes longer than [`LIMIT`] (the stuck thread is left behind).
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(LIMIT) {
        Ok(v) => v,
        Err(_) => panic!("{what} did not end within {LIMIT:?}: a hang"),
    }
}

/// An output that blocks for a while on its first write (a full pipe whose
/// reader is busy), then fails as a pipe whose reader left.
struct StallsThenCloses {
    stalled: bool,
}

impl Write for StallsThenCloses {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        if !self.stalled {
            // Long enough for the decoders to fill the pipeline's channel.
            std::thread::sleep(Duration::from_millis(500));
            self.stalled = true;
        }
        Err(io::Error::from(io::ErrorKind::BrokenPipe))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An output slower than decoding, so the channel is full when the corrupt
/// segment's turn comes.
struct Slow(u64);

impl Write for Slow {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        std::thread::sleep(Duration::from_millis(2));
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn extract_ends_its_decoders_when_the_output_closes() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = big_object(dir.path());
    let err = within("extract into an output that closes", move || {
        Reader::open(&path).unwrap().extract(&mut StallsThenCloses { stalled: false }, |_| {}).map(|_| ()).unwrap_err()
    });
    assert!(matches!(&err, reader::ReadError::Io(e) if e.kind() == io::ErrorKind::BrokenPipe), "{err}");
}

#[test]
fn extract_of_a_late_corrupt_block_into_a_slow_output_ends_with_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = big_object(dir.path());
    let bad = flip_late_block(&std::fs::read(&path).unwrap());
    let err = within("extract of a corrupt object", move || {
        let reader = Reader::new(Arc::new(Object::from_vec(bad).unwrap()), None);
        reader.extract(&mut Slow(0), |_| {}).map(|_| ()).unwrap_err()
    });
    assert!(err.to_string().contains("block"), "names the block: {err}");
}

#[test]
fn verify_of_a_late_corruption_behind_valid_checksums_ends_with_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = big_object(dir.path());
    let bad = corrupt_late_block_keeping_checksums(&std::fs::read(&path).unwrap());
    within("verify of a corrupt object", move || {
        assert!(reader::verify(Arc::new(Object::from_vec(bad).unwrap())).is_err(), "the corruption is found");
    });
}

/// Runs a shell pipeline under `timeout`; returns (status, stdout, stderr).
fn pipeline(cmd: &str) -> (i32, String, String) {
    let start = Instant::now();
    let out = sh(&format!("timeout -k 5 {} bash -c {}", LIMIT.as_secs(), shell_quote(cmd)));
    assert!(out.0 != 124 && out.0 != 137, "`{cmd}` hung: killed after {:?}", start.elapsed());
    out
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[test]
fn decompress_of_a_late_corrupt_block_ends_with_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = big_object(dir.path());
    let bad = dir.path().join("bad.at1");
    std::fs::write(&bad, flip_late_block(&std::fs::read(&path).unwrap())).unwrap();
    let at1 = at1_bin().display().to_string();
    let out = dir.path().join("out.txt");
    // Into a file, and into a pipe whose reader is slower than decoding.
    let (code, _, err) = pipeline(&format!("'{at1}' decompress '{}' '{}'", bad.display(), out.display()));
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("bad.at1") && err.contains("block"), "{err}");
    assert!(!out.exists(), "no partial output");
    let (_, _, err) = pipeline(&format!("'{at1}' decompress -c '{}' | (sleep 1; cat > /dev/null); echo \"${{PIPESTATUS[0]}}\" >&2", bad.display()));
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "one error line, then the exit code: {err}");
    assert!(lines[0].contains("bad.at1") && lines[0].contains("block"), "{err}");
    assert_eq!(lines[1], "1", "decompress exited 1: {err}");
}

#[test]
fn verify_of_a_late_corruption_behind_valid_checksums_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = big_object(dir.path());
    let bad = dir.path().join("bad.at1");
    std::fs::write(&bad, corrupt_late_block_keeping_checksums(&std::fs::read(&path).unwrap())).unwrap();
    let at1 = at1_bin().display().to_string();
    let (code, out, err) = pipeline(&format!("'{at1}' verify '{}' '{}'", path.display(), bad.display()));
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("big.at1: OK") && out.contains("bad.at1: FAILED"), "{out}");
}

#[test]
fn decompress_into_head_ends_promptly_and_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let (path, text) = big_object(dir.path());
    let at1 = at1_bin().display().to_string();
    let got = dir.path().join("got");
    let (code, _, err) = pipeline(&format!("'{at1}' decompress '{}' - | head -c 10 > '{}'; echo \"${{PIPESTATUS[0]}}\" >&2", path.display(), got.display()));
    assert_eq!(code, 0, "{err}");
    // Killed by SIGPIPE (128 + 13), as cat and zstd are; nothing printed.
    assert_eq!(err, "141\n", "quiet, and ended by SIGPIPE");
    assert_eq!(std::fs::read(&got).unwrap(), &text[..10]);
}
