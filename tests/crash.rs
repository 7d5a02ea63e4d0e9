//! Crash safety: a daemon killed with SIGKILL in the middle of a large write
//! (and in the middle of a commit) loses nothing that was committed, shows
//! no partial object, and leaves nothing behind after a remount — which also
//! clears the stale mount point by itself.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use common::mount::{is_mounted, Mounted};
use common::*;

fn committed_files(m: &Mounted) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (i, f) in ["csv/weather.csv", "logs/Linux_2k.log", "json/twitter.json"].iter().enumerate() {
        let data = std::fs::read(corpus_dir().join(f)).unwrap_or_else(|_| format!("file {i}\n").repeat(1000).into_bytes());
        let name = format!("committed{i}");
        std::fs::write(m.path(&name), &data).unwrap();
        out.push((name, data));
    }
    out
}

fn assert_recovered(m: &Mounted, committed: &[(String, Vec<u8>)]) {
    for (name, data) in committed {
        assert_eq!(&std::fs::read(m.path(name)).unwrap(), data, "{name} changed after the crash");
    }
    // The remounted daemon may be re-encoding in the background: its own
    // temp objects are not leftovers.
    m.settle();
    for dir in ["staging", "tmp"] {
        let left: Vec<_> = std::fs::read_dir(m.store.join(dir)).unwrap().collect();
        assert!(left.is_empty(), "{dir} leftovers: {left:?}");
    }
    // Every object is whole, and every file's content checks.
    for object in store_objects(&m.store) {
        sh_ok(&format!("'{}' verify '{}'", at1_bin().display(), object.display()));
    }
    sh_ok(&format!("'{}' verify '{}'", at1_bin().display(), m.mnt.display()));
}

/// Writes until killed; returns when the writes start failing.
fn write_until_failure(path: std::path::PathBuf) -> std::thread::JoinHandle<u64> {
    // No spawn may flush (commit) this handle: see `writing_window`.
    let window = writing_window();
    std::thread::spawn(move || {
        let _window = window;
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        let mut written = 0u64;
        while written < 4 << 30 {
            if f.write_all(&chunk).is_err() {
                break;
            }
            written += chunk.len() as u64;
        }
        written
    })
}

#[test]
fn kill_during_a_large_write_loses_nothing_committed() {
    let Some(mut m) = Mounted::new(&[]) else { return };
    let committed = committed_files(&m);
    let writer = write_until_failure(m.path("big.bin"));
    // Let it get going (staging files have no name to wait for), then
    // crash the daemon.
    std::thread::sleep(Duration::from_millis(1500));
    m.kill_daemon();
    let written = writer.join().unwrap();
    assert!(written > 0, "the write had started");
    assert!(is_mounted(&m.mnt), "the killed daemon left a stale mount");
    m.remount_after_crash();
    assert_recovered(&m, &committed);
    // The file being written was never committed: it is empty, not partial.
    assert_eq!(std::fs::metadata(m.path("big.bin")).unwrap().len(), 0);
}

