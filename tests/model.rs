//! Random sequences of file operations run against the mount and against a
//! reference model must agree, operation by operation. The model is a plain
//! directory plus the mount's one deliberate difference (docs/SEMANTICS.md):
//! close-to-open consistency — a file opened while another handle has it
//! open for writing reads the version committed at the last close, not the
//! uncommitted writes.

mod common;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use common::mount::Mounted;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

#[derive(Debug, Clone)]
enum Op {
    Create(u8),
    Write { file: u8, offset: u16, len: u16, byte: u8 },
    Truncate { file: u8, len: u16 },
    Rename(u8, u8),
    Unlink(u8),
    Read(u8),
    Reopen(u8),
    Close(u8),
    Fsync(u8),
    Link(u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    let f = 0u8..4;
    prop_oneof![
        f.clone().prop_map(Op::Create),
        (f.clone(), 0u16..9000, 0u16..3000, any::<u8>()).prop_map(|(file, offset, len, byte)| Op::Write { file, offset, len, byte }),
        (f.clone(), 0u16..9000).prop_map(|(file, len)| Op::Truncate { file, len }),
        (f.clone(), f.clone()).prop_map(|(a, b)| Op::Rename(a, b)),
        f.clone().prop_map(Op::Unlink),
        f.clone().prop_map(Op::Read),
        f.clone().prop_map(Op::Reopen),
        f.clone().prop_map(Op::Close),
        f.clone().prop_map(Op::Fsync),
        (f.clone(), f).prop_map(|(a, b)| Op::Link(a, b)),
    ]
}

/// One side: a directory and the handles open in it. On the model side,
/// `committed` holds, per inode, the content at the last close of one of
/// its handles — what a fresh reader of the mount sees while a writer is
/// open.
struct Side {
    dir: PathBuf,
    open: HashMap<u8, File>,
    model: bool,
    committed: HashMap<u64, Vec<u8>>,
}

fn name(i: u8) -> String {
    format!("f{i}")
}

/// What an operation returned, compared across the two sides.
#[derive(Debug, PartialEq)]
enum Outcome {
    Ok,
    Data(Digest),
    Err(i32),
}

/// Length and hash of file content (short enough to print).
#[derive(Debug, PartialEq)]
struct Digest(usize, u64);

fn digest(data: Vec<u8>) -> Outcome {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut h);
    Outcome::Data(Digest(data.len(), h.finish()))
}

fn outcome<T>(r: std::io::Result<T>, f: impl FnOnce(T) -> Outcome) -> Outcome {
    match r {
        Ok(v) => f(v),
        Err(e) => Outcome::Err(e.raw_os_error().unwrap_or(-1)),
    }
}

fn ino(f: &File) -> u64 {
    use std::os::unix::fs::MetadataExt;
    f.metadata().map(|m| m.ino()).unwrap_or(0)
}

