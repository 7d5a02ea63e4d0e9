//! The mount as users meet it: real cp, cat, grep, rsync, mv, dd, getfattr
//! against a real FUSE mount.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;

use common::mount::Mounted;
use common::*;

macro_rules! mount_or_skip {
    ($($arg:expr),*) => {
        match Mounted::new(&[$($arg),*]) {
            Some(m) => m,
            None => return,
        }
    };
}

#[test]
fn every_corpus_file_copies_in_byte_exact_and_greps_the_same() {
    let m = mount_or_skip!();
    for f in corpus_files() {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let dst = m.path(&name);
        sh_ok(&format!("cp '{}' '{}'", f.display(), dst.display()));
        sh_ok(&format!("cmp '{}' '{}'", f.display(), dst.display()));
        assert_eq!(std::fs::metadata(&dst).unwrap().len(), std::fs::metadata(&f).unwrap().len());
        let (_, a, _) = sh(&format!("grep -c -a 'e' '{}'", f.display()));
        let (_, b, _) = sh(&format!("grep -c -a 'e' '{}'", dst.display()));
        assert_eq!(a, b, "grep -c differs for {name}");
    }
    // The store holds objects, and du through the mount shows their size.
    let (_, du, _) = sh(&format!("du -sb --apparent-size '{}' ; du -sk '{}'", m.mnt.display(), m.mnt.display()));
    assert!(!du.is_empty());
}

#[test]
fn rsync_tree_round_trips_with_no_difference() {
    let m = mount_or_skip!();
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    sh_ok(&format!(
        "cd '{0}' && mkdir -p a/b/c e && printf 'one\\n' > a/1.txt && seq 1 5000 > a/b/seq.txt && cp '{1}/csv/seattle-weather.csv' a/b/c/ \
         && ln -s ../1.txt a/b/rel-link && ln -s /nonexistent dangling && chmod 640 a/1.txt && chmod 1777 e && \
         touch -d '2001-02-03 04:05:06' a/b/seq.txt && printf 'x' > e/setuid && chmod 4755 e/setuid && \
         head -c 300000 /dev/urandom > e/random.bin && ln a/1.txt a/hard && chown 1:1 a/b/seq.txt && setfattr -n user.origin -v corpus e/random.bin",
        s.display(),
        corpus_dir().display()
    ));
    let dst = m.path("dst");
    sh_ok(&format!("rsync -a '{}/' '{}/'", s.display(), dst.display()));
    let diff = sh_ok(&format!("rsync -a --checksum --itemize-changes --dry-run '{}/' '{}/'", s.display(), dst.display()));
    assert_eq!(diff.trim(), "", "rsync reports differences:\n{diff}");
    // Hard links and user xattrs too; the read-only user.at1.* attributes
    // are left out of the comparison with rsync's xattr filter.
    let x = "--filter='-x user.at1.*'";
    sh_ok(&format!("rsync -aHX {x} '{}/' '{}/'", s.display(), dst.display()));
    let diff = sh_ok(&format!("rsync -aHX {x} --checksum --itemize-changes --dry-run '{}/' '{}/'", s.display(), dst.display()));
    assert_eq!(diff.trim(), "", "rsync -HX reports differences:\n{diff}");
    assert_eq!(std::fs::metadata(dst.join("a/1.txt")).unwrap().ino(), std::fs::metadata(dst.join("a/hard")).unwrap().ino());
    assert_eq!(sh_ok(&format!("getfattr -n user.origin --only-values '{}/e/random.bin'", dst.display())), "corpus");
    // Negative control: one changed byte is seen.
    sh_ok(&format!(
        "printf 'X' | dd of='{}/a/b/seq.txt' bs=1 seek=10 conv=notrunc status=none; touch -d '2001-02-03 04:05:06' '{}/a/b/seq.txt'",
        dst.display(),
        dst.display()
    ));
    let diff = sh_ok(&format!("rsync -aHX --checksum --itemize-changes --dry-run '{}/' '{}/'", s.display(), dst.display()));
    assert!(diff.contains("seq.txt"), "the changed file is reported: {diff}");
}

