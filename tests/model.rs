//! Random sequences of file operations run against at1fs and against a
//! reference must agree, operation by operation. Two runs:
//!
//! - **In process** (`inprocess`): the volume API itself
//!   (`at1::volume::Volume`, no kernel) against a reference tree held in
//!   memory — names, kinds, modes, owners, link counts, contents byte for
//!   byte, xattrs, open handles with their staging — thousands of
//!   sequences in seconds, then the volume closed (or dropped, as by a
//!   crash), opened again and verified.
//! - **The same model through a real mount** (`inprocess::mounted`): the
//!   same operations and reference, made with `std::fs` and libc calls on
//!   a mount point, each sequence in a directory of its own, then the
//!   daemon unmounted or killed and the tree compared after the next
//!   mount; fewer sequences (each costs a mount). Where Linux answers by
//!   itself before the daemon is asked, the reference follows Linux (see
//!   that module).
//! - **Through a real mount, against a plain directory**: the mount plus the
//!   mount's one deliberate difference (docs/SEMANTICS.md): close-to-open
//!   consistency — a file opened while another handle has it open for
//!   writing reads the version committed at the last close, not the
//!   uncommitted writes.
//!
//! Failures are persisted (tests/model.proptest-regressions) and replayed
//! first on every run.

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
    let mut runner = TestRunner::new(Config {
        cases: 128,
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"))),
        ..Config::default()
    });
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

// ---------------------------------------------------------------- in-process

/// The in-process model: random operation sequences run against the
/// volume API itself (`at1::volume::Volume`, no FUSE, no kernel) and
/// against a reference tree held in memory, compared operation by
/// operation — results, errnos, bytes read, attributes — and as whole
/// trees at the end, after the handles close and again after the volume
/// is closed (or dropped as by a crash) and opened anew.
mod inprocess {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use at1::gate::GateConfig;
    use at1::volume::files::OpenFlags;
    use at1::volume::{Ino, Kind, OpenFile, Owner, RenameMode, SetAttr, TimeSet, Volume, VolumeConfig};
    use proptest::prelude::*;
    use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
    use sha2::{Digest, Sha256};

    /// Names paths are made of: few, so operations collide.
    const NAMES: [&str; 3] = ["a", "b", "c"];
    /// Open handles a sequence juggles.
    const SLOTS: usize = 3;
    const XATTR_NAMES: [&str; 3] = ["user.one", "user.two", "trusted.three"];
    const PERMS: [u32; 6] = [0o644, 0o755, 0o700, 0o2775, 0o4755, 0o1777];
    const IDS: [u32; 2] = [0, 1000];

    // ------------------------------------------------------------ operations

    #[derive(Debug, Clone)]
    pub enum Op {
        Create { path: Sel, perm: u32, owner: (u32, u32), slot: usize },
        Mkdir { path: Sel, perm: u32, owner: (u32, u32) },
        Symlink { path: Sel, target_len: usize },
        Mkfifo { path: Sel },
        Link { from: Sel, to: Sel },
        Unlink(Sel),
        Rmdir(Sel),
        Rename { from: Sel, to: Sel, mode: u8 },
        Open { path: Sel, write: bool, truncate: bool, slot: usize },
        Write { slot: usize, offset: u16, len: u16, byte: u8 },
        Read { slot: usize, offset: u16, len: u16 },
        Fstat(usize),
        Flush(usize),
        Fsync(usize),
        Release(usize),
        Truncate { path: Sel, size: u16 },
        Chmod { path: Sel, perm: u32 },
        Chown { path: Sel, uid: Option<u32>, gid: Option<u32> },
        Utime { path: Sel, mtime: i64 },
        SetXattr { path: Sel, name: usize, len: u8, flags: i32 },
        RemoveXattr { path: Sel, name: usize },
        GetXattr { path: Sel, name: usize },
        ListXattr(Sel),
        Check(Sel),
        Readdir(Sel),
    }

    /// A path, chosen when the operation runs: the `k`-th path that exists
    /// then, the `k`-th free name in an existing directory, or any path of
    /// one to three names (mostly missing: ENOENT, ENOTDIR). Choosing among
    /// what exists keeps most operations meaningful; the choice depends
    /// only on the operations before, so a sequence replays and shrinks.
    #[derive(Debug, Clone)]
    pub enum Sel {
        Existing(u16),
        File(u16),
        New(u16),
        Dir(u16),
        Raw(Vec<u8>),
    }

    fn raw(depth: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Sel> {
        prop::collection::vec(0u8..NAMES.len() as u8, depth).prop_map(Sel::Raw)
    }

    /// A path that mostly exists.
    fn old() -> impl Strategy<Value = Sel> {
        prop_oneof![8 => any::<u16>().prop_map(Sel::Existing), 1 => any::<u16>().prop_map(Sel::New), 1 => raw(1..=3)]
    }

    /// A path that is mostly a regular file's.
    fn file() -> impl Strategy<Value = Sel> {
        prop_oneof![7 => any::<u16>().prop_map(Sel::File), 2 => any::<u16>().prop_map(Sel::Existing), 1 => raw(1..=3)]
    }

    /// A path that is mostly free.
    fn new() -> impl Strategy<Value = Sel> {
        prop_oneof![6 => any::<u16>().prop_map(Sel::New), 3 => any::<u16>().prop_map(Sel::Existing), 1 => raw(1..=3)]
    }

    /// A directory's path, the root included (empty).
    fn dir() -> impl Strategy<Value = Sel> {
        prop_oneof![9 => any::<u16>().prop_map(Sel::Dir), 1 => raw(0..=2)]
    }

    /// A resolved path reads as its names.
    impl std::ops::Deref for Sel {
        type Target = [u8];
        fn deref(&self) -> &[u8] {
            match self {
                Sel::Raw(p) => p,
                other => panic!("{other:?} is not resolved yet"),
            }
        }
    }

    fn owner() -> impl Strategy<Value = (u32, u32)> {
        (prop::sample::select(&IDS[..]), prop::sample::select(&IDS[..]))
    }

    fn perm() -> impl Strategy<Value = u32> {
        prop::sample::select(&PERMS[..])
    }

    pub fn op() -> impl Strategy<Value = Op> {
        let slot = 0..SLOTS;
        prop_oneof![
            4 => (new(), perm(), owner(), slot.clone()).prop_map(|(path, perm, owner, slot)| Op::Create { path, perm, owner, slot }),
            3 => (new(), perm(), owner()).prop_map(|(path, perm, owner)| Op::Mkdir { path, perm, owner }),
            1 => (new(), 1usize..40).prop_map(|(path, target_len)| Op::Symlink { path, target_len }),
            1 => new().prop_map(|path| Op::Mkfifo { path }),
            2 => (file(), new()).prop_map(|(from, to)| Op::Link { from, to }),
            2 => old().prop_map(Op::Unlink),
            2 => old().prop_map(Op::Rmdir),
            4 => (old(), prop_oneof![new(), old()], 0u8..3).prop_map(|(from, to, mode)| Op::Rename { from, to, mode }),
            4 => (file(), any::<bool>(), any::<bool>(), slot.clone()).prop_map(|(path, write, truncate, slot)| Op::Open { path, write, truncate: write && truncate, slot }),
            8 => (slot.clone(), 0u16..9000, 0u16..3000, any::<u8>()).prop_map(|(slot, offset, len, byte)| Op::Write { slot, offset, len, byte }),
            4 => (slot.clone(), 0u16..9000, 1u16..5000).prop_map(|(slot, offset, len)| Op::Read { slot, offset, len }),
            2 => slot.clone().prop_map(Op::Fstat),
            3 => slot.clone().prop_map(Op::Flush),
            1 => slot.clone().prop_map(Op::Fsync),
            3 => slot.prop_map(Op::Release),
            2 => (file(), 0u16..9000).prop_map(|(path, size)| Op::Truncate { path, size }),
            1 => (old(), perm()).prop_map(|(path, perm)| Op::Chmod { path, perm }),
            1 => (old(), prop::option::of(prop::sample::select(&IDS[..])), prop::option::of(prop::sample::select(&IDS[..])))
                .prop_map(|(path, uid, gid)| Op::Chown { path, uid, gid }),
            1 => (old(), -1_000_000_000i64..4_000_000_000_000_000_000).prop_map(|(path, mtime)| Op::Utime { path, mtime }),
            3 => (old(), 0..XATTR_NAMES.len(), any::<u8>(), prop::sample::select(&[0, libc::XATTR_CREATE, libc::XATTR_REPLACE][..]))
                .prop_map(|(path, name, len, flags)| Op::SetXattr { path, name, len, flags }),
            1 => (old(), 0..XATTR_NAMES.len()).prop_map(|(path, name)| Op::RemoveXattr { path, name }),
            1 => (old(), 0..XATTR_NAMES.len()).prop_map(|(path, name)| Op::GetXattr { path, name }),
            1 => old().prop_map(Op::ListXattr),
            3 => file().prop_map(Op::Check),
            1 => dir().prop_map(Op::Readdir),
        ]
    }

    fn name_of(i: u8) -> &'static [u8] {
        NAMES[usize::from(i)].as_bytes()
    }

    fn symlink_target(len: usize) -> Vec<u8> {
        (0..len).map(|i| b"../x/"[i % 5]).collect()
    }

    fn xattr_value(len: u8) -> Vec<u8> {
        (0..len).map(|i| i.wrapping_mul(7)).collect()
    }

    // ------------------------------------------------------------ the reference

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum NodeKind {
        File,
        Dir,
        Symlink,
        Fifo,
    }

    /// One inode of the reference tree.
    #[derive(Debug, Clone)]
    struct Node {
        kind: NodeKind,
        perm: u32,
        uid: u32,
        gid: u32,
        /// A file's committed content.
        content: Vec<u8>,
        /// A file's staging content while it has writers, shared by them.
        staging: Option<Vec<u8>>,
        writers: usize,
        handles: usize,
        target: Vec<u8>,
        xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
        /// A directory's entries.
        entries: BTreeMap<Vec<u8>, usize>,
        /// A directory's parent.
        parent: usize,
        /// Names of a non-directory.
        links: u32,
    }

