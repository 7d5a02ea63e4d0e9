//! `at1 upgrade`: a store made by the layout-1 release
//! (`tests/fixtures/store-layout1.tar`, see `store-layout1.md`) is refused
//! by `at1 mount` naming `at1 upgrade`, converted in place, and then shows
//! every entry as the layout-1 mount did (`store-layout1.manifest`), atimes
//! as they were in the old tree. A damaged object, a store in use, a crash
//! or a kill at any step: the old store stays as it was, or the rerun
//! finishes the job.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
#[cfg(feature = "fault-injection")]
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::mount::Mounted;
use common::{at1_bin, spawn};
use sha2::{Digest, Sha256};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A layout-1 store extracted from the fixture, in a temp dir of its own.
struct OldStore {
    /// Holds the temp dir (removed on drop).
    _dir: tempfile::TempDir,
    store: PathBuf,
}

fn extract() -> OldStore {
    let dir = tempfile::tempdir().unwrap();
    let mut tar = Command::new("tar");
    tar.args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"]).arg(fixture("store-layout1.tar")).arg("-C").arg(dir.path());
    assert!(common::run(&mut tar).unwrap().success(), "tar extracts the fixture");
    let store = dir.path().join("store");
    OldStore { _dir: dir, store }
}

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `at1 ARGS` with `env` set (no core dump), within 300 s.
fn at1(args: &[&OsStr], env: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut cmd = Command::new("bash");
    cmd.args(["-c", "ulimit -c 0; exec \"$@\"", "bash"]).arg(at1_bin()).args(args);
    cmd.envs(env.iter().copied()).stdin(Stdio::null()).stdout(File::create(&out).unwrap()).stderr(File::create(&err).unwrap());
    let mut child = spawn(&mut cmd).unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            panic!("at1 {args:?} ran over 300 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run { status, stdout: fs::read_to_string(out).unwrap(), stderr: fs::read_to_string(err).unwrap() }
}

fn upgrade(store: &Path) -> Run {
    at1(&[OsStr::new("upgrade"), store.as_os_str()], &[])
}

/// `at1 mount` refuses `store`, naming `at1 upgrade`.
fn assert_mount_refused(store: &Path) {
    let mnt = tempfile::tempdir().unwrap();
    let r = at1(&[OsStr::new("mount"), store.as_os_str(), mnt.path().as_os_str()], &[]);
    if r.status.success() {
        at1(&[OsStr::new("unmount"), mnt.path().as_os_str()], &[]);
        panic!("a layout-1 store was mounted: {}", r.stderr);
    }
    assert!(r.stderr.contains(&format!("at1 upgrade {}", store.display())), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "one line: {}", r.stderr);
    assert!(fs::read_dir(mnt.path()).unwrap().next().is_none(), "nothing is mounted");
}

/// `base` + `rel` (bytes, starting with `/`; `/` is `base` itself).
fn under(base: &Path, rel: &[u8]) -> PathBuf {
    let mut p = base.as_os_str().as_bytes().to_vec();
    if rel != b"/" {
        p.extend_from_slice(rel);
    }
    PathBuf::from(OsStr::from_bytes(&p))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn ns(secs: i64, nsecs: i64) -> i64 {
    secs * 1_000_000_000 + nsecs
}

/// The stored xattrs of `path` (not following a symlink), without the
/// computed `user.at1.*`, as name → hex value.
fn xattrs(path: &Path) -> BTreeMap<String, String> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut list = vec![0u8; 64 << 10];
    // SAFETY: a valid C path and buffer.
    let n = unsafe { libc::llistxattr(p.as_ptr(), list.as_mut_ptr().cast(), list.len()) };
    assert!(n >= 0, "llistxattr {}: {}", path.display(), std::io::Error::last_os_error());
    list.truncate(n as usize);
    let mut out = BTreeMap::new();
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty() && !n.starts_with(b"user.at1.")) {
        let c = CString::new(name).unwrap();
        let mut value = vec![0u8; 64 << 10];
        // SAFETY: valid C strings and buffer.
        let len = unsafe { libc::lgetxattr(p.as_ptr(), c.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
        assert!(len >= 0, "lgetxattr {}", path.display());
        value.truncate(len as usize);
        out.insert(String::from_utf8_lossy(name).into_owned(), hex(&value));
    }
    out
}

/// Reads a file without changing its atime.
fn sha256_of(path: &Path) -> String {
    let mut f = OpenOptions::new().read(true).custom_flags(libc::O_NOATIME).open(path).unwrap();
    let mut data = Vec::new();
    f.read_to_end(&mut data).unwrap();
    hex(&Sha256::digest(&data))
}

fn kind_of(meta: &fs::Metadata) -> &'static str {
    let t = meta.file_type();
    match () {
        _ if t.is_dir() => "dir",
        _ if t.is_file() => "file",
        _ if t.is_symlink() => "symlink",
        _ if t.is_fifo() => "fifo",
        _ if t.is_char_device() => "char",
        _ if t.is_block_device() => "block",
        _ => "socket",
    }
}

// ---------------------------------------------------------------- the manifest

/// One entry of `store-layout1.manifest`: what the layout-1 mount showed.
#[derive(Debug)]
struct Expected {
    path: Vec<u8>,
    /// Where it is in the old tree (differs for a dropped-in object).
    tree: Vec<u8>,
    kind: String,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime_ns: i64,
    nlink: u64,
    size: Option<u64>,
    sha256: Option<String>,
    target: Option<Vec<u8>>,
    rdev: Option<(u64, u64)>,
    xattrs: BTreeMap<String, String>,
}

/// `\xHH` escapes back to bytes.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') {
            out.push(u8::from_str_radix(&s[i + 2..i + 4], 16).unwrap());
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn manifest() -> Vec<Expected> {
    let text = fs::read_to_string(fixture("store-layout1.manifest")).unwrap();
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
            let n = |k: &str| v.get(k).and_then(|x| x.as_u64());
            let path = unescape(&s("path").unwrap());
            Expected {
                tree: s("tree").map_or_else(|| path.clone(), |t| unescape(&t)),
                path,
                kind: s("type").unwrap(),
                mode: u32::from_str_radix(&s("mode").unwrap(), 8).unwrap(),
                uid: n("uid").unwrap() as u32,
                gid: n("gid").unwrap() as u32,
                mtime_ns: v["mtime_ns"].as_i64().unwrap(),
                nlink: n("nlink").unwrap(),
                size: n("size"),
                sha256: s("sha256"),
                target: s("target").map(|t| unescape(&t)),
                rdev: v.get("rdev").map(|r| (r[0].as_u64().unwrap(), r[1].as_u64().unwrap())),
                xattrs: v["xattrs"].as_object().unwrap().iter().map(|(k, x)| (k.clone(), x.as_str().unwrap().to_string())).collect(),
            }
        })
        .collect()
}

