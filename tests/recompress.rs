//! The background re-encoding worker (crates/at1-volume/src/recompress.rs)
//! driven in-process.

use std::io::Write;
use std::sync::mpsc;
use std::time::Duration;

use at1::volume::{OpenFlags, Owner, Volume, VolumeConfig};

/// `len` bytes of log-like text that compresses, but not trivially: the
/// strong level works on it for seconds.
fn log_text(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 128);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while out.len() < len {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        writeln!(
            out,
            "2026-12-01T05:{:02}:{:02} INFO request {} took {} us from 10.0.{}.{}",
            (x >> 8) % 60,
            (x >> 16) % 60,
            x >> 40,
            (x >> 24) % 100_000,
            (x >> 4) % 256,
            (x >> 12) % 256
        )
        .unwrap();
    }
    out
}

/// Threads of this process named `at1-recompress` (the worker, and the
/// gate's threads it starts, which inherit its name).
fn reencoding_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok()).filter(|c| c.trim() == "at1-recompress").count()
}

/// Regression: the worker's reader stopped a re-encode at close with an
/// `Interrupted` error, which the gate's read loop (rightly) retries: the
/// chunker spun for ever at full CPU (and `close`, which then waited for
/// the worker, never returned: an unmount left the daemon running).
#[test]
fn closing_the_volume_during_a_reencode_stops_it_rather_than_spinning() {
    let store = tempfile::tempdir().unwrap();
    let volume = Volume::open(store.path(), VolumeConfig::default()).unwrap();
    let flags = OpenFlags { write: true, truncate: false };
    let (attr, h) = volume.create(1, b"big.log", 0o644, Owner { uid: 0, gid: 0 }, flags).unwrap();
    let text = log_text(48 << 20);
    for (i, piece) in text.chunks(1 << 20).enumerate() {
        volume.write(&h, (i << 20) as u64, piece).unwrap();
    }
    volume.release(&h).unwrap();
    // The worker starts once the volume has been quiet for 500 ms; then
    // re-encoding 48 MiB at the strong level takes seconds.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(reencoding_threads() > 0, "the worker is re-encoding when the volume closes");
    let (tx, rx) = mpsc::channel();
    let closing = volume.clone();
    std::thread::spawn(move || tx.send(closing.close().map_err(|e| e.to_string())));
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(result) => result.expect("close"),
        Err(_) => panic!("close did not return within 60 s: the re-encoding did not stop"),
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while reencoding_threads() > 0 {
        assert!(std::time::Instant::now() < deadline, "the re-encoding still runs 20 s after close");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Nothing was lost: the content reads back whole.
    let v = Volume::open_read_only(store.path()).unwrap();
    let h = v.open_file(attr.ino, OpenFlags::default()).unwrap();
    let mut back = Vec::new();
    while back.len() < text.len() {
        let piece = v.read(&h, back.len() as u64, 1 << 20).unwrap();
        assert!(!piece.is_empty(), "short read at {}", back.len());
        back.extend_from_slice(&piece);
    }
    assert!(back == text, "the content changed");
    v.release(&h).unwrap();
}
