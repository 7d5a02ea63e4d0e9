//! Files as extents, through a real mount: a file is an ordered map of
//! verified objects of at most `--segment-size` bytes; a write re-encodes
//! only the extents it touches; reads, xattrs, SQL and verify see one
//! file whatever its extents.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::mount::Mounted;
use common::*;
use serde_json::Value;
use sha2::Digest;

const SEGMENT: usize = 256 << 10;

fn stats(m: &Mounted) -> Value {
    serde_json::from_str(&std::fs::read_to_string(m.path(".at1/stats")).unwrap()).unwrap()
}

fn extents_written(m: &Mounted) -> u64 {
    stats(m)["extents_written"].as_u64().unwrap()
}

fn xattr(f: &Path, name: &str) -> String {
    sh_ok(&format!("getfattr -n user.at1.{name} --only-values '{}'", f.display()))
}

/// Lines of text (compressible, each one different).
fn text(lines: std::ops::Range<usize>) -> Vec<u8> {
    lines.flat_map(|i| format!("{i:08},row {i} of the extents test,{}\n", i * 7919 % 10007).into_bytes()).collect()
}

fn sha_hex(data: &[u8]) -> String {
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_write_re_encodes_only_the_extents_it_touches_and_the_file_reads_back_whole() {
    let Some(m) = Mounted::new(&["--segment-size", "256KiB"]) else { return };
    let f = m.path("big.txt");
    let mut want = text(0..40_000);
    want.truncate(6 * SEGMENT);
    std::fs::write(&f, &want).unwrap();
    assert_eq!(xattr(&f, "segments"), "6");
    assert_eq!(extents_written(&m), 6);
    assert_eq!(std::fs::read(&f).unwrap(), want);

    // 4 KiB in the middle: one extent encoded again.
    let patch = vec![b'#'; 4096];
    let w = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
    w.write_all_at(&patch, 700_000).unwrap();
    drop(w);
    want[700_000..704_096].copy_from_slice(&patch);
    assert_eq!(extents_written(&m), 7, "only the extent holding the change");
    assert_eq!(xattr(&f, "segments"), "6");
    assert_eq!(std::fs::read(&f).unwrap(), want);

    // An append after a full extent adds one; the next takes it along.
    for line in [&b"appended line one\n"[..], b"appended line two\n"] {
        let mut a = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
        a.write_all(line).unwrap();
        drop(a);
        want.extend_from_slice(line);
    }
    assert_eq!(xattr(&f, "segments"), "7");
    assert_eq!(extents_written(&m), 9, "each append encoded only the small last extent");
    assert_eq!(std::fs::read(&f).unwrap(), want);
    assert_eq!(xattr(&f, "sha256"), sha_hex(&want));
    assert_eq!(xattr(&f, "original_bytes"), want.len().to_string());

    // A truncate cuts the map: the extent it cuts is encoded again.
    std::fs::OpenOptions::new().write(true).open(&f).unwrap().set_len(500_000).unwrap();
    want.truncate(500_000);
    assert_eq!(xattr(&f, "segments"), "2");
    assert_eq!(std::fs::read(&f).unwrap(), want);

    // Writes past the end leave zeros between; a reader of the writer's
    // handle sees its own writes before the close.
    let mut w = std::fs::OpenOptions::new().read(true).write(true).open(&f).unwrap();
    w.seek(SeekFrom::Start(900_000)).unwrap();
    w.write_all(b"far").unwrap();
    let mut seen = [0u8; 6];
    w.read_exact_at(&mut seen, 899_997).unwrap();
    assert_eq!(&seen, b"\0\0\0far");
    drop(w);
    want.resize(900_000, 0);
    want.extend_from_slice(b"far");
    assert_eq!(std::fs::read(&f).unwrap(), want);

    let mut m = m;
    m.unmount();
    let out = run_at1(&["verify", m.store.to_str().unwrap()]);
    assert!(out.status.success(), "verify: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

fn run_at1(args: &[&str]) -> std::process::Output {
    std::process::Command::new(at1_bin()).args(args).output().unwrap()
}

fn query(m: &Mounted, sql: &str) -> Value {
    let out = sh_ok(&format!("echo \"{sql}\" > '{0}' && cat '{0}'", m.path(".at1/sql").display()));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn sql_over_a_csv_of_many_extents_equals_sql_over_it_written_at_once() {
    let src = corpus_dir().join("csv/weather.csv");
    let Ok(data) = std::fs::read(&src) else { return };
    let Some(m) = Mounted::new(&["--segment-size", "256KiB"]) else { return };
    std::fs::write(m.path("once.csv"), &data).unwrap();
    // Appended in batches of about 1,000 lines, each a close.
    let lines: Vec<&[u8]> = data.split_inclusive(|&b| b == b'\n').collect();
    for batch in lines.chunks(1000) {
        let mut a = std::fs::OpenOptions::new().create(true).append(true).open(m.path("appended.csv")).unwrap();
        a.write_all(&batch.concat()).unwrap();
    }
    assert_eq!(std::fs::read(m.path("appended.csv")).unwrap(), data);
    assert!(xattr(&m.path("appended.csv"), "segments").parse::<u32>().unwrap() > 2);
    assert!(xattr(&m.path("once.csv"), "segments").parse::<u32>().unwrap() > 2);
    for sql in [
        "SELECT COUNT(*) FROM {f} WHERE origin = 'JFK'",
        "SELECT origin, COUNT(*) AS n FROM {f} GROUP BY origin ORDER BY origin",
        "SELECT MAX(temp), MIN(temp) FROM {f}",
    ] {
        let a = query(&m, &sql.replace("{f}", "once.csv"));
        let b = query(&m, &sql.replace("{f}", "appended.csv"));
        assert_eq!(a["rows"], b["rows"], "{sql}");
        assert!(a["error"].is_null(), "{a}");
    }
    assert_eq!(query(&m, "SELECT COUNT(*) FROM appended.csv WHERE origin = 'JFK'")["rows"][0][0], 8706);
}

/// A store written before extents kept a file's one object in its inode
/// row: what the previous version left is made here from a store of this
/// one (the extents moved back, the table dropped), then mounted.
#[test]
fn a_store_made_before_extents_mounts_reads_and_takes_writes() {
    let Some(mut m) = Mounted::new(&[]) else { return };
    let want = text(0..20_000);
    std::fs::write(m.path("old.txt"), &want).unwrap();
    m.unmount();
    {
        let db = rusqlite::Connection::open(m.store.join("meta.db")).unwrap();
        db.execute_batch(
            "UPDATE inodes SET object = (SELECT object FROM extents x WHERE x.ino = inodes.ino), \
             stored_len = (SELECT stored_len FROM extents x WHERE x.ino = inodes.ino), \
             sha256 = (SELECT sha256 FROM extents x WHERE x.ino = inodes.ino) \
             WHERE ino IN (SELECT ino FROM extents); DROP TABLE extents;",
        )
        .unwrap();
    }
    let m = Mounted::new_on_store(&m, &["--segment-size", "256KiB"]);
    let f = m.path("old.txt");
    assert_eq!(std::fs::read(&f).unwrap(), want);
    assert_eq!(xattr(&f, "segments"), "1");
    let mut a = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
    a.write_all(b"one more line\n").unwrap();
    drop(a);
    let mut want = want;
    want.extend_from_slice(b"one more line\n");
    assert_eq!(std::fs::read(&f).unwrap(), want);
    assert_eq!(xattr(&f, "sha256"), sha_hex(&want));
}
