//! The store's administration commands as users run them: `at1 log` (the
//! journal), `at1 fsck [--repair]` (damage, each kind made by tampering
//! with meta.db and objects/), and `at1 verify STORE` against a tampered
//! journal and tampered objects.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use rusqlite::{params, Connection};
use sha2::{Digest, Sha256};

use at1::gate::GateConfig;
use at1::volume::{Owner, Volume, VolumeConfig};
use common::*;

const ROOT: Owner = Owner { uid: 0, gid: 0 };
const A: &[u8] = b"the first file's bytes\n";
const B: &[u8] = b"the second file, a little longer than the first\n";

fn at1(args: &[&str]) -> Output {
    Command::new(at1_bin()).args(args).stdin(Stdio::null()).output().expect("at1 runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn sha(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// A closed store holding /docs/a.txt and /b.txt (imported), then /b.txt
/// renamed to /docs/c.txt and /docs/d made: events 1 mkdir /docs, 2
/// import /docs/a.txt, 3 import /b.txt, 4 rename, 5 mkdir /docs/d.
fn sample_store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let volume = Volume::open(&store, VolumeConfig::default()).unwrap();
    let docs = volume.mkdir(1, b"docs", 0o755, ROOT).unwrap().ino;
    for (path, data) in [("docs/a.txt", A), ("b.txt", B)] {
        let object = dir.path().join("object.at1");
        at1::gate::compress_to_path(data, &object, &GateConfig::default(), &|_| {}).unwrap();
        volume.import(&object, path, 0o644, ROOT).unwrap();
    }
    volume.rename(1, b"b.txt", docs, b"c.txt", at1::volume::RenameMode::Replace).unwrap();
    volume.mkdir(docs, b"d", 0o755, ROOT).unwrap();
    volume.close().unwrap();
    drop(volume);
    dir
}

fn store_of(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("store")
}

fn db(store: &Path) -> Connection {
    Connection::open(store.join("meta.db")).unwrap()
}

fn ino_named(store: &Path, name: &str) -> i64 {
    db(store).query_row("SELECT ino FROM entries WHERE name = ?1", [name.as_bytes().to_vec()], |r| r.get(0)).unwrap()
}

/// The object file holding the content of the file named `name`.
fn object_of(store: &Path, name: &str) -> PathBuf {
    let id: Vec<u8> = db(store)
        .query_row(
            "SELECT x.object FROM extents x JOIN entries e ON e.ino = x.ino WHERE e.name = ?1 ORDER BY x.start LIMIT 1",
            [name.as_bytes().to_vec()],
            |r| r.get(0),
        )
        .unwrap();
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    store.join("objects").join(&hex[..2]).join(format!("{}.at1", &hex[2..]))
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

// -------------------------------------------------------------- at1 log

#[test]
fn log_prints_every_event_with_seq_time_op_paths_inode_and_sha256() {
    let d = sample_store();
    let store = store_of(&d);
    let out = at1(&["log", store.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    for (i, line) in lines.iter().enumerate() {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields[0], (i + 1).to_string(), "{line}");
        assert!(fields[1].starts_with("20") && fields[1].ends_with('Z'), "an RFC 3339 time: {line}");
    }
    let a = ino_named(&store, "a.txt");
    assert_eq!(lines[1], format!("{} import /docs/a.txt ino={a} sha256={}", lines[1].split(' ').take(2).collect::<Vec<_>>().join(" "), sha(A)));
    assert!(lines[0].contains(" mkdir /docs ino="), "{}", lines[0]);
    assert!(lines[3].contains(" rename /b.txt -> /docs/c.txt ino="), "{}", lines[3]);
}

#[test]
fn log_path_keeps_events_naming_the_path_or_a_path_under_it() {
    let d = sample_store();
    let store = store_of(&d);
    let ops = |path: &str| -> Vec<String> {
        let out = at1(&["log", store.to_str().unwrap(), "--path", path]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).lines().map(|l| l.split(' ').take(4).skip(2).collect::<Vec<_>>().join(" ")).collect()
    };
    assert_eq!(ops("/docs"), ["mkdir /docs", "import /docs/a.txt", "rename /b.txt", "mkdir /docs/d"]);
    assert_eq!(ops("docs/"), ops("/docs"), "relative and trailing-slash forms name the same path");
    assert_eq!(ops("/b.txt"), ["import /b.txt", "rename /b.txt"]);
    assert_eq!(ops("/docs/c.txt"), ["rename /b.txt"], "a rename's destination counts");
    assert!(ops("/doc").is_empty(), "a name prefix is not a directory");
}

#[test]
fn log_json_is_one_object_per_line() {
    let d = sample_store();
    let store = store_of(&d);
    let out = at1(&["log", store.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let events: Vec<serde_json::Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).expect("a JSON object per line")).collect();
    assert_eq!(events.len(), 5);
    let import = &events[1];
    assert_eq!(import["seq"], 2);
    assert_eq!(import["op"], "import");
    assert_eq!(import["paths"], serde_json::json!(["/docs/a.txt"]));
    assert_eq!(import["ino"], ino_named(&store, "a.txt"));
    assert_eq!(import["sha256"], sha(A));
    assert!(import["time"].as_str().unwrap().ends_with('Z') && import["time_ns"].as_i64().unwrap() > 0);
    assert_eq!(import["hash"].as_str().unwrap().len(), 64);
    assert_eq!(events[3]["paths"], serde_json::json!(["/b.txt", "/docs/c.txt"]));
    assert!(events[0]["sha256"].is_null());
}

#[test]
fn log_since_takes_an_rfc3339_time_or_unix_seconds() {
    let d = sample_store();
    let store = store_of(&d);
    let count = |since: &str| {
        let out = at1(&["log", store.to_str().unwrap(), "--since", since]);
        assert!(out.status.success(), "{since}: {}", stderr(&out));
        stdout(&out).lines().count()
    };
    assert_eq!(count("0"), 5);
    assert_eq!(count("2000-01-01T00:00:00Z"), 5);
    assert_eq!(count("2200-01-01T00:00:00Z"), 0);
    assert_eq!(count("7258118400"), 0, "2200 as unix seconds");
    // From the time of event 3 on: events 3, 4, 5 (same time or later).
    let json = stdout(&at1(&["log", store.to_str().unwrap(), "--json"]));
    let third: serde_json::Value = serde_json::from_str(json.lines().nth(2).unwrap()).unwrap();
    assert_eq!(count(third["time"].as_str().unwrap()), 3);
    let bad = at1(&["log", store.to_str().unwrap(), "--since", "yesterday"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert_eq!(stderr(&bad).trim().lines().count(), 1, "{}", stderr(&bad));
}

#[test]
fn log_of_a_directory_that_is_not_a_store_is_a_one_line_error() {
    let d = tempfile::tempdir().unwrap();
    let out = at1(&["log", d.path().join("nothing").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
}

#[test]
fn log_reads_a_mounted_store() {
    let Some(m) = common::mount::Mounted::new(&[]) else { return };
    std::fs::write(m.path("live.txt"), b"written through the mount\n").unwrap();
    let out = at1(&["log", m.store.to_str().unwrap(), "--path", "/live.txt"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.lines().any(|l| l.contains(" write /live.txt ") && l.contains(&sha(b"written through the mount\n"))), "{text}");
    // The mount still serves.
    assert_eq!(std::fs::read(m.path("live.txt")).unwrap(), b"written through the mount\n");
}

// ------------------------------------------------------------- at1 fsck

fn fsck(store: &Path, repair: bool) -> (Option<i32>, String) {
    let mut args = vec!["fsck", store.to_str().unwrap()];
    if repair {
        args.push("--repair");
    }
    let out = at1(&args);
    (out.status.code(), stdout(&out) + &stderr(&out))
}

#[test]
fn fsck_of_a_sound_store_finds_nothing() {
    let d = sample_store();
    let (code, out) = fsck(&store_of(&d), false);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("5 inodes, 4 entries, 2 objects, 5 journal events: 0 damage(s)"), "{out}");
}

#[test]
fn fsck_reports_an_entry_naming_no_inode_and_repair_leaves_it() {
    let d = sample_store();
    let store = store_of(&d);
    let docs = ino_named(&store, "docs");
    db(&store).execute("INSERT INTO entries (parent, name, ino) VALUES (?1, ?2, 999)", params![docs, b"ghost".to_vec()]).unwrap();
    let (code, out) = fsck(&store, false);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("DAMAGE: /docs/ghost: names inode 999, which does not exist"), "{out}");
    let (code, out) = fsck(&store, true);
    assert_eq!(code, Some(3), "not provable, so not repaired: {out}");
    let left: i64 = db(&store).query_row("SELECT COUNT(*) FROM entries WHERE ino = 999", [], |r| r.get(0)).unwrap();
    assert_eq!(left, 1, "repair deletes nothing");
}

#[test]
fn fsck_reports_wrong_link_counts_and_repair_sets_them_from_the_entries() {
    let d = sample_store();
    let store = store_of(&d);
    let (a, docs) = (ino_named(&store, "a.txt"), ino_named(&store, "docs"));
    db(&store).execute("UPDATE inodes SET nlink = 5 WHERE ino = ?1", [a]).unwrap();
    db(&store).execute("UPDATE inodes SET nlink = 2 WHERE ino = ?1", [docs]).unwrap();
    let (code, out) = fsck(&store, false);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains(&format!("/docs/a.txt: inode {a} has link count 5 where its names make 1")), "{out}");
    assert!(out.contains(&format!("/docs: inode {docs} has link count 2 where its names make 3")), "a directory: 2 + its one subdirectory: {out}");
    let (code, out) = fsck(&store, true);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("REPAIRED: /docs/a.txt") && out.contains("REPAIRED: /docs:"), "{out}");
    let nlink = |ino: i64| -> i64 { db(&store).query_row("SELECT nlink FROM inodes WHERE ino = ?1", [ino], |r| r.get(0)).unwrap() };
    assert_eq!((nlink(a), nlink(docs)), (1, 3));
    let (code, out) = fsck(&store, false);
    assert_eq!(code, Some(0), "{out}");
    // Each repair is journaled, and the chain holds.
    let log = stdout(&at1(&["log", store.to_str().unwrap()]));
    assert_eq!(log.lines().filter(|l| l.contains(" repair ")).count(), 2, "{log}");
    assert_eq!(at1(&["verify", store.to_str().unwrap()]).status.code(), Some(0));
}

#[test]
fn fsck_reports_an_inode_named_by_nothing_that_is_no_orphan() {
    let d = sample_store();
    let store = store_of(&d);
    let c = ino_named(&store, "c.txt");
    db(&store).execute("DELETE FROM entries WHERE ino = ?1", [c]).unwrap();
    let (code, out) = fsck(&store, false);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains(&format!("inode {c} (File) is named by no entry and is not an orphan")), "{out}");
    assert!(!out.contains("referenced by nothing"), "its object is still its content: {out}");
    // An orphan (unlinked while open) is not damage.
    db(&store).execute("INSERT INTO orphans (ino) VALUES (?1)", [c]).unwrap();
    let (code, out) = fsck(&store, false);
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn fsck_reports_missing_undecodable_and_mismatched_contents_under_their_paths() {
    let d = sample_store();
    let store = store_of(&d);
    std::fs::remove_file(object_of(&store, "a.txt")).unwrap();
    let c = object_of(&store, "c.txt");
    flip_byte(&c, std::fs::metadata(&c).unwrap().len() as usize / 2);
    let (code, out) = fsck(&store, false);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.lines().any(|l| l.contains("DAMAGE: /docs/a.txt: object ") && l.ends_with(": missing")), "{out}");
    assert!(out.lines().any(|l| l.contains("DAMAGE: /docs/c.txt: object ")), "{out}");
    // A content recorded with another SHA-256 than its object holds.
    let d = sample_store();
    let store = store_of(&d);
    db(&store).execute("UPDATE extents SET sha256 = zeroblob(32) WHERE ino = ?1", [ino_named(&store, "a.txt")]).unwrap();
    let (code, out) = fsck(&store, true);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("/docs/a.txt: object ") && out.contains(&format!("holds content with SHA-256 {}", sha(A))), "{out}");
    assert!(object_of(&store, "a.txt").exists(), "repair deletes no content");
}

#[test]
fn fsck_reports_unreferenced_objects_and_repair_quarantines_them() {
    let d = sample_store();
    let store = store_of(&d);
    let a = object_of(&store, "a.txt");
    let stray = store.join("objects/ee/ffffffffffffffffffffffffffffff.at1");
    let listed = store.join("objects/ee/eeeeeeeeeeeeeeeeeeeeeeeeeeeeee.at1");
    std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
    std::fs::copy(&a, &stray).unwrap();
    std::fs::copy(&a, &listed).unwrap();
    // On the garbage list (awaiting collection): not damage.
    db(&store).execute("INSERT INTO garbage (object, released_at) VALUES (?1, 1)", [vec![0xee_u8; 16]]).unwrap();
    let (code, out) = fsck(&store, false);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("DAMAGE: objects/ee/ffffffffffffffffffffffffffffff.at1: object eeff"), "{out}");
    assert!(!out.contains("eeeeeeeeeeeeeeeeeeeeeeeeeeeeee.at1"), "{out}");
    let (code, out) = fsck(&store, true);
    assert_eq!(code, Some(0), "{out}");
    assert!(!stray.exists() && store.join("quarantine/eeffffffffffffffffffffffffffffff.at1").exists(), "moved, not deleted: {out}");
    assert!(listed.exists());
    assert_eq!(fsck(&store, false).0, Some(0));
}

#[test]
fn fsck_reports_a_broken_journal_chain_by_seq() {
    let d = sample_store();
    let store = store_of(&d);
    db(&store).execute("UPDATE journal SET detail = '{\"ino\":7,\"path\":\"/forged\"}' WHERE seq = 3", []).unwrap();
    let (code, out) = fsck(&store, false);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("DAMAGE: journal: event 3 does not match its hash"), "{out}");
}

