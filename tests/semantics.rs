//! docs/SEMANTICS.md, promise by promise, through a real mount. Test names
//! follow the document's anchors.

mod common;

use std::ffi::CString;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

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

fn errno_of<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

fn stats(m: &Mounted) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(m.path(".at1/stats")).unwrap()).unwrap()
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

// ---------------------------------------------------------------- consistency

#[test]
fn close_to_open() {
    let m = mount_or_skip!();
    let f = m.path("f");
    std::fs::write(&f, b"version 1").unwrap();
    let mut reader = std::fs::File::open(&f).unwrap();
    std::fs::write(&f, b"version 2, longer").unwrap();
    // A handle opened before a rewrite reads the committed content now, as
    // on a local disk; no page of the old version is left cached.
    let mut got = String::new();
    reader.read_to_string(&mut got).unwrap();
    assert_eq!(got, "version 2, longer");
    assert_eq!(std::fs::read(&f).unwrap(), b"version 2, longer");
    // Writers share one staging file: each sees the other's writes.
    let mut w1 = std::fs::OpenOptions::new().read(true).write(true).open(&f).unwrap();
    let mut w2 = std::fs::OpenOptions::new().read(true).write(true).open(&f).unwrap();
    w1.write_all(b"V").unwrap();
    let mut head = [0u8; 1];
    w2.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"V");
}

#[test]
fn readers_during_write() {
    let m = mount_or_skip!();
    let f = m.path("f.txt");
    // The writer is a child process, so that the rounds need not hold off
    // the other tests' spawns (see `writing_window`). It is Perl (essential
    // on Debian) because a shell dups descriptors for each redirection, and
    // closing a dup flushes, i.e. commits (docs/SEMANTICS.md#flush).
    // Each round overwrites the file, then holds it open for writing with
    // O_TRUNC and new content until told to close. Repeated: the previous
    // writer's release reaches the daemon when the kernel chooses, and the
    // truncating open must not be committed on its behalf (readers would
    // see an empty file).
    let script = r#"$| = 1; my $f = shift;
        while (<STDIN>) {
            open(my $o, '>', $f) or die "open: $!"; syswrite($o, "old content\n") or die; close($o) or die "close: $!";
            open(my $w, '>', $f) or die "open: $!"; syswrite($w, "new content that is longer\n") or die;
            print "written\n";
            <STDIN>;
            close($w) or die "close: $!";
            print "closed\n";
        }"#;
    let mut writer =
        spawn(std::process::Command::new("perl").args(["-e", script]).arg(&f).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()))
            .unwrap();
    let mut to_writer = writer.stdin.take().unwrap();
    let mut from_writer = std::io::BufReader::new(writer.stdout.take().unwrap());
    let mut step = |expect: &str| {
        to_writer.write_all(b"\n").unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut from_writer, &mut line).unwrap();
        assert_eq!(line.trim(), expect);
    };
    for round in 0..1000 {
        step("written");
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let f = f.clone();
                std::thread::spawn(move || std::fs::read(&f).unwrap())
            })
            .collect();
        for r in readers {
            assert_eq!(r.join().unwrap(), b"old content\n", "round {round}");
        }
        // stat shows the staging size while the write is in progress.
        assert_eq!(std::fs::metadata(&f).unwrap().len(), 27, "round {round}");
        step("closed");
        assert_eq!(std::fs::read(&f).unwrap(), b"new content that is longer\n", "round {round}");
    }
    drop(to_writer);
    assert!(writer.wait().unwrap().success());
}

#[test]
fn visible_after_close() {
    let m = mount_or_skip!();
    let f = m.path("v");
    let window = writing_window();
    let mut w = std::fs::File::create(&f).unwrap();
    w.write_all(b"committed at close").unwrap();
    drop(w);
    drop(window);
    assert_eq!(std::fs::read(&f).unwrap(), b"committed at close");
    assert_eq!(stats(&m)["writes_committed"], 1);
}

// ---------------------------------------------------------------- operations

