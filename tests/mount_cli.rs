//! `at1 mount` / `at1 unmount` as commands: daemonizing, clear errors,
//! signals.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::mount::{force_unmount, fuse_available, is_mounted};
use common::*;

fn at1(args: &[&str]) -> std::process::Output {
    Command::new(at1_bin()).args(args).stdin(Stdio::null()).output().expect("at1 runs")
}

fn dirs() -> (tempfile::TempDir, String, String) {
    let d = tempfile::tempdir().unwrap();
    let (store, mnt) = (d.path().join("store"), d.path().join("mnt"));
    std::fs::create_dir(&store).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    (d, store.display().to_string(), mnt.display().to_string())
}

/// Unmounts whatever a test left, whatever happened.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        force_unmount(std::path::Path::new(&self.0));
    }
}

#[test]
fn background_mount_returns_when_live_and_unmount_waits_for_the_daemon() {
    if !fuse_available() {
        return;
    }
    let (_d, store, mnt) = dirs();
    let _c = Cleanup(mnt.clone());
    let out = at1(&["mount", &store, &mnt]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(is_mounted(std::path::Path::new(&mnt)), "live when mount returns");
    std::fs::write(format!("{mnt}/f"), b"x").unwrap();
    let pid: i32 = std::fs::read_to_string(format!("{store}/daemon.pid")).unwrap().trim().parse().unwrap();
    let out = at1(&["unmount", &mnt]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!is_mounted(std::path::Path::new(&mnt)));
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists() || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z"),
        "the daemon has exited"
    );
    // The data outlives the mount.
    assert!(at1(&["mount", &store, &mnt]).status.success());
    assert_eq!(std::fs::read(format!("{mnt}/f")).unwrap(), b"x");
    assert!(at1(&["unmount", &mnt]).status.success());
}

