//! `at1 mount` and `at1 unmount`.
//!
//! Without `--foreground`, `mount` forks before any thread exists; the child
//! mounts (fuser's session is live once its handshake with the kernel is
//! done) and tells the parent through a pipe, and the parent exits 0 only
//! then — as sshfs and mount-s3 do. SIGTERM, SIGINT and SIGHUP unmount.

use std::fs::File;
use std::io::{BufRead, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use at1::fs::{At1Fs, MountConfig};
use at1::gate::GateConfig;
use at1::store::{Store, WORK_DIR};

use super::{BackendArg, LayoutArgs};

#[derive(clap::Args, Debug)]
pub struct MountArgs {
    /// The store directory (created objects live here).
    pub store: PathBuf,
    pub mountpoint: PathBuf,
    /// Stay in the foreground (log to stderr) instead of daemonizing.
    #[arg(long)]
    pub foreground: bool,
    #[arg(long, value_enum, default_value_t = BackendArg::Zstd)]
    pub backend: BackendArg,
    /// Backend level for every block (default: zstd 19 for raw frames, 5 for
    /// columns; xz 9).
    #[arg(long)]
    pub level: Option<i32>,
    /// Memory for decoded blocks (e.g. 256MiB, 1GiB).
    #[arg(long, default_value = "256MiB")]
    pub cache_size: String,
    /// Directory for write staging files (default: inside the store).
    #[arg(long)]
    pub staging: Option<PathBuf>,
    /// Let other users access the mount (needed when root runs it for
    /// other users, e.g. pjdfstest).
    #[arg(long)]
    pub allow_other: bool,
    #[arg(long)]
    pub read_only: bool,
    /// Threads serving kernel requests.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Memory one query may use for its sort keys and groups (e.g. 256MiB);
    /// a query that needs more is refused with an error saying so.
    #[arg(long, default_value = "256MiB")]
    pub query_memory: String,
    /// Seconds one query may run before it is stopped (0: no limit).
    #[arg(long, default_value_t = 120)]
    pub query_timeout: u64,
    /// Queries running at once (default: the number of cores, at least 2);
    /// one user holds at most all but one of them.
    #[arg(long)]
    pub query_threads: Option<usize>,
    /// Log file of the background daemon (default: STORE/.at1/mount.log).
    #[arg(long)]
    pub log: Option<PathBuf>,
    #[command(flatten)]
    pub layout: LayoutArgs,
}

/// Parses sizes like `256MiB`, `1GiB`, `64M`, `1000`.
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().with_context(|| format!("bad size {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => bail!("unknown size unit {other:?} in {s:?}"),
    };
    Ok(n * mult)
}

/// Mount points from /proc/self/mountinfo: (mount point, fs type, source).
fn mounts() -> Vec<(PathBuf, String, String)> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            let point = unescape(fields.get(4)?);
            Some((PathBuf::from(point), fields.get(dash + 1)?.to_string(), unescape(fields.get(dash + 2)?)))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(std::path::absolute(p)?)
}

/// Lazily detaches a mount (for stale FUSE mounts whose daemon died).
fn detach(mountpoint: &Path) -> Result<()> {
    let c = std::ffi::CString::new(mountpoint.as_os_str().as_bytes())?;
    // SAFETY: a valid C path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    let status = std::process::Command::new("fusermount3").arg("-uz").arg(mountpoint).status();
    match status {
        Ok(s) if s.success() => Ok(()),
        _ => bail!("cannot detach the stale mount at {}", mountpoint.display()),
    }
}

/// Checks the mount point: a directory, not already mounted; a stale FUSE
/// mount left by a killed daemon is detached first.
fn prepare_mountpoint(mountpoint: &Path) -> Result<()> {
    if mounts().iter().any(|(p, _, _)| p == mountpoint) {
        match std::fs::metadata(mountpoint) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
                log::warn!("{} is a stale mount (its daemon is gone); detaching it", mountpoint.display());
                eprintln!("at1: detaching the stale mount at {}", mountpoint.display());
                detach(mountpoint)?;
            }
            _ => bail!("{} is busy: something is already mounted there", mountpoint.display()),
        }
    }
    let meta = std::fs::metadata(mountpoint).with_context(|| format!("mount point {}", mountpoint.display()))?;
    if !meta.is_dir() {
        bail!("mount point {} is not a directory", mountpoint.display());
    }
    Ok(())
}