#[test]
fn lookup_getattr() {
    let m = mount_or_skip!();
    sh_ok(&format!("cp '{}' '{}'", corpus_dir().join("csv/weather.csv").display(), m.path("w.csv").display()));
    let meta = std::fs::metadata(m.path("w.csv")).unwrap();
    assert_eq!(meta.len(), 2_294_215);
    let stored = store_objects(&m.store).iter().map(|p| std::fs::metadata(p).unwrap().len()).sum::<u64>();
    assert_eq!(meta.blocks(), stored.div_ceil(512), "st_blocks is the stored size");
    assert!(!m.store.join("w.csv").exists(), "no name of the volume is a name in the store");
    sh_ok(&format!("cd '{}' && mkdir -p d/e && for i in $(seq 1 300); do echo \"row $i\" > d/f$i.txt; done", m.mnt.display()));
    assert_eq!(std::fs::metadata(m.path("d")).unwrap().nlink(), 3);
    let before = stats(&m)["bytes_decoded"].clone();
    let out = sh_ok(&format!("ls -l '{}' | wc -l", m.path("d").display()));
    assert_eq!(out.trim(), "302");
    assert_eq!(stats(&m)["bytes_decoded"], before, "ls -l decoded something");
}

#[test]
fn open() {
    let m = mount_or_skip!();
    let f = m.path("o");
    std::fs::write(&f, b"0123456789").unwrap();
    // Without O_TRUNC the staging file starts as the current content.
    let mut h = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
    h.seek(SeekFrom::Start(3)).unwrap();
    h.write_all(b"xy").unwrap();
    drop(h);
    assert_eq!(std::fs::read(&f).unwrap(), b"012xy56789");
    // O_APPEND appends.
    let mut h = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
    h.write_all(b"!").unwrap();
    drop(h);
    assert_eq!(std::fs::read(&f).unwrap(), b"012xy56789!");
    // O_TRUNC starts empty.
    std::fs::OpenOptions::new().write(true).truncate(true).open(&f).unwrap();
    assert_eq!(std::fs::read(&f).unwrap(), b"");
}

#[test]
fn read() {
    let m = mount_or_skip!();
    let src = corpus_dir().join("csv/flights.csv");
    let Ok(data) = std::fs::read(&src) else { return };
    sh_ok(&format!("cp '{}' '{}'", src.display(), m.path("f.csv").display()));
    let mut f = std::fs::File::open(m.path("f.csv")).unwrap();
    let before = stats(&m)["bytes_decoded"].as_u64().unwrap();
    let mut buf = [0u8; 4096];
    f.seek(SeekFrom::Start(20_000_000)).unwrap();
    f.read_exact(&mut buf).unwrap();
    assert_eq!(&buf[..], &data[20_000_000..20_004_096]);
    let decoded = stats(&m)["bytes_decoded"].as_u64().unwrap() - before;
    // A 4 KiB read touches one or two 128 KiB segments (plus readahead the
    // kernel may ask for), never the file.
    assert!(decoded < 4 << 20, "a 4 KiB read decoded {decoded} bytes");
}

#[test]
fn write() {
    let m = mount_or_skip!();
    let f = m.path("w");
    let window = writing_window();
    let mut h = std::fs::File::create(&f).unwrap();
    h.write_all(b"not yet").unwrap();
    // Written but not committed: no object exists yet.
    assert_eq!(store_objects(&m.store).len(), 0);
    drop(h);
    drop(window);
    assert_eq!(store_objects(&m.store).len(), 1);
}

#[test]
fn flush() {
    // A successful close commits; see refuse_gate for the failing one.
    let m = mount_or_skip!();
    let f = m.path("x");
    let _window = writing_window();
    std::fs::write(&f, b"a").unwrap();
    std::fs::write(&f, b"b").unwrap();
    assert_eq!(stats(&m)["writes_committed"], 2);
    // A close without changes does not commit.
    drop(std::fs::OpenOptions::new().write(true).open(&f).unwrap());
    assert_eq!(stats(&m)["writes_committed"], 2);
}

#[test]
fn fsync() {
    let m = mount_or_skip!();
    let f = m.path("s");
    let _window = writing_window();
    let mut h = std::fs::File::create(&f).unwrap();
    h.write_all(b"durable before close").unwrap();
    h.sync_all().unwrap();
    // Committed while still open: a new reader sees it.
    assert_eq!(std::fs::read(&f).unwrap(), b"durable before close");
    assert_eq!(stats(&m)["writes_committed"], 1);
}

