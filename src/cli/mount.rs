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
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use at1::fs::{At1Fs, MountConfig};
use at1::volume::layout::{self, StoreDir};
use at1::volume::{Volume, VolumeConfig};

use super::{BackendArg, BackendArgs, LayoutArgs, UsageError};

pub const AFTER_HELP: &str = "\
Mount options (-o, comma-separated, also from fstab):
  ro, rw                    read-only (--read-only), read-write (default)
  allow_other, allow_root   let other users (or root) in (--allow-other)
  cache_size=SIZE           --cache-size
  staging=DIR, log=FILE     --staging, --log
  backend=zstd|xz, level=N  --backend, --level
  threads=N, fuse_threads=N --threads, --fuse-threads
  query_memory=SIZE         --query-memory
  query_timeout=SECONDS     --query-timeout
  commit_interval=SECONDS   --commit-interval
  full_level_at_close       --full-level-at-close
  segment_size=SIZE         --segment-size
  query_threads=N           --query-threads
  dev, nodev, suid, nosuid, exec, noexec, atime, noatime, sync, async,
  dirsync                   kernel flags (default: nodev, nosuid)
  default_permissions       always on
  defaults, auto, noauto, user, nouser, users, _netdev, nofail, relatime,
  x-*, comment=*            accepted for mount(8) and fstab; no effect here
Any other option is refused (with -s, as mount(8) -s asks, ignored).
An -o option wins over the flag it stands for.

fstab (mount -a, mount /mnt/data):
  /srv/store  /mnt/data  fuse.at1fs  nodev,nosuid,cache_size=512MiB  0  0
needs a symlink to at1 named /sbin/mount.fuse.at1fs (mount(8) runs it), or
named at1fs in /usr/local/sbin or /usr/sbin (mount.fuse3 runs it; it adds
dev,suid unless nodev,nosuid are given). Run under either name, at1 takes
the mount helper's arguments: SOURCE MOUNTPOINT [-o OPTIONS] [-s] [-n] [-v].
The mount shows as type fuse.at1fs with the store as its source (mount,
findmnt, df).

Exit status:
  0  mounted (the mount is live when at1 mount returns)
  1  error: a missing store or mount point, a busy mount point, no FUSE
  2  usage error: unknown or bad arguments and options";

#[derive(clap::Args, Debug)]
pub struct MountArgs {
    /// The store directory: the files' tree and their objects live here
    /// (laid out on first use).
    pub store: PathBuf,
    /// The directory to mount on.
    pub mountpoint: PathBuf,
    /// Mount options, comma-separated (see below); may be repeated.
    #[arg(short = 'o', value_name = "OPTIONS", action = clap::ArgAction::Append)]
    pub options: Vec<String>,
    /// Ignore unknown -o options instead of refusing them (mount(8) -s).
    #[arg(short = 's', long)]
    pub sloppy: bool,
    /// Stay in the foreground (log to stderr) instead of daemonizing.
    #[arg(long)]
    pub foreground: bool,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Memory for decoded blocks (e.g. 256MiB, 1GiB).
    #[arg(long, default_value = "256MiB", value_name = "SIZE")]
    pub cache_size: String,
    /// Directory for write staging files (default: inside the store).
    #[arg(long, value_name = "DIR")]
    pub staging: Option<PathBuf>,
    /// Let other users access the mount (needed when root runs it for
    /// other users, e.g. pjdfstest).
    #[arg(long)]
    pub allow_other: bool,
    /// Mount read-only: every change fails with EROFS.
    #[arg(long)]
    pub read_only: bool,
    /// Threads serving kernel requests (each with its own /dev/fuse clone).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub fuse_threads: usize,
    /// Memory one query may use for its sort keys and groups (e.g. 256MiB);
    /// a query that needs more is stopped with an error saying so.
    #[arg(long, default_value = "256MiB", value_name = "SIZE")]
    pub query_memory: String,
    /// Seconds one query may run before it is stopped (0: no limit).
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub query_timeout: u64,
    /// Seconds a committed change (a close, a rename) may wait before it is
    /// durable: one round of fsyncs makes every change of that time durable
    /// (group commit; fsync makes a file's changes durable at once).
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    pub commit_interval: f64,
    /// Encode at the full level (--level, --backend) in every close, instead
    /// of committing at zstd's fast level and re-encoding in the background
    /// when the mount is quiet.
    #[arg(long)]
    pub full_level_at_close: bool,
    /// Largest piece (extent) of a file a write encodes into one object: a
    /// change re-encodes only the pieces it touches (at least 256KiB).
    #[arg(long, default_value = "8MiB", value_name = "SIZE")]
    pub segment_size: String,
    /// Queries running at once (default: the number of cores, at least 2);
    /// one user holds at most all but one of them.
    #[arg(long, value_name = "N")]
    pub query_threads: Option<usize>,
    /// Log file of the background daemon (default: STORE/mount.log).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    #[command(flatten)]
    pub layout: LayoutArgs,
}

