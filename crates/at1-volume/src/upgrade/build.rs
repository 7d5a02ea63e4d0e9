//! Recreates a layout-1 tree in a new volume, entry by entry, through the
//! volume's own operations: `mkdir`, `mknod`, `symlink`, `link` (one inode
//! per hard-link group), `setxattr`, `setattr`; a stub's object and a
//! dropped-in object come in verified and not re-encoded
//! ([`Volume::import_content`]); raw bytes are written and committed
//! through the gate as any write is.
//!
//! Times last: a directory's mode, owner and times are set after all its
//! entries are made (making them changes its mtime), a file's after its
//! content. The walk is depth first with an explicit stack: no depth is
//! too deep.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::rc::Rc;

use at1_store::{Ino, Kind, ROOT_INO};

use super::old::{self, Content, Entry, OldStore, Pending, What};
use super::{crash_point, Summary, UpgradeError};
use crate::error::VolumeError;
use crate::import::{open_noatime, BringIn};
use crate::volume::{Owner, SetAttr, TimeSet, Volume};
use crate::OpenFlags;

enum Step {
    Enter {
        dir: Pending,
        ino: Ino,
    },
    /// All entries of the directory are made: its attributes now.
    Leave {
        ino: Ino,
        meta: std::fs::Metadata,
        shown: Vec<u8>,
    },
}

/// A hard-link group met once: its inode, and how many of its names are
/// still to come.
struct Group {
    ino: Ino,
    left: u64,
}

/// An error of the volume at the entry shown as `path`: a verification
/// failure (an old object that does not check, raw bytes the gate
/// refused) is [`UpgradeError::Damaged`].
fn at(path: &[u8]) -> impl Fn(VolumeError) -> UpgradeError + '_ {
    move |e| match e {
        VolumeError::Rejected(what) => UpgradeError::Damaged(format!("{}: {what}", old::show(path))),
        other => UpgradeError::Failed(format!("{}: {other}", old::show(path))),
    }
}

fn io_at(path: &[u8]) -> impl Fn(std::io::Error) -> UpgradeError + '_ {
    move |e| UpgradeError::Failed(format!("{}: {e}", old::show(path)))
}

pub(crate) fn build(store: &OldStore, v: &Volume) -> Result<Summary, UpgradeError> {
    let mut b = Builder { store, v, summary: Summary::default(), links: HashMap::new(), made: 0 };
    let root_meta = store.root_meta().map_err(io_at(b"/"))?;
    b.copy_xattrs(ROOT_INO, &store.root, b"/")?;
    let mut stack = vec![Step::Leave { ino: ROOT_INO, meta: root_meta, shown: b"/".to_vec() }, Step::Enter { dir: Pending::Root, ino: ROOT_INO }];
    while let Some(step) = stack.pop() {
        match step {
            Step::Enter { dir, ino } => b.enter(dir, ino, &mut stack)?,
            Step::Leave { ino, meta, shown } => restore_attrs(v, ino, &meta, false).map_err(|e| e.at(&shown))?,
        }
    }
    Ok(b.summary)
}

struct Builder<'a> {
    store: &'a OldStore,
    v: &'a Volume,
    summary: Summary,
    links: HashMap<(u64, u64), Group>,
    made: u64,
}

/// Why an entry's attributes could not be set.
enum AttrError {
    Volume(VolumeError),
    Time(String),
}

impl AttrError {
    fn at(self, path: &[u8]) -> UpgradeError {
        match self {
            AttrError::Volume(e) => at(path)(e),
            AttrError::Time(what) => UpgradeError::Failed(format!("{}: {what}", old::show(path))),
        }
    }
}

/// Sets owner, then mode and times (in that order: a change of owner
/// clears set-user-ID, as Linux does).
fn restore_attrs(v: &Volume, ino: Ino, meta: &std::fs::Metadata, symlink: bool) -> Result<(), AttrError> {
    let (atime, mtime) = old::times(meta).map_err(AttrError::Time)?;
    v.setattr(ino, &SetAttr { uid: Some(meta.uid()), gid: Some(meta.gid()), ..SetAttr::default() }).map_err(AttrError::Volume)?;
    let perm = (!symlink).then_some(meta.mode() & 0o7777);
    v.setattr(ino, &SetAttr { perm, atime: Some(TimeSet::At(atime)), mtime: Some(TimeSet::At(mtime)), ..SetAttr::default() }).map_err(AttrError::Volume)?;
    Ok(())
}