#[test]
fn release() {
    let m = mount_or_skip!();
    let f = m.path("mm");
    std::fs::write(&f, vec![b'.'; 8192]).unwrap();
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&f).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: mapping 8192 bytes of a file of that size, shared.
    let ptr = unsafe { libc::mmap(std::ptr::null_mut(), 8192, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, file.as_raw_fd(), 0) };
    assert_ne!(ptr, libc::MAP_FAILED);
    drop(file); // close: the mapping still holds the file
                // SAFETY: the mapping is 8192 bytes long.
    unsafe {
        std::ptr::copy_nonoverlapping(b"mapped".as_ptr(), ptr.cast::<u8>(), 6);
        // Written back after the close's flush; the release commits it.
        assert_eq!(libc::msync(ptr, 8192, libc::MS_SYNC), 0);
        libc::munmap(ptr, 8192);
    }
    // RELEASE reaches the daemon after munmap returns: allow it a moment.
    let start = std::time::Instant::now();
    while std::fs::read(&f).unwrap()[..6] != *b"mapped" && start.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(&std::fs::read(&f).unwrap()[..6], b"mapped");
}

#[test]
fn truncate() {
    let m = mount_or_skip!();
    let f = m.path("t");
    std::fs::write(&f, b"0123456789").unwrap();
    // No writer: committed at once, up and down.
    std::fs::OpenOptions::new().write(true).open(&f).unwrap().set_len(4).unwrap();
    assert_eq!(std::fs::read(&f).unwrap(), b"0123");
    sh_ok(&format!("truncate -s 6 '{}'", f.display()));
    assert_eq!(std::fs::read(&f).unwrap(), b"0123\0\0");
    // With a writer open: staged, committed at close.
    let window = writing_window();
    let w = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
    w.set_len(2).unwrap();
    assert_eq!(std::fs::metadata(&f).unwrap().len(), 2);
    assert_eq!(std::fs::read(&f).unwrap(), b"0123\0\0", "new readers see the committed version");
    drop(w);
    drop(window);
    assert_eq!(std::fs::read(&f).unwrap(), b"01");
}

#[test]
fn fallocate() {
    let m = mount_or_skip!();
    let f = m.path("fa");
    let h = std::fs::File::create(&f).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: a valid fd.
    assert_eq!(unsafe { libc::posix_fallocate(h.as_raw_fd(), 0, 10_000) }, 0);
    drop(h);
    assert_eq!(std::fs::metadata(&f).unwrap().len(), 10_000);
    assert_eq!(std::fs::read(&f).unwrap(), vec![0u8; 10_000]);
}

#[test]
fn unlink() {
    let m = mount_or_skip!();
    let f = m.path("u");
    std::fs::write(&f, b"still readable").unwrap();
    let mut open = std::fs::File::open(&f).unwrap();
    std::fs::remove_file(&f).unwrap();
    assert!(!f.exists());
    let mut s = String::new();
    open.read_to_string(&mut s).unwrap();
    assert_eq!(s, "still readable");
    drop(open);
    // The content goes once the last name and handle are gone. The kernel
    // sends RELEASE after close(2) returns, so allow it a moment.
    // Once that is durable (a sync round: here asked for by fsync of the
    // root), the object goes.
    let gone = || {
        std::fs::File::open(&m.mnt).unwrap().sync_all().unwrap();
        store_objects(&m.store).is_empty()
    };
    let start = std::time::Instant::now();
    while !gone() && start.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(gone(), "the object of an unlinked, closed file was not collected");
}

#[test]
fn rename() {
    let m = mount_or_skip!();
    let (a, b) = (m.path("a"), m.path("b"));
    std::fs::write(&a, b"A").unwrap();
    std::fs::write(&b, b"B").unwrap();
    // RENAME_NOREPLACE refuses an existing target.
    // SAFETY: valid C paths.
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, cpath(&a).as_ptr(), libc::AT_FDCWD, cpath(&b).as_ptr(), libc::RENAME_NOREPLACE) };
    assert_eq!((r, errno_of::<()>(Err(std::io::Error::last_os_error()))), (-1, libc::EEXIST));
    // RENAME_EXCHANGE swaps.
    // SAFETY: valid C paths.
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, cpath(&a).as_ptr(), libc::AT_FDCWD, cpath(&b).as_ptr(), libc::RENAME_EXCHANGE) };
    assert_eq!(r, 0);
    assert_eq!((std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap()), (b"B".to_vec(), b"A".to_vec()));
    // Rename over replaces, and the replaced content is collected.
    std::fs::rename(&a, &b).unwrap();
    assert_eq!(std::fs::read(&b).unwrap(), b"B");
    std::fs::File::open(&m.mnt).unwrap().sync_all().unwrap();
    assert_eq!(store_objects(&m.store).len(), 1);
    // Directories move with their content.
    std::fs::create_dir_all(m.path("d1/sub")).unwrap();
    std::fs::write(m.path("d1/sub/f"), b"deep").unwrap();
    std::fs::rename(m.path("d1"), m.path("d2")).unwrap();
    assert_eq!(std::fs::read(m.path("d2/sub/f")).unwrap(), b"deep");
}