/// The mount's settings: the flags, then the `-o` options over them.
#[derive(Debug, Clone)]
struct Settings {
    read_only: bool,
    allow_other: bool,
    allow_root: bool,
    cache_size: String,
    staging: Option<PathBuf>,
    log: Option<PathBuf>,
    backend: BackendArgs,
    layout: LayoutArgs,
    fuse_threads: usize,
    query_memory: String,
    query_timeout: u64,
    commit_interval: f64,
    full_level_at_close: bool,
    segment_size: String,
    query_threads: Option<usize>,
    /// Kernel flags asked for (dev, nosuid, noatime, ...), the last of each
    /// pair winning.
    kernel: Vec<fuser::MountOption>,
}

impl Settings {
    fn from_args(args: &MountArgs) -> Result<Settings> {
        let mut s = Settings {
            read_only: args.read_only,
            allow_other: args.allow_other,
            allow_root: false,
            cache_size: args.cache_size.clone(),
            staging: args.staging.clone(),
            log: args.log.clone(),
            backend: args.backend.clone(),
            layout: args.layout.clone(),
            fuse_threads: args.fuse_threads,
            query_memory: args.query_memory.clone(),
            query_timeout: args.query_timeout,
            commit_interval: args.commit_interval,
            full_level_at_close: args.full_level_at_close,
            segment_size: args.segment_size.clone(),
            query_threads: args.query_threads,
            kernel: Vec::new(),
        };
        for option in args.options.iter().flat_map(|list| list.split(',')).filter(|o| !o.is_empty()) {
            s.apply(option, args.sloppy)?;
        }
        Ok(s)
    }

    /// Applies one `-o` option.
    fn apply(&mut self, option: &str, sloppy: bool) -> Result<()> {
        let (key, value) = match option.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (option, None),
        };
        let no_value = || -> Result<()> {
            match value {
                None => Ok(()),
                Some(_) => Err(UsageError(format!("mount option {key} takes no value")).into()),
            }
        };
        let text = |what: &str| -> Result<String> {
            value.filter(|v| !v.is_empty()).map(str::to_string).ok_or_else(|| UsageError(format!("mount option {key} needs a value: {key}={what}")).into())
        };
        let number =
            |what: &str| -> Result<usize> { text(what)?.parse().map_err(|_| UsageError(format!("mount option {key}: {option:?} is not a number")).into()) };
        if let Some((on, off)) = kernel_flag(key) {
            no_value()?;
            self.kernel.retain(|k| *k != on && *k != off);
            self.kernel.push(on);
            return Ok(());
        }
        match key {
            "ro" | "rw" => {
                no_value()?;
                self.read_only = key == "ro";
            }
            "allow_other" => {
                no_value()?;
                self.allow_other = true;
            }
            "allow_root" => {
                no_value()?;
                self.allow_root = true;
            }
            "default_permissions" => no_value()?,
            "cache_size" => self.cache_size = text("SIZE")?,
            "staging" => self.staging = Some(text("DIR")?.into()),
            "log" => self.log = Some(text("FILE")?.into()),
            "level" => self.backend.level = Some(number("N")? as i32),
            "backend" => {
                self.backend.backend = match text("zstd|xz")?.as_str() {
                    "zstd" => BackendArg::Zstd,
                    "xz" => BackendArg::Xz,
                    other => return Err(UsageError(format!("mount option backend={other}: the backends are zstd and xz")).into()),
                }
            }
            "threads" => self.layout.threads = Some(number("N")?),
            "fuse_threads" => self.fuse_threads = number("N")?,
            "query_memory" => self.query_memory = text("SIZE")?,
            "query_timeout" => self.query_timeout = number("SECONDS")? as u64,
            "full_level_at_close" => {
                no_value()?;
                self.full_level_at_close = true;
            }
            "commit_interval" => {
                self.commit_interval = text("SECONDS")?.parse().map_err(|_| UsageError(format!("mount option {key}: {option:?} is not a number of seconds")))?
            }
            "query_threads" => self.query_threads = Some(number("N")?),
            "segment_size" => self.segment_size = text("SIZE")?,
            // What mount(8) and fstab pass along for themselves.
            "defaults" | "auto" | "noauto" | "user" | "nouser" | "users" | "_netdev" | "nofail" | "relatime" => {}
            _ if key.starts_with("x-") || key == "comment" => {}
            _ if sloppy => log::warn!("ignoring unknown mount option {option:?} (-s)"),
            _ => return Err(UsageError(format!("unknown mount option {option:?} (at1 mount --help lists them)")).into()),
        }
        Ok(())
    }
}