#[test]
fn mv_rename_over_truncate_append_and_random_write() {
    let m = mount_or_skip!();
    let a = m.path("a.txt");
    std::fs::write(&a, b"first version\n").unwrap();
    std::fs::write(m.path("b.txt"), b"second\n").unwrap();
    sh_ok(&format!("mv '{}' '{}'", m.path("b.txt").display(), a.display()));
    assert_eq!(std::fs::read(&a).unwrap(), b"second\n");
    assert!(!m.path("b.txt").exists());
    sh_ok(&format!("echo appended >> '{}'", a.display()));
    assert_eq!(std::fs::read(&a).unwrap(), b"second\nappended\n");
    sh_ok(&format!("truncate -s 3 '{}'", a.display()));
    assert_eq!(std::fs::read(&a).unwrap(), b"sec");
    sh_ok(&format!("truncate -s 10 '{}'", a.display()));
    assert_eq!(std::fs::read(&a).unwrap(), b"sec\0\0\0\0\0\0\0");
    sh_ok(&format!("printf 'XY' | dd of='{}' bs=1 seek=4 conv=notrunc status=none", a.display()));
    assert_eq!(std::fs::read(&a).unwrap(), b"sec\0XY\0\0\0\0");
    // Random writes into a big existing file keep the rest.
    let big = m.path("big.csv");
    let src = corpus_dir().join("csv/weather.csv");
    sh_ok(&format!("cp '{}' '{}'", src.display(), big.display()));
    sh_ok(&format!("printf 'ZZZZ' | dd of='{}' bs=1 seek=1000000 conv=notrunc status=none", big.display()));
    let mut want = std::fs::read(&src).unwrap();
    want[1_000_000..1_000_004].copy_from_slice(b"ZZZZ");
    assert_eq!(std::fs::read(&big).unwrap(), want);
    // Reopen without O_TRUNC, seek, write, read back through one handle.
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&big).unwrap();
    f.seek(SeekFrom::Start(5)).unwrap();
    f.write_all(b"hello").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut head = [0u8; 10];
    f.read_exact(&mut head).unwrap();
    assert_eq!(&head[5..], b"hello");
    drop(f);
    want[5..10].copy_from_slice(b"hello");
    assert_eq!(std::fs::read(&big).unwrap(), want);
}

/// Regression: a deleted object's inode number, reused by a new object of
/// the same stored length, made `stat` report the old file's size (found by
/// tests/model.rs).
#[test]
fn stat_is_right_when_an_object_inode_number_is_reused() {
    let m = mount_or_skip!("--frame-size", "4096");
    // The case the model test found: two contents whose objects have the
    // same stored length, and the backing filesystem handing the second
    // object the inode number the first one freed. Inode reuse is up to the
    // backing filesystem, so the sequence runs many times.
    for round in 0..100 {
        let dir = m.path(&format!("r{round}"));
        std::fs::create_dir(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        let mut fa = std::fs::File::create(&a).unwrap();
        fa.seek(SeekFrom::Start(2429)).unwrap();
        fa.write_all(&[10; 1972]).unwrap();
        drop(fa);
        let mut fb = std::fs::File::create(&b).unwrap();
        fb.seek(SeekFrom::Start(6400)).unwrap();
        fb.write_all(&[209; 723]).unwrap();
        let _ = std::fs::metadata(&a).unwrap().len(); // the kernel asks for a's size
        std::fs::File::create(&a).unwrap(); // a's first object goes
        drop(fb); // b's object may take the freed inode number
        assert_eq!(std::fs::metadata(&b).unwrap().len(), 7123, "round {round}");
        let data = std::fs::read(&b).unwrap();
        assert_eq!((data.len(), data.iter().filter(|&&x| x == 209).count()), (7123, 723), "round {round}");
    }
}