/// What the old tree says of a manifest entry that the manifest cannot:
/// its atime (what the layout-1 mount showed; tar does not restore
/// atimes) and its inode there (names of one file share it).
struct OldEntry {
    atime: i64,
    ino: u64,
}

fn old_entries(store: &Path, manifest: &[Expected]) -> HashMap<Vec<u8>, OldEntry> {
    manifest
        .iter()
        .map(|e| {
            let m = fs::symlink_metadata(under(store, &e.tree)).unwrap();
            (e.path.clone(), OldEntry { atime: ns(m.atime(), m.atime_nsec()), ino: m.ino() })
        })
        .collect()
}

/// Names that were one file in the old tree are one file in the mount,
/// and names that were not are not.
fn link_differences(mnt: &Path, manifest: &[Expected], old: &HashMap<Vec<u8>, OldEntry>) -> Vec<String> {
    let files: Vec<(&Vec<u8>, u64, u64)> = manifest
        .iter()
        .filter(|e| e.kind == "file")
        .filter_map(|e| Some((&e.path, old[&e.path].ino, fs::symlink_metadata(under(mnt, &e.path)).ok()?.ino())))
        .collect();
    let linked = files.iter().enumerate().any(|(i, (_, a, _))| files[i + 1..].iter().any(|(_, b, _)| a == b));
    assert!(linked, "the fixture holds hard links, so this check can fail");
    let mut diffs = Vec::new();
    for (i, (a, old_a, new_a)) in files.iter().enumerate() {
        for (b, old_b, new_b) in &files[i + 1..] {
            if (old_a == old_b) != (new_a == new_b) {
                let was = if old_a == old_b { "one file" } else { "two files" };
                diffs.push(format!("{} and {}: were {was}, are not now", String::from_utf8_lossy(a), String::from_utf8_lossy(b)));
            }
        }
    }
    diffs
}