    const ROOT: usize = 0;

    /// What the volume promises, as a plain in-memory tree: no journal, no
    /// objects, no durability — only what each operation means.
    #[derive(Debug, Clone)]
    struct Reference {
        nodes: Vec<Option<Node>>,
    }

    type R<T> = Result<T, i32>;

    impl Reference {
        fn new() -> Reference {
            let root = Node::new(NodeKind::Dir, 0o755, 0, 0, ROOT);
            Reference { nodes: vec![Some(root)] }
        }

        fn node(&self, n: usize) -> &Node {
            self.nodes[n].as_ref().expect("a live node")
        }

        fn node_mut(&mut self, n: usize) -> &mut Node {
            self.nodes[n].as_mut().expect("a live node")
        }

        fn nlink(&self, n: usize) -> u32 {
            let node = self.node(n);
            match node.kind {
                NodeKind::Dir => 2 + node.entries.values().filter(|&&c| self.node(c).kind == NodeKind::Dir).count() as u32,
                _ => node.links,
            }
        }

        fn size(&self, n: usize) -> u64 {
            let node = self.node(n);
            match node.kind {
                NodeKind::File => node.staging.as_ref().unwrap_or(&node.content).len() as u64,
                NodeKind::Symlink => node.target.len() as u64,
                _ => 0,
            }
        }

        /// The directory holding the last name of `path`, and that name.
        fn parent_of<'p>(&self, path: &'p [u8]) -> R<(usize, &'p [u8])> {
            let (last, dirs) = path.split_last().expect("a non-empty path");
            let dir = self.dir_at(dirs)?;
            Ok((dir, std::slice::from_ref(last)))
        }

        fn dir_at(&self, path: &[u8]) -> R<usize> {
            let mut cur = ROOT;
            for &i in path {
                cur = *self.node(cur).entries.get(name_of(i)).ok_or(libc::ENOENT)?;
                if self.node(cur).kind != NodeKind::Dir {
                    return Err(libc::ENOTDIR);
                }
            }
            Ok(cur)
        }

        fn at(&self, path: &[u8]) -> R<usize> {
            let (dir, name) = self.parent_of(path)?;
            self.node(dir).entries.get(name_of(name[0])).copied().ok_or(libc::ENOENT)
        }

        fn add(&mut self, node: Node) -> usize {
            self.nodes.push(Some(node));
            self.nodes.len() - 1
        }

        /// A new entry `path` of `kind`; the group of a set-group-ID
        /// directory is inherited (and its bit, by directories).
        fn make(&mut self, path: &[u8], kind: NodeKind, perm: u32, owner: (u32, u32)) -> R<usize> {
            let (dir, name) = self.parent_of(path)?;
            let key = name_of(name[0]).to_vec();
            if self.node(dir).entries.contains_key(&key) {
                return Err(libc::EEXIST);
            }
            let d = self.node(dir);
            let setgid = d.perm & libc::S_ISGID != 0;
            let gid = if setgid { d.gid } else { owner.1 };
            let mut perm = perm & 0o7777;
            if kind == NodeKind::Dir && setgid {
                perm |= libc::S_ISGID;
            }
            let n = self.add(Node::new(kind, perm, owner.0, gid, dir));
            self.node_mut(dir).entries.insert(key, n);
            Ok(n)
        }

        /// Drops one name of non-directory `n`: gone at no names and no
        /// open handles.
        fn drop_link(&mut self, n: usize) {
            let node = self.node_mut(n);
            node.links -= 1;
            self.forget_if_unused(n);
        }

        fn forget_if_unused(&mut self, n: usize) {
            let node = self.node(n);
            if node.kind != NodeKind::Dir && node.links == 0 && node.handles == 0 {
                self.nodes[n] = None;
            }
        }

        fn is_ancestor(&self, ancestor: usize, mut dir: usize) -> bool {
            loop {
                if dir == ancestor {
                    return true;
                }
                if dir == ROOT {
                    return false;
                }
                dir = self.node(dir).parent;
            }
        }

        fn link(&mut self, from: &[u8], to: &[u8]) -> R<usize> {
            let n = self.at(from)?;
            let (dir, name) = self.parent_of(to)?;
            if self.node(n).kind == NodeKind::Dir {
                return Err(libc::EPERM);
            }
            let key = name_of(name[0]).to_vec();
            if self.node(dir).entries.contains_key(&key) {
                return Err(libc::EEXIST);
            }
            self.node_mut(dir).entries.insert(key, n);
            self.node_mut(n).links += 1;
            Ok(n)
        }

        fn unlink(&mut self, path: &[u8]) -> R<()> {
            let (dir, name) = self.parent_of(path)?;
            let key = name_of(name[0]);
            let n = *self.node(dir).entries.get(key).ok_or(libc::ENOENT)?;
            if self.node(n).kind == NodeKind::Dir {
                return Err(libc::EISDIR);
            }
            self.node_mut(dir).entries.remove(key);
            self.drop_link(n);
            Ok(())
        }

        fn rmdir(&mut self, path: &[u8]) -> R<()> {
            let (dir, name) = self.parent_of(path)?;
            let key = name_of(name[0]);
            let n = *self.node(dir).entries.get(key).ok_or(libc::ENOENT)?;
            if self.node(n).kind != NodeKind::Dir {
                return Err(libc::ENOTDIR);
            }
            if !self.node(n).entries.is_empty() {
                return Err(libc::ENOTEMPTY);
            }
            self.node_mut(dir).entries.remove(key);
            self.nodes[n] = None;
            Ok(())
        }

        fn rename(&mut self, from: &[u8], to: &[u8], mode: RenameMode) -> R<()> {
            let (src_dir, src_name) = self.parent_of(from)?;
            let (dst_dir, dst_name) = self.parent_of(to)?;
            let (src_key, dst_key) = (name_of(src_name[0]).to_vec(), name_of(dst_name[0]).to_vec());
            let moved = *self.node(src_dir).entries.get(&src_key).ok_or(libc::ENOENT)?;
            let target = self.node(dst_dir).entries.get(&dst_key).copied();
            if target == Some(moved) {
                return Ok(()); // two names of one inode: nothing happens
            }
            let is_dir = |r: &Self, n: usize| r.node(n).kind == NodeKind::Dir;
            if is_dir(self, moved) && self.is_ancestor(moved, dst_dir) {
                return Err(libc::EINVAL);
            }
            match (mode, target) {
                (RenameMode::NoReplace, Some(_)) => return Err(libc::EEXIST),
                (RenameMode::Exchange, None) => return Err(libc::ENOENT),
                (RenameMode::Exchange, Some(other)) => {
                    if is_dir(self, other) && self.is_ancestor(other, src_dir) {
                        return Err(libc::EINVAL);
                    }
                    self.node_mut(src_dir).entries.insert(src_key, other);
                    self.node_mut(dst_dir).entries.insert(dst_key, moved);
                    self.set_parent(moved, dst_dir);
                    self.set_parent(other, src_dir);
                    return Ok(());
                }
                _ => {}
            }
            if let Some(victim) = target {
                match (is_dir(self, moved), is_dir(self, victim)) {
                    (true, false) => return Err(libc::ENOTDIR),
                    (false, true) => return Err(libc::EISDIR),
                    (true, true) if !self.node(victim).entries.is_empty() => return Err(libc::ENOTEMPTY),
                    _ => {}
                }
                self.node_mut(dst_dir).entries.remove(&dst_key);
                if is_dir(self, victim) {
                    self.nodes[victim] = None;
                } else {
                    self.drop_link(victim);
                }
            }
            self.node_mut(src_dir).entries.remove(&src_key);
            self.node_mut(dst_dir).entries.insert(dst_key, moved);
            self.set_parent(moved, dst_dir);
            Ok(())
        }

        fn set_parent(&mut self, n: usize, dir: usize) {
            let node = self.node_mut(n);
            if node.kind == NodeKind::Dir {
                node.parent = dir;
            }
        }

        fn open(&mut self, path: &[u8], write: bool, truncate: bool) -> R<usize> {
            let n = self.at(path)?;
            self.open_node(n, write, truncate)?;
            Ok(n)
        }

        fn open_node(&mut self, n: usize, write: bool, truncate: bool) -> R<()> {
            let node = self.node_mut(n);
            match node.kind {
                NodeKind::File => {}
                NodeKind::Dir => return Err(libc::EISDIR),
                _ => return Err(libc::EINVAL),
            }
            node.handles += 1;
            if write {
                node.writers += 1;
                match &mut node.staging {
                    Some(s) if truncate => s.clear(),
                    Some(_) => {}
                    None => node.staging = Some(if truncate { Vec::new() } else { node.content.clone() }),
                }
            }
            Ok(())
        }

        fn write(&mut self, n: usize, offset: usize, data: &[u8]) {
            if data.is_empty() {
                return; // writes nothing, extends nothing (POSIX)
            }
            let staging = self.node_mut(n).staging.as_mut().expect("a writer has a staging file");
            if staging.len() < offset + data.len() {
                staging.resize(offset + data.len(), 0);
            }
            staging[offset..offset + data.len()].copy_from_slice(data);
        }

        fn read(&self, n: usize, write: bool, offset: usize, len: usize) -> Vec<u8> {
            let node = self.node(n);
            let data = if write { node.staging.as_ref().expect("a writer has a staging file") } else { &node.content };
            data.get(offset.min(data.len())..(offset + len).min(data.len())).unwrap_or_default().to_vec()
        }

        /// A close: a writer's staging content becomes the committed one.
        fn flush(&mut self, n: usize, write: bool) {
            let node = self.node_mut(n);
            if write {
                if let Some(s) = &node.staging {
                    node.content = s.clone();
                }
            }
        }