#[test]
fn link() {
    let m = mount_or_skip!();
    let a = m.path("a");
    std::fs::write(&a, b"v1").unwrap();
    std::fs::create_dir(m.path("d")).unwrap();
    std::fs::hard_link(&a, m.path("d/b")).unwrap();
    assert_eq!(std::fs::metadata(&a).unwrap().nlink(), 2);
    assert_eq!(std::fs::metadata(&a).unwrap().ino(), std::fs::metadata(m.path("d/b")).unwrap().ino());
    std::fs::write(m.path("d/b"), b"version two").unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), b"version two");
    std::fs::remove_file(&a).unwrap();
    assert_eq!(std::fs::metadata(m.path("d/b")).unwrap().nlink(), 1);
    assert_eq!(std::fs::read(m.path("d/b")).unwrap(), b"version two");
}

#[test]
fn special_files() {
    let m = mount_or_skip!();
    sh_ok(&format!("cd '{}' && mkfifo fifo && mknod null c 1 3 && mkdir -p x/y && ln -s x/y sym && rmdir x/y && mkdir x/y", m.mnt.display()));
    let (_, out, _) = sh(&format!("cd '{}' && stat -c '%F %h' fifo null x sym && readlink sym", m.mnt.display()));
    assert_eq!(out, "fifo 1\ncharacter special file 1\ndirectory 3\nsymbolic link 1\nx/y\n");
    // They live in the metadata engine only: no device node, fifo or
    // symlink is made on the host.
    for name in ["fifo", "null", "sym", "x"] {
        assert!(std::fs::symlink_metadata(m.store.join(name)).is_err(), "{name} is not in the store's directory");
    }
}

#[test]
fn setattr() {
    let m = mount_or_skip!();
    let f = m.path("p");
    std::fs::write(&f, b"x").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o4750)).unwrap();
    assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o7777, 0o4750);
    std::os::unix::fs::chown(&f, Some(1), Some(1)).unwrap();
    let meta = std::fs::metadata(&f).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (1, 1, 0o750), "chown cleared set-user-ID");
    // cp -p sets times before it closes: the commit keeps them.
    let src = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(src.path(), b"timed").unwrap();
    sh_ok(&format!("touch -d '2001-02-03 04:05:06' '{0}' && cp -p '{0}' '{1}'", src.path().display(), m.path("t").display()));
    assert_eq!(std::fs::metadata(m.path("t")).unwrap().mtime(), std::fs::metadata(src.path()).unwrap().mtime());
}

#[test]
fn xattr() {
    let m = mount_or_skip!();
    let f = m.path("w.csv");
    sh_ok(&format!("cp '{}' '{}'", corpus_dir().join("csv/weather.csv").display(), f.display()));
    let out = sh_ok(&format!("getfattr -d -m - '{}'", f.display()));
    for key in [
        "user.at1.original_bytes=\"2294215\"",
        "user.at1.codec=\"columnar\"",
        "user.at1.sha256=",
        "user.at1.ratio=",
        "user.at1.recall_point_bytes=",
        "user.at1.idle_bytes=",
        "user.at1.blocks=",
        "user.at1.stored_bytes=",
    ] {
        assert!(out.contains(key), "{key} missing:\n{out}");
    }
    sh_ok(&format!("setfattr -n user.mine -v hello '{}'", f.display()));
    assert_eq!(sh_ok(&format!("getfattr -n user.mine --only-values '{}'", f.display())), "hello");
    // Kept across a rewrite, shared by hard links.
    sh_ok(&format!("echo more >> '{}'", f.display()));
    std::fs::hard_link(&f, m.path("alias")).unwrap();
    assert_eq!(sh_ok(&format!("getfattr -n user.mine --only-values '{}'", m.path("alias").display())), "hello");
    // The size-probe protocol: size 0 gives the size; a short buffer ERANGE.
    let (p, n) = (cpath(&f), CString::new("user.mine").unwrap());
    // SAFETY: a null buffer with size 0 asks for the size.
    assert_eq!(unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) }, 5);
    let mut small = [0u8; 2];
    // SAFETY: the buffer has 2 bytes.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), small.as_mut_ptr().cast(), 2) };
    assert_eq!((r, std::io::Error::last_os_error().raw_os_error()), (-1, Some(libc::ERANGE)));
    sh_ok(&format!("setfattr -x user.mine '{}'", f.display()));
    let (code, _, err) = sh(&format!("getfattr -n user.mine '{}'", f.display()));
    assert!(code != 0 && err.contains("No such attribute"), "{err}");
}

