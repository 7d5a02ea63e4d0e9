//! The proof of an upgrade: the old tree walked again, each entry as the
//! old mount showed it compared with the new volume's, through the
//! volume's own operations (lookup, readdir, readlink, getxattr, and the
//! content read back whole):
//!
//! - the names of every directory, and no others;
//! - kind, mode (with set-ID and sticky bits), owner, group, atime and
//!   mtime to the nanosecond, link count (hard-link groups are one inode),
//!   device numbers, symlink targets byte for byte, every stored xattr;
//! - a file's size and SHA-256: the old object's is read from its trailer
//!   *and* computed by decoding it whole; the new object's trailer must
//!   record it, and the bytes read back through the volume must hash to
//!   it.
//!
//! ctime is not compared: no interface sets it, so it cannot be kept.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

use at1_store::{Ino, Kind, ROOT_INO};
use sha2::Digest as _;

use super::old::{self, DigestError, Entry, OldStore, Pending, What};
use super::UpgradeError;
use crate::volume::{hex, Attr, Volume};
use crate::OpenFlags;

/// Differences kept to show; the rest are counted.
const SHOWN: usize = 50;

/// What the proof found different.
#[derive(Debug, Default)]
pub(crate) struct Differences {
    pub count: u64,
    pub shown: Vec<String>,
}

impl Differences {
    fn add(&mut self, path: &[u8], what: impl std::fmt::Display) {
        self.count += 1;
        if self.shown.len() < SHOWN {
            self.shown.push(format!("{}: {what}", old::show(path)));
        }
    }
}

struct Prover<'a> {
    v: &'a Volume,
    diffs: Differences,
    /// Inode of the first name of each hard-link group met.
    groups: HashMap<(u64, u64), Ino>,
}

fn volume_err(path: &[u8]) -> impl Fn(crate::VolumeError) -> UpgradeError + '_ {
    move |e| UpgradeError::Failed(format!("{} (new store): {e}", old::show(path)))
}

pub(crate) fn prove(store: &OldStore, v: &Volume) -> Result<Differences, UpgradeError> {
    let mut p = Prover { v, diffs: Differences::default(), groups: HashMap::new() };
    let io = |path: &'static [u8]| move |e: std::io::Error| UpgradeError::Failed(format!("{}: {e}", old::show(path)));
    let root_meta = store.root_meta().map_err(io(b"/"))?;
    let root_attr = v.getattr(ROOT_INO).map_err(volume_err(b"/"))?;
    p.common(b"/", &root_meta, &root_attr, Kind::Dir, &store.root)?;
    let mut stack = vec![(Pending::Root, ROOT_INO, root_attr.nlink)];
    while let Some((pending, ino, nlink)) = stack.pop() {
        let mut dir = store.open(&pending).map_err(|e| UpgradeError::Failed(format!("{}: {e}", old::show(&pending.shown()))))?;
        drop(pending);
        let entries = store.list(&mut dir).map_err(|e| UpgradeError::Failed(format!("{}: {e}", old::show(&dir.shown))))?;
        p.names(&dir.shown, ino, nlink, &entries)?;
        let dir = std::rc::Rc::new(dir);
        for entry in entries {
            let shown = dir.shown_child(&entry.name);
            let Some(attr) = p.entry(&shown, ino, &entry)? else { continue };
            if entry.what == What::Dir {
                stack.push((Pending::Child { parent: dir.clone(), entry: Box::new(entry) }, attr.ino, attr.nlink));
            }
        }
    }
    Ok(p.diffs)
}