        fn release(&mut self, n: usize, write: bool) {
            let node = self.node_mut(n);
            node.handles -= 1;
            if write {
                node.writers -= 1;
                if node.writers == 0 {
                    node.content = node.staging.take().expect("a writer has a staging file");
                }
            }
            self.forget_if_unused(n);
        }

        fn truncate(&mut self, path: &[u8], size: usize) -> R<()> {
            let n = self.at(path)?;
            let node = self.node_mut(n);
            match node.kind {
                NodeKind::File => {}
                NodeKind::Dir => return Err(libc::EISDIR),
                _ => return Err(libc::EINVAL),
            }
            // A file being written is cut in its staging file (committed at
            // close); otherwise at once.
            node.staging.as_mut().unwrap_or(&mut node.content).resize(size, 0);
            Ok(())
        }

        fn chown(&mut self, path: &[u8], uid: Option<u32>, gid: Option<u32>) -> R<()> {
            let n = self.at(path)?;
            let node = self.node_mut(n);
            if let Some(u) = uid {
                node.uid = u;
            }
            if let Some(g) = gid {
                node.gid = g;
            }
            // chown clears set-user-ID, and set-group-ID with group
            // execute, of what is not a directory.
            if (uid.is_some() || gid.is_some()) && node.kind != NodeKind::Dir {
                node.perm &= !libc::S_ISUID;
                if node.perm & libc::S_IXGRP != 0 {
                    node.perm &= !libc::S_ISGID;
                }
            }
            Ok(())
        }

        fn set_xattr(&mut self, path: &[u8], name: &[u8], value: &[u8], flags: i32) -> R<()> {
            let n = self.at(path)?;
            let node = self.node_mut(n);
            let exists = node.xattrs.contains_key(name);
            if flags & libc::XATTR_CREATE != 0 && exists {
                return Err(libc::EEXIST);
            }
            if flags & libc::XATTR_REPLACE != 0 && !exists {
                return Err(libc::ENODATA);
            }
            node.xattrs.insert(name.to_vec(), value.to_vec());
            Ok(())
        }