/// The kernel flag an option names, and the one it cancels.
fn kernel_flag(key: &str) -> Option<(fuser::MountOption, fuser::MountOption)> {
    use fuser::MountOption as K;
    Some(match key {
        "dev" => (K::Dev, K::NoDev),
        "nodev" => (K::NoDev, K::Dev),
        "suid" => (K::Suid, K::NoSuid),
        "nosuid" => (K::NoSuid, K::Suid),
        "exec" => (K::Exec, K::NoExec),
        "noexec" => (K::NoExec, K::Exec),
        "atime" => (K::Atime, K::NoAtime),
        "noatime" => (K::NoAtime, K::Atime),
        "sync" => (K::Sync, K::Async),
        "async" => (K::Async, K::Sync),
        "dirsync" => (K::DirSync, K::DirSync),
        _ => return None,
    })
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
    n.checked_mul(mult).with_context(|| format!("size {s:?} is too large"))
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

/// The file system type an at1fs mount shows (`fuse.` + its subtype).
pub const FS_TYPE: &str = "fuse.at1fs";
/// The source older daemons gave their mounts: `at1fs:STORE`.
const OLD_SOURCE_PREFIX: &str = "at1fs:";

/// The store behind an at1fs mount: the source of a `fuse.at1fs` mount (or
/// of one made by an older at1, `at1fs:STORE`).
fn store_of(fs_type: &str, source: &str) -> Option<PathBuf> {
    if let Some(store) = source.strip_prefix(OLD_SOURCE_PREFIX) {
        return Some(PathBuf::from(store));
    }
    (fs_type == FS_TYPE).then(|| PathBuf::from(source))
}

/// The store behind the at1fs mount point `dir`, if it is one.
pub fn store_of_mount(dir: &Path) -> Option<PathBuf> {
    let dir = std::fs::canonicalize(dir).ok()?;
    mounts().into_iter().filter(|(p, _, _)| *p == dir).find_map(|(_, fs_type, source)| store_of(&fs_type, &source))
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
        // A listing, not a stat: the kernel may answer a stat of a dead
        // daemon's root from its attribute cache, but a listing always asks
        // the daemon.
        match std::fs::read_dir(mountpoint) {
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

fn mount_config(s: &Settings) -> Result<(VolumeConfig, MountConfig)> {
    let mut gate = s.backend.gate_config()?;
    s.layout.apply(&mut gate);
    let cache_size = parse_size(&s.cache_size).map_err(|e| UsageError(format!("cache size: {e:#}")))?;
    let limits = at1::query::Limits {
        memory: parse_size(&s.query_memory).map_err(|e| UsageError(format!("query memory: {e:#}")))?,
        timeout: (s.query_timeout > 0).then(|| Duration::from_secs(s.query_timeout)),
        spill_dir: None,
    };
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let sql = at1::fs::sql::SqlConfig { limits, workers: s.query_threads.unwrap_or(cores.max(2)).max(1) };
    if !(s.commit_interval.is_finite() && s.commit_interval > 0.0 && s.commit_interval <= 3600.0) {
        return Err(UsageError(format!("commit interval: {} is not a number of seconds in (0, 3600]", s.commit_interval)).into());
    }
    let segment_size = parse_size(&s.segment_size).map_err(|e| UsageError(format!("segment size: {e:#}")))?;
    if segment_size < at1::volume::extents::MIN_EXTENT_SIZE {
        return Err(UsageError(format!("segment size: {} is below the smallest, 256KiB", s.segment_size)).into());
    }
    let volume = VolumeConfig {
        gate,
        fast_writes: !s.full_level_at_close,
        cache_size,
        read_only: s.read_only,
        commit_interval: Duration::from_secs_f64(s.commit_interval),
        staging: s.staging.clone(),
        segment_size,
    };
    Ok((volume, MountConfig { sql }))
}

fn fuser_config(s: &Settings, store: &Path) -> fuser::Config {
    use fuser::MountOption;
    let mut cfg = fuser::Config::default();
    // The store is the source (what mount, findmnt and df show); the type
    // is fuse.at1fs.
    cfg.mount_options = vec![
        MountOption::FSName(store.display().to_string()),
        MountOption::Subtype("at1fs".into()),
        MountOption::DefaultPermissions,
        // Read-write for the kernel even when read-only: the daemon
        // refuses every change itself (EROFS), and `.at1/sql` still takes
        // queries.
        MountOption::RW,
    ];
    cfg.mount_options.extend(s.kernel.iter().cloned());
    if s.allow_other {
        cfg.acl = fuser::SessionACL::All;
    } else if s.allow_root {
        cfg.acl = fuser::SessionACL::RootAndOwner;
    }
    cfg.n_threads = Some(s.fuse_threads.max(1));
    cfg.clone_fd = true;
    cfg
}

pub fn mount(args: &MountArgs) -> Result<()> {
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: load the fuse module or run where FUSE is available");
    }
    let settings = Settings::from_args(args)?;
    let mountpoint = absolute(&args.mountpoint)?;
    let cfg = mount_config(&settings)?;
    refuse_overlap(&args.store, &mountpoint)?;
    // Checked (and locked) before the fork, so a refusal is the command's
    // own error; the child inherits the lock.
    let store = layout::open(&args.store, true)?;
    prepare_mountpoint(&mountpoint)?;
    if args.foreground {
        return serve(&settings, store, cfg, &mountpoint, None);
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
            let log = settings.log.clone().unwrap_or_else(|| store.log_file());
            if let Err(e) = detach_from_terminal(&log) {
                let _ = writeln!(report, "ERR cannot start the daemon: {e}");
                std::process::exit(1);
            }
            let ready = report.try_clone()?;
            let result = serve(&settings, store, cfg, &mountpoint, Some(ready));
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

/// Two malloc arenas for the whole daemon. glibc gives each thread that
/// meets contention an arena of its own (up to 8 per core); decoded blocks
/// are freed by whichever thread evicts them from the cache, so every
/// arena ends up holding freed blocks it cannot return: reading a 1 GB file
/// twice held 443 MB with a 256 MiB cache, 333 MB with two arenas
/// (scripts/bench-memory measures it).
fn bound_heap_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Mounts and serves until unmounted. `ready` is told once the mount is
/// live.
fn serve(settings: &Settings, store: StoreDir, cfg: (VolumeConfig, MountConfig), mountpoint: &Path, ready: Option<File>) -> Result<()> {
    // Nothing the daemon makes is anyone else's to read: the store holds
    // every user's data (names, contents) under ids.
    // SAFETY: umask has no failure mode.
    unsafe {
        libc::umask(0o077);
    }
    raise_fd_limit();
    bound_heap_arenas();
    let pid_file = store.pid_file();
    let store_root = store.root.clone();
    let (volume_cfg, mount_cfg) = cfg;
    let volume = Volume::open_dir(store, volume_cfg).with_context(|| format!("opening store {}", store_root.display()))?;
    let fs = At1Fs::new(volume, &mount_cfg);
    let notifier = fs.notifier_slot();
    let (session, mut unmounter) =
        start_session(fs, settings, &store_root, mountpoint).with_context(|| format!("mounting {} on {}", store_root.display(), mountpoint.display()))?;
    let _ = notifier.set(session.notifier());
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))?;
    let signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT, signal_hook::consts::SIGHUP]);
    let mountpoint_owned = mountpoint.to_path_buf();
    if let Ok(mut signals) = signals {
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                log::info!("signal {sig}: unmounting");
                if unmounter.unmount(&mountpoint_owned).is_err() {
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

/// Who unmounts on a signal: fuser, for a mount it made, or the kernel
/// mount this daemon made itself.
enum Unmounter {
    Fuser(fuser::SessionUnmounter),
    Kernel,
}

impl Unmounter {
    fn unmount(&mut self, mountpoint: &Path) -> Result<()> {
        match self {
            Unmounter::Fuser(u) => Ok(u.unmount()?),
            Unmounter::Kernel => {
                let c = std::ffi::CString::new(mountpoint.as_os_str().as_bytes())?;
                // SAFETY: a valid C path.
                if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
                    bail!("umount: {}", std::io::Error::last_os_error());
                }
                Ok(())
            }
        }
    }
}

/// Mounts and makes the FUSE session. As root, the mount is made here, with
/// the type `fuse.at1fs` (fuser's own mount(2) says only `fuse`; as a user
/// it goes through fusermount3, which passes the subtype on).
fn start_session(fs: At1Fs, settings: &Settings, store: &Path, mountpoint: &Path) -> Result<(fuser::Session<At1Fs>, Unmounter)> {
    let config = fuser_config(settings, store);
    // SAFETY: geteuid has no failure mode.
    if unsafe { libc::geteuid() } != 0 {
        let mut session = fuser::Session::new(fs, mountpoint, &config)?;
        let unmounter = Unmounter::Fuser(session.unmount_callable());
        return Ok((session, unmounter));
    }
    let fd = kernel_mount(settings, store, mountpoint)?;
    match fuser::Session::from_fd(fs, fd, config.acl, config) {
        Ok(session) => Ok((session, Unmounter::Kernel)),
        Err(e) => {
            // No session to serve it: take the mount away again.
            let _ = detach(mountpoint);
            Err(e.into())
        }
    }
}

/// mount(2) of a new FUSE connection, as libfuse does it for root: type
/// `fuse.at1fs`, the store as the source. Returns the `/dev/fuse`
/// descriptor the session serves.
fn kernel_mount(settings: &Settings, store: &Path, mountpoint: &Path) -> Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC).open("/dev/fuse").context("/dev/fuse")?;
    let root_mode = std::fs::metadata(mountpoint)?.mode() & libc::S_IFMT;
    // SAFETY: getuid and getgid have no failure mode.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut data = format!("fd={},rootmode={root_mode:o},user_id={uid},group_id={gid},default_permissions", dev.as_raw_fd());
    if settings.allow_other || settings.allow_root {
        // allow_root is allow_other to the kernel; the session lets only
        // root and the owner in.
        data.push_str(",allow_other");
    }
    let flags = mount_flags(settings);
    let c = |p: &std::ffi::OsStr| std::ffi::CString::new(p.as_bytes());
    let (source, target, fs_type, data) = (c(store.as_os_str())?, c(mountpoint.as_os_str())?, c(FS_TYPE.as_ref())?, std::ffi::CString::new(data)?);
    // SAFETY: valid C strings that outlive the call.
    if unsafe { libc::mount(source.as_ptr(), target.as_ptr(), fs_type.as_ptr(), flags, data.as_ptr().cast()) } != 0 {
        bail!("mount: {}", std::io::Error::last_os_error());
    }
    Ok(OwnedFd::from(dev))
}