/// Every path under `dir` (as `/a/b`), `.at1` of the root left out.
fn mount_paths(mnt: &Path) -> BTreeSet<Vec<u8>> {
    let mut out = BTreeSet::from([b"/".to_vec()]);
    let mut stack = vec![b"/".to_vec()];
    while let Some(rel) = stack.pop() {
        for entry in fs::read_dir(under(mnt, &rel)).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            if rel == b"/" && name == ".at1" {
                continue;
            }
            let mut child = if rel == b"/" { Vec::new() } else { rel.clone() };
            child.push(b'/');
            child.extend_from_slice(name.as_bytes());
            if entry.file_type().unwrap().is_dir() {
                stack.push(child.clone());
            }
            out.insert(child);
        }
    }
    out
}

/// What differs between the mount at `mnt` and the manifest.
fn differences(mnt: &Path, manifest: &[Expected], old: &HashMap<Vec<u8>, OldEntry>) -> Vec<String> {
    let mut diffs = link_differences(mnt, manifest, old);
    let expected: BTreeSet<Vec<u8>> = manifest.iter().map(|e| e.path.clone()).collect();
    let shown = mount_paths(mnt);
    for p in expected.symmetric_difference(&shown) {
        diffs.push(format!("{}: in only one of the manifest and the mount", String::from_utf8_lossy(p)));
    }
    for e in manifest {
        let path = under(mnt, &e.path);
        let name = String::from_utf8_lossy(&e.path).into_owned();
        let Ok(m) = fs::symlink_metadata(&path) else { continue };
        let mut check = |what: &str, old: String, new: String| {
            if old != new {
                diffs.push(format!("{name}: {what} {old} became {new}"));
            }
        };
        check("type", e.kind.clone(), kind_of(&m).into());
        check("mode", format!("{:04o}", e.mode), format!("{:04o}", m.mode() & 0o7777));
        check("owner", format!("{}:{}", e.uid, e.gid), format!("{}:{}", m.uid(), m.gid()));
        check("mtime", e.mtime_ns.to_string(), ns(m.mtime(), m.mtime_nsec()).to_string());
        check("atime", old[&e.path].atime.to_string(), ns(m.atime(), m.atime_nsec()).to_string());
        // The layout-1 root counted its work directory `.at1`.
        let nlink = if e.path == b"/" { e.nlink - 1 } else { e.nlink };
        check("nlink", nlink.to_string(), m.nlink().to_string());
        if let Some(size) = e.size {
            check("size", size.to_string(), m.size().to_string());
        }
        if let Some((major, minor)) = e.rdev {
            check("rdev", format!("{major}:{minor}"), format!("{}:{}", libc::major(m.rdev()), libc::minor(m.rdev())));
        }
        if let Some(target) = &e.target {
            check("target", hex(target), hex(fs::read_link(&path).unwrap().as_os_str().as_bytes()));
        }
        check("xattrs", format!("{:?}", e.xattrs), format!("{:?}", xattrs(&path)));
        if let Some(sha) = &e.sha256 {
            check("sha256", sha.clone(), sha256_of(&path));
        }
    }
    diffs
}

/// Mounts the upgraded store and checks every entry against the manifest
/// and what the old tree said of it.
fn assert_mount_shows_the_manifest(store: &Path, old: &HashMap<Vec<u8>, OldEntry>) {
    let Some(mut m) = Mounted::on_store(store, &[]) else { return };
    let diffs = differences(&m.mnt, &manifest(), old);
    assert!(diffs.is_empty(), "the upgraded mount differs from what the layout-1 mount showed:\n{}", diffs.join("\n"));
    m.unmount();
}

/// The summary `at1 upgrade` must print for the fixture, from the
/// manifest: files are inodes (a group of n names counts once).
fn expected_summary(manifest: &[Expected]) -> String {
    let files: Vec<&Expected> = manifest.iter().filter(|e| e.kind == "file").collect();
    let inodes: f64 = files.iter().map(|e| 1.0 / e.nlink as f64).sum();
    let bytes: f64 = files.iter().map(|e| e.size.unwrap() as f64 / e.nlink as f64).sum();
    let count = |k: &str| manifest.iter().filter(|e| e.kind == k).count();
    let inodes = inodes.round() as usize;
    format!(
        "{inodes} files ({} bytes), {} directories, {} hard links, {} symlinks, {} special files",
        bytes.round(),
        count("dir") - 1,
        files.len() - inodes,
        count("symlink"),
        count("fifo") + count("char") + count("block") + count("socket")
    )
}