/// The content of an open file (it may be write-only, or unlinked).
fn content(f: &File) -> Vec<u8> {
    use std::os::fd::AsRawFd;
    std::fs::read(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap_or_default()
}

impl Side {
    fn new(dir: PathBuf, model: bool) -> Self {
        Self { dir, open: HashMap::new(), model, committed: HashMap::new() }
    }

    fn path(&self, i: u8) -> PathBuf {
        self.dir.join(name(i))
    }

    /// A handle closes: on the mount, its close commits the file.
    fn close(&mut self, f: File) {
        if self.model {
            self.committed.insert(ino(&f), content(&f));
        }
    }

    fn keep(&mut self, i: u8, f: File) {
        if let Some(old) = self.open.insert(i, f) {
            self.close(old);
        }
    }

    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        let f = File::open(path)?;
        let inode = ino(&f);
        let writing = self.open.values().any(|h| ino(h) == inode);
        if self.model && writing {
            return Ok(self.committed.get(&inode).cloned().unwrap_or_default());
        }
        let mut data = Vec::new();
        let mut f = f;
        f.read_to_end(&mut data)?;
        Ok(data)
    }

    fn apply(&mut self, op: &Op) -> Outcome {
        match *op {
            Op::Create(i) => {
                let existed = self.path(i).exists();
                outcome(File::create(self.path(i)), |f| {
                    if !existed {
                        // A new inode (its number may be a freed one's).
                        self.committed.remove(&ino(&f));
                    }
                    self.keep(i, f);
                    Outcome::Ok
                })
            }
            Op::Write { file, offset, len, byte } => {
                let Some(f) = self.open.get_mut(&file) else { return Outcome::Err(-2) };
                outcome(f.seek(SeekFrom::Start(u64::from(offset))).and_then(|_| f.write_all(&vec![byte; usize::from(len)])), |_| Outcome::Ok)
            }
            Op::Truncate { file, len } => match self.open.get(&file) {
                Some(f) => outcome(f.set_len(u64::from(len)), |_| Outcome::Ok),
                None => outcome(OpenOptions::new().write(true).open(self.path(file)), |f| {
                    let r = f.set_len(u64::from(len));
                    self.close(f);
                    outcome(r, |_| Outcome::Ok)
                }),
            },
            Op::Rename(a, b) => outcome(std::fs::rename(self.path(a), self.path(b)), |_| Outcome::Ok),
            Op::Unlink(i) => outcome(std::fs::remove_file(self.path(i)), |_| Outcome::Ok),
            Op::Read(i) => outcome(self.read(&self.path(i)), digest),
            Op::Reopen(i) => {
                if let Some(old) = self.open.remove(&i) {
                    self.close(old);
                }
                outcome(OpenOptions::new().read(true).write(true).open(self.path(i)), |f| {
                    self.keep(i, f);
                    Outcome::Ok
                })
            }
            Op::Close(i) => {
                if let Some(old) = self.open.remove(&i) {
                    self.close(old);
                }
                Outcome::Ok
            }
            Op::Fsync(i) => {
                let Some(f) = self.open.get(&i) else { return Outcome::Err(-2) };
                let r = f.sync_all();
                if self.model {
                    // fsync commits, like a close.
                    let (inode, data) = (ino(f), content(f));
                    self.committed.insert(inode, data);
                }
                outcome(r, |_| Outcome::Ok)
            }
            Op::Link(a, b) => outcome(std::fs::hard_link(self.path(a), self.path(b)), |_| Outcome::Ok),
        }
    }

    fn close_all(&mut self) {
        let handles: Vec<File> = self.open.drain().map(|(_, f)| f).collect();
        for f in handles {
            self.close(f);
        }
    }

    /// Contents of every file, through a fresh open.
    fn snapshot(&self) -> Vec<(String, Outcome)> {
        let mut out: Vec<(String, Outcome)> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let mut data = Vec::new();
                File::open(e.path()).unwrap().read_to_end(&mut data).unwrap();
                (e.file_name().to_string_lossy().into_owned(), digest(data))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

fn run(mount_dir: &Path, plain_dir: &Path, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut a = Side::new(mount_dir.to_path_buf(), false);
    let mut b = Side::new(plain_dir.to_path_buf(), true);
    for (step, op) in ops.iter().enumerate() {
        let (x, y) = (a.apply(op), b.apply(op));
        prop_assert_eq!(&x, &y, "step {}: {:?}", step, op);
    }
    a.close_all();
    b.close_all();
    prop_assert_eq!(a.snapshot(), b.snapshot());
    Ok(())
}

#[test]
fn random_operation_sequences_agree_with_a_plain_directory() {
    let Some(m) = Mounted::new(&["--frame-size", "4096"]) else { return };
    let plain = tempfile::tempdir().unwrap();
    let mut runner = TestRunner::new(Config { cases: 128, failure_persistence: None, ..Config::default() });
    let case = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(&prop::collection::vec(op(), 1..40), |ops| {
            let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (md, pd) = (m.path(&format!("case{case}")), plain.path().join(format!("case{case}")));
            std::fs::create_dir(&md).unwrap();
            std::fs::create_dir(&pd).unwrap();
            run(&md, &pd, &ops)
        })
        .unwrap();
}