impl Builder<'_> {
    fn copy_xattrs(&self, ino: Ino, path: &std::path::Path, shown: &[u8]) -> Result<(), UpgradeError> {
        for (name, value) in old::xattrs(path).map_err(io_at(shown))? {
            self.v.setxattr(ino, &name, &value, 0).map_err(at(shown))?;
        }
        Ok(())
    }

    fn enter(&mut self, dir: Pending, ino: Ino, stack: &mut Vec<Step>) -> Result<(), UpgradeError> {
        let opened = self.store.open(&dir).map_err(io_at(&dir.shown()))?;
        drop(dir); // its parent's descriptor, if this was the last to need it
        let mut dir = opened;
        let entries = self.store.list(&mut dir).map_err(io_at(&dir.shown))?;
        let dir = Rc::new(dir);
        for entry in entries {
            let shown = dir.shown_child(&entry.name);
            if let Some(child) = self.make(ino, &entry, &shown)? {
                stack.push(Step::Leave { ino: child, meta: entry.meta.clone(), shown });
                stack.push(Step::Enter { dir: Pending::Child { parent: dir.clone(), entry: Box::new(entry) }, ino: child });
            }
            self.made += 1;
            crash_point("build", self.made);
        }
        Ok(())
    }

    /// Makes `entry` in directory `parent`; returns the new inode if it is
    /// a directory (to walk).
    fn make(&mut self, parent: Ino, entry: &Entry, shown: &[u8]) -> Result<Option<Ino>, UpgradeError> {
        let owner = Owner { uid: entry.meta.uid(), gid: entry.meta.gid() };
        let perm = entry.meta.mode() & 0o7777;
        if entry.what == What::Dir {
            let made = self.v.mkdir(parent, &entry.name, perm, owner).map_err(at(shown))?;
            self.copy_xattrs(made.ino, &entry.path, shown)?;
            self.summary.dirs += 1;
            return Ok(Some(made.ino));
        }
        let key = entry.inode_key();
        let names = entry.shown_nlink();
        if names > 1 {
            if let Some(group) = self.links.get_mut(&key) {
                self.v.link(group.ino, parent, &entry.name).map_err(at(shown))?;
                group.left = group.left.saturating_sub(1);
                if group.left == 0 {
                    self.links.remove(&key);
                }
                self.summary.hard_links += 1;
                return Ok(None);
            }
        }
        let ino = match &entry.what {
            What::Symlink(target) => {
                self.summary.symlinks += 1;
                self.v.symlink(parent, &entry.name, target, owner).map_err(at(shown))?.ino
            }
            What::Special(kind) => {
                self.summary.specials += 1;
                self.v.mknod(parent, &entry.name, *kind, perm, entry.meta.rdev() as u32, owner).map_err(at(shown))?.ino
            }
            What::File(content) => {
                let ino = self.v.mknod(parent, &entry.name, Kind::File, perm, 0, owner).map_err(at(shown))?.ino;
                let size = self.fill(ino, entry, content, shown)?;
                self.summary.files += 1;
                self.summary.bytes += size;
                ino
            }
            What::Dir => return Ok(None),
        };
        self.copy_xattrs(ino, &entry.path, shown)?;
        restore_attrs(self.v, ino, &entry.meta, matches!(entry.what, What::Symlink(_))).map_err(|e| e.at(shown))?;
        if names > 1 {
            self.links.insert(key, Group { ino, left: names - 1 });
        }
        Ok(None)
    }

    /// Gives new file `ino` the content of `entry`; returns its size.
    fn fill(&self, ino: Ino, entry: &Entry, content: &Content, shown: &[u8]) -> Result<u64, UpgradeError> {
        let attr = match content {
            Content::Stub(None) => return Ok(0),
            // The store's own object, private to it: linked, not copied.
            Content::Stub(Some(object)) => self.v.import_content(ino, object, BringIn::Link),
            // A file a user put there, which may have other names: copied.
            Content::Bare => self.v.import_content(ino, &entry.path, BringIn::Copy),
            Content::Plain => return self.write_plain(ino, entry, shown),
        };
        Ok(attr.map_err(at(shown))?.size)
    }

    /// Raw bytes: written and committed through the gate, as a write
    /// through the mount would be.
    fn write_plain(&self, ino: Ino, entry: &Entry, shown: &[u8]) -> Result<u64, UpgradeError> {
        use std::io::Read;
        let mut source = open_noatime(&entry.path).map_err(io_at(shown))?;
        let handle = self.v.open_file(ino, OpenFlags { write: true, truncate: true }).map_err(at(shown))?;
        let mut written = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        let copied = (|| {
            loop {
                let n = source.read(&mut buf).map_err(io_at(shown))?;
                if n == 0 {
                    break;
                }
                self.v.write(&handle, written, buf.get(..n).unwrap_or_default()).map_err(at(shown))?;
                written += n as u64;
            }
            self.v.flush(&handle).map_err(at(shown))
        })();
        let released = self.v.release(&handle).map_err(at(shown));
        copied?;
        released?;
        Ok(written)
    }
}