#[test]
fn kill_during_a_commit_keeps_the_previous_version() {
    let Some(mut m) = Mounted::new(&[]) else { return };
    let committed = committed_files(&m);
    std::fs::write(m.path("doc.txt"), b"previous version\n").unwrap();
    // A big rewrite, then close: the commit (the gate) runs at close.
    let path = m.path("doc.txt");
    // No spawn may flush (commit) a partial rewrite: see `writing_window`.
    let window = writing_window();
    let closer = std::thread::spawn(move || {
        let _window = window;
        let mut f = std::fs::File::create(&path).unwrap();
        let line = b"a line of text that compresses and takes a while to verify\n";
        for _ in 0..(64 << 20) / line.len() {
            if f.write_all(line).is_err() {
                return;
            }
        }
        let _ = f.sync_all(); // commit starts here
    });
    // Wait until the gate is writing its temp object, then crash.
    let tmp = m.store.join("tmp");
    let start = Instant::now();
    loop {
        let temp = std::fs::read_dir(&tmp).unwrap().flatten().any(|e| e.file_name().to_string_lossy().ends_with(".part"));
        if temp || start.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    m.kill_daemon();
    let _ = closer.join();
    m.remount_after_crash();
    assert_recovered(&m, &committed);
    assert_eq!(std::fs::read(m.path("doc.txt")).unwrap(), b"previous version\n");
}

// ---------------------------------------------------------------- random kill points

/// Kill points per scenario (three scenarios: at least 25 in all).
const KILLS_PER_SCENARIO: usize = 9;

/// A seeded generator (splitmix64): kill points and data follow from the
/// seed, so a failure can be replayed with `AT1_CRASH_SEED` (the timing of
/// the kill against the daemon's work cannot be).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

/// The seed of a scenario: `AT1_CRASH_SEED`, or the clock; printed either
/// way.
fn seeded(scenario: &str) -> Rng {
    let seed = std::env::var("AT1_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64));
    eprintln!("{scenario}: seed {seed} (AT1_CRASH_SEED={seed} replays the kill points and the data)");
    Rng(seed)
}

/// File content of `len` bytes: text lines, or noise no codec shrinks.
fn content(rng: &mut Rng, len: usize) -> Vec<u8> {
    if rng.next() % 3 == 0 {
        return noise(len, rng.next() | 1);
    }
    let tag = rng.next();
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(format!("{tag:016x} line {i} of a file being copied when the daemon dies\n").as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

/// A size: mostly small files, some of a few hundred KiB, a few of MiBs
/// (kills land inside those writes).
fn size(rng: &mut Rng) -> usize {
    match rng.next() % 10 {
        0..=5 => rng.range(0, 16 << 10) as usize,
        6..=8 => rng.range(64 << 10, 512 << 10) as usize,
        _ => rng.range(1 << 20, 3 << 20) as usize,
    }
}

/// A source tree outside the mount, changed between rounds: some files
/// rewritten, some added.
struct Source {
    dir: tempfile::TempDir,
    files: BTreeMap<String, Vec<u8>>,
}

impl Source {
    fn new(rng: &mut Rng, files: usize) -> Source {
        let mut s = Source { dir: tempfile::tempdir().unwrap(), files: BTreeMap::new() };
        for i in 0..files {
            let rel = match i % 4 {
                0 => format!("f{i}.txt"),
                1 => format!("sub/f{i}.log"),
                2 => format!("sub/deeper/f{i}.bin"),
                _ => format!("other/f{i}.csv"),
            };
            s.put(rng, rel);
        }
        s
    }

    fn put(&mut self, rng: &mut Rng, rel: String) {
        let len = size(rng);
        let data = content(rng, len);
        let path = self.dir.path().join(&rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &data).unwrap();
        self.files.insert(rel, data);
    }

    /// The next version of the tree: a third of the files rewritten, two
    /// new ones.
    fn change(&mut self, rng: &mut Rng) {
        let names: Vec<String> = self.files.keys().cloned().collect();
        for rel in names {
            if rng.next() % 3 == 0 {
                self.put(rng, rel);
            }
        }
        let n = self.files.len();
        self.put(rng, format!("new{n}.txt"));
        self.put(rng, format!("sub/new{}.txt", n + 1));
    }
}

/// Every regular file under `dir` (relative paths), read through the mount.
fn tree(dir: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().map(|e| e.unwrap()) {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                dirs.push(e.path());
            } else if t.is_file() {
                let rel = e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

/// Files in a directory (recursively) through the mount; errors (a dead
/// daemon) count as none.
fn count_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => dirs.push(e.path()),
                Ok(_) => n += 1,
                Err(_) => {}
            }
        }
    }
    n
}

/// The name rsync's temp file `.NAME.XXXXXX` stands for.
fn rsync_target(rel: &str) -> Option<String> {
    let (dir, name) = rel.rsplit_once('/').map_or(("", rel), |(d, n)| (d, n));
    let base = name.strip_prefix('.')?.rsplit_once('.')?.0;
    Some(if dir.is_empty() { base.to_string() } else { format!("{dir}/{base}") })
}

/// What survives a kill: everything committed before it.
#[derive(Default)]
struct Committed {
    /// Path in the mount → content.
    files: BTreeMap<String, Vec<u8>>,
}

impl Committed {
    /// After a crash and remount: every file committed before the kill is
    /// byte-exact, except those under the copy's `dest`, which the
    /// interrupted copy may have replaced — each of those, and each file
    /// the copy made, is its previous committed content or the source's,
    /// whole (a file the copy had only begun is absent or empty, never a
    /// prefix). Then the store verifies, and what is there now is the
    /// committed state.
    fn check_after_crash(&mut self, m: &Mounted, copy: Option<(&str, &BTreeMap<String, Vec<u8>>)>, what: &str) {
        let prefix = copy.map(|(dest, _)| format!("{dest}/"));
        let in_copy = |p: &str| prefix.as_deref().is_some_and(|d| p.starts_with(d));
        for (path, data) in &self.files {
            if in_copy(path) {
                continue;
            }
            let got = std::fs::read(m.path(path)).unwrap_or_else(|e| panic!("{what}: {path}, committed before the kill, is gone: {e}"));
            assert!(&got == data, "{what}: {path}, committed before the kill, changed ({} bytes, was {})", got.len(), data.len());
        }
        if let (Some((dest, source)), Some(prefix)) = (copy, &prefix) {
            let now = tree(&m.path(dest));
            for (rel, data) in &now {
                let path = format!("{prefix}{rel}");
                let temp = rsync_target(rel);
                let name = temp.as_deref().unwrap_or(rel);
                let new = source.get(name).unwrap_or_else(|| panic!("{what}: {path} is no file of the source"));
                // A temp file a killed rsync left in an earlier round is
                // still there, as it was then.
                let previous = self.files.get(&path);
                let whole = data == new || previous == Some(data) || (data.is_empty() && previous.is_none());
                assert!(
                    whole,
                    "{what}: {path} holds {} bytes that are neither its previous committed content ({:?} bytes) nor the source's ({} bytes): a partial file",
                    data.len(),
                    previous.map(Vec::len),
                    new.len()
                );
            }
            for path in self.files.keys().filter(|p| in_copy(p)) {
                assert!(now.contains_key(&path[prefix.len()..]), "{what}: {path}, committed before the kill, is gone");
            }
            self.files.retain(|p, _| !in_copy(p));
            self.files.extend(now.into_iter().map(|(rel, data)| (format!("{prefix}{rel}"), data)));
        }
        sh_ok(&format!("'{}' verify '{}'", at1_bin().display(), m.mnt.display()));
        // The remounted daemon's background re-encoding makes temp objects
        // of its own: not leftovers.
        m.settle();
        for dir in ["staging", "tmp"] {
            let left: Vec<_> = std::fs::read_dir(m.store.join(dir)).unwrap().collect();
            assert!(left.is_empty(), "{what}: {dir} leftovers: {left:?}");
        }
    }
}

/// Runs `cmd` (a copy into the mount) and kills the daemon once `dest`
/// holds `at` files, plus up to 40 ms; the copy then fails or ends. A kill
/// point past the copy's end falls after its last close. Returns whether
/// the copy was still running when the daemon was killed.
fn kill_during(m: &mut Mounted, cmd: &str, dest: &std::path::Path, at: usize, extra_ms: u64) -> bool {
    let mut child =
        spawn(std::process::Command::new("bash").args(["-c", cmd]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null())).unwrap();
    let start = Instant::now();
    while count_files(dest) < at {
        if child.try_wait().unwrap().is_some() || start.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(extra_ms));
    let running = child.try_wait().unwrap().is_none();
    m.kill_daemon();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.wait();
    running
}

/// Rounds of a copy tool into one destination, the source changed between
/// rounds, the daemon killed at a random point of each.
fn copies_killed_at_random(scenario: &str, copy: impl Fn(&std::path::Path, &std::path::Path) -> String) {
    let Some(mut m) = Mounted::new(&["--level", "3"]) else { return };
    let mut rng = seeded(scenario);
    let mut source = Source::new(&mut rng, 40);
    let mut committed = Committed::default();
    std::fs::create_dir(m.path("dest")).unwrap();
    let mut mid_copy = 0;
    for round in 0..KILLS_PER_SCENARIO {
        if round > 0 {
            source.change(&mut rng);
        }
        let at = rng.range(0, source.files.len() as u64 + 4) as usize;
        let extra = rng.range(0, 40);
        let what = format!("{scenario} round {round} (killed at {at} files + {extra} ms)");
        let dest = m.path("dest");
        if kill_during(&mut m, &copy(source.dir.path(), &dest), &dest, at, extra) {
            mid_copy += 1;
        }
        m.remount_after_crash();
        committed.check_after_crash(&m, Some(("dest", &source.files)), &what);
    }
    eprintln!("{scenario}: {mid_copy} of {KILLS_PER_SCENARIO} kills landed while the copy ran");
    // Kill points that all fell after the copy would test only "after
    // close": most must land inside it.
    assert!(mid_copy * 2 > KILLS_PER_SCENARIO, "{scenario}: only {mid_copy} of {KILLS_PER_SCENARIO} kills landed while the copy ran");
}

#[test]
fn kills_during_cp_a_lose_no_committed_byte_and_show_no_partial_file() {
    copies_killed_at_random("cp -a", |src, dest| format!("cp -a '{}/.' '{}/'", src.display(), dest.display()));
}

#[test]
fn kills_during_rsync_a_lose_no_committed_byte_and_show_no_partial_file() {
    copies_killed_at_random("rsync -a", |src, dest| format!("rsync -a '{}/' '{}/'", src.display(), dest.display()));
}

/// One version of a file being rewritten again and again at the kill.
struct Rewrites {
    /// Versions whose close returned.
    closed: Vec<Vec<u8>>,
    /// The version being written (its close had not returned).
    in_flight: Option<Vec<u8>>,
}

#[test]
fn kills_just_after_close_returns_lose_nothing_closed() {
    let Some(mut m) = Mounted::new(&["--level", "3"]) else { return };
    let mut rng = seeded("after close");
    let mut committed = Committed::default();
    std::fs::write(m.path("rewritten"), b"first version\n").unwrap();
    committed.files.insert("rewritten".into(), b"first version\n".to_vec());
    for round in 0..KILLS_PER_SCENARIO {
        let dir = format!("round{round}");
        std::fs::create_dir(m.path(&dir)).unwrap();
        let files: Vec<(String, Vec<u8>)> = (0..12)
            .map(|i| {
                (format!("{dir}/f{i}"), {
                    let n = size(&mut rng);
                    content(&mut rng, n)
                })
            })
            .collect();
        let kill_after = rng.range(0, files.len() as u64) as usize;
        let rewrites: Vec<Vec<u8>> = (0..8)
            .map(|_| {
                let n = rng.range(256 << 10, 2 << 20) as usize;
                content(&mut rng, n)
            })
            .collect();
        let what = format!("after close round {round} (killed after file {kill_after})");
        // Files are written and closed here, in threads of this process:
        // no spawn may flush them meanwhile (see `writing_window`).
        let window = writing_window();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let rewriter = {
            let (path, stop) = (m.path("rewritten"), stop.clone());
            std::thread::spawn(move || {
                let mut state = Rewrites { closed: Vec::new(), in_flight: None };
                for data in rewrites.iter().cycle() {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    state.in_flight = Some(data.clone());
                    let Ok(mut f) = std::fs::File::create(&path) else { break };
                    if f.write_all(data).is_err() {
                        break;
                    }
                    // SAFETY: closing a descriptor this owns (a drop would hide the error).
                    use std::os::fd::IntoRawFd;
                    if unsafe { libc::close(f.into_raw_fd()) } != 0 {
                        break;
                    }
                    state.closed.push(state.in_flight.take().unwrap());
                }
                state
            })
        };
        let pid = m.pid() as libc::pid_t;
        for (i, (path, data)) in files.iter().enumerate() {
            let mut f = std::fs::File::create(m.path(path)).unwrap();
            f.write_all(data).unwrap();
            drop(f);
            if i == kill_after {
                // SAFETY: signalling our own child, the daemon.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                break;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let rewrites = rewriter.join().unwrap();
        drop(window);
        m.kill_daemon();
        m.remount_after_crash();
        // The files closed before the kill, byte-exact.
        for (path, data) in files.iter().take(kill_after + 1) {
            let got = std::fs::read(m.path(path)).unwrap_or_else(|e| panic!("{what}: {path} was closed before the kill and is gone: {e}"));
            assert!(&got == data, "{what}: {path} was closed before the kill and now holds {} bytes, not its {}", got.len(), data.len());
            committed.files.insert(path.clone(), data.clone());
        }
        // The file being rewritten: the last version whose close returned,
        // or the one in flight, whole.
        let got = std::fs::read(m.path("rewritten")).unwrap();
        let last_closed = rewrites.closed.last().or(committed.files.get("rewritten")).unwrap();
        assert!(
            &got == last_closed || rewrites.in_flight.as_ref() == Some(&got),
            "{what}: the file being rewritten holds {} bytes: neither its last closed version ({} bytes) nor the one in flight",
            got.len(),
            last_closed.len()
        );
        committed.files.insert("rewritten".into(), got);
        // Everything committed in earlier rounds, too.
        committed.check_after_crash(&m, None, &what);
    }
}

/// Found by the model through a mount: a daemon killed right after its
/// root was looked at left a stale mount that the next `at1 mount` took for
/// a live one ("busy") — it asked with a stat, which the kernel answered
/// from its attribute cache. It asks with a listing now.
#[test]
fn a_stale_mount_whose_root_attributes_are_cached_is_detached() {
    let Some(mut m) = Mounted::new(&[]) else { return };
    for round in 0..5 {
        let name = format!("f{round}");
        std::fs::write(m.path(&name), name.as_bytes()).unwrap();
        std::fs::metadata(&m.mnt).unwrap(); // the root's attributes, cached
        m.kill_daemon();
        m.remount_after_crash(); // panics if the daemon refuses the mount point
        assert_eq!(std::fs::read(m.path(&name)).unwrap(), name.as_bytes());
    }
}