/// The mount(2) flags of the settings: nodev and nosuid unless dev or suid
/// were asked for (as fuser and libfuse default).
fn mount_flags(settings: &Settings) -> libc::c_ulong {
    use fuser::MountOption as K;
    let has = |o: K| settings.kernel.contains(&o);
    let mut flags = 0;
    for (set, flag) in [
        (!has(K::Dev), libc::MS_NODEV),
        (!has(K::Suid), libc::MS_NOSUID),
        (has(K::NoExec), libc::MS_NOEXEC),
        (has(K::NoAtime), libc::MS_NOATIME),
        (has(K::Sync), libc::MS_SYNCHRONOUS),
        (has(K::DirSync), libc::MS_DIRSYNC),
    ] {
        if set {
            flags |= flag;
        }
    }
    flags
}

/// A mount keeps no file descriptor per file (objects are mapped), but
/// staging files and open objects do use some: allow many.
pub(crate) fn raise_fd_limit() {
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
    let Some((_, fs_type, source)) = mounts().into_iter().find(|(p, _, _)| *p == mountpoint) else {
        bail!("{} is not mounted", mountpoint.display());
    };
    let pid = store_of(&fs_type, &source).and_then(|store| std::fs::read_to_string(store.join("daemon.pid")).ok()).and_then(|s| s.trim().parse::<i32>().ok());
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

/// Whether `pid` has finished exiting: gone, or a zombie none of whose
/// threads is still alive. (The leader turns zombie as soon as it exits,
/// while its other threads are still being torn down and the store's lock
/// is still held.)
fn is_zombie(pid: i32) -> bool {
    let leader_dead =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z'))).unwrap_or(true);
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0);
    leader_dead && threads <= 1
}