        /// What survives the end of the daemon: committed contents; no
        /// handle, no staging file, no inode without a name.
        fn after_restart(&mut self) {
            for slot in &mut self.nodes {
                if let Some(node) = slot {
                    node.staging = None;
                    node.writers = 0;
                    node.handles = 0;
                    if node.kind != NodeKind::Dir && node.links == 0 {
                        *slot = None;
                    }
                }
            }
        }
    }

    impl Node {
        fn new(kind: NodeKind, perm: u32, uid: u32, gid: u32, parent: usize) -> Node {
            Node {
                kind,
                perm,
                uid,
                gid,
                content: Vec::new(),
                staging: None,
                writers: 0,
                handles: 0,
                target: Vec::new(),
                xattrs: BTreeMap::new(),
                entries: BTreeMap::new(),
                parent,
                links: 1,
            }
        }
    }

    // ------------------------------------------------------------ comparison

    /// What an operation gave, in terms both sides share: an inode is named
    /// by its reference node.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Out {
        Done,
        Node(usize),
        Len(u32),
        Bytes(Vec<u8>),
        Attr(AttrView),
        Names(Vec<(Vec<u8>, usize, NodeKind)>),
        Xattrs(Vec<Vec<u8>>),
        Mtime(i64),
        File { attr: AttrView, content: Vec<u8>, original_bytes: Vec<u8>, sha256: Vec<u8> },
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct AttrView {
        node: usize,
        /// A directory's `..`.
        dotdot: Option<usize>,
        kind: NodeKind,
        size: u64,
        nlink: u32,
        perm: u32,
        uid: u32,
        gid: u32,
    }

    fn node_kind(k: Kind) -> NodeKind {
        match k {
            Kind::File => NodeKind::File,
            Kind::Dir => NodeKind::Dir,
            Kind::Symlink => NodeKind::Symlink,
            Kind::Fifo => NodeKind::Fifo,
            other => panic!("the model makes no {other:?}"),
        }
    }

    fn rename_mode(m: u8) -> RenameMode {
        [RenameMode::Replace, RenameMode::NoReplace, RenameMode::Exchange][usize::from(m)]
    }

    fn sha256_hex(data: &[u8]) -> Vec<u8> {
        Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect::<String>().into_bytes()
    }

    /// Choosing paths: what exists in the reference now.
    impl Reference {
        // -------- what the reference says (compared with the volume's and the mount's answers)

        fn view(&self, n: usize) -> AttrView {
            let node = self.node(n);
            let dotdot = (node.kind == NodeKind::Dir).then_some(node.parent);
            AttrView { node: n, dotdot, kind: node.kind, size: self.size(n), nlink: self.nlink(n), perm: node.perm, uid: node.uid, gid: node.gid }
        }

        fn check(&self, path: &[u8]) -> V<Out> {
            let n = self.at(path)?;
            let attr = self.view(n);
            let node = self.node(n);
            if node.kind != NodeKind::File {
                return Ok(Out::Attr(attr));
            }
            Ok(Out::File {
                attr,
                content: node.content.clone(),
                original_bytes: node.content.len().to_string().into_bytes(),
                sha256: sha256_hex(&node.content),
            })
        }

        fn readdir_out(&self, dir: &[u8]) -> V<Out> {
            let d = self.dir_at(dir)?;
            let entries = &self.node(d).entries;
            Ok(Out::Names(entries.iter().map(|(name, &n)| (name.clone(), n, self.node(n).kind)).collect()))
        }

        fn xattrs_out(&self, path: &[u8]) -> V<Out> {
            let n = self.at(path)?;
            let node = self.node(n);
            let mut names: Vec<Vec<u8>> = node.xattrs.keys().cloned().collect();
            if node.kind == NodeKind::File {
                names.extend(at1::volume::xattr::VIRTUAL_NAMES.iter().map(|v| format!("user.at1.{v}").into_bytes()));
            }
            names.sort();
            Ok(Out::Xattrs(names))
        }

        /// Paths that exist (the root aside), and directories (the root
        /// included), in the reference now.
        fn existing(&self) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
            let (mut paths, mut dirs) = (Vec::new(), vec![Vec::new()]);
            let mut todo = vec![(Vec::new(), ROOT)];
            while let Some((path, d)) = todo.pop() {
                for (name, &n) in &self.node(d).entries {
                    let i = NAMES.iter().position(|x| x.as_bytes() == name.as_slice()).expect("a model name") as u8;
                    let p = [path.clone(), vec![i]].concat();
                    if self.node(n).kind == NodeKind::Dir {
                        dirs.push(p.clone());
                        todo.push((p.clone(), n));
                    }
                    paths.push(p);
                }
            }
            paths.sort();
            dirs.sort();
            (paths, dirs)
        }

        fn resolve_sel(&self, sel: &Sel) -> Sel {
            let (paths, dirs) = self.existing();
            let files: Vec<Vec<u8>> = paths.iter().filter(|p| self.at(p).is_ok_and(|n| self.node(n).kind == NodeKind::File)).cloned().collect();
            let free = || -> Vec<Vec<u8>> {
                let mut out = Vec::new();
                for d in &dirs {
                    let node = self.dir_at(d).expect("a listed directory");
                    for (i, name) in NAMES.iter().enumerate() {
                        if !self.node(node).entries.contains_key(name.as_bytes()) {
                            out.push([d.clone(), vec![i as u8]].concat());
                        }
                    }
                }
                out
            };
            let pick = |list: &[Vec<u8>], k: u16| list.get(usize::from(k) % list.len().max(1)).cloned();
            Sel::Raw(match sel {
                Sel::Raw(p) => p.clone(),
                Sel::Dir(k) => pick(&dirs, *k).unwrap_or_default(),
                Sel::Existing(k) => pick(&paths, *k).or_else(|| pick(&free(), *k)).unwrap_or_else(|| vec![0]),
                Sel::File(k) => pick(&files, *k).or_else(|| pick(&paths, *k)).or_else(|| pick(&free(), *k)).unwrap_or_else(|| vec![0]),
                Sel::New(k) => pick(&free(), *k).or_else(|| pick(&paths, *k)).unwrap_or_else(|| vec![0]),
            })
        }

        /// `op` with its paths chosen in the reference as it is now.
        fn resolve(&self, op: &Op) -> Op {
            let r = |s: &Sel| self.resolve_sel(s);
            let mut op = op.clone();
            match &mut op {
                Op::Create { path, .. }
                | Op::Mkdir { path, .. }
                | Op::Symlink { path, .. }
                | Op::Mkfifo { path }
                | Op::Open { path, .. }
                | Op::Truncate { path, .. }
                | Op::Chmod { path, .. }
                | Op::Chown { path, .. }
                | Op::Utime { path, .. }
                | Op::SetXattr { path, .. }
                | Op::RemoveXattr { path, .. }
                | Op::GetXattr { path, .. }
                | Op::Unlink(path)
                | Op::Rmdir(path)
                | Op::ListXattr(path)
                | Op::Check(path)
                | Op::Readdir(path) => *path = r(path),
                Op::Link { from, to } | Op::Rename { from, to, .. } => {
                    *from = r(from);
                    *to = r(to);
                }
                Op::Write { .. } | Op::Read { .. } | Op::Fstat(_) | Op::Flush(_) | Op::Fsync(_) | Op::Release(_) => {}
            }
            op
        }
    }

    /// A handle open on both sides.
    struct Handle {
        node: usize,
        write: bool,
        file: Arc<OpenFile>,
    }

    /// The volume and the reference, driven together.
    pub struct Pair {
        volume: Arc<Volume>,
        reference: Reference,
        handles: Vec<Option<Handle>>,
        /// Volume inode → reference node.
        inodes: HashMap<Ino, usize>,
    }

    type V<T> = Result<T, i32>;

    fn v<T>(r: at1::volume::VResult<T>) -> V<T> {
        r.map_err(|e| e.errno())
    }

    impl Pair {
        fn new(volume: Arc<Volume>) -> Pair {
            Pair { volume, reference: Reference::new(), handles: (0..SLOTS).map(|_| None).collect(), inodes: HashMap::from([(1, ROOT)]) }
        }

        fn node_of(&self, ino: Ino) -> usize {
            *self.inodes.get(&ino).unwrap_or_else(|| panic!("volume inode {ino} is no node of the reference"))
        }

        /// `op` with its paths chosen in the reference as it is now.
        fn resolve(&self, op: &Op) -> Op {
            self.reference.resolve(op)
        }

        // -------- the volume's side

        fn v_dir_at(&self, path: &[u8]) -> V<Ino> {
            let mut cur = 1;
            for &i in path {
                let a = v(self.volume.lookup(cur, name_of(i)))?;
                if a.kind != Kind::Dir {
                    return Err(libc::ENOTDIR);
                }
                cur = a.ino;
            }
            Ok(cur)
        }

        fn v_parent_of(&self, path: &[u8]) -> V<(Ino, &'static [u8])> {
            let (last, dirs) = path.split_last().expect("a non-empty path");
            Ok((self.v_dir_at(dirs)?, name_of(*last)))
        }

        fn v_at(&self, path: &[u8]) -> V<at1::volume::Attr> {
            let (dir, name) = self.v_parent_of(path)?;
            v(self.volume.lookup(dir, name))
        }

        fn v_view(&self, a: &at1::volume::Attr) -> AttrView {
            let dotdot = (a.kind == Kind::Dir).then(|| self.volume.parent_of(a.ino).map_or(usize::MAX, |p| self.node_of(p)));
            AttrView { node: self.node_of(a.ino), dotdot, kind: node_kind(a.kind), size: a.size, nlink: a.nlink, perm: a.perm, uid: a.uid, gid: a.gid }
        }

        fn v_content(&self, ino: Ino) -> V<Vec<u8>> {
            let h = v(self.volume.open_file(ino, OpenFlags::default()))?;
            let mut data = Vec::new();
            let result = loop {
                match v(self.volume.read(&h, data.len() as u64, 4096)) {
                    Ok(chunk) if chunk.is_empty() => break Ok(()),
                    Ok(chunk) => data.extend_from_slice(&chunk),
                    Err(e) => break Err(e),
                }
            };
            v(self.volume.release(&h))?;
            result.map(|()| data)
        }

        fn v_check(&self, path: &[u8]) -> V<Out> {
            let a = self.v_at(path)?;
            let attr = self.v_view(&a);
            if a.kind != Kind::File {
                return Ok(Out::Attr(attr));
            }
            Ok(Out::File {
                attr,
                content: self.v_content(a.ino)?,
                original_bytes: v(self.volume.getxattr(a.ino, b"user.at1.original_bytes"))?,
                sha256: v(self.volume.getxattr(a.ino, b"user.at1.sha256"))?,
            })
        }

        fn v_readdir(&self, dir: &[u8]) -> V<Out> {
            let ino = self.v_dir_at(dir)?;
            let entries = v(self.volume.readdir(ino, None, 1000))?;
            Ok(Out::Names(entries.into_iter().map(|e| (e.name, self.node_of(e.ino), node_kind(e.kind))).collect()))
        }

        fn v_xattrs(&self, path: &[u8]) -> V<Out> {
            let a = self.v_at(path)?;
            let mut names = v(self.volume.listxattr(a.ino))?;
            names.sort();
            Ok(Out::Xattrs(names))
        }

        // -------- both

        /// Releases the handle in `slot`, if any, on both sides.
        fn release(&mut self, slot: usize) -> (V<Out>, V<Out>) {
            let Some(h) = self.handles[slot].take() else { return (Ok(Out::Done), Ok(Out::Done)) };
            self.reference.release(h.node, h.write);
            (Ok(Out::Done), v(self.volume.release(&h.file)).map(|()| Out::Done))
        }

        /// Runs `op` on both sides; returns (reference, volume) outcomes.
        fn apply(&mut self, op: &Op) -> (V<Out>, V<Out>) {
            match op {
                Op::Create { path, perm, owner, slot } => {
                    let released = self.release(*slot);
                    if released.0 != released.1 {
                        return released;
                    }
                    let r = self.reference.make(path, NodeKind::File, *perm, *owner).inspect(|&n| {
                        self.reference.open_node(n, true, false).expect("a new file opens");
                    });
                    let got = self.v_parent_of(path).and_then(|(dir, name)| {
                        v(self.volume.create(dir, name, *perm, Owner { uid: owner.0, gid: owner.1 }, OpenFlags { write: true, truncate: false }))
                    });
                    self.keep(*slot, r, got.map(|(a, f)| (a.ino, f)), true)
                }
                Op::Open { path, write, truncate, slot } => {
                    let released = self.release(*slot);
                    if released.0 != released.1 {
                        return released;
                    }
                    let r = self.reference.open(path, *write, *truncate);
                    let got = self.v_at(path).and_then(|a| Ok((a.ino, v(self.volume.open_file(a.ino, OpenFlags { write: *write, truncate: *truncate }))?)));
                    if let (Ok(n), Ok((ino, _))) = (&r, &got) {
                        // Opening names no new inode: it must be the same.
                        if self.inodes.get(ino) != Some(n) {
                            return (Ok(Out::Node(*n)), Ok(Out::Node(self.inodes.get(ino).copied().unwrap_or(usize::MAX))));
                        }
                    }
                    self.keep(*slot, r, got, *write)
                }
                Op::Mkdir { path, perm, owner } => {
                    let r = self.reference.make(path, NodeKind::Dir, *perm, *owner);
                    let got = self.v_parent_of(path).and_then(|(dir, name)| v(self.volume.mkdir(dir, name, *perm, Owner { uid: owner.0, gid: owner.1 })));
                    self.made(r, got)
                }
                Op::Symlink { path, target_len } => {
                    let target = symlink_target(*target_len);
                    let r = self.reference.make(path, NodeKind::Symlink, 0o777, (0, 0)).inspect(|&n| {
                        self.reference.node_mut(n).target = target.clone();
                    });
                    let got = self.v_parent_of(path).and_then(|(dir, name)| v(self.volume.symlink(dir, name, &target, Owner { uid: 0, gid: 0 })));
                    self.made(r, got)
                }
                Op::Mkfifo { path } => {
                    let r = self.reference.make(path, NodeKind::Fifo, 0o644, (0, 0));
                    let got = self.v_parent_of(path).and_then(|(dir, name)| v(self.volume.mknod(dir, name, Kind::Fifo, 0o644, 0, Owner { uid: 0, gid: 0 })));
                    self.made(r, got)
                }
                Op::Link { from, to } => {
                    let r = self.reference.link(from, to).map(Out::Node);
                    let got = self.v_at(from).and_then(|a| {
                        let (dir, name) = self.v_parent_of(to)?;
                        v(self.volume.link(a.ino, dir, name)).map(|a| Out::Node(self.node_of(a.ino)))
                    });
                    (r, got)
                }
                Op::Unlink(path) => {
                    let r = self.reference.unlink(path).map(|()| Out::Done);
                    let got = self.v_parent_of(path).and_then(|(dir, name)| v(self.volume.unlink(dir, name))).map(|()| Out::Done);
                    (r, got)
                }
                Op::Rmdir(path) => {
                    let r = self.reference.rmdir(path).map(|()| Out::Done);
                    let got = self.v_parent_of(path).and_then(|(dir, name)| v(self.volume.rmdir(dir, name))).map(|()| Out::Done);
                    (r, got)
                }
                Op::Rename { from, to, mode } => {
                    let mode = rename_mode(*mode);
                    let r = self.reference.rename(from, to, mode).map(|()| Out::Done);
                    let got = self.v_parent_of(from).and_then(|(dir, name)| {
                        let (new_dir, new_name) = self.v_parent_of(to)?;
                        v(self.volume.rename(dir, name, new_dir, new_name, mode)).map(|()| Out::Done)
                    });
                    (r, got)
                }
                Op::Write { slot, offset, len, byte } => {
                    let Some(h) = &self.handles[*slot] else { return (Ok(Out::Done), Ok(Out::Done)) };
                    let data = vec![*byte; usize::from(*len)];
                    let r = if h.write {
                        self.reference.write(h.node, usize::from(*offset), &data);
                        Ok(Out::Len(u32::from(*len)))
                    } else {
                        Err(libc::EBADF)
                    };
                    (r, v(self.volume.write(&h.file, u64::from(*offset), &data)).map(Out::Len))
                }
                Op::Read { slot, offset, len } => {
                    let Some(h) = &self.handles[*slot] else { return (Ok(Out::Done), Ok(Out::Done)) };
                    let r = Ok(Out::Bytes(self.reference.read(h.node, h.write, usize::from(*offset), usize::from(*len))));
                    (r, v(self.volume.read(&h.file, u64::from(*offset), u32::from(*len))).map(Out::Bytes))
                }
                Op::Fstat(slot) => {
                    let Some(h) = &self.handles[*slot] else { return (Ok(Out::Done), Ok(Out::Done)) };
                    (Ok(Out::Attr(self.reference.view(h.node))), v(self.volume.getattr(h.file.ino)).map(|a| Out::Attr(self.v_view(&a))))
                }
                Op::Flush(slot) | Op::Fsync(slot) => {
                    let Some(h) = &self.handles[*slot] else { return (Ok(Out::Done), Ok(Out::Done)) };
                    self.reference.flush(h.node, h.write);
                    let got = if matches!(op, Op::Fsync(_)) { self.volume.fsync(&h.file) } else { self.volume.flush(&h.file) };
                    (Ok(Out::Done), v(got).map(|()| Out::Done))
                }
                Op::Release(slot) => self.release(*slot),
                Op::Truncate { path, size } => {
                    let r = self.reference.truncate(path, usize::from(*size)).map(|()| Out::Done);
                    let change = SetAttr { size: Some(u64::from(*size)), ..SetAttr::default() };
                    (r, self.v_at(path).and_then(|a| v(self.volume.setattr(a.ino, &change))).map(|_| Out::Done))
                }
                Op::Chmod { path, perm } => {
                    let r = self.reference.at(path).map(|n| {
                        self.reference.node_mut(n).perm = perm & 0o7777;
                        Out::Done
                    });
                    let change = SetAttr { perm: Some(*perm), ..SetAttr::default() };
                    (r, self.v_at(path).and_then(|a| v(self.volume.setattr(a.ino, &change))).map(|_| Out::Done))
                }
                Op::Chown { path, uid, gid } => {
                    let r = self.reference.chown(path, *uid, *gid).map(|()| Out::Done);
                    let change = SetAttr { uid: *uid, gid: *gid, ..SetAttr::default() };
                    (r, self.v_at(path).and_then(|a| v(self.volume.setattr(a.ino, &change))).map(|_| Out::Done))
                }
                Op::Utime { path, mtime } => {
                    let r = self.reference.at(path).map(|_| Out::Mtime(*mtime));
                    let change = SetAttr { mtime: Some(TimeSet::At(*mtime)), ..SetAttr::default() };
                    let got = self.v_at(path).and_then(|a| {
                        let set = v(self.volume.setattr(a.ino, &change))?;
                        let again = v(self.volume.getattr(a.ino))?;
                        // What setattr returns and what stat shows next agree.
                        Ok(if set.mtime == again.mtime {
                            Out::Mtime(set.mtime)
                        } else {
                            Out::Bytes(format!("{} then {}", set.mtime, again.mtime).into_bytes())
                        })
                    });
                    (r, got)
                }
                Op::SetXattr { path, name, len, flags } => {
                    let (name, value) = (XATTR_NAMES[*name].as_bytes(), xattr_value(*len));
                    let r = self.reference.set_xattr(path, name, &value, *flags).map(|()| Out::Done);
                    (r, self.v_at(path).and_then(|a| v(self.volume.setxattr(a.ino, name, &value, *flags))).map(|()| Out::Done))
                }
                Op::RemoveXattr { path, name } => {
                    let name = XATTR_NAMES[*name].as_bytes();
                    let r = self.reference.at(path).and_then(|n| match self.reference.node_mut(n).xattrs.remove(name) {
                        Some(_) => Ok(Out::Done),
                        None => Err(libc::ENODATA),
                    });
                    (r, self.v_at(path).and_then(|a| v(self.volume.removexattr(a.ino, name))).map(|()| Out::Done))
                }
                Op::GetXattr { path, name } => {
                    let name = XATTR_NAMES[*name].as_bytes();
                    let r = self.reference.at(path).and_then(|n| self.reference.node(n).xattrs.get(name).cloned().map(Out::Bytes).ok_or(libc::ENODATA));
                    (r, self.v_at(path).and_then(|a| v(self.volume.getxattr(a.ino, name))).map(Out::Bytes))
                }
                Op::ListXattr(path) => (self.reference.xattrs_out(path), self.v_xattrs(path)),
                Op::Check(path) => (self.reference.check(path), self.v_check(path)),
                Op::Readdir(dir) => (self.reference.readdir_out(dir), self.v_readdir(dir)),
            }
        }

        /// Records an inode made on both sides.
        fn made(&mut self, r: V<usize>, got: V<at1::volume::Attr>) -> (V<Out>, V<Out>) {
            if let (Ok(n), Ok(a)) = (&r, &got) {
                self.inodes.insert(a.ino, *n);
            }
            (r.map(Out::Node), got.map(|a| Out::Node(self.inodes.get(&a.ino).copied().unwrap_or(usize::MAX))))
        }

        /// Keeps a handle opened on both sides in `slot`.
        fn keep(&mut self, slot: usize, r: V<usize>, got: V<(Ino, Arc<OpenFile>)>, write: bool) -> (V<Out>, V<Out>) {
            match (r, got) {
                (Ok(n), Ok((ino, file))) => {
                    self.inodes.insert(ino, n);
                    self.handles[slot] = Some(Handle { node: n, write, file });
                    (Ok(Out::Node(n)), Ok(Out::Node(n)))
                }
                (Ok(n), Err(e)) => {
                    // Only the reference opened it: undo there, report.
                    self.reference.release(n, write);
                    (Ok(Out::Node(n)), Err(e))
                }
                (Err(e), Ok((ino, file))) => {
                    let _ = self.volume.release(&file);
                    (Err(e), Ok(Out::Node(self.inodes.get(&ino).copied().unwrap_or(usize::MAX))))
                }
                (Err(a), Err(b)) => (Err(a), Err(b)),
            }
        }

        fn release_all(&mut self) -> Result<(), TestCaseError> {
            for slot in 0..SLOTS {
                let (r, got) = self.release(slot);
                prop_assert_eq!(r, got, "release of slot {}", slot);
            }
            Ok(())
        }
    }

    /// What a side under test (the volume API, a mount) answers about a
    /// path, for the walk that compares it with the reference.
    trait Answers {
        fn reference(&self) -> &Reference;
        fn readdir(&self, dir: &[u8]) -> V<Out>;
        fn check(&self, path: &[u8]) -> V<Out>;
        fn xattrs(&self, path: &[u8]) -> V<Out>;
        fn xattr(&self, path: &[u8], name: &[u8]) -> V<Vec<u8>>;
        fn readlink(&self, path: &[u8]) -> V<Vec<u8>>;
    }

    impl Answers for Pair {
        fn reference(&self) -> &Reference {
            &self.reference
        }
        fn readdir(&self, dir: &[u8]) -> V<Out> {
            self.v_readdir(dir)
        }
        fn check(&self, path: &[u8]) -> V<Out> {
            self.v_check(path)
        }
        fn xattrs(&self, path: &[u8]) -> V<Out> {
            self.v_xattrs(path)
        }
        fn xattr(&self, path: &[u8], name: &[u8]) -> V<Vec<u8>> {
            self.v_at(path).and_then(|a| v(self.volume.getxattr(a.ino, name)))
        }
        fn readlink(&self, path: &[u8]) -> V<Vec<u8>> {
            self.v_at(path).and_then(|a| v(self.volume.readlink(a.ino)))
        }
    }

    /// Every node reachable from the root, compared: entries, attributes,
    /// contents, symlink targets, xattrs.
    fn compare_trees(side: &impl Answers, when: &str) -> Result<(), TestCaseError> {
        let reference = side.reference();
        let mut dirs: Vec<Vec<u8>> = vec![Vec::new()];
        while let Some(dir) = dirs.pop() {
            let (r, got) = (reference.readdir_out(&dir), side.readdir(&dir));
            prop_assert_eq!(&r, &got, "{}: entries of {:?}", when, dir);
            let Ok(Out::Names(entries)) = r else { continue };
            for (name, n, kind) in entries {
                let i = NAMES.iter().position(|x| x.as_bytes() == name).expect("a model name") as u8;
                let path = [dir.clone(), vec![i]].concat();
                prop_assert_eq!(reference.check(&path), side.check(&path), "{}: {:?}", when, path);
                prop_assert_eq!(reference.xattrs_out(&path), side.xattrs(&path), "{}: xattrs of {:?}", when, path);
                for (xname, value) in &reference.node(n).xattrs {
                    prop_assert_eq!(Ok(value.clone()), side.xattr(&path, xname), "{}: xattr of {:?}", when, path);
                }
                match kind {
                    NodeKind::Dir => dirs.push(path),
                    NodeKind::Symlink => {
                        prop_assert_eq!(Ok(reference.node(n).target.clone()), side.readlink(&path), "{}: target of {:?}", when, path);
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ runs

    /// Small blocks so short files still have several; one encoder thread
    /// (a commit per close is the model's hot path); a commit round every
    /// 5 ms so rounds and garbage collection run among the operations (and
    /// a volume dropped without `close` lets go of its store soon).
    fn config() -> VolumeConfig {
        VolumeConfig {
            gate: GateConfig { frame_size: 1024, level: 3, threads: 1, ..GateConfig::default() },
            cache_size: 1 << 20,
            commit_interval: Duration::from_millis(5),
            // No background re-encoding: its worker holds the volume while
            // it waits for quiet and re-encodes, so a volume dropped as by
            // a crash is not freed (and does not let go of its store) until
            // the worker's batch is done — thousands of sequences would
            // take many minutes and pile up workers. The re-encoding is
            // covered through a mount (crash, durability tests).
            fast_writes: false,
            // Files of a few KiB are made of several extents.
            segment_size: 4096,
            ..VolumeConfig::default()
        }
    }

    /// A temp dir for a store, in memory where the machine has a tmpfs
    /// (fsyncs cost nothing there, and the model is about meaning, not
    /// disks: thousands of sequences run in seconds).
    fn scratch() -> tempfile::TempDir {
        let shm = std::path::Path::new("/dev/shm");
        let in_memory = if shm.is_dir() { tempfile::tempdir_in(shm).ok() } else { None };
        in_memory.unwrap_or_else(|| tempfile::tempdir().expect("temp dir"))
    }

    /// Opens the store at `dir`; a volume dropped without `close` (a crash)
    /// lets go of the store's lock once its commit thread wakes.
    fn open_volume(dir: &std::path::Path) -> Arc<Volume> {
        let start = Instant::now();
        loop {
            match Volume::open(dir, config()) {
                Ok(v) => return v,
                Err(e) if start.elapsed() > Duration::from_secs(20) => panic!("the store does not open again: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }

    /// One sequence: operation by operation, then the whole tree after the
    /// last close, then again after the volume ends — closed cleanly, or
    /// dropped with handles open and writes staged (as a crash: recovery
    /// runs at the next open) — and opens anew; the store then verifies.
    pub fn run_case(ops: &[Op], clean: bool) -> Result<(), TestCaseError> {
        let dir = scratch();
        let mut pair = Pair::new(open_volume(dir.path()));
        for (step, op) in ops.iter().enumerate() {
            let op = pair.resolve(op);
            let (r, got) = pair.apply(&op);
            prop_assert_eq!(r, got, "step {}: {:?}", step, op);
        }
        if clean {
            pair.release_all()?;
            compare_trees(&pair, "after the last close")?;
            pair.volume.close().map_err(|e| TestCaseError::fail(format!("close: {e}")))?;
        }
        let Pair { volume, mut reference, handles, inodes } = pair;
        drop(handles);
        drop(volume);
        reference.after_restart();
        let pair = Pair { volume: open_volume(dir.path()), reference, handles: (0..SLOTS).map(|_| None).collect(), inodes };
        compare_trees(&pair, if clean { "after a clean close and open" } else { "after a crash and open" })?;
        let report = at1::volume::check::verify(&pair.volume, |_| {}).map_err(|e| TestCaseError::fail(format!("verify: {e}")))?;
        prop_assert!(report.ok(), "verify after reopening: {:?}", report);
        pair.volume.close().map_err(|e| TestCaseError::fail(format!("close: {e}")))?;
        Ok(())
    }

    pub fn runner(default_cases: u32) -> TestRunner {
        let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(default_cases);
        TestRunner::new(Config {
            cases,
            source_file: Some(file!()),
            failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
            ..Config::default()
        })
    }

    // ------------------------------------------------------------ through a mount

    /// The same model through a real mount: the operations made with
    /// `std::fs` and libc calls on a mount point, the same reference
    /// beside them. Where the kernel answers by itself what never reaches
    /// the daemon (opening what is not a regular file; chmod of a symlink,
    /// which Linux has not; user xattrs of symlinks and FIFOs, which the
    /// kernel refuses), the model's answer is only checked to agree in
    /// kind, not by errno.
    pub mod mounted {
        use std::ffi::{CString, OsStr};
        use std::fs::{File, Metadata};
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
        use std::path::{Path, PathBuf};

        use super::*;
        use crate::common::mount::Mounted;

        /// The answer to an operation the kernel refuses by itself (the
        /// reference must refuse it too, with whatever errno).
        const REFUSED: i32 = -1;

        struct MountHandle {
            node: usize,
            write: bool,
            file: File,
        }

        /// A mount's directory and the reference, driven together.
        pub struct MountPair {
            root: PathBuf,
            reference: Reference,
            handles: Vec<Option<MountHandle>>,
            /// st_ino → reference node.
            inodes: HashMap<u64, usize>,
        }

        fn errno(e: std::io::Error) -> i32 {
            e.raw_os_error().unwrap_or(libc::EIO)
        }

        fn io<T>(r: std::io::Result<T>) -> V<T> {
            r.map_err(errno)
        }

        fn c(path: &Path) -> CString {
            CString::new(path.as_os_str().as_bytes()).expect("no NUL in a model path")
        }

        fn c_name(name: &[u8]) -> CString {
            CString::new(name).expect("no NUL in an xattr name")
        }

        /// A libc call's result: 0 or -1 with errno.
        fn rc(r: libc::c_int) -> V<()> {
            if r == 0 {
                Ok(())
            } else {
                Err(errno(std::io::Error::last_os_error()))
            }
        }

        fn kind_of(md: &Metadata) -> NodeKind {
            let t = md.file_type();
            if t.is_dir() {
                NodeKind::Dir
            } else if t.is_symlink() {
                NodeKind::Symlink
            } else if t.is_fifo() {
                NodeKind::Fifo
            } else {
                NodeKind::File
            }
        }

        /// Only the reference's kind of answer counts: a refusal.
        fn refused(r: V<Out>) -> (V<Out>, V<Out>) {
            (r.map_err(|_| REFUSED), Err(REFUSED))
        }

        fn lgetxattr(path: &Path, name: &[u8]) -> V<Vec<u8>> {
            let mut buf = vec![0u8; 1 << 16];
            // SAFETY: valid C strings; the buffer's length is passed.
            let n = unsafe { libc::lgetxattr(c(path).as_ptr(), c_name(name).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                return Err(errno(std::io::Error::last_os_error()));
            }
            buf.truncate(n as usize);
            Ok(buf)
        }

        impl MountPair {
            fn new(root: PathBuf) -> MountPair {
                let ino = std::fs::metadata(&root).expect("the case's directory").ino();
                MountPair { root, reference: Reference::new(), handles: (0..SLOTS).map(|_| None).collect(), inodes: HashMap::from([(ino, ROOT)]) }
            }

            fn path(&self, p: &[u8]) -> PathBuf {
                let mut out = self.root.clone();
                out.extend(p.iter().map(|&i| NAMES[usize::from(i)]));
                out
            }

            fn node_of(&self, ino: u64) -> usize {
                self.inodes.get(&ino).copied().unwrap_or(usize::MAX)
            }

            fn lstat(&self, p: &[u8]) -> V<Metadata> {
                io(std::fs::symlink_metadata(self.path(p)))
            }

            fn view(&self, md: &Metadata, path: Option<&Path>) -> AttrView {
                let kind = kind_of(md);
                let dotdot = match (kind, path) {
                    (NodeKind::Dir, Some(p)) => Some(std::fs::symlink_metadata(p.join("..")).map_or(usize::MAX, |m| self.node_of(m.ino()))),
                    _ => None,
                };
                AttrView {
                    node: self.node_of(md.ino()),
                    dotdot,
                    kind,
                    size: md.size(),
                    nlink: md.nlink() as u32,
                    perm: md.mode() & 0o7777,
                    uid: md.uid(),
                    gid: md.gid(),
                }
            }

            fn m_check(&self, p: &[u8]) -> V<Out> {
                let path = self.path(p);
                let md = self.lstat(p)?;
                let attr = self.view(&md, Some(&path));
                if attr.kind != NodeKind::File {
                    return Ok(Out::Attr(attr));
                }
                let mut f = io(std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path))?;
                let mut content = Vec::new();
                io(std::io::Read::read_to_end(&mut f, &mut content))?;
                Ok(Out::File { attr, content, original_bytes: lgetxattr(&path, b"user.at1.original_bytes")?, sha256: lgetxattr(&path, b"user.at1.sha256")? })
            }

            fn m_readdir(&self, dir: &[u8]) -> V<Out> {
                let mut out = Vec::new();
                for e in io(std::fs::read_dir(self.path(dir)))? {
                    let e = io(e)?;
                    let md = io(e.metadata())?;
                    out.push((e.file_name().as_bytes().to_vec(), self.node_of(md.ino()), kind_of(&md)));
                }
                out.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(Out::Names(out))
            }

            fn m_xattrs(&self, p: &[u8]) -> V<Out> {
                let path = self.path(p);
                let mut buf = vec![0u8; 1 << 16];
                // SAFETY: a valid C string; the buffer's length is passed.
                let n = unsafe { libc::llistxattr(c(&path).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    return Err(errno(std::io::Error::last_os_error()));
                }
                let mut names: Vec<Vec<u8>> = buf[..n as usize].split(|&b| b == 0).filter(|s| !s.is_empty()).map(<[u8]>::to_vec).collect();
                names.sort();
                Ok(Out::Xattrs(names))
            }

            /// Whether `p` is there and not a regular file or directory
            /// (a symlink or a FIFO).
            fn is_special(&self, p: &[u8]) -> bool {
                self.lstat(p).is_ok_and(|md| matches!(kind_of(&md), NodeKind::Symlink | NodeKind::Fifo))
            }

            /// Whether the directory holding `p` is set-group-ID.
            fn parent_setgid(&self, p: &[u8]) -> bool {
                let parent = self.path(&p[..p.len() - 1]);
                std::fs::metadata(parent).is_ok_and(|m| m.mode() & libc::S_ISGID != 0)
            }

            /// Gives a new entry the owner and mode the model asks for (the
            /// caller is root; a set-group-ID parent keeps its group).
            fn own(&self, p: &[u8], perm: u32, owner: (u32, u32), dir: bool) -> V<u64> {
                let path = self.path(p);
                let setgid = self.parent_setgid(p);
                let gid = if setgid { u32::MAX } else { owner.1 };
                // SAFETY: a valid C string.
                rc(unsafe { libc::lchown(c(&path).as_ptr(), owner.0, gid) })?;
                let perm = (perm & 0o7777) | if dir && setgid { libc::S_ISGID } else { 0 };
                io(std::fs::set_permissions(&path, std::fs::Permissions::from_mode(perm)))?;
                Ok(io(std::fs::symlink_metadata(&path))?.ino())
            }

            fn release(&mut self, slot: usize) -> (V<Out>, V<Out>) {
                let Some(h) = self.handles[slot].take() else { return (Ok(Out::Done), Ok(Out::Done)) };
                // A close is the kernel's flush (a commit) and then its
                // release, even while another handle still writes.
                self.reference.flush(h.node, h.write);
                self.reference.release(h.node, h.write);
                drop(h.file);
                (Ok(Out::Done), Ok(Out::Done))
            }

            fn apply(&mut self, op: &Op) -> (V<Out>, V<Out>) {
                match op {
                    Op::Create { path, perm, owner, slot } => {
                        let released = self.release(*slot);
                        if released.0 != released.1 {
                            return released;
                        }
                        let r = self.reference.make(path, NodeKind::File, *perm, *owner).inspect(|&n| {
                            self.reference.open_node(n, true, false).expect("a new file opens");
                        });
                        let made = std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(self.path(path));
                        let got = io(made).and_then(|f| Ok((self.own(path, *perm, *owner, false)?, f)));
                        self.keep(*slot, r, got, true)
                    }
                    Op::Open { path, write, truncate, slot } => {
                        let released = self.release(*slot);
                        if released.0 != released.1 {
                            return released;
                        }
                        if self.lstat(path).is_ok_and(|m| kind_of(&m) != NodeKind::File) {
                            // The kernel opens a directory read-only itself,
                            // follows a symlink, blocks on a FIFO.
                            return refused(self.reference.open(path, *write, *truncate).map(Out::Node));
                        }
                        let r = self.reference.open(path, *write, *truncate);
                        let opened =
                            std::fs::OpenOptions::new().read(true).write(*write).truncate(*truncate).custom_flags(libc::O_NOFOLLOW).open(self.path(path));
                        let got = io(opened).and_then(|f| Ok((io(f.metadata())?.ino(), f)));
                        if let (Ok(n), Ok((ino, _))) = (&r, &got) {
                            if self.inodes.get(ino) != Some(n) {
                                return (Ok(Out::Node(*n)), Ok(Out::Node(self.node_of(*ino))));
                            }
                        }
                        self.keep(*slot, r, got, *write)
                    }
                    Op::Mkdir { path, perm, owner } => {
                        let r = self.reference.make(path, NodeKind::Dir, *perm, *owner);
                        let got = io(std::fs::create_dir(self.path(path))).and_then(|()| self.own(path, *perm, *owner, true));
                        self.made(r, got)
                    }
                    Op::Symlink { path, target_len } => {
                        // The kernel follows a symlink in the middle of a
                        // path, which the model knows nothing of: each
                        // target starts at a file outside the mount, so a
                        // path through it is ENOTDIR as in the reference.
                        let target = [b"/dev/null/".as_slice(), &symlink_target(*target_len)].concat();
                        let r = self.reference.make(path, NodeKind::Symlink, 0o777, (0, 0)).inspect(|&n| {
                            self.reference.node_mut(n).target = target.clone();
                        });
                        let got = io(std::os::unix::fs::symlink(OsStr::from_bytes(&target), self.path(path))).and_then(|()| Ok(self.lstat(path)?.ino()));
                        self.made(r, got)
                    }
                    Op::Mkfifo { path } => {
                        let r = self.reference.make(path, NodeKind::Fifo, 0o644, (0, 0));
                        // SAFETY: a valid C string.
                        let got = rc(unsafe { libc::mknod(c(&self.path(path)).as_ptr(), libc::S_IFIFO | 0o644, 0) })
                            .and_then(|()| io(std::fs::set_permissions(self.path(path), std::fs::Permissions::from_mode(0o644))))
                            .and_then(|()| Ok(self.lstat(path)?.ino()));
                        self.made(r, got)
                    }
                    Op::Link { from, to } => {
                        // Linux answers an existing new name (EEXIST) before
                        // a directory source (EPERM).
                        let r = match (self.reference.at(from), self.reference.at(to)) {
                            (Ok(_), Ok(_)) => Err(libc::EEXIST),
                            _ => self.reference.link(from, to).map(Out::Node),
                        };
                        let got = io(std::fs::hard_link(self.path(from), self.path(to))).and_then(|()| Ok(Out::Node(self.node_of(self.lstat(to)?.ino()))));
                        (r, got)
                    }
                    Op::Unlink(path) => (self.reference.unlink(path).map(|()| Out::Done), io(std::fs::remove_file(self.path(path))).map(|()| Out::Done)),
                    Op::Rmdir(path) => (self.reference.rmdir(path).map(|()| Out::Done), io(std::fs::remove_dir(self.path(path))).map(|()| Out::Done)),
                    Op::Rename { from, to, mode } => {
                        // Linux refuses RENAME_NOREPLACE onto any existing
                        // name, the source's own or another of its links
                        // included, before asking the daemon (the volume API
                        // lets a rename onto the same inode be, as rename(2)
                        // without flags does).
                        let onto_itself = *mode == 1 && self.reference.at(from).is_ok() && self.reference.at(to).is_ok();
                        let r = if onto_itself { Err(libc::EEXIST) } else { self.reference.rename(from, to, rename_mode(*mode)).map(|()| Out::Done) };
                        let flags = [0, libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE][usize::from(*mode)];
                        // SAFETY: valid C strings.
                        let got =
                            rc(unsafe { libc::renameat2(libc::AT_FDCWD, c(&self.path(from)).as_ptr(), libc::AT_FDCWD, c(&self.path(to)).as_ptr(), flags) });
                        match (r, got) {
                            // Linux checks a rename's many conditions in an
                            // order of its own (an exchange with a missing
                            // name before a directory into itself, ...):
                            // when both refuse, which errno is the kernel's.
                            (Err(_), Err(_)) => (Err(REFUSED), Err(REFUSED)),
                            (r, got) => (r, got.map(|()| Out::Done)),
                        }
                    }
                    Op::Write { slot, offset, len, byte } => {
                        let Some(h) = &self.handles[*slot] else { return (Ok(Out::Done), Ok(Out::Done)) };
                        let data = vec![*byte; usize::from(*len)];
                        let r = if h.write {
                            let n = h.node;
                            self.reference.write(n, usize::from(*offset), &data);
                            Ok(Out::Len(u32::from(*len)))
                        } else {
                            Err(libc::EBADF)
                        };
                        let h = self.handles[*slot].as_ref().expect("the handle");
                        (r, io(h.file.write_at(&data, u64::from(*offset))).map(|n| Out::Len(n as u32)))
                    }
                    Op::Read { slot, offset, len } => {
                        let Some(h) = &self.handles[*slot] else { return (Ok(Out::Done), Ok(Out::Done)) };
                        let r = self.reference.read(h.node, h.write, usize::from(*offset), usize::from(*len));
                        // While another handle writes the file, the kernel may end
                        // a reader's read early at the size it knows (a writer's
                        // O_TRUNC or truncate changes it at once, and the
                        // releases that commit are asynchronous): the bytes it
                        // gives must be the committed ones, fewer is allowed.
                        let may_end_early = !h.write && self.reference.node(h.node).writers > 0;
                        let mut buf = vec![0u8; usize::from(*len)];
                        let mut got = 0;
                        let result = loop {
                            match h.file.read_at(&mut buf[got..], u64::from(*offset) + got as u64) {
                                Ok(0) => break Ok(()),
                                Ok(n) => {
                                    got += n;
                                    if got == buf.len() {
                                        break Ok(());
                                    }
                                }
                                Err(e) => break Err(errno(e)),
                            }
                        };
                        buf.truncate(got);
                        let r = if may_end_early && result.is_ok() && r.starts_with(&buf) { buf.clone() } else { r };
                        (Ok(Out::Bytes(r)), result.map(|()| Out::Bytes(buf)))
                    }
                    Op::Fstat(slot) => {
                        let Some(h) = &self.handles[*slot] else { return (Ok(Out::Done), Ok(Out::Done)) };
                        (Ok(Out::Attr(self.reference.view(h.node))), io(h.file.metadata()).map(|m| Out::Attr(self.view(&m, None))))
                    }
                    Op::Flush(slot) | Op::Fsync(slot) => {
                        let Some(h) = &self.handles[*slot] else { return (Ok(Out::Done), Ok(Out::Done)) };
                        let (n, write) = (h.node, h.write);
                        let got = if matches!(op, Op::Fsync(_)) {
                            io(h.file.sync_all())
                        } else {
                            // A close of a duplicate: the kernel's flush, the
                            // handle stays open.
                            use std::os::fd::AsRawFd;
                            // SAFETY: duplicating and closing a descriptor this owns.
                            let dup = unsafe { libc::dup(h.file.as_raw_fd()) };
                            // SAFETY: closing the duplicate made here.
                            if dup < 0 {
                                Err(errno(std::io::Error::last_os_error()))
                            } else {
                                rc(unsafe { libc::close(dup) })
                            }
                        };
                        self.reference.flush(n, write);
                        (Ok(Out::Done), got.map(|()| Out::Done))
                    }
                    Op::Release(slot) => self.release(*slot),
                    Op::Truncate { path, size } => {
                        if self.lstat(path).is_ok_and(|m| kind_of(&m) == NodeKind::Symlink) {
                            // truncate(2) follows a symlink.
                            return refused(self.reference.truncate(path, usize::from(*size)).map(|()| Out::Done));
                        }
                        let r = self.reference.truncate(path, usize::from(*size)).map(|()| Out::Done);
                        // SAFETY: a valid C string.
                        (r, rc(unsafe { libc::truncate(c(&self.path(path)).as_ptr(), libc::off_t::from(*size)) }).map(|()| Out::Done))
                    }
                    Op::Chmod { path, perm } => {
                        if self.lstat(path).is_ok_and(|m| kind_of(&m) == NodeKind::Symlink) {
                            return (Ok(Out::Done), Ok(Out::Done)); // Linux has no chmod of a symlink
                        }
                        let r = self.reference.at(path).map(|n| {
                            self.reference.node_mut(n).perm = perm & 0o7777;
                            Out::Done
                        });
                        (r, io(std::fs::set_permissions(self.path(path), std::fs::Permissions::from_mode(*perm))).map(|()| Out::Done))
                    }
                    Op::Chown { path, uid, gid } => {
                        let r = self.reference.chown(path, *uid, *gid).map(|()| Out::Done);
                        // Linux clears the set-ID bits of a non-directory at
                        // every chown, one that changes nothing included.
                        if let (Ok(n), None, None) = (self.reference.at(path), uid, gid) {
                            let node = self.reference.node_mut(n);
                            if node.kind != NodeKind::Dir {
                                node.perm &= !libc::S_ISUID;
                                if node.perm & libc::S_IXGRP != 0 {
                                    node.perm &= !libc::S_ISGID;
                                }
                            }
                        }
                        // SAFETY: a valid C string.
                        let got = rc(unsafe { libc::lchown(c(&self.path(path)).as_ptr(), uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX)) });
                        (r, got.map(|()| Out::Done))
                    }
                    Op::Utime { path, mtime } => {
                        let r = self.reference.at(path).map(|_| Out::Mtime(*mtime));
                        let times = [
                            libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
                            libc::timespec { tv_sec: mtime.div_euclid(1_000_000_000), tv_nsec: mtime.rem_euclid(1_000_000_000) },
                        ];
                        // SAFETY: a valid C string and two timespecs.
                        let got = rc(unsafe { libc::utimensat(libc::AT_FDCWD, c(&self.path(path)).as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
                            .and_then(|()| self.lstat(path))
                            .map(|m| Out::Mtime(m.mtime() * 1_000_000_000 + m.mtime_nsec()));
                        (r, got)
                    }
                    Op::SetXattr { path, name, len, flags } => {
                        let (name, value) = (XATTR_NAMES[*name].as_bytes(), xattr_value(*len));
                        if name.starts_with(b"user.") && self.is_special(path) {
                            return (Err(libc::EPERM), self.m_setxattr(path, name, &value, *flags));
                        }
                        let r = self.reference.set_xattr(path, name, &value, *flags).map(|()| Out::Done);
                        (r, self.m_setxattr(path, name, &value, *flags))
                    }
                    Op::RemoveXattr { path, name } => {
                        let name = XATTR_NAMES[*name].as_bytes();
                        // SAFETY: valid C strings.
                        let got = rc(unsafe { libc::lremovexattr(c(&self.path(path)).as_ptr(), c_name(name).as_ptr()) }).map(|()| Out::Done);
                        if name.starts_with(b"user.") && self.is_special(path) {
                            return (Err(libc::EPERM), got);
                        }
                        let r = self.reference.at(path).and_then(|n| match self.reference.node_mut(n).xattrs.remove(name) {
                            Some(_) => Ok(Out::Done),
                            None => Err(libc::ENODATA),
                        });
                        (r, got)
                    }
                    Op::GetXattr { path, name } => {
                        let name = XATTR_NAMES[*name].as_bytes();
                        let r = self.reference.at(path).and_then(|n| self.reference.node(n).xattrs.get(name).cloned().map(Out::Bytes).ok_or(libc::ENODATA));
                        (r, lgetxattr(&self.path(path), name).map(Out::Bytes))
                    }
                    Op::ListXattr(path) => (self.reference.xattrs_out(path), self.m_xattrs(path)),
                    Op::Check(path) => (self.reference.check(path), self.m_check(path)),
                    Op::Readdir(dir) => (self.reference.readdir_out(dir), self.m_readdir(dir)),
                }
            }

            fn m_setxattr(&self, path: &[u8], name: &[u8], value: &[u8], flags: i32) -> V<Out> {
                // SAFETY: valid C strings; the value's length is passed.
                let r = unsafe { libc::lsetxattr(c(&self.path(path)).as_ptr(), c_name(name).as_ptr(), value.as_ptr().cast(), value.len(), flags) };
                rc(r).map(|()| Out::Done)
            }

            fn made(&mut self, r: V<usize>, got: V<u64>) -> (V<Out>, V<Out>) {
                if let (Ok(n), Ok(ino)) = (&r, &got) {
                    self.inodes.insert(*ino, *n);
                }
                (r.map(Out::Node), got.map(|ino| Out::Node(self.node_of(ino))))
            }

            fn keep(&mut self, slot: usize, r: V<usize>, got: V<(u64, File)>, write: bool) -> (V<Out>, V<Out>) {
                match (r, got) {
                    (Ok(n), Ok((ino, file))) => {
                        self.inodes.insert(ino, n);
                        self.handles[slot] = Some(MountHandle { node: n, write, file });
                        (Ok(Out::Node(n)), Ok(Out::Node(n)))
                    }
                    (Ok(n), Err(e)) => {
                        self.reference.release(n, write);
                        (Ok(Out::Node(n)), Err(e))
                    }
                    (Err(e), Ok((ino, _))) => (Err(e), Ok(Out::Node(self.node_of(ino)))),
                    (Err(a), Err(b)) => (Err(a), Err(b)),
                }
            }

            fn release_all(&mut self) -> Result<(), TestCaseError> {
                for slot in 0..SLOTS {
                    let (r, got) = self.release(slot);
                    prop_assert_eq!(r, got, "release of slot {}", slot);
                }
                Ok(())
            }
        }

        impl Answers for MountPair {
            fn reference(&self) -> &Reference {
                &self.reference
            }
            fn readdir(&self, dir: &[u8]) -> V<Out> {
                self.m_readdir(dir)
            }
            fn check(&self, path: &[u8]) -> V<Out> {
                self.m_check(path)
            }
            fn xattrs(&self, path: &[u8]) -> V<Out> {
                self.m_xattrs(path)
            }
            fn xattr(&self, path: &[u8], name: &[u8]) -> V<Vec<u8>> {
                lgetxattr(&self.path(path), name)
            }
            fn readlink(&self, path: &[u8]) -> V<Vec<u8>> {
                io(std::fs::read_link(self.path(path))).map(|t| t.as_os_str().as_bytes().to_vec())
            }
        }

        /// One sequence in its own directory `case` of the mount: operation
        /// by operation, then the whole tree after the last close; then the
        /// daemon ends — unmounted cleanly, or killed with handles open
        /// (a crash) — and the tree is compared again after the remount.
        pub fn run_case(m: &mut Mounted, case: &str, ops: &[Op], clean: bool) -> Result<(), TestCaseError> {
            let root = m.path(case);
            std::fs::create_dir(&root).expect("the case's directory");
            let mut pair = MountPair::new(root);
            for (step, op) in ops.iter().enumerate() {
                let op = pair.reference.resolve(op);
                let (r, got) = pair.apply(&op);
                if std::env::var_os("AT1_MODEL_TRACE").is_some() {
                    eprintln!("{case} step {step}: {op:?} -> {r:?}");
                }
                prop_assert_eq!(r, got, "step {}: {:?}", step, op);
            }
            if clean {
                pair.release_all()?;
                compare_trees(&pair, "after the last close")?;
                m.remount();
            } else {
                m.kill_daemon();
                pair.handles.iter_mut().for_each(|h| drop(h.take()));
                m.remount_after_crash();
            }
            if let Err(e) = std::fs::symlink_metadata(&pair.root) {
                let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
                let log = m.log_text();
                let tail: Vec<&str> = log.lines().rev().take(12).collect();
                return Err(TestCaseError::fail(format!(
                    "{case} is gone after the remount ({e}); mounts:\n{mounts}\ndaemon log (last lines first):\n{}",
                    tail.join("\n")
                )));
            }
            pair.reference.after_restart();
            compare_trees(&pair, if clean { "after an unmount and mount" } else { "after a crash and mount" })
        }
    }
}

#[test]
fn random_operation_sequences_agree_with_the_reference_in_process() {
    let start = std::time::Instant::now();
    let mut runner = inprocess::runner(2000);
    let cases = runner.config().cases;
    runner.run(&(prop::collection::vec(inprocess::op(), 1..60), any::<bool>()), |(ops, clean)| inprocess::run_case(&ops, clean)).unwrap();
    eprintln!("{cases} sequences in {:.1} s", start.elapsed().as_secs_f64());
}

/// The same model through a real mount (`std::fs` and libc calls on the
/// mount point, each sequence in a directory of its own, then an unmount
/// or a kill and a mount): fewer sequences, each costs a mount.
#[test]
fn random_operation_sequences_agree_with_the_reference_through_a_mount() {
    let Some(m) = Mounted::new(&[]) else { return };
    let start = std::time::Instant::now();
    let m = std::cell::RefCell::new(m);
    let case = std::sync::atomic::AtomicUsize::new(0);
    let mut runner = inprocess::runner(150);
    let cases = runner.config().cases;
    runner
        .run(&(prop::collection::vec(inprocess::op(), 1..60), any::<bool>()), |(ops, clean)| {
            let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            inprocess::mounted::run_case(&mut m.borrow_mut(), &format!("case{case}"), &ops, clean)
        })
        .unwrap();
    eprintln!("{cases} sequences through the mount in {:.1} s", start.elapsed().as_secs_f64());
}

/// Found by the in-process model: a write of no bytes at an offset past the
/// end made `stat` show the file that long while its content stayed
/// shorter (and the size fell back at close). A write of no bytes changes
/// nothing (POSIX; the kernel never sends one, other callers of the volume
/// may).
#[test]
fn a_write_of_no_bytes_changes_nothing() {
    use at1::volume::files::OpenFlags;
    let tv = common::volume::TestVolume::new();
    let v = &tv.volume;
    let (_, h) = v.create(1, b"f", 0o644, common::volume::ROOT_OWNER, OpenFlags { write: true, truncate: false }).unwrap();
    v.write(&h, 0, b"abc").unwrap();
    assert_eq!(v.write(&h, 5, b"").unwrap(), 0);
    assert_eq!(v.getattr(h.ino).unwrap().size, 3, "stat after a write of no bytes at 5");
    assert_eq!(v.read(&h, 0, 100).unwrap(), b"abc");
    v.release(&h).unwrap();
    assert_eq!(v.getattr(h.ino).unwrap().size, 3);
}

/// Found by the model through a mount: the metadata engine reused the
/// number of the last inode removed (SQLite's rowid without AUTOINCREMENT),
/// while the kernel still held the removed directory under that number, so
/// a directory made next was taken for the dead one and a create in it
/// failed with ENOENT. Inode numbers are never reused now.
#[test]
fn a_directory_made_after_a_removal_takes_new_entries() {
    let Some(m) = Mounted::new(&[]) else { return };
    let f = File::create(m.path("a")).unwrap();
    std::fs::create_dir(m.path("b")).unwrap();
    std::fs::rename(m.path("a"), m.path("b/a")).unwrap();
    std::fs::remove_file(m.path("b/a")).unwrap();
    std::fs::remove_dir(m.path("b")).unwrap();
    std::fs::create_dir(m.path("a")).unwrap();
    File::create(m.path("a/a")).expect("a create in the directory made after the removal");
    drop(f);
    assert!(m.path("a/a").is_file());
}
