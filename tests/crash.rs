//! Crash safety: a daemon killed with SIGKILL in the middle of a large write
//! (and in the middle of a commit) loses nothing that was committed, shows
//! no partial object, and leaves nothing behind after a remount — which also
//! clears the stale mount point by itself.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::mount::{is_mounted, Mounted};
use common::*;

fn committed_files(m: &Mounted) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (i, f) in ["csv/weather.csv", "logs/Linux_2k.log", "json/twitter.json"].iter().enumerate() {
        let data = std::fs::read(corpus_dir().join(f)).unwrap_or_else(|_| format!("file {i}\n").repeat(1000).into_bytes());
        let name = format!("committed{i}");
        std::fs::write(m.path(&name), &data).unwrap();
        out.push((name, data));
    }
    out
}

fn assert_recovered(m: &Mounted, committed: &[(String, Vec<u8>)]) {
    for (name, data) in committed {
        assert_eq!(&std::fs::read(m.path(name)).unwrap(), data, "{name} changed after the crash");
    }
    for dir in ["staging", "tmp"] {
        let left: Vec<_> = std::fs::read_dir(m.store.join(dir)).unwrap().collect();
        assert!(left.is_empty(), "{dir} leftovers: {left:?}");
    }
    // Every object is whole, and every file's content checks.
    for object in store_objects(&m.store) {
        sh_ok(&format!("'{}' verify '{}'", at1_bin().display(), object.display()));
    }
    sh_ok(&format!("'{}' verify '{}'", at1_bin().display(), m.mnt.display()));
}

/// Writes until killed; returns when the writes start failing.
fn write_until_failure(path: std::path::PathBuf) -> std::thread::JoinHandle<u64> {
    // No spawn may flush (commit) this handle: see `writing_window`.
    let window = writing_window();
    std::thread::spawn(move || {
        let _window = window;
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        let mut written = 0u64;
        while written < 4 << 30 {
            if f.write_all(&chunk).is_err() {
                break;
            }
            written += chunk.len() as u64;
        }
        written
    })
}

#[test]
fn kill_during_a_large_write_loses_nothing_committed() {
    let Some(mut m) = Mounted::new(&[]) else { return };
    let committed = committed_files(&m);
    let writer = write_until_failure(m.path("big.bin"));
    // Let it get going (staging files have no name to wait for), then
    // crash the daemon.
    std::thread::sleep(Duration::from_millis(1500));
    m.kill_daemon();
    let written = writer.join().unwrap();
    assert!(written > 0, "the write had started");
    assert!(is_mounted(&m.mnt), "the killed daemon left a stale mount");
    m.remount_after_crash();
    assert_recovered(&m, &committed);
    // The file being written was never committed: it is empty, not partial.
    assert_eq!(std::fs::metadata(m.path("big.bin")).unwrap().len(), 0);
}

#[test]
fn kill_during_a_commit_keeps_the_previous_version() {
    let Some(mut m) = Mounted::new(&[]) else { return };
    let committed = committed_files(&m);
    std::fs::write(m.path("doc.txt"), b"previous version\n").unwrap();
    // A big rewrite, then close: the commit (the gate) runs at close.
    let path = m.path("doc.txt");
    // No spawn may flush (commit) a partial rewrite: see `writing_window`.
    let window = writing_window();
    let closer = std::thread::spawn(move || {
        let _window = window;
        let mut f = std::fs::File::create(&path).unwrap();
        let line = b"a line of text that compresses and takes a while to verify\n";
        for _ in 0..(64 << 20) / line.len() {
            if f.write_all(line).is_err() {
                return;
            }
        }
        let _ = f.sync_all(); // commit starts here
    });
    // Wait until the gate is writing its temp object, then crash.
    let tmp = m.store.join("tmp");
    let start = Instant::now();
    loop {
        let temp = std::fs::read_dir(&tmp).unwrap().flatten().any(|e| e.file_name().to_string_lossy().ends_with(".part"));
        if temp || start.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    m.kill_daemon();
    let _ = closer.join();
    m.remount_after_crash();
    assert_recovered(&m, &committed);
    assert_eq!(std::fs::read(m.path("doc.txt")).unwrap(), b"previous version\n");
}

/// Found by the model through a mount: a daemon killed right after its
/// root was looked at left a stale mount that the next `at1 mount` took for
/// a live one ("busy") — it asked with a stat, which the kernel answered
/// from its attribute cache. It asks with a listing now.
#[test]
fn a_stale_mount_whose_root_attributes_are_cached_is_detached() {
    let Some(mut m) = Mounted::new(&[]) else { return };
    for round in 0..5 {
        let name = format!("f{round}");
        std::fs::write(m.path(&name), name.as_bytes()).unwrap();
        std::fs::metadata(&m.mnt).unwrap(); // the root's attributes, cached
        m.kill_daemon();
        m.remount_after_crash(); // panics if the daemon refuses the mount point
        assert_eq!(std::fs::read(m.path(&name)).unwrap(), name.as_bytes());
    }
}