/// Every `user.at1.*` name a file lists can be read, whatever the file:
/// one never written (`touch`), one truncated to nothing (`: >`), one with
/// content. An empty file reads
/// the same however it became empty (issue 7, B.8).
#[test]
fn xattr_every_listed_attribute_reads() {
    let m = mount_or_skip!();
    let touched = m.path("touched");
    let truncated = m.path("truncated");
    sh_ok(&format!("touch '{}' && : > '{}' && echo data > '{}'", touched.display(), truncated.display(), m.path("full").display()));
    for name in ["touched", "truncated", "full"] {
        let (code, out, err) = sh(&format!("getfattr --absolute-names -d -m user.at1 '{}'", m.path(name).display()));
        assert!(code == 0 && err.is_empty(), "{name}: every listed attribute reads: {err}");
        let listed = sh_ok(&format!("getfattr --absolute-names -m user.at1 '{}'", m.path(name).display())).lines().filter(|l| l.starts_with("user.")).count();
        assert_eq!(out.lines().filter(|l| l.starts_with("user.")).count(), listed, "{name}: {out}");
    }
    let value = |f: &Path, n: &str| sh_ok(&format!("getfattr -n user.at1.{n} --only-values '{}'", f.display()));
    for n in ["codec", "sha256", "original_bytes", "blocks"] {
        assert_eq!(value(&touched, n), value(&truncated, n), "{n} of an empty file");
    }
    assert_eq!(value(&touched, "codec"), "empty");
    assert_eq!(value(&touched, "sha256"), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "the SHA-256 of nothing");
}

#[test]
fn statfs() {
    let m = mount_or_skip!();
    let a = sh_ok(&format!("stat -f -c '%b %S' '{}'", m.mnt.display()));
    let b = sh_ok(&format!("stat -f -c '%b %S' '{}'", m.store.display()));
    assert_eq!(a, b, "df of the mount is the store filesystem's");
}

#[test]
fn control() {
    let m = mount_or_skip!();
    sh_ok(&format!("cp '{}' '{}'", corpus_dir().join("csv/weather.csv").display(), m.path("w.csv").display()));
    sh_ok(&format!("cat '{}' > /dev/null", m.path("w.csv").display()));
    let v = stats(&m);
    for key in [
        "objects",
        "original_bytes",
        "stored_bytes",
        "ratio",
        "writes_committed",
        "writes_rejected",
        "bytes_written",
        "reads",
        "bytes_served",
        "bytes_decoded",
        "cache_hits",
        "cache_misses",
        "cache_bytes",
        "uptime_s",
    ] {
        assert!(!v[key].is_null(), "{key} missing in {v}");
    }
    assert_eq!(v["objects"], 1);
    assert_eq!(v["original_bytes"], 2_294_215);
    assert!(v["bytes_served"].as_u64().unwrap() >= 2_294_215);
    // Fresh at every open.
    sh_ok(&format!("cat '{}' > /dev/null", m.path("w.csv").display()));
    assert!(stats(&m)["reads"].as_u64() > v["reads"].as_u64());
    let listing = sh_ok(&format!("ls -a '{}'", m.mnt.display()));
    assert!(listing.lines().any(|l| l == ".at1"));
}