// ---------------------------------------------------------------- snapshots

/// Everything about a store directory's entries, for "nothing changed":
/// kind, mode, owner, size, inode, link count, times (atime too), device,
/// target, content and xattrs. An entry's content is read (without
/// changing its atime) before it is stat'ed: reading a symlink may change
/// its atime once. The upgrade's own work directory `.at1/upgrade` is left
/// out, and the times of `.at1`, which it is made in. The atimes of the
/// old work area's files (`.at1/VERSION`, `.at1/objects/*`) and of a
/// layout-2 `VERSION` are left out too: checking the layout and verifying an object read them, and on a
/// relatime mount the first read after `tar -x` (ctime after atime)
/// updates the atime once; no mount ever showed those atimes. Every
/// atime of the tree the old mount showed is compared.
fn snapshot(store: &Path) -> BTreeMap<Vec<u8>, String> {
    let work_links = names_of_inodes_under(&store.join(".at1/upgrade"));
    let mut out = BTreeMap::new();
    let mut stack = vec![b"/".to_vec()];
    while let Some(rel) = stack.pop() {
        let path = under(store, &rel);
        let first = fs::symlink_metadata(&path).unwrap();
        let content = if first.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                let name = entry.unwrap().file_name();
                let mut child = if rel == b"/" { Vec::new() } else { rel.clone() };
                child.push(b'/');
                child.extend_from_slice(name.as_bytes());
                if child != b"/.at1/upgrade" {
                    stack.push(child);
                }
            }
            String::new()
        } else if first.file_type().is_symlink() {
            hex(fs::read_link(&path).unwrap().as_os_str().as_bytes())
        } else if first.is_file() {
            sha256_of(&path)
        } else {
            String::new()
        };
        let m = fs::symlink_metadata(&path).unwrap();
        let times = if rel == b"/.at1" {
            String::new()
        } else if rel.starts_with(b"/.at1/") || rel == b"/VERSION" {
            ns(m.mtime(), m.mtime_nsec()).to_string()
        } else {
            format!("{} {}", ns(m.mtime(), m.mtime_nsec()), ns(m.atime(), m.atime_nsec()))
        };
        // An old object hard-linked into the partial new volume has a name
        // more, in the work area only (removed when the upgrade restarts).
        let nlink = if rel == b"/.at1" { 0 } else { m.nlink() - work_links.get(&m.ino()).copied().unwrap_or(0) };
        let desc = format!(
            "{} {:o} {}:{} {} ino={} nlink={nlink} {times} rdev={} {content} {:?}",
            kind_of(&m),
            m.mode(),
            m.uid(),
            m.gid(),
            m.size(),
            m.ino(),
            m.rdev(),
            xattrs(&path)
        );
        out.insert(rel, desc);
    }
    out
}

/// How many names each inode of a regular file has under `dir` (none if
/// `dir` does not exist).
fn names_of_inodes_under(dir: &Path) -> HashMap<u64, u64> {
    let mut out = HashMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for entry in entries {
            let entry = entry.unwrap();
            let m = fs::symlink_metadata(entry.path()).unwrap();
            if m.is_dir() {
                stack.push(entry.path());
            } else if m.is_file() {
                *out.entry(m.ino()).or_insert(0) += 1;
            }
        }
    }
    out
}

fn assert_same(before: &BTreeMap<Vec<u8>, String>, after: &BTreeMap<Vec<u8>, String>) {
    let mut diffs = Vec::new();
    for key in before.keys().chain(after.keys()).collect::<BTreeSet<_>>() {
        if before.get(key) != after.get(key) {
            diffs.push(format!("{}: {:?} -> {:?}", String::from_utf8_lossy(key), before.get(key), after.get(key)));
        }
    }
    assert!(diffs.is_empty(), "the old store changed:\n{}", diffs.join("\n"));
}

