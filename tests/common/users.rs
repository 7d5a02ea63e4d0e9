//! Unprivileged users for tests that check what a user may and may not do:
//! made with `useradd` when missing (so they exist in CI too), and commands
//! run as them with `setpriv` (real and effective ids, and the user's
//! groups from /etc/group).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use super::{at1_bin, run, sh};

/// One `useradd`/`groupadd` at a time within a test binary.
static MAKING: Mutex<()> = Mutex::new(());

/// A test user.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

fn id_of(flag: &str, name: &str) -> Option<u32> {
    let out = Command::new("id").arg(flag).arg(name).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().parse().ok())?
}

/// The user `name`, created (without a home, with a group of its own) if
/// it does not exist. Only root can run these tests: `None` otherwise.
pub fn user(name: &str) -> Option<User> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: tests with other users need root");
        return None;
    }
    let _guard = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    if id_of("-u", name).is_none() {
        let status = run(Command::new("useradd").args(["--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", name])).expect("useradd runs");
        // 9: made meanwhile by another test binary.
        assert!(status.success() || status.code() == Some(9), "useradd {name} failed: {status}");
    }
    Some(User { name: name.to_string(), uid: id_of("-u", name)?, gid: id_of("-g", name)? })
}

/// Makes group `group` (if missing) and adds `user` to it.
pub fn add_to_group(user: &User, group: &str) {
    let _guard = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    let (code, _, err) = sh(&format!("getent group {group} >/dev/null || groupadd {group}; usermod -a -G {group} {}", user.name));
    assert_eq!(code, 0, "adding {} to {group}: {err}", user.name);
}

impl User {
    /// Runs a shell command as this user (with its groups); returns (exit
    /// code, stdout, stderr).
    pub fn sh(&self, cmd: &str) -> (i32, String, String) {
        let quoted = cmd.replace('\'', r"'\''");
        sh(&format!("setpriv --reuid={} --regid={} --init-groups bash -c '{quoted}'", self.uid, self.gid))
    }

    /// Like [`User::sh`], panicking with the output if the command fails.
    pub fn sh_ok(&self, cmd: &str) -> String {
        let (code, out, err) = self.sh(cmd);
        assert_eq!(code, 0, "as {}: {cmd}\nstdout: {out}\nstderr: {err}", self.name);
        out
    }
}

/// The `at1` binary where any user can run it: a link (or copy) in a
/// world-readable temp directory, removed with the returned guard. The
/// build directory may sit under one only its owner can enter (a checkout
/// in a `mktemp -d` directory, mode 0700).
pub fn at1_for_users() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let bin = dir.path().join("at1");
    if std::fs::hard_link(at1_bin(), &bin).is_err() {
        std::fs::copy(at1_bin(), &bin).expect("copy of at1");
    }
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (dir, bin)
}