#[test]
fn import() {
    let Some(mut m) = Mounted::new(&[]) else { return };
    let src = corpus_dir().join("logs/Apache_2k.log");
    let dir = tempfile::tempdir().unwrap();
    let object = dir.path().join("apache.log.at1");
    sh_ok(&format!("'{}' compress '{}' '{}'", at1_bin().display(), src.display(), object.display()));
    // A store in use is not changed behind its daemon.
    let (code, _, err) = sh(&format!("'{}' import '{}' '{}' apache.log", at1_bin().display(), m.store.display(), object.display()));
    assert!(code == 1 && err.contains("in use"), "{err}");
    m.unmount();
    sh_ok(&format!("'{}' import '{}' '{}' apache.log", at1_bin().display(), m.store.display(), object.display()));
    // Dropping an object into the store's directory by hand shows nothing.
    std::fs::copy(&object, m.store.join("dropped.log.at1")).unwrap();
    let m = Mounted::new_on_store(&m, &[]);
    sh_ok(&format!("cmp '{}' '{}'", src.display(), m.path("apache.log").display()));
    assert_eq!(sh_ok(&format!("ls '{}'", m.mnt.display())), "apache.log\n");
    assert_eq!(
        sh_ok(&format!("getfattr -n user.at1.stored_bytes --only-values '{}'", m.path("apache.log").display())),
        std::fs::metadata(&object).unwrap().len().to_string(),
        "imported as it was, not re-encoded"
    );
}

// ---------------------------------------------------------------- refusals

#[cfg(feature = "fault-injection")]
#[test]
fn refuse_gate() {
    let m = mount_or_skip!();
    let f = m.path("keep.txt");
    std::fs::write(&f, b"good version\n").unwrap();
    let marker = std::str::from_utf8(at1::gate::fault_injection::MARKER).unwrap();
    let window = writing_window();
    let mut h = std::fs::File::create(&f).unwrap();
    h.write_all(format!("bad {marker}\n").as_bytes()).unwrap();
    assert_eq!(errno_of(h.sync_all()), libc::EIO, "fsync reports the rejection");
    drop(h);
    drop(window);
    assert_eq!(std::fs::read(&f).unwrap(), b"good version\n");
    // And close(2) reports it (cp checks close).
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), format!("bad {marker}\n")).unwrap();
    let (code, _, err) = sh(&format!("cp '{}' '{}'", bad.path().display(), f.display()));
    assert!(code != 0 && err.contains("Input/output error"), "{err}");
    assert_eq!(std::fs::read(&f).unwrap(), b"good version\n");
    assert_eq!(stats(&m)["writes_rejected"], 2);
    assert!(m.log_text().contains("rejected"), "the rejection is logged");
}

#[test]
fn refuse_corrupt() {
    let m = mount_or_skip!();
    let f = m.path("c.log");
    sh_ok(&format!("cp '{}' '{}'", corpus_dir().join("logs/Linux_2k.log").display(), f.display()));
    // Flip a byte in the middle of the object, behind the mount's back.
    let object = store_objects(&m.store).pop().unwrap();
    let mut bytes = std::fs::read(&object).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x40;
    std::fs::write(&object, bytes).unwrap();
    let r = std::fs::read(&f);
    assert_eq!(errno_of(r), libc::EIO);
    assert!(m.log_text().contains("corrupt"), "the corruption is logged");
}

#[test]
fn refuse_control() {
    let m = mount_or_skip!();
    std::fs::write(m.path("f"), b"x").unwrap();
    let c = m.path(".at1");
    assert_eq!(errno_of(std::fs::File::create(c.join("x"))), libc::EPERM);
    assert_eq!(errno_of(std::fs::create_dir(c.join("d"))), libc::EPERM);
    assert_eq!(errno_of(std::fs::rename(&c, m.path("g"))), libc::EPERM);
    assert_eq!(errno_of(std::fs::remove_dir(&c)), libc::EPERM);
    assert_eq!(errno_of(std::fs::remove_file(c.join("stats"))), libc::EPERM);
    assert_eq!(errno_of(std::fs::set_permissions(c.join("stats"), std::fs::Permissions::from_mode(0o777))), libc::EPERM);
    assert_eq!(errno_of(std::fs::OpenOptions::new().write(true).open(c.join("stats"))), libc::EPERM);
    assert_eq!(errno_of(std::fs::create_dir(&c)), libc::EEXIST);
    assert_eq!(errno_of(std::os::unix::fs::symlink("f", &c)), libc::EEXIST);
    assert_eq!(errno_of(std::fs::hard_link(m.path("f"), &c)), libc::EEXIST);
    assert_eq!(errno_of(std::fs::File::create(&c)), libc::EISDIR);
    assert_eq!(errno_of(std::fs::rename(m.path("f"), &c)), libc::EISDIR);
    std::fs::create_dir(m.path("dir")).unwrap();
    assert_eq!(errno_of(std::fs::hard_link(m.path("dir"), m.path("dir2"))), libc::EPERM);
}