/// The store is layout 2 and nothing of layout 1 is left.
fn assert_layout2(store: &Path) {
    assert_eq!(fs::read_to_string(store.join("VERSION")).unwrap(), "at1fs store layout 2\n");
    assert!(!store.join(".at1").exists(), "the old tree and its work area are gone");
    assert_eq!(fs::metadata(store).unwrap().mode() & 0o7777, 0o700);
    let objects = common::store_objects(store);
    assert!(!objects.is_empty());
    for o in &objects {
        assert_eq!(fs::metadata(o).unwrap().nlink(), 1, "{}: its layout-1 name is gone", o.display());
    }
    let r = at1(&[OsStr::new("verify"), store.as_os_str()], &[]);
    assert!(r.status.success(), "at1 verify: {}{}", r.stdout, r.stderr);
}

// ---------------------------------------------------------------- tests

#[test]
fn a_layout1_store_is_refused_at_mount_naming_at1_upgrade() {
    let old = extract();
    let before = snapshot(&old.store);
    assert_mount_refused(&old.store);
    assert_same(&before, &snapshot(&old.store));
}

#[test]
fn commands_on_a_layout1_store_refuse_it_naming_at1_upgrade() {
    let old = extract();
    let before = snapshot(&old.store);
    let store = old.store.as_os_str();
    let object = fixture("format-example.at1");
    let commands: [Vec<&OsStr>; 5] = [
        vec![OsStr::new("sql"), store, OsStr::new("SELECT COUNT(*) FROM data/flights.csv")],
        vec![OsStr::new("verify"), store],
        vec![OsStr::new("log"), store],
        vec![OsStr::new("fsck"), store],
        vec![OsStr::new("import"), store, object.as_os_str(), OsStr::new("imported.csv")],
    ];
    for args in commands {
        let r = at1(&args, &[]);
        assert!(!r.status.success(), "at1 {args:?} ran on a layout-1 store: {}", r.stdout);
        assert!(r.stderr.contains("at1 upgrade"), "at1 {args:?}: {}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "at1 {args:?}: {}", r.stderr);
    }
    assert_same(&before, &snapshot(&old.store));
}

#[test]
fn upgrade_converts_the_layout1_fixture_and_the_mount_shows_every_entry_as_before() {
    let old = extract();
    let manifest = manifest();
    let old_tree = old_entries(&old.store, &manifest);
    let r = upgrade(&old.store);
    assert!(r.status.success(), "{}{}", r.stdout, r.stderr);
    let line = format!("{}: upgraded to layout 2, every entry proven identical: {}\n", old.store.display(), expected_summary(&manifest));
    assert_eq!(r.stdout, line);
    assert_layout2(&old.store);
    assert_mount_shows_the_manifest(&old.store, &old_tree);

    // The upgraded store is an ordinary volume: writes commit and read back.
    let Some(mut m) = Mounted::on_store(&old.store, &[]) else { return };
    OpenOptions::new().append(true).open(m.path("notes.txt")).unwrap().write_all(b"appended after the upgrade\n").unwrap();
    assert_eq!(fs::read_to_string(m.path("notes.txt")).unwrap(), "raw bytes put in by hand\nappended after the upgrade\n");
    fs::hard_link(m.path("links/a"), m.path("links/c")).unwrap();
    assert_eq!(fs::metadata(m.path("links/b")).unwrap().nlink(), 3, "links/a and links/b are one inode");
    m.unmount();
}

#[test]
fn upgrading_an_upgraded_store_says_so_and_does_nothing() {
    let old = extract();
    assert!(upgrade(&old.store).status.success());
    let before = snapshot(&old.store);
    let r = upgrade(&old.store);
    assert!(r.status.success(), "{}", r.stderr);
    assert_eq!(r.stdout, format!("{}: already at layout 2; nothing to do\n", old.store.display()));
    assert_same(&before, &snapshot(&old.store));
}

#[test]
fn a_damaged_object_makes_upgrade_refuse_and_leaves_the_old_store_as_it_was() {
    // A stub's object, and an object dropped into the tree by hand.
    for (shown, object_of) in [("/data/flights.csv", None), ("/data/report.txt", Some("data/report.txt.at1"))] {
        let old = extract();
        let object = match object_of {
            Some(tree) => old.store.join(tree),
            None => {
                let stub = fs::read_to_string(old.store.join("data/flights.csv")).unwrap();
                let id = stub.lines().nth(1).unwrap().to_string();
                old.store.join(".at1/objects").join(format!("{id}.at1"))
            }
        };
        let mut bytes = fs::read(&object).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x20;
        let f = OpenOptions::new().write(true).custom_flags(libc::O_NOATIME).open(&object).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &bytes, 0).unwrap();
        drop(f);
        let before = snapshot(&old.store);
        let r = upgrade(&old.store);
        assert_eq!(r.status.code(), Some(3), "{}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains(shown) && r.stderr.contains("nothing was changed"), "{}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "one line: {}", r.stderr);
        assert!(!old.store.join(".at1/upgrade").exists(), "the partial new store is gone");
        assert_same(&before, &snapshot(&old.store));
        assert_mount_refused(&old.store);
    }
}