#[test]
fn fsck_repair_of_a_store_in_use_is_refused_in_one_line() {
    let d = sample_store();
    let store = store_of(&d);
    let volume = Volume::open(&store, VolumeConfig::default()).unwrap();
    let out = at1(&["fsck", store.to_str().unwrap(), "--repair"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("in use") && stderr(&out).trim().lines().count() == 1, "{}", stderr(&out));
    // Without --repair it reads beside the daemon.
    let out = at1(&["fsck", store.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    volume.close().unwrap();
}

// ---------------------------------------------- at1 verify, tampered with

fn verify(store: &Path) -> (Option<i32>, String) {
    let out = at1(&["verify", store.to_str().unwrap()]);
    (out.status.code(), stdout(&out) + &stderr(&out))
}

#[test]
fn verify_reports_a_changed_event_by_its_seq() {
    let d = sample_store();
    let store = store_of(&d);
    db(&store).execute("UPDATE journal SET time = time + 1 WHERE seq = 2", []).unwrap();
    let (code, out) = verify(&store);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("journal: event 2 does not match its hash"), "{out}");
    assert!(!out.contains("event 3 "), "only the changed event: {out}");
}

#[test]
fn verify_reports_a_removed_event_by_its_seq() {
    let d = sample_store();
    let store = store_of(&d);
    db(&store).execute("DELETE FROM journal WHERE seq = 3", []).unwrap();
    let (code, out) = verify(&store);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("journal: events 3 to 3 are missing (removed)"), "{out}");
}

#[test]
fn verify_reports_two_swapped_events_by_seq() {
    let d = sample_store();
    let store = store_of(&d);
    let conn = db(&store);
    conn.execute_batch("UPDATE journal SET seq = -1 WHERE seq = 2; UPDATE journal SET seq = 2 WHERE seq = 3; UPDATE journal SET seq = 3 WHERE seq = -1;")
        .unwrap();
    drop(conn);
    let (code, out) = verify(&store);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("journal: event 2 does not match its hash"), "{out}");
}

