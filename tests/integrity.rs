//! Integrity through a real mount (issue 8, item 6): a file whose object
//! was deleted or corrupted behind the daemon reads as EIO — never empty or
//! wrong bytes — with a log line naming the file, while `stat`, `mv`,
//! overwrite and `rm` of it still work.

mod common;

use std::path::{Path, PathBuf};

use common::mount::Mounted;

const DATA: &[u8] = b"the bytes this file must give back, or nothing at all\n";

/// The object file holding the content of the file named `name`.
fn object_of(store: &Path, name: &str) -> PathBuf {
    let db = rusqlite::Connection::open(store.join("meta.db")).unwrap();
    let id: Vec<u8> = db
        .query_row(
            "SELECT x.object FROM extents x JOIN entries e ON e.ino = x.ino WHERE e.name = ?1 ORDER BY x.start LIMIT 1",
            [name.as_bytes().to_vec()],
            |r| r.get(0),
        )
        .unwrap();
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    store.join("objects").join(&hex[..2]).join(format!("{}.at1", &hex[2..]))
}

/// A mount holding /dir/damaged.txt and /dir/fine.txt whose damaged.txt
/// object `damage` changes while unmounted; mounted again (nothing
/// cached) for the test.
fn mount_with_damage(damage: impl FnOnce(&Path)) -> Option<Mounted> {
    let mut m = Mounted::new(&[])?;
    std::fs::create_dir(m.path("dir")).unwrap();
    std::fs::write(m.path("dir/damaged.txt"), DATA).unwrap();
    std::fs::write(m.path("dir/fine.txt"), DATA).unwrap();
    m.settle();
    m.unmount();
    damage(&object_of(&m.store, "damaged.txt"));
    m.remount();
    Some(m)
}

/// Reads fail with EIO, twice (nothing cached), the log names the path,
/// and the file can still be stat'ed, moved, overwritten and removed.
fn check_damaged_file_is_eio_yet_manageable(m: &Mounted) {
    for _ in 0..2 {
        let err = std::fs::read(m.path("dir/damaged.txt")).expect_err("a damaged file must not read");
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    }
    let (code, out, err) = common::sh(&format!("cat '{}'", m.path("dir/damaged.txt").display()));
    assert!(code != 0 && out.is_empty() && err.contains("Input/output error"), "cat: {code} {out:?} {err}");
    let log = m.log_text();
    assert!(log.lines().any(|l| l.contains("/dir/damaged.txt")), "a log line names the file:\n{log}");
    // The rest of the store is untouched.
    assert_eq!(std::fs::read(m.path("dir/fine.txt")).unwrap(), DATA);
    // stat, mv, overwrite, rm.
    assert_eq!(std::fs::metadata(m.path("dir/damaged.txt")).unwrap().len(), DATA.len() as u64);
    std::fs::rename(m.path("dir/damaged.txt"), m.path("moved.txt")).unwrap();
    assert_eq!(std::fs::read(m.path("moved.txt")).err().and_then(|e| e.raw_os_error()), Some(libc::EIO));
    std::fs::write(m.path("moved.txt"), b"new content\n").unwrap();
    assert_eq!(std::fs::read(m.path("moved.txt")).unwrap(), b"new content\n");
    std::fs::remove_file(m.path("moved.txt")).unwrap();
    assert!(!m.path("moved.txt").exists());
}

#[test]
fn a_deleted_object_reads_as_eio_with_a_log_line_and_the_file_stays_manageable() {
    let Some(m) = mount_with_damage(|object| std::fs::remove_file(object).unwrap()) else { return };
    check_damaged_file_is_eio_yet_manageable(&m);
}

#[test]
fn a_corrupted_object_reads_as_eio_with_a_log_line_and_the_file_stays_manageable() {
    let Some(m) = mount_with_damage(|object| {
        let mut bytes = std::fs::read(object).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        std::fs::write(object, bytes).unwrap();
    }) else {
        return;
    };
    check_damaged_file_is_eio_yet_manageable(&m);
}

#[test]
fn a_damaged_file_can_be_removed_directly() {
    let Some(m) = mount_with_damage(|object| std::fs::remove_file(object).unwrap()) else { return };
    std::fs::remove_file(m.path("dir/damaged.txt")).unwrap();
    std::fs::remove_dir_all(m.path("dir")).unwrap();
    assert!(!m.path("dir").exists());
}