#[test]
fn upgrade_refuses_a_store_that_is_mounted_or_served() {
    let old = extract();
    let before = snapshot(&old.store);

    // A mount whose source is the store, as older daemons named it.
    let point = tempfile::tempdir().unwrap();
    let source = format!("at1fs:{}", old.store.display());
    let mounted = common::run(Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", &source]).arg(point.path())).unwrap();
    assert!(mounted.success(), "mount -t tmpfs");
    let r = upgrade(&old.store);
    let _ = common::run(Command::new("umount").arg(point.path()));
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert!(r.stderr.contains(&format!("is mounted at {}", point.path().display())), "{}", r.stderr);

    // A live at1 daemon named by the layout-1 pid file.
    if let Some(daemon) = Mounted::new(&[]) {
        fs::write(old.store.join(".at1/daemon.pid"), format!("{}\n", daemon.pid())).unwrap();
        let r = upgrade(&old.store);
        assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
        assert!(r.stderr.contains(&format!("in use by an at1 daemon (pid {})", daemon.pid())), "{}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    }
    fs::remove_file(old.store.join(".at1/daemon.pid")).ok();
    assert_same(&before, &snapshot(&old.store));

    // A pid file left by a daemon that died, its pid now another
    // program's (this test's): not in use.
    fs::write(old.store.join(".at1/daemon.pid"), format!("{}\n", std::process::id())).unwrap();
    let r = upgrade(&old.store);
    assert!(r.status.success(), "{}", r.stderr);
    assert_layout2(&old.store);
}

#[test]
fn a_second_upgrade_of_a_store_being_upgraded_is_refused() {
    let old = extract();
    let before = snapshot(&old.store);
    // What a running `at1 upgrade` holds: the lock of the old work area.
    let area = File::open(old.store.join(".at1")).unwrap();
    // SAFETY: a valid descriptor.
    assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&area), libc::LOCK_EX | libc::LOCK_NB) }, 0);
    let r = upgrade(&old.store);
    assert_eq!(r.status.code(), Some(1), "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("another at1 upgrade of it is running"), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert_same(&before, &snapshot(&old.store));
    drop(area);
    let r = upgrade(&old.store);
    assert!(r.status.success(), "once the first is gone: {}", r.stderr);
    assert_layout2(&old.store);
}

#[test]
fn upgrade_refuses_a_directory_that_is_not_a_store() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let r = upgrade(dir.path());
    assert_eq!(r.status.code(), Some(1));
    assert!(r.stderr.contains("is not an at1fs store"), "{}", r.stderr);
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "nothing was made");
    let r = upgrade(&dir.path().join("missing"));
    assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
}

/// Crash points (feature `fault-injection`), and whether the proof was
/// recorded before them.
#[cfg(feature = "fault-injection")]
const CRASH_POINTS: [(&str, bool); 7] =
    [("build:1", false), ("build:30", false), ("proven", true), ("old-out:4", true), ("new-in:3", true), ("switched", true), ("cleanup", true)];

