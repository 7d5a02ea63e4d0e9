//! A real FUSE mount for tests: `at1 mount --foreground` as a child process,
//! in its own temp dirs, unmounted on every path (Drop), with a watchdog
//! that aborts the FUSE connection if a test hangs, so a stuck or killed
//! daemon can never block the next run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{at1_bin, run, spawn};

/// Whether FUSE mounts can run here; prints why not once.
pub fn fuse_available() -> bool {
    let ok = Path::new("/dev/fuse").exists();
    if !ok {
        eprintln!("SKIPPED: /dev/fuse is absent; mount tests need FUSE");
    }
    ok
}

/// Whether `path` is a mount point now (from mountinfo: a stale mount whose
/// daemon died is listed too).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = path.to_string_lossy().replace(' ', "\\040");
    text.lines().any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// Detaches whatever is mounted at `path`, even if its daemon is gone.
pub fn force_unmount(path: &Path) {
    if is_mounted(path) {
        let _ = run(Command::new("fusermount3").arg("-uz").arg(path).stderr(Stdio::null()));
        if is_mounted(path) {
            let _ = run(Command::new("umount").arg("-l").arg(path).stderr(Stdio::null()));
        }
    }
}

fn sh_perm(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
}

/// `base/under`, made (mode 0755) where missing.
fn make_dirs(base: &Path, under: &Path) -> PathBuf {
    let mut path = base.to_path_buf();
    for part in under.iter() {
        path.push(part);
        if !path.is_dir() {
            std::fs::create_dir(&path).expect("a directory on the way to the store");
            sh_perm(&path);
        }
    }
    path
}

pub struct Mounted {
    pub store: PathBuf,
    pub mnt: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
    done: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

impl Mounted {
    /// Mounts a new empty store (None when FUSE is absent: skip the test).
    pub fn new(extra: &[&str]) -> Option<Mounted> {
        Mounted::new_at(Path::new(""), Path::new(""), extra)
    }

