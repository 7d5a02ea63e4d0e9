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
    let pid: i32 = std::fs::read_to_string(format!("{store}/.at1/daemon.pid")).unwrap().trim().parse().unwrap();
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
        let f = std::fs::read_dir(format!("{store}/.at1/objects")).unwrap().count();
        assert_eq!(f, 1, "the committed file is in the store");
    }
}