/// The bug: an unmount while the background worker re-encoded a large
/// file at the strongest levels waited for the encode (minutes on a busy
/// machine) and `at1 unmount` gave up after its timeout. The worker's job
/// is abandoned instead, resumed at the next mount, and the bytes stay.
#[test]
fn unmount_does_not_wait_for_a_background_reencode() {
    if !fuse_available() {
        return;
    }
    let (_d, store, mnt) = dirs();
    let _c = Cleanup(mnt.clone());
    let data: Vec<u8> =
        (0..300_000u32).flat_map(|i| format!("line {i} of a file to re-encode {}\n", i.wrapping_mul(2_654_435_761) % 100_003).into_bytes()).collect();
    assert!(at1(&["mount", &store, &mnt]).status.success());
    std::fs::write(format!("{mnt}/big.txt"), &data).unwrap();
    for _ in 0..2 {
        // Quiet for the worker to start its encode, then unmount.
        std::thread::sleep(Duration::from_millis(1500));
        let started = Instant::now();
        let out = at1(&["unmount", &mnt, "--timeout", "20"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(started.elapsed() < Duration::from_secs(20));
        let out = at1(&["mount", &store, &mnt]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(std::fs::read(format!("{mnt}/big.txt")).unwrap() == data, "the bytes are kept");
    }
    assert!(at1(&["unmount", &mnt]).status.success());
}

#[test]
fn bad_stores_and_busy_mount_points_get_one_line_errors() {
    if !fuse_available() {
        return;
    }
    let (d, store, mnt) = dirs();
    let _c = Cleanup(mnt.clone());
    let one_line = |out: &std::process::Output| {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        err
    };
    let missing = d.path().join("no-such-store").display().to_string();
    assert!(one_line(&at1(&["mount", &missing, &mnt])).contains("does not exist"));
    let file = d.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    assert!(one_line(&at1(&["mount", &file.display().to_string(), &mnt])).contains("not a directory"));
    assert!(one_line(&at1(&["mount", &store, &missing])).contains("mount point"));
    assert!(at1(&["mount", &store, &mnt]).status.success());
    let other = d.path().join("store2");
    std::fs::create_dir(&other).unwrap();
    assert!(one_line(&at1(&["mount", &other.display().to_string(), &mnt])).contains("busy"));
    assert!(one_line(&at1(&["unmount", &missing])).contains("not mounted"));
    assert!(at1(&["unmount", &mnt]).status.success());
}

#[test]
fn sigterm_and_sigint_unmount_cleanly() {
    if !fuse_available() {
        return;
    }
    for sig in ["-TERM", "-INT"] {
        let (_d, store, mnt) = dirs();
        let _c = Cleanup(mnt.clone());
        let mut child = Command::new(at1_bin()).args(["mount", "--foreground", &store, &mnt]).stdin(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let start = Instant::now();
        while !is_mounted(std::path::Path::new(&mnt)) {
            assert!(start.elapsed() < Duration::from_secs(20), "no mount");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::write(format!("{mnt}/f"), b"kept").unwrap();
        sh_ok(&format!("kill {sig} {}", child.id()));
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "the daemon did not exit on {sig}");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{sig}: {status}");
        assert!(!is_mounted(std::path::Path::new(&mnt)), "{sig} left the mount");
        let f = common::store_objects(std::path::Path::new(&store)).len();
        assert_eq!(f, 1, "the committed file is in the store");
    }
}

// ---------------------------------------------- issue 7: mount conventions

/// `findmnt`'s SOURCE, FSTYPE and OPTIONS of a mount point.
fn findmnt(mnt: &str) -> (String, String, String) {
    let out = sh_ok(&format!("findmnt -n -o SOURCE,FSTYPE,OPTIONS '{mnt}'"));
    let mut fields = out.split_whitespace().map(str::to_string);
    (fields.next().unwrap_or_default(), fields.next().unwrap_or_default(), fields.next().unwrap_or_default())
}

fn canonical(p: &str) -> String {
    std::fs::canonicalize(p).unwrap().display().to_string()
}

/// Waits until process `pid` is gone (or a zombie).
fn wait_gone(pid: i32) {
    let start = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z") {
        assert!(start.elapsed() < Duration::from_secs(30), "the daemon (pid {pid}) did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn daemon_pid(store: &str) -> i32 {
    std::fs::read_to_string(format!("{store}/daemon.pid")).unwrap().trim().parse().unwrap()
}

#[test]
fn a_mount_shows_as_fuse_at1fs_with_the_store_as_its_source() {
    if !fuse_available() {
        return;
    }
    let (_d, store, mnt) = dirs();
    let _c = Cleanup(mnt.clone());
    let out = at1(&["mount", &store, &mnt]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (source, fstype, _) = findmnt(&mnt);
    assert_eq!((source.as_str(), fstype.as_str()), (canonical(&store).as_str(), "fuse.at1fs"));
    let df = sh_ok(&format!("df --output=source '{mnt}'"));
    assert_eq!(df.lines().nth(1).map(str::trim), Some(canonical(&store).as_str()), "{df}");
    let mount = sh_ok("mount");
    assert!(mount.contains(&format!("{} on {} type fuse.at1fs", canonical(&store), canonical(&mnt))), "{mount}");
    // What reads the source back still finds the store.
    std::fs::write(format!("{mnt}/t.csv"), "a,b\n1,2\n3,4\n").unwrap();
    let sql = at1(&["sql", &mnt, "SELECT SUM(b) FROM t.csv"]);
    assert!(String::from_utf8_lossy(&sql.stdout).contains("[6]"), "{}", String::from_utf8_lossy(&sql.stderr));
    let pid = daemon_pid(&store);
    assert!(at1(&["unmount", &mnt]).status.success());
    wait_gone(pid);
}

#[test]
fn dash_o_options_apply_and_unknown_ones_are_refused() {
    if !fuse_available() {
        return;
    }
    let (_d, store, mnt) = dirs();
    let _c = Cleanup(mnt.clone());
    let out = at1(&["mount", &store, &mnt, "-o", "ro,allow_other,cache_size=512MiB"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, _, options) = findmnt(&mnt);
    let options: Vec<&str> = options.split(',').collect();
    // `ro` is the daemon's: the kernel mount stays read-write so that
    // `.at1/sql` still takes queries (docs/SEMANTICS.md, refuse-readonly).
    assert!(options.contains(&"allow_other"), "{options:?}");
    let err = std::fs::write(format!("{mnt}/f"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    let answer = sh_ok(&format!("echo 'SELECT 1 FROM nothing.csv' > '{mnt}/.at1/sql'; cat '{mnt}/.at1/sql'"));
    assert!(answer.contains("nothing.csv"), "a read-only mount answers queries: {answer}");
    assert!(at1(&["unmount", &mnt]).status.success());

    // cache_size bounds the decoded blocks a read keeps.
    let data: Vec<u8> = (0..200_000u32).flat_map(|i| format!("line {i} of a file to read {}\n", i % 977).into_bytes()).collect();
    for (options, small) in [("cache_size=1MiB", true), ("rw", false)] {
        assert!(at1(&["mount", &store, &mnt, "-o", options]).status.success());
        std::fs::write(format!("{mnt}/big.txt"), &data).unwrap();
        assert_eq!(std::fs::read(format!("{mnt}/big.txt")).unwrap(), data);
        let stats: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(format!("{mnt}/.at1/stats")).unwrap()).unwrap();
        let cached = stats["cache_bytes"].as_u64().unwrap();
        assert_eq!(cached <= 1 << 20, small, "-o {options}: {cached} bytes cached");
        assert!(at1(&["unmount", &mnt]).status.success());
    }

    let one_line = |out: &std::process::Output, code: i32| {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        err
    };
    assert!(one_line(&at1(&["mount", &store, &mnt, "-o", "rw,frobnicate"]), 2).contains("unknown mount option \"frobnicate\""));
    assert!(one_line(&at1(&["mount", &store, &mnt, "-o", "cache_size=12XB"]), 2).contains("12XB"));
    assert!(one_line(&at1(&["mount", &store, &mnt, "-o", "ro=1"]), 2).contains("takes no value"));
    assert!(!is_mounted(std::path::Path::new(&mnt)));
    // What mount(8) and fstab pass along is accepted; -s ignores the rest.
    let standard = "defaults,auto,noauto,user,nouser,users,_netdev,nofail,x-systemd.automount,comment=x,relatime,rw,nodev,nosuid,noexec";
    assert!(at1(&["mount", &store, &mnt, "-o", standard]).status.success());
    assert!(findmnt(&mnt).2.split(',').any(|o| o == "noexec"), "noexec applied");
    assert!(at1(&["unmount", &mnt]).status.success());
    assert!(at1(&["mount", "-s", &store, &mnt, "-o", "frobnicate"]).status.success());
    assert!(at1(&["unmount", &mnt]).status.success());
}

/// A symlink to `at1` put where mount(8) finds helpers (its own fixed
/// directories: it does not pass PATH on), removed again on drop.
struct Helper(std::path::PathBuf);

impl Helper {
    /// None when something is there already (not ours to replace).
    fn install(path: &str) -> Option<Helper> {
        let path = std::path::PathBuf::from(path);
        if std::fs::symlink_metadata(&path).is_ok() {
            eprintln!("SKIPPED: {} exists already", path.display());
            return None;
        }
        std::os::unix::fs::symlink(at1_bin(), &path).ok()?;
        Some(Helper(path))
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if std::fs::read_link(&self.0).ok() == Some(at1_bin()) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// umount(8), retried while the kernel still counts the mount busy: the
/// release of a file just closed reaches the daemon asynchronously, and a
/// concurrent test's spawn may briefly hold a copy of a descriptor.
fn umount(mnt: &str) {
    let start = Instant::now();
    loop {
        let (code, _, err) = sh(&format!("umount '{mnt}'"));
        if code == 0 {
            return;
        }
        if !err.contains("busy") || start.elapsed() > Duration::from_secs(20) {
            // Who holds it, for the report.
            let holders = sh(&format!("fuser -vm '{mnt}'"));
            panic!("umount {mnt}: {err}\nholders: {}{}", holders.1, holders.2);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Mounts through mount(8) with an fstab of our own (`mount -T`), checks
/// the mount, and unmounts with umount(8).
fn mount_from_fstab(options: &str) {
    let (d, store, mnt) = dirs();
    let _c = Cleanup(mnt.clone());
    let fstab = d.path().join("fstab");
    std::fs::write(&fstab, format!("# at1fs\n{store}  {mnt}  fuse.at1fs  {options}  0  0\n")).unwrap();
    let (code, out, err) = sh(&format!("mount -T '{}' '{mnt}'", fstab.display()));
    assert_eq!(code, 0, "mount -T: {out}{err}");
    let (source, fstype, mount_options) = findmnt(&mnt);
    assert_eq!((source.as_str(), fstype.as_str()), (canonical(&store).as_str(), "fuse.at1fs"));
    assert!(mount_options.contains("nodev") && mount_options.contains("nosuid"), "{mount_options}");
    std::fs::write(format!("{mnt}/f"), b"through fstab").unwrap();
    assert_eq!(std::fs::read(format!("{mnt}/f")).unwrap(), b"through fstab");
    let pid = daemon_pid(&store);
    umount(&mnt);
    wait_gone(pid);
    assert!(!is_mounted(std::path::Path::new(&mnt)));
    // A bad option in fstab: refused, nothing mounted.
    std::fs::write(&fstab, format!("{store}  {mnt}  fuse.at1fs  {options},frobnicate  0  0\n")).unwrap();
    let (code, _, err) = sh(&format!("mount -T '{}' '{mnt}'", fstab.display()));
    assert!(code != 0 && err.contains("frobnicate"), "{err}");
    assert!(!is_mounted(std::path::Path::new(&mnt)));
}

#[test]
fn an_fstab_line_mounts_through_mount_helpers() {
    // SAFETY: geteuid has no preconditions.
    if !fuse_available() || unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: mount(8) with fstab needs root and FUSE");
        return;
    }
    // mount(8) runs /sbin/mount.fuse.at1fs itself for type fuse.at1fs.
    if let Some(_helper) = Helper::install("/sbin/mount.fuse.at1fs") {
        mount_from_fstab("nodev,nosuid,cache_size=64MiB,x-at1.note=1");
    }
    // Or mount.fuse3 runs `at1fs SOURCE MOUNTPOINT -o OPTIONS` by its
    // shell's default PATH (it drops user, nofail, _netdev itself).
    if !std::path::Path::new("/sbin/mount.fuse").exists() {
        eprintln!("SKIPPED: /sbin/mount.fuse (fuse3) is absent");
        return;
    }
    if let Some(_helper) = Helper::install("/usr/local/sbin/at1fs") {
        mount_from_fstab("nodev,nosuid,nofail,_netdev,user,cache_size=64MiB");
    }
}

#[test]
fn verify_of_a_store_checks_every_file_under_its_path() {
    let Some(m) = common::mount::Mounted::new(&[]) else { return };
    let (store, mnt) = (m.store.display().to_string(), m.mnt.display().to_string());
    std::fs::write(m.path("a.csv"), "x,y\n1,2\n").unwrap();
    std::fs::create_dir(m.path("sub")).unwrap();
    std::fs::write(m.path("sub/b.txt"), "some text\n".repeat(100)).unwrap();
    std::fs::hard_link(m.path("a.csv"), m.path("c.csv")).unwrap();
    // Never written: no object.
    sh_ok(&format!("touch '{}'", m.path("empty").display()));
    for root in [&store, &mnt] {
        let r = at1(&["verify", root]);
        let out = String::from_utf8_lossy(&r.stdout).into_owned();
        assert_eq!(r.status.code(), Some(0), "{root}: {out}{}", String::from_utf8_lossy(&r.stderr));
        // Two contents (the hard link shares a.csv's, the empty file has
        // none), and the journal.
        assert!(out.starts_with(&format!("{root}: OK (2 files' contents, ")) && out.lines().count() == 1, "{root}: {out}");
    }
    // Corrupt a.csv's object (found by its stored size): its path is
    // reported, exit 3.
    let stored: u64 = sh_ok(&format!("getfattr -n user.at1.stored_bytes --only-values '{}'", m.path("a.csv").display())).parse().unwrap();
    let objects = common::store_objects(&m.store);
    let object = objects.iter().find(|p| std::fs::metadata(p).unwrap().len() == stored).unwrap();
    let mut bytes = std::fs::read(object).unwrap();
    bytes[20] ^= 0x01;
    std::fs::write(object, &bytes).unwrap();
    let r = at1(&["verify", &store]);
    let out = String::from_utf8_lossy(&r.stdout).into_owned();
    assert_eq!(r.status.code(), Some(3), "{out}");
    assert!(out.contains(&format!("{store}/a.csv: FAILED")) || out.contains(&format!("{store}/c.csv: FAILED")), "{out}");
    assert!(!out.contains("sub/b.txt"), "{out}");
}

/// One daemon per store: a second mount of a mounted store is refused in
/// one line, mounts nothing, and the first mount keeps serving. (A mount
/// point inside the store, and a store inside the mount point:
/// tests/sql_security.rs `mount_on_its_own_store_or_inside_it_is_refused`.)
#[test]
fn a_second_mount_of_a_mounted_store_is_refused_and_the_first_keeps_working() {
    if !fuse_available() {
        return;
    }
    let (d, store, mnt) = dirs();
    let _c = Cleanup(mnt.clone());
    let mnt2 = d.path().join("mnt2").display().to_string();
    std::fs::create_dir(&mnt2).unwrap();
    let _c2 = Cleanup(mnt2.clone());
    assert!(at1(&["mount", &store, &mnt]).status.success());
    std::fs::write(format!("{mnt}/before"), b"one").unwrap();
    for foreground in [false, true] {
        let mut args = vec!["mount", &store, &mnt2];
        if foreground {
            args.push("--foreground");
        }
        let out = at1(&args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("in use") && err.trim().lines().count() == 1, "{err}");
        assert!(!is_mounted(std::path::Path::new(&mnt2)), "nothing mounted at the second mount point");
    }
    assert_eq!(std::fs::read(format!("{mnt}/before")).unwrap(), b"one");
    std::fs::write(format!("{mnt}/after"), b"two").unwrap();
    assert_eq!(std::fs::read(format!("{mnt}/after")).unwrap(), b"two");
    assert!(at1(&["unmount", &mnt]).status.success());
}