#[test]
fn verify_reports_a_missing_object_under_its_file_path() {
    let d = sample_store();
    let store = store_of(&d);
    std::fs::remove_file(object_of(&store, "a.txt")).unwrap();
    let (code, out) = verify(&store);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.lines().any(|l| l.starts_with(&format!("{}/docs/a.txt: FAILED: object ", store.display())) && l.ends_with("missing")), "{out}");
    assert!(!out.contains("c.txt"), "{out}");
}

#[test]
fn verify_reports_an_object_with_one_byte_flipped_under_its_file_path() {
    let d = sample_store();
    let store = store_of(&d);
    let object = object_of(&store, "c.txt");
    flip_byte(&object, std::fs::metadata(&object).unwrap().len() as usize / 2);
    let (code, out) = verify(&store);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains(&format!("{}/docs/c.txt: FAILED: object ", store.display())), "{out}");
    assert!(!out.contains("a.txt"), "{out}");
}

#[test]
fn verify_reports_two_swapped_objects_under_both_paths() {
    let d = sample_store();
    let store = store_of(&d);
    let (a, c) = (object_of(&store, "a.txt"), object_of(&store, "c.txt"));
    let tmp = store.join("swap");
    std::fs::rename(&a, &tmp).unwrap();
    std::fs::rename(&c, &a).unwrap();
    std::fs::rename(&tmp, &c).unwrap();
    let (code, out) = verify(&store);
    assert_eq!(code, Some(3), "{out}");
    for name in ["a.txt", "c.txt"] {
        assert!(out.contains(&format!("{}/docs/{name}: FAILED: object ", store.display())), "{name}: {out}");
    }
}

// ------------------------------------------ garbage collection's guard

/// The defect: a garbage row naming an object that is still a file's
/// content (a wrong row, by a bug or by hand) made collection delete the
/// file's content. Collection now keeps an object any inode names.
#[test]
fn garbage_collection_keeps_an_object_still_named_by_a_file() {
    let d = sample_store();
    let store = store_of(&d);
    let object = object_of(&store, "a.txt");
    let id: Vec<u8> =
        db(&store).query_row("SELECT object FROM extents WHERE ino = ?1 ORDER BY start LIMIT 1", [ino_named(&store, "a.txt")], |r| r.get(0)).unwrap();
    db(&store).execute("INSERT INTO garbage (object, released_at) VALUES (?1, 1)", [id]).unwrap();
    // Opening collects the garbage whose release is durable.
    let volume = Volume::open(&store, VolumeConfig::default()).unwrap();
    volume.close().unwrap();
    drop(volume);
    assert!(object.exists(), "the content of /docs/a.txt is kept");
    let rows: i64 = db(&store).query_row("SELECT COUNT(*) FROM garbage", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 0, "the wrong row goes");
    assert_eq!(verify(&store).0, Some(0));
}
