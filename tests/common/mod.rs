//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod forge;
pub mod mount;
pub mod users;
pub mod volume;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};

use at1::gate::{self, GateConfig};
use at1::reader::{AccessCost, Object, Reader};

/// `../shared/corpus` beside the repository.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus")
}

/// Every corpus file (sorted), or an empty list with a note when the shared
/// corpus is not there.
pub fn corpus_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(corpus_dir()) else {
        // CI always has the corpus beside the clone; elsewhere say so.
        assert!(std::env::var("CI").is_err(), "../shared/corpus is missing");
        eprintln!("note: ../shared/corpus not found; corpus tests have nothing to check");
        return out;
    };
    for d in dirs.flatten() {
        if d.path().is_dir() {
            for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
                out.push(f.path());
            }
        }
    }
    out.sort();
    out
}

pub fn at1_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_at1"))
}

/// Compresses `data` with `cfg` into `dir/name` and returns the object.
pub fn compress_bytes(data: &[u8], dir: &Path, name: &str, cfg: &GateConfig) -> (PathBuf, Arc<Object>) {
    let path = dir.join(name);
    gate::compress_to_path(data, &path, cfg, &|_| {}).expect("gate accepts the input");
    let object = Arc::new(Object::open(&path).expect("object opens"));
    (path, object)
}

/// All original bytes of an object through the reader.
pub fn read_all(object: &Arc<Object>) -> Vec<u8> {
    let mut cost = AccessCost::default();
    Reader::new(object.clone(), None).read_at(0, object.original_len() as usize, &mut cost).expect("object reads")
}

/// `len` pseudo-random bytes (xorshift from `seed`, not 0): data no
/// backend can shrink.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A small-block configuration so that small inputs still have many blocks.
pub fn small_blocks() -> GateConfig {
    GateConfig { frame_size: 1000, row_group_bytes: 700, row_group_rows: 9, threads: 2, ..GateConfig::default() }
}

/// Spawns in progress and writing windows open in this test binary. A child
/// holds a copy of every descriptor of the (multi-threaded) test process
/// from its fork to its `exec`, and closing a copy of a writing handle
/// flushes, i.e. commits (docs/SEMANTICS.md#flush). So a test that checks
/// what is *not* committed yet opens a [`writing_window`], and no fork
/// happens while one is open. Windows do not wait for each other.
struct Traffic {
    spawning: usize,
    windows: usize,
}

static TRAFFIC: Mutex<Traffic> = Mutex::new(Traffic { spawning: 0, windows: 0 });
static TRAFFIC_CHANGED: Condvar = Condvar::new();

/// Waits until `busy` is false, then applies `enter`.
fn enter_traffic(busy: impl Fn(&Traffic) -> bool, enter: impl FnOnce(&mut Traffic)) {
    let mut t = TRAFFIC.lock().unwrap_or_else(|e| e.into_inner());
    while busy(&t) {
        t = TRAFFIC_CHANGED.wait(t).unwrap_or_else(|e| e.into_inner());
    }
    enter(&mut t);
}

fn leave_traffic(leave: impl FnOnce(&mut Traffic)) {
    leave(&mut TRAFFIC.lock().unwrap_or_else(|e| e.into_inner()));
    TRAFFIC_CHANGED.notify_all();
}

/// Spawns `cmd` when no [`writing_window`] is open. `spawn` returns once the
/// child has exec'd, when its copies of close-on-exec descriptors are gone.
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    enter_traffic(|t| t.windows > 0, |t| t.spawning += 1);
    let child = cmd.spawn();
    leave_traffic(|t| t.spawning -= 1);
    child
}

/// Runs `cmd` to completion (see [`spawn`]).
pub fn run(cmd: &mut Command) -> std::io::Result<ExitStatus> {
    spawn(cmd)?.wait()
}

/// Holds off every spawn of this test binary while a test keeps a file of
/// a mount open for writing and checks that nothing is committed yet. The
/// holder must not spawn (through `sh`, a mount, ...) until it drops it.
#[must_use]
pub struct WritingWindow(());

pub fn writing_window() -> WritingWindow {
    enter_traffic(|t| t.spawning > 0, |t| t.windows += 1);
    WritingWindow(())
}

impl Drop for WritingWindow {
    fn drop(&mut self) {
        leave_traffic(|t| t.windows -= 1);
    }
}

/// The object files of a store (layout 2: `STORE/objects/ab/cdef….at1`).
pub fn store_objects(store: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for fan in std::fs::read_dir(store.join("objects")).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(fan.path()).into_iter().flatten().flatten() {
            out.push(f.path());
        }
    }
    out.sort();
    out
}

/// Runs a shell command under a timeout; returns (exit code, stdout, stderr).
pub fn sh(cmd: &str) -> (i32, String, String) {
    let child = spawn(Command::new("timeout").args(["-k", "5", "300", "bash", "-c", cmd]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()));
    let out = child.and_then(|c| c.wait_with_output()).expect("bash runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Runs a shell command and panics with its output if it fails.
pub fn sh_ok(cmd: &str) -> String {
    let (code, out, err) = sh(cmd);
    assert_eq!(code, 0, "command failed: {cmd}\nstdout: {out}\nstderr: {err}");
    out
}
