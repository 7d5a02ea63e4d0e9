//! The table of inodes the kernel knows: FUSE node ids, what each one is in
//! the store, and the names (parent, tree name) it is reachable by.
//!
//! A node is identified in the store by the (device, inode) of its tree
//! entry — the stub for a managed file — so hard links of one file are one
//! node, and a rename keeps the node. Paths are never cached: they are
//! rebuilt from the names each time, so renaming a directory moves
//! everything under it for free.
//!
//! The node id (which FUSE also shows as `st_ino`) is the backing inode
//! number, so inode numbers survive remounts and `readdir`'s `d_ino` agrees
//! with `stat`. Where that number is taken — the root's id 1, the control
//! entries, or a node the kernel still holds for a deleted file whose
//! backing number was reused — the node gets an id from a high counter
//! instead.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::store::RegularKind;

/// The mount root.
pub const ROOT: u64 = 1;
/// Ids of the virtual control entries: above any backing inode number.
const CONTROL_BASE: u64 = 0xA71F_0000_0000_0000;
/// `/.at1`, the virtual control directory.
pub const CONTROL_DIR: u64 = CONTROL_BASE + 2;
/// `/.at1/stats`.
pub const STATS_FILE: u64 = CONTROL_BASE + 3;
/// `/.at1/sql`.
pub const SQL_FILE: u64 = CONTROL_BASE + 4;
/// First id of the fallback counter.
const FIRST_COUNTER_ID: u64 = 1 << 62;

pub fn is_control(id: u64) -> bool {
    (CONTROL_BASE..CONTROL_BASE + 16).contains(&id)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    Directory,
    Regular(RegularKind),
    Symlink,
    /// fifo, socket, character or block device: itself in the store.
    Special,
}

/// Identity of a tree entry in the backing filesystem.
pub type BackingKey = (u64, u64);

/// Write state of a regular file, shared by all its names and handles.
#[derive(Debug, Default)]
pub struct FileState {
    pub inner: Mutex<FileInner>,
    /// Length of the staging file, or `NOT_STAGED`: read without the lock so
    /// that `stat` never waits for a commit in progress.
    pub staged_len: AtomicU64,
    /// Nanoseconds since the epoch of the last change not yet committed
    /// (0: none), so `stat` shows the times a write, truncate or fallocate
    /// gave the file before its commit does.
    pub staged_mtime: AtomicU64,
}

pub const NOT_STAGED: u64 = u64::MAX;

#[derive(Debug, Default)]
pub struct FileInner {
    pub staging: Option<Staging>,
    /// Open handles with write access.
    pub writers: usize,
    /// All open handles.
    pub handles: usize,
}

/// The bytes of a file being written: the decoded content plus the writes.
#[derive(Debug)]
pub struct Staging {
    pub file: File,
    /// Changed since the last commit.
    pub modified: bool,
    /// Time of the last write, given to the file at commit.
    pub mtime: SystemTime,
}

impl FileState {
    pub fn new() -> Self {
        Self { inner: Mutex::new(FileInner::default()), staged_len: AtomicU64::new(NOT_STAGED), staged_mtime: AtomicU64::new(0) }
    }

    /// Records an uncommitted change made at `t`.
    pub fn set_staged_mtime(&self, t: Option<SystemTime>) {
        let ns = t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos() as u64);
        self.staged_mtime.store(ns, Ordering::Release);
    }

    pub fn staged_mtime(&self) -> Option<SystemTime> {
        match self.staged_mtime.load(Ordering::Acquire) {
            0 => None,
            ns => Some(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns)),
        }
    }

    pub fn staged_len(&self) -> Option<u64> {
        match self.staged_len.load(Ordering::Acquire) {
            NOT_STAGED => None,
            n => Some(n),
        }
    }

    pub fn set_staged_len(&self, len: Option<u64>) {
        self.staged_len.store(len.unwrap_or(NOT_STAGED), Ordering::Release);
    }
}

#[derive(Debug)]
pub struct Node {
    pub kind: NodeKind,
    pub key: BackingKey,
    /// (parent node, name in the tree). Empty once the last name is gone.
    pub names: Vec<(u64, OsString)>,
    lookups: u64,
    pub file: Arc<FileState>,
}

#[derive(Debug)]
pub struct InodeTable {
    root: PathBuf,
    nodes: HashMap<u64, Node>,
    by_key: HashMap<BackingKey, u64>,
    /// (parent, name) -> node: the names index, so renames and unlinks do
    /// not scan every node.
    dentries: HashMap<(u64, OsString), u64>,
    next: u64,
}