impl Prover<'_> {
    /// The volume's directory `ino` holds exactly the names of `entries`,
    /// and counts its subdirectories in its link count.
    fn names(&mut self, shown: &[u8], ino: Ino, nlink: u32, entries: &[Entry]) -> Result<(), UpgradeError> {
        let mut count = 0usize;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.v.readdir(ino, after.as_deref(), 1024).map_err(volume_err(shown))?;
            let Some(last) = page.last() else { break };
            after = Some(last.name.clone());
            count += page.len();
        }
        if count != entries.len() {
            self.diffs.add(shown, format_args!("{} entries became {count}", entries.len()));
        }
        let subdirs = entries.iter().filter(|e| e.what == What::Dir).count() as u64;
        if u64::from(nlink) != 2 + subdirs {
            self.diffs.add(shown, format_args!("link count {nlink} where 2 + {subdirs} subdirectories make {}", 2 + subdirs));
        }
        Ok(())
    }

    /// Compares one entry; returns its new attributes if it exists.
    fn entry(&mut self, shown: &[u8], parent: Ino, entry: &Entry) -> Result<Option<Attr>, UpgradeError> {
        let attr = match self.v.lookup(parent, &entry.name) {
            Ok(a) => a,
            Err(e) => {
                self.diffs.add(shown, format_args!("missing from the new store ({e})"));
                return Ok(None);
            }
        };
        let kind = entry.what.kind();
        self.common(shown, &entry.meta, &attr, kind, &entry.path)?;
        if kind == Kind::Dir {
            return Ok(Some(attr));
        }
        if u64::from(attr.nlink) != entry.shown_nlink() {
            self.diffs.add(shown, format_args!("link count {} became {}", entry.shown_nlink(), attr.nlink));
        }
        if entry.shown_nlink() > 1 {
            let first = *self.groups.entry(entry.inode_key()).or_insert(attr.ino);
            if first != attr.ino {
                self.diffs.add(shown, "a hard link of another name became a file of its own");
            }
        }
        match &entry.what {
            What::Symlink(target) => {
                let new = self.v.readlink(attr.ino).map_err(volume_err(shown))?;
                if &new != target {
                    self.diffs.add(shown, format_args!("symlink target {} became {}", old::show(target), old::show(&new)));
                }
                self.size(shown, entry.meta.size(), attr.size);
            }
            What::Special(_) => {
                if entry.meta.rdev() as u32 != attr.rdev {
                    self.diffs.add(shown, format_args!("device {:#x} became {:#x}", entry.meta.rdev() as u32, attr.rdev));
                }
            }
            What::File(_) => self.content(shown, entry, &attr)?,
            What::Dir => {}
        }
        Ok(Some(attr))
    }

    fn size(&mut self, shown: &[u8], old: u64, new: u64) {
        if old != new {
            self.diffs.add(shown, format_args!("size {old} became {new}"));
        }
    }

    /// Kind, mode, owner, times and xattrs.
    fn common(&mut self, shown: &[u8], meta: &std::fs::Metadata, attr: &Attr, kind: Kind, path: &std::path::Path) -> Result<(), UpgradeError> {
        if attr.kind != kind {
            self.diffs.add(shown, format_args!("a {kind:?} became a {:?}", attr.kind));
            return Ok(());
        }
        let perm = meta.mode() & 0o7777;
        if attr.perm != perm {
            self.diffs.add(shown, format_args!("mode {perm:04o} became {:04o}", attr.perm));
        }
        if (attr.uid, attr.gid) != (meta.uid(), meta.gid()) {
            self.diffs.add(shown, format_args!("owner {}:{} became {}:{}", meta.uid(), meta.gid(), attr.uid, attr.gid));
        }
        match old::times(meta) {
            Ok((atime, mtime)) => {
                if attr.mtime != mtime {
                    self.diffs.add(shown, format_args!("mtime {mtime} ns became {}", attr.mtime));
                }
                if attr.atime != atime {
                    self.diffs.add(shown, format_args!("atime {atime} ns became {}", attr.atime));
                }
            }
            Err(what) => self.diffs.add(shown, what),
        }
        let old_xattrs = old::xattrs(path).map_err(|e| UpgradeError::Failed(format!("{}: {e}", old::show(shown))))?;
        let mut new_xattrs = Vec::new();
        for name in self.v.listxattr(attr.ino).map_err(volume_err(shown))? {
            if crate::xattr::virtual_name(&name).is_none() {
                let value = self.v.getxattr(attr.ino, &name).map_err(volume_err(shown))?;
                new_xattrs.push((name, value));
            }
        }
        new_xattrs.sort();
        if new_xattrs != old_xattrs {
            let names = |x: &[(Vec<u8>, Vec<u8>)]| x.iter().map(|(n, v)| format!("{}={}", old::show(n), hex(v))).collect::<Vec<_>>().join(",");
            self.diffs.add(shown, format_args!("xattrs [{}] became [{}]", names(&old_xattrs), names(&new_xattrs)));
        }
        Ok(())
    }

    /// Size and SHA-256: the old content decoded whole; the new object's
    /// trailer, and the new bytes read back.
    fn content(&mut self, shown: &[u8], entry: &Entry, attr: &Attr) -> Result<(), UpgradeError> {
        let old = match old::digest(entry) {
            Ok(d) => d,
            Err(DigestError::Damaged(what)) => {
                self.diffs.add(shown, format_args!("its old content does not verify: {what}"));
                return Ok(());
            }
            Err(DigestError::Io(e)) => return Err(UpgradeError::Failed(format!("{}: {e}", old::show(shown)))),
        };
        self.size(shown, old.len, attr.size);
        let recorded = self.v.getxattr(attr.ino, b"user.at1.sha256").map_err(volume_err(shown))?;
        if recorded != hex(&old.sha256).into_bytes() {
            self.diffs.add(shown, format_args!("SHA-256 {} became {} (the new object's trailer)", hex(&old.sha256), String::from_utf8_lossy(&recorded)));
        }
        let (len, sha) = self.read_back(attr.ino).map_err(volume_err(shown))?;
        if (len, sha) != (old.len, old.sha256) {
            self.diffs.add(shown, format_args!("{} bytes with SHA-256 {} read back as {len} bytes with SHA-256 {}", old.len, hex(&old.sha256), hex(&sha)));
        }
        Ok(())
    }

    /// Every byte of file `ino` through the volume: length and SHA-256.
    fn read_back(&self, ino: Ino) -> crate::VResult<(u64, [u8; 32])> {
        const CHUNK: u32 = 1 << 20;
        let handle = self.v.open_file(ino, OpenFlags::default())?;
        let mut sha = sha2::Sha256::new();
        let mut len = 0u64;
        let read: crate::VResult<()> = (|| loop {
            let data = self.v.read(&handle, len, CHUNK)?;
            if data.is_empty() {
                return Ok(());
            }
            sha.update(&data);
            len += data.len() as u64;
        })();
        let released = self.v.release(&handle);
        read?;
        released?;
        let mut out = [0u8; 32];
        out.copy_from_slice(&sha.finalize());
        Ok((len, out))
    }
}