#[cfg(feature = "fault-injection")]
#[test]
fn an_upgrade_that_crashed_at_any_step_is_finished_by_running_it_again() {
    let manifest = manifest();
    for (point, proven) in CRASH_POINTS {
        let old = extract();
        // The snapshot lists directories, which (relatime, after `tar -x`)
        // sets their atimes once: take the old tree's atimes after it.
        let before = snapshot(&old.store);
        let old_tree = old_entries(&old.store, &manifest);
        let r = at1(&[OsStr::new("upgrade"), old.store.as_os_str()], &[(at1::volume::upgrade::fault_injection::ENV, point)]);
        assert_eq!(r.status.signal(), Some(libc::SIGABRT), "{point}: {}{}", r.stdout, r.stderr);
        if !proven {
            assert_same(&before, &snapshot(&old.store));
        }
        assert_mount_refused(&old.store);
        let r = upgrade(&old.store);
        assert!(r.status.success(), "{point}: {}{}", r.stdout, r.stderr);
        let said = if proven { "finished an interrupted upgrade to layout 2, every entry proven identical" } else { "upgraded to layout 2" };
        assert!(r.stdout.contains(said) && r.stdout.contains(&expected_summary(&manifest)), "{point}: {}", r.stdout);
        assert_layout2(&old.store);
        assert_mount_shows_the_manifest(&old.store, &old_tree);
    }
}

#[test]
fn an_upgrade_killed_at_any_moment_is_finished_by_running_it_again() {
    let manifest = manifest();
    for delay_ms in [0, 25, 60, 150] {
        let old = extract();
        let old_tree = old_entries(&old.store, &manifest);
        let mut cmd = Command::new(at1_bin());
        cmd.arg("upgrade").arg(&old.store).stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = spawn(&mut cmd).unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let r = upgrade(&old.store);
        assert!(r.status.success(), "killed after {delay_ms} ms: {}{}", r.stdout, r.stderr);
        assert_layout2(&old.store);
        assert_mount_shows_the_manifest(&old.store, &old_tree);
    }
}

/// A layout-1 tree made by hand: deeper than PATH_MAX (the old release
/// reached such paths through directory descriptors), with a stub and a
/// raw file at the bottom, and a socket (which tar cannot archive).
#[test]
fn a_tree_deeper_than_path_max_and_a_socket_are_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    for d in ["", ".at1", ".at1/objects", ".at1/inodes", ".at1/tmp", ".at1/staging"] {
        fs::create_dir(store.join(d)).unwrap();
    }
    fs::write(store.join(".at1/VERSION"), "at1fs store layout 1\n").unwrap();
    let id = "0123456789abcdef0123456789abcdef";
    let content = dir.path().join("content");
    fs::write(&content, "content of the deep stub\n").unwrap();
    let r = at1(&[OsStr::new("compress"), content.as_os_str(), store.join(format!(".at1/objects/{id}.at1")).as_os_str()], &[]);
    assert!(r.status.success(), "{}", r.stderr);
    let name = "d".repeat(200);
    let script = format!(
        "set -e; cd '{}'; for i in $(seq 1 25); do mkdir {name}; cd {name}; done; \
         printf 'raw at the bottom\\n' > raw.txt; printf 'AT1STUB1\\n{id}\\n' > stub; ln stub '{}/.at1/inodes/{id}'",
        store.display(),
        store.display()
    );
    common::sh_ok(&script);
    let _socket = std::os::unix::net::UnixListener::bind(store.join("sock")).unwrap();
    fs::set_permissions(store.join("sock"), fs::Permissions::from_mode(0o640)).unwrap();

    let r = upgrade(&store);
    assert!(r.status.success(), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("2 files (43 bytes), 25 directories, 0 hard links, 0 symlinks, 1 special files"), "{}", r.stdout);
    assert!(!store.join(".at1").exists());

    let v = at1::volume::Volume::open_read_only(&store).unwrap();
    let sock = v.lookup(1, b"sock").unwrap();
    assert_eq!((sock.kind, sock.perm), (at1::volume::Kind::Socket, 0o640));
    let mut ino = 1;
    for _ in 0..25 {
        ino = v.lookup(ino, name.as_bytes()).unwrap().ino;
    }
    for (file, text) in [("raw.txt", "raw at the bottom\n"), ("stub", "content of the deep stub\n")] {
        let attr = v.lookup(ino, file.as_bytes()).unwrap();
        assert_eq!(attr.nlink, 1, "{file}: the hidden inodes/ link is not a name");
        let h = v.open_file(attr.ino, at1::volume::OpenFlags::default()).unwrap();
        assert_eq!(v.read(&h, 0, 4096).unwrap(), text.as_bytes(), "{file}");
        v.release(&h).unwrap();
    }
}