#[test]
fn refuse_xattr() {
    let m = mount_or_skip!();
    let f = m.path("f");
    std::fs::write(&f, b"x").unwrap();
    let (p, n) = (cpath(&f), CString::new("user.at1.codec").unwrap());
    // SAFETY: valid C strings and a 1-byte value.
    let r = unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), b"x".as_ptr().cast(), 1, 0) };
    assert_eq!((r, std::io::Error::last_os_error().raw_os_error()), (-1, Some(libc::EPERM)));
    // SAFETY: valid C strings.
    let r = unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) };
    assert_eq!((r, std::io::Error::last_os_error().raw_os_error()), (-1, Some(libc::EPERM)));
    let missing = CString::new("user.none").unwrap();
    // SAFETY: size query.
    let r = unsafe { libc::getxattr(p.as_ptr(), missing.as_ptr(), std::ptr::null_mut(), 0) };
    assert_eq!((r, std::io::Error::last_os_error().raw_os_error()), (-1, Some(libc::ENODATA)));
}

/// The bug: `system.posix_acl_access` was stored as a plain attribute, so
/// `cp -a` (which sets modes through it, falling back to chmod only when
/// ACLs are unsupported) left every copied file 0600 and directory 0700.
#[test]
fn cp_a_keeps_modes_acl_attributes_are_refused() {
    let m = mount_or_skip!();
    let f = m.path("f");
    std::fs::write(&f, b"x").unwrap();
    let (p, n) = (cpath(&f), CString::new("system.posix_acl_access").unwrap());
    let acl = b"\x02\0\0\0\x01\0\x06\0\xff\xff\xff\xff\x04\0\x04\0\xff\xff\xff\xff \0\x04\0\xff\xff\xff\xff";
    // SAFETY: valid C strings and a value of its length.
    let r = unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), acl.as_ptr().cast(), acl.len(), 0) };
    assert_eq!((r, std::io::Error::last_os_error().raw_os_error()), (-1, Some(libc::EOPNOTSUPP)));

    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/g"), b"g").unwrap();
    std::fs::write(tree.join("x"), b"#!/bin/sh\n").unwrap();
    for (path, mode) in [("", 0o755), ("sub", 0o750), ("sub/g", 0o644), ("x", 0o755)] {
        std::fs::set_permissions(tree.join(path), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let out = std::process::Command::new("cp").arg("-a").arg(&tree).arg(m.path("")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (path, mode) in [("", 0o755), ("sub", 0o750), ("sub/g", 0o644), ("x", 0o755)] {
        let got = std::fs::metadata(m.path("tree").join(path)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(got, mode, "tree/{path}: {got:o}");
    }
}

#[test]
fn refuse_readonly() {
    let Some(mut m) = Mounted::new(&[]) else { return };
    std::fs::write(m.path("f"), b"x").unwrap();
    m.unmount();
    let ro = Mounted::new_on_store(&m, &["--read-only"]);
    assert_eq!(std::fs::read(ro.path("f")).unwrap(), b"x");
    assert_eq!(errno_of(std::fs::write(ro.path("f"), b"y")), libc::EROFS);
    assert_eq!(errno_of(std::fs::create_dir(ro.path("d"))), libc::EROFS);
    assert_eq!(errno_of(std::fs::remove_file(ro.path("f"))), libc::EROFS);
    use std::os::unix::fs::OpenOptionsExt;
    assert_eq!(errno_of(std::fs::OpenOptions::new().read(true).custom_flags(libc::O_TRUNC).open(ro.path("f"))), libc::EROFS);
    assert_eq!(std::fs::read(ro.path("f")).unwrap(), b"x");
}
