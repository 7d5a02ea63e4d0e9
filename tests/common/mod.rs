//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod mount;

use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// A small-block configuration so that small inputs still have many blocks.
pub fn small_blocks() -> GateConfig {
    GateConfig { frame_size: 1000, row_group_bytes: 700, row_group_rows: 9, threads: 2, ..GateConfig::default() }
}

/// Runs a shell command under a timeout; returns (exit code, stdout, stderr).
pub fn sh(cmd: &str) -> (i32, String, String) {
    let out = std::process::Command::new("timeout")
        .args(["-k", "5", "300", "bash", "-c", cmd])
        .output()
        .expect("bash runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Runs a shell command and panics with its output if it fails.
pub fn sh_ok(cmd: &str) -> String {
    let (code, out, err) = sh(cmd);
    assert_eq!(code, 0, "command failed: {cmd}\nstdout: {out}\nstderr: {err}");
    out
}