/// Refuses a mount point that is the store, lies inside it, or holds it:
/// the daemon would call into its own mount and wait for itself forever.
fn refuse_overlap(store: &Path, mountpoint: &Path) -> Result<()> {
    let Ok(store) = std::fs::canonicalize(store) else { return Ok(()) }; // Store::open says why
    let Ok(point) = std::fs::canonicalize(mountpoint) else { return Ok(()) }; // prepare_mountpoint says why
    if point == store {
        bail!("cannot mount store {} on itself: choose a mount point outside the store", store.display());
    }
    if point.starts_with(&store) {
        bail!("mount point {} is inside its store {}: choose one outside the store", point.display(), store.display());
    }
    if store.starts_with(&point) {
        bail!("store {} is inside mount point {}: the mount would hide it; choose a mount point outside the store", store.display(), point.display());
    }
    Ok(())
}

fn mount_config(args: &MountArgs) -> Result<MountConfig> {
    let mut gate = GateConfig::default().with_backend(args.backend.backend());
    if let Some(level) = args.level {
        gate = gate.with_level(level);
    }
    args.layout.apply(&mut gate);
    let limits = at1::query::Limits {
        memory: parse_size(&args.query_memory)?,
        timeout: (args.query_timeout > 0).then(|| Duration::from_secs(args.query_timeout)),
        spill_dir: None,
    };
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let sql = at1::fs::sql::SqlConfig { limits, workers: args.query_threads.unwrap_or(cores.max(2)).max(1) };
    Ok(MountConfig { gate, cache_size: parse_size(&args.cache_size)?, read_only: args.read_only, sql })
}

fn fuser_config(args: &MountArgs, store: &Path) -> fuser::Config {
    use fuser::MountOption;
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        MountOption::FSName(format!("at1fs:{}", store.display())),
        MountOption::Subtype("at1fs".into()),
        MountOption::DefaultPermissions,
        // Read-write for the kernel even with --read-only: the daemon
        // refuses every change itself (EROFS), and `.at1/sql` still takes
        // queries.
        MountOption::RW,
    ];
    if args.allow_other {
        cfg.acl = fuser::SessionACL::All;
    }
    cfg.n_threads = Some(args.threads.max(1));
    cfg.clone_fd = true;
    cfg
}

pub fn mount(args: &MountArgs) -> Result<()> {
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: load the fuse module or run where FUSE is available");
    }
    let mountpoint = absolute(&args.mountpoint)?;
    let cfg = mount_config(args)?;
    refuse_overlap(&args.store, &mountpoint)?;
    let store = Store::open(&args.store, args.staging.as_deref())?;
    prepare_mountpoint(&mountpoint)?;
    if args.foreground {
        return serve(args, store, cfg, &mountpoint, None);
    }
    // Fork before any thread exists. The child reports through the pipe.
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    // SAFETY: the fds were just created and are owned here.
    let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no other thread runs yet, so the child may run Rust code.
    match unsafe { libc::fork() } {
        -1 => bail!("fork: {}", std::io::Error::last_os_error()),
        0 => {
            drop(read_end);
            let mut report = File::from(write_end);
            let log = args.log.clone().unwrap_or_else(|| store.root().join(WORK_DIR).join("mount.log"));
            if let Err(e) = detach_from_terminal(&log) {
                let _ = writeln!(report, "ERR cannot start the daemon: {e}");
                std::process::exit(1);
            }
            let ready = report.try_clone()?;
            let result = serve(args, store, cfg, &mountpoint, Some(ready));
            if let Err(e) = &result {
                log::error!("mount failed: {e:#}");
                let _ = writeln!(report, "ERR {e:#}");
            }
            std::process::exit(i32::from(result.is_err()));
        }
        _child => {
            drop(write_end);
            // One line: "OK", or "ERR ..." (the daemon keeps the pipe open
            // while it runs, so read the line, not to end of file).
            let mut msg = String::new();
            std::io::BufReader::new(File::from(read_end)).read_line(&mut msg)?;
            match msg.lines().next() {
                Some("OK") => Ok(()),
                Some(err) => bail!("{}", err.strip_prefix("ERR ").unwrap_or(err)),
                None => bail!("the mount daemon exited before the mount was live"),
            }
        }
    }
}