impl InodeTable {
    pub fn new(root: PathBuf, root_key: BackingKey) -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node { kind: NodeKind::Directory, key: root_key, names: Vec::new(), lookups: 1, file: Arc::new(FileState::new()) });
        let mut by_key = HashMap::new();
        by_key.insert(root_key, ROOT);
        Self { root, nodes, by_key, dentries: HashMap::new(), next: FIRST_COUNTER_ID }
    }

    pub fn get(&self, id: u64) -> Option<&Node> {
        self.nodes.get(&id)
    }

    /// The tree path of a node (through its first name).
    pub fn tree_path(&self, id: u64) -> Option<PathBuf> {
        if id == ROOT {
            return Some(self.root.clone());
        }
        let mut parts: Vec<&OsStr> = Vec::new();
        let mut cur = id;
        // Bounded: a name cycle would be a bug, not an infinite loop.
        for _ in 0..4096 {
            if cur == ROOT {
                let mut p = self.root.clone();
                for part in parts.iter().rev() {
                    p.push(part);
                }
                return Some(p);
            }
            let (parent, name) = self.nodes.get(&cur)?.names.first()?;
            parts.push(name);
            cur = *parent;
        }
        None
    }

    /// Registers one kernel reference to the node at (`parent`, `name`),
    /// creating it if needed. Returns its id.
    pub fn reference(&mut self, parent: u64, name: &OsStr, key: BackingKey, kind: NodeKind) -> u64 {
        let dentry = (parent, name.to_os_string());
        if let Some(&id) = self.by_key.get(&key) {
            if let Some(node) = self.nodes.get_mut(&id) {
                node.lookups += 1;
                node.kind = kind;
                if !node.names.contains(&dentry) {
                    node.names.push(dentry.clone());
                }
                self.point(dentry, id);
                return id;
            }
        }
        let natural = key.1;
        let id = if natural <= ROOT || natural >= FIRST_COUNTER_ID.min(CONTROL_BASE) || self.nodes.contains_key(&natural) {
            self.next += 1;
            self.next - 1
        } else {
            natural
        };
        let node = Node { kind, key, names: vec![dentry.clone()], lookups: 1, file: Arc::new(FileState::new()) };
        self.nodes.insert(id, node);
        self.by_key.insert(key, id);
        self.point(dentry, id);
        id
    }

    /// Makes `dentry` name node `id`, taking it from any node that had it.
    fn point(&mut self, dentry: (u64, OsString), id: u64) {
        if let Some(old) = self.dentries.insert(dentry.clone(), id) {
            if old != id {
                if let Some(node) = self.nodes.get_mut(&old) {
                    node.names.retain(|d| *d != dentry);
                }
            }
        }
    }

    /// Drops `n` kernel references; forgets the node at zero.
    pub fn forget(&mut self, id: u64, n: u64) {
        if id == ROOT {
            return;
        }
        let gone = match self.nodes.get_mut(&id) {
            Some(node) => {
                node.lookups = node.lookups.saturating_sub(n);
                node.lookups == 0
            }
            None => false,
        };
        if gone {
            if let Some(node) = self.nodes.remove(&id) {
                if self.by_key.get(&node.key) == Some(&id) {
                    self.by_key.remove(&node.key);
                }
                for d in node.names {
                    if self.dentries.get(&d) == Some(&id) {
                        self.dentries.remove(&d);
                    }
                }
            }
        }
    }

    /// The name (`parent`, `name`) no longer exists. A node left without
    /// names is detached from its backing identity, which the backing
    /// filesystem may give to a new file.
    pub fn remove_name(&mut self, parent: u64, name: &OsStr) {
        let dentry = (parent, name.to_os_string());
        if let Some(id) = self.dentries.remove(&dentry) {
            if let Some(node) = self.nodes.get_mut(&id) {
                node.names.retain(|d| *d != dentry);
                if node.names.is_empty() && self.by_key.get(&node.key) == Some(&id) {
                    self.by_key.remove(&node.key);
                }
            }
        }
    }

    /// The node at (`parent`, `name`), if the kernel knows it.
    pub fn child(&self, parent: u64, name: &OsStr) -> Option<u64> {
        self.dentries.get(&(parent, name.to_os_string())).copied()
    }

    /// The entry at (`parent`, `name`) moved to (`new_parent`, `new_name`),
    /// replacing whatever was there.
    pub fn rename(&mut self, parent: u64, name: &OsStr, new_parent: u64, new_name: &OsStr) {
        self.remove_name(new_parent, new_name);
        let from = (parent, name.to_os_string());
        let to = (new_parent, new_name.to_os_string());
        if let Some(id) = self.dentries.remove(&from) {
            if let Some(node) = self.nodes.get_mut(&id) {
                for d in node.names.iter_mut().filter(|d| **d == from) {
                    *d = to.clone();
                }
            }
            self.dentries.insert(to, id);
        }
    }

    /// Two entries swapped places (RENAME_EXCHANGE).
    pub fn exchange(&mut self, a: (u64, &OsStr), b: (u64, &OsStr)) {
        let a = (a.0, a.1.to_os_string());
        let b = (b.0, b.1.to_os_string());
        if self.dentries.get(&a) == self.dentries.get(&b) {
            return; // two names of one inode: nothing moves
        }
        let ida = self.dentries.remove(&a);
        let idb = self.dentries.remove(&b);
        for (id, from, to) in [(ida, &a, &b), (idb, &b, &a)] {
            if let Some(id) = id {
                if let Some(node) = self.nodes.get_mut(&id) {
                    for d in node.names.iter_mut().filter(|d| *d == from) {
                        *d = to.clone();
                    }
                }
                self.dentries.insert(to.clone(), id);
            }
        }
    }

    /// A node's tree entry was replaced by a new one (a file adopted into a
    /// stub): same node, new backing identity.
    pub fn rekey(&mut self, id: u64, key: BackingKey, kind: NodeKind) {
        if let Some(node) = self.nodes.get_mut(&id) {
            if self.by_key.get(&node.key) == Some(&id) {
                self.by_key.remove(&node.key);
            }
            node.key = key;
            node.kind = kind;
            self.by_key.insert(key, id);
        }
    }
}