    /// Mounts a new empty store at `TEMP/store_under/store` on
    /// `TEMP/mnt_under/mnt` (both relative: long host paths for tests).
    pub fn new_at(store_under: &Path, mnt_under: &Path, extra: &[&str]) -> Option<Mounted> {
        if !fuse_available() {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        // Other users (pjdfstest's) must be able to reach the mount point.
        sh_perm(dir.path());
        let store = make_dirs(dir.path(), store_under).join("store");
        let mnt = make_dirs(dir.path(), mnt_under).join("mnt");
        std::fs::create_dir(&store).unwrap();
        std::fs::create_dir(&mnt).unwrap();
        let log = dir.path().join("daemon.log");
        let mut m =
            Mounted { store, mnt, log, child: None, args: extra.iter().map(|s| s.to_string()).collect(), done: Arc::new(AtomicBool::new(false)), _dir: dir };
        m.start();
        m.watchdog(Duration::from_secs(600));
        Some(m)
    }

    /// Mounts the existing store `store` at a new mount point (None when
    /// FUSE is absent: skip the test).
    pub fn on_store(store: &Path, extra: &[&str]) -> Option<Mounted> {
        if !fuse_available() {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        sh_perm(dir.path());
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let log = dir.path().join("daemon.log");
        let args = extra.iter().map(|s| s.to_string()).collect();
        let mut m = Mounted { store: store.to_path_buf(), mnt, log, child: None, args, done: Arc::new(AtomicBool::new(false)), _dir: dir };
        m.start();
        m.watchdog(Duration::from_secs(600));
        Some(m)
    }

    /// Mounts the store of `other` (unmounted first) at a new mount point.
    pub fn new_on_store(other: &Mounted, extra: &[&str]) -> Mounted {
        let dir = tempfile::tempdir().expect("temp dir");
        sh_perm(dir.path());
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let log = dir.path().join("daemon.log");
        let mut m = Mounted {
            store: other.store.clone(),
            mnt,
            log,
            child: None,
            args: extra.iter().map(|s| s.to_string()).collect(),
            done: Arc::new(AtomicBool::new(false)),
            _dir: dir,
        };
        m.start();
        m.watchdog(Duration::from_secs(600));
        m
    }

    fn start(&mut self) {
        force_unmount(&self.mnt);
        self.spawn();
    }

    /// Starts the daemon on the mount point as it is (a stale mount left
    /// by a killed daemon is for `at1 mount` itself to clear).
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut cmd = Command::new(at1_bin());
        cmd.arg("mount").arg("--foreground").arg("--allow-other").arg(&self.store).arg(&self.mnt).args(&self.args);
        cmd.env("RUST_LOG", "info").stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        let mut child = spawn(&mut cmd).expect("at1 mount starts");
        let start = Instant::now();
        // Mounted and answering (a stale mount is listed but answers ENOTCONN;
        // its root's attributes may still come from the kernel's cache, so
        // the check is a directory listing, which always asks the daemon),
        // and the root is the volume's (inode 1), not the directory under
        // a stale mount that the new daemon has just detached.
        let answering = |mnt: &Path| {
            use std::os::unix::fs::MetadataExt;
            std::fs::read_dir(mnt).is_ok() && std::fs::metadata(mnt).is_ok_and(|m| m.ino() == 1)
        };
        while !(is_mounted(&self.mnt) && answering(&self.mnt)) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the daemon exited ({status}) before mounting:\n{}", self.log_text());
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!("the mount did not come up in 20 s:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// Aborts the connection and kills the daemon if the test runs past
    /// `limit`, so blocked file operations fail instead of hanging.
    fn watchdog(&self, limit: Duration) {
        let (done, mnt, pid) = (self.done.clone(), self.mnt.clone(), self.child.as_ref().map(|c| c.id()));
        std::thread::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < limit {
                if done.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            eprintln!("WATCHDOG: test exceeded {limit:?}; aborting the mount at {}", mnt.display());
            // Killed without spawning anything: the stuck test may hold
            // the writing window, which spawns wait for. The dead daemon's
            // connection is aborted, so the test's blocked calls fail.
            if let Some(pid) = pid {
                // SAFETY: sending a signal to our child's pid.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            force_unmount(&mnt);
        });
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Waits (up to a minute) until the background re-encoding has
    /// nothing left to do, so the store holds only what it keeps.
    pub fn settle(&self) {
        let stats = self.mnt.join(".at1/stats");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            let pending = std::fs::read_to_string(&stats)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["recompress_pending"].as_u64());
            if pending == Some(0) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Unmounts cleanly and waits for the daemon (panics if it fails).
    pub fn unmount(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A test running beside this one that forks while this one has
            // a file of the mount open makes the mount busy for an instant:
            // try again a few times before calling it a failure.
            let mut ok = false;
            for _ in 0..20 {
                ok = run(Command::new("fusermount3").arg("-u").arg(&self.mnt)).map(|s| s.success()).unwrap_or(false) || !is_mounted(&self.mnt);
                if ok {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let start = Instant::now();
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        assert!(ok && status.success(), "unmount: fusermount3 ok={ok}, daemon {status}\n{}", self.log_text());
                        return;
                    }
                    _ if start.elapsed() > Duration::from_secs(30) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        force_unmount(&self.mnt);
                        panic!("the daemon did not exit after unmount (fusermount3 -u ok={ok}):\n{}", self.log_text());
                    }
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }

    /// Kills the daemon with SIGKILL (a crash), leaving a stale mount.
    pub fn kill_daemon(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Mounts the same store again after a clean unmount.
    pub fn remount(&mut self) {
        self.unmount();
        self.start();
    }

    /// Mounts the same store again over the stale mount a killed daemon
    /// left, without clearing it first.
    pub fn remount_after_crash(&mut self) {
        assert!(self.child.is_none(), "kill the daemon first");
        self.spawn();
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(mut child) = self.child.take() {
            let _ = run(Command::new("fusermount3").arg("-u").arg(&self.mnt).stderr(Stdio::null()));
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        force_unmount(&self.mnt);
    }
}