/// New session, no terminal, stdio to /dev/null and the log.
fn detach_from_terminal(log: &Path) -> Result<()> {
    // SAFETY: plain system calls in the single-threaded child.
    unsafe {
        libc::setsid();
    }
    let null = File::open("/dev/null")?;
    let logf = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    use std::os::fd::AsRawFd;
    // SAFETY: valid fds; dup2 onto the standard descriptors.
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(logf.as_raw_fd(), 1);
        libc::dup2(logf.as_raw_fd(), 2);
    }
    Ok(())
}

/// Mounts and serves until unmounted. `ready` is told once the mount is
/// live.
fn serve(args: &MountArgs, store: Store, cfg: MountConfig, mountpoint: &Path, ready: Option<File>) -> Result<()> {
    // New files get exactly the mode the kernel asks for.
    // SAFETY: umask has no failure mode.
    unsafe {
        libc::umask(0);
    }
    raise_fd_limit();
    let recovery = store.recover().context("recovering the store")?;
    log::info!("store {} recovered: {recovery:?}", store.root().display());
    let pid_file = store.root().join(WORK_DIR).join("daemon.pid");
    let store_root = store.root().to_path_buf();
    let fs = At1Fs::new(store, cfg)?;
    let notifier = fs.notifier_slot();
    let mut session = fuser::Session::new(fs, mountpoint, &fuser_config(args, &store_root))
        .with_context(|| format!("mounting {} on {}", store_root.display(), mountpoint.display()))?;
    let _ = notifier.set(session.notifier());
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))?;
    let mut unmounter = session.unmount_callable();
    let signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT, signal_hook::consts::SIGHUP]);
    let mountpoint_owned = mountpoint.to_path_buf();
    if let Ok(mut signals) = signals {
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                log::info!("signal {sig}: unmounting");
                if unmounter.unmount().is_err() {
                    // Busy: detach now; the session ends when the last
                    // open file is closed.
                    let _ = detach(&mountpoint_owned);
                }
            }
        });
    }
    log::info!("mounted {} on {}", store_root.display(), mountpoint.display());
    if let Some(mut r) = ready {
        writeln!(r, "OK")?;
    }
    let result = session.run();
    let _ = std::fs::remove_file(&pid_file);
    log::info!("unmounted {}", mountpoint.display());
    Ok(result?)
}

/// A mount keeps no file descriptor per file (objects are mapped), but
/// staging files and open objects do use some: allow many.
fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid out pointer; then a valid in pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// `at1 unmount`: unmounts, then waits for the daemon to finish.
pub fn unmount(mountpoint: &Path, timeout: Duration) -> Result<()> {
    let mountpoint = absolute(mountpoint)?;
    let Some((_, _, source)) = mounts().into_iter().find(|(p, _, _)| *p == mountpoint) else {
        bail!("{} is not mounted", mountpoint.display());
    };
    let pid = source
        .strip_prefix("at1fs:")
        .and_then(|store| std::fs::read_to_string(Path::new(store).join(WORK_DIR).join("daemon.pid")).ok())
        .and_then(|s| s.trim().parse::<i32>().ok());
    let c = std::ffi::CString::new(mountpoint.as_os_str().as_bytes())?;
    // SAFETY: a valid C path.
    if unsafe { libc::umount(c.as_ptr()) } != 0 {
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EBUSY) => bail!("{} is busy (files are open or a process is inside it)", mountpoint.display()),
            Some(libc::EPERM) => {
                let ok = std::process::Command::new("fusermount3").arg("-u").arg(&mountpoint).status().map(|s| s.success()).unwrap_or(false);
                if !ok {
                    bail!("cannot unmount {}", mountpoint.display());
                }
            }
            _ => bail!("cannot unmount {}: {err}", mountpoint.display()),
        }
    }
    if let Some(pid) = pid {
        let start = Instant::now();
        // SAFETY: signal 0 only checks that the process exists.
        while unsafe { libc::kill(pid, 0) } == 0 && !is_zombie(pid) {
            if start.elapsed() > timeout {
                bail!("unmounted, but the daemon (pid {pid}) is still running after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z'))).unwrap_or(true)
}
