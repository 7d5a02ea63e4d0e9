//! `at1 import STORE OBJECT PATH`: an `.at1` object made by `at1 compress`
//! becomes a file of the volume — verified whole (every block, every
//! segment, the SHA-256), copied into the object store and checked again
//! there, not re-encoded. [`Volume::import_content`] does the same for a
//! file that exists already (an upgrade brings a layout-1 store's objects
//! in this way, by hard link).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use at1_core::reader::{self, Object};
use at1_store::{Content, Extent, Ino, Inode, Kind, ObjectId, ROOT_INO};
use serde_json::json;

use crate::error::{errno, VResult, VolumeError};
use crate::journal;
use crate::volume::{check_new_name, entry_path, hex, path_in, Attr, Owner, Volume};

/// How an existing object file comes into the object store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BringIn {
    /// Copied, and the copy checked again: the file stays its owner's, who
    /// may change it later (`at1 import`).
    Copy,
    /// Hard-linked where the object store can and no other name holds the
    /// file, copied otherwise: for an object nothing will change in place
    /// (a layout-1 store's own objects, at its upgrade).
    Link,
}

/// Opens `path` to read without changing its access time where the
/// caller may (its owner, or root): an upgrade keeps every atime.
pub(crate) fn open_noatime(path: &Path) -> io::Result<File> {
    match OpenOptions::new().read(true).custom_flags(libc::O_NOATIME).open(path) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => File::open(path),
        other => other,
    }
}

impl Volume {
    /// Checks the object at `object` whole (every block, every segment,
    /// the SHA-256) and puts it into the object store as a new object, as
    /// `how` says; the stored object is checked against what was verified.
    /// Returns its content reference and original length. Not re-encoded.
    fn bring_in(&self, object: &Path, how: BringIn) -> VResult<(Content, u64)> {
        let refused = |what: String| VolumeError::Rejected(format!("{}: {what}", object.display()));
        let source = open_noatime(object)?;
        let checked = Arc::new(Object::open_file(source.try_clone()?).map_err(|e| refused(e.to_string()))?);
        reader::verify(checked.clone()).map_err(|e| refused(e.to_string()))?;
        let (original_len, stored_len, sha256) = (checked.original_len(), checked.stored_len(), checked.trailer().original_sha256);
        let id = ObjectId::random()?;
        let linked = how == BringIn::Link && source.metadata()?.nlink() == 1 && self.objects.put_link(&id, object).is_ok();
        if linked {
            // The name could have been given another file since it was
            // verified: what the store now holds must be what was checked.
            let stored = self.contents.get(&id).map_err(|e| refused(format!("the linked object does not read back: {e}")));
            let same = stored.as_ref().is_ok_and(|o| o.stored_len() == stored_len && o.trailer().original_sha256 == sha256);
            if !same {
                self.contents.forget(&id);
                let _ = self.objects.delete(&id);
                return Err(stored.err().unwrap_or_else(|| refused("changed while it was brought in".into())));
            }
        } else {
            let mut temp = self.objects.create_temp()?;
            io::copy(&mut &source, &mut temp.file)?;
            // The copy is what will be read: check it too.
            let copy = Object::open_file(temp.file.try_clone()?).map_err(|e| refused(format!("the copy does not read back: {e}")))?;
            copy.check_all_blocks().map_err(|e| refused(format!("the copy does not read back: {e}")))?;
            if copy.trailer().original_sha256 != sha256 || copy.stored_len() != stored_len {
                return Err(refused("the copy does not read back".into()));
            }
            self.objects.put(&id, temp)?;
        }
        Ok((Content { object: id, stored_len, sha256 }, original_len))
    }

    /// Gives regular file `ino`, which has no content yet (made by
    /// `mknod`), the object at `object` as its content, verified and
    /// brought in as `how` says, not re-encoded. Its times stay as they are
    /// (only its ctime changes): a layout-1 store's files come into their
    /// new volume this way.
    pub fn import_content(&self, ino: Ino, object: &Path, how: BringIn) -> VResult<Attr> {
        self.writable()?;
        {
            let r = self.meta.read()?;
            let inode = Self::inode_in(&*r, ino)?;
            if inode.kind != Kind::File {
                return Err(errno(libc::EINVAL));
            }
            if !inode.extents.is_empty() || inode.size != 0 {
                return Err(errno(libc::EEXIST));
            }
        }
        let (content, original_len) = self.bring_in(object, how)?;
        let made = self.change(|txn, t| {
            let mut inode = Self::inode_in(txn, ino)?;
            if !inode.extents.is_empty() || inode.size != 0 {
                return Err(errno(libc::EEXIST));
            }
            inode.extents = vec![Extent { start: 0, len: original_len, content: content.clone() }];
            inode.size = original_len;
            inode.ctime = t;
            txn.update_inode(&inode)?;
            let detail = json!({"ino": ino, "path": path_in(txn, ino), "size": original_len, "sha256": hex(&content.sha256), "object": content.object.hex()});
            journal::append(txn, t, "import", &detail)?;
            Ok(inode)
        });
        match made {
            Ok(inode) => Ok(self.attr_of(&inode)),
            Err(e) => {
                self.contents.forget(&content.object);
                let _ = self.objects.delete(&content.object);
                Err(e)
            }
        }
    }

    /// The directory `dirs` names from the root (no symlink is followed),
    /// as root sees it.
    fn directory_at(&self, dirs: &[&[u8]]) -> VResult<Ino> {
        let r = self.meta.read()?;
        let mut ino = ROOT_INO;
        for name in dirs {
            ino = r.lookup(ino, name)?.ok_or_else(|| errno(libc::ENOENT))?;
            Self::dir_in(&*r, ino)?;
        }
        Ok(ino)
    }

    /// Imports the object at `object` as a new regular file at `path`
    /// (relative to the root; its directory must exist).
    pub fn import(&self, object: &Path, path: &str, perm: u32, owner: Owner) -> VResult<Attr> {
        self.writable()?;
        let parts: Vec<&[u8]> = path.as_bytes().split(|&b| b == b'/').filter(|p| !p.is_empty()).collect();
        let Some((name, dirs)) = parts.split_last() else { return Err(errno(libc::EINVAL)) };
        let parent = self.directory_at(dirs)?;
        check_new_name(parent, name)?;
        let (content, original_len) = self.bring_in(object, BringIn::Copy)?;
        let sha256 = content.sha256;
        let made = self.change(|txn, t| {
            let mut dir = Self::dir_in(txn, parent)?;
            if txn.lookup(parent, name)?.is_some() {
                return Err(errno(libc::EEXIST));
            }
            let mut inode = Inode {
                ino: 0,
                kind: Kind::File,
                perm: perm & 0o7777,
                uid: owner.uid,
                gid: owner.gid,
                size: original_len,
                atime: t,
                mtime: t,
                ctime: t,
                nlink: 1,
                rdev: 0,
                parent: 0,
                extents: vec![Extent { start: 0, len: original_len, content: content.clone() }],
            };
            inode.ino = txn.create_inode(&inode)?;
            txn.insert_entry(parent, name, inode.ino)?;
            (dir.mtime, dir.ctime) = (t, t);
            txn.update_inode(&dir)?;
            let detail =
                json!({"ino": inode.ino, "path": entry_path(txn, parent, name), "size": original_len, "sha256": hex(&sha256), "object": content.object.hex()});
            journal::append(txn, t, "import", &detail)?;
            Ok(inode)
        });
        match made {
            Ok(inode) => Ok(self.attr_of(&inode)),
            Err(e) => {
                let _ = self.objects.delete(&content.object);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use at1_core::gate::{self, GateConfig};

    use super::*;
    use crate::volume::{SetAttr, TimeSet, VolumeConfig};
    use crate::OpenFlags;

    const ROOT: Owner = Owner { uid: 0, gid: 0 };

    fn object_of(dir: &Path, name: &str, data: &[u8]) -> std::path::PathBuf {
        let path = dir.join(name);
        gate::compress_to_path(data, &path, &GateConfig::default(), &|_| {}).unwrap();
        path
    }

    fn read_all(v: &Volume, ino: Ino) -> Vec<u8> {
        let h = v.open_file(ino, OpenFlags::default()).unwrap();
        let data = v.read(&h, 0, 1 << 20).unwrap();
        v.release(&h).unwrap();
        data
    }

    #[test]
    fn import_content_links_a_private_object_copies_a_shared_one_and_keeps_times() {
        let store = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let v = Volume::open(store.path(), VolumeConfig::default()).unwrap();
        let data = b"id,name\n1,alpha\n2,beta\n".repeat(50);
        let private = object_of(outside.path(), "private.at1", &data);
        let ino = v.mknod(ROOT_INO, b"linked", Kind::File, 0o640, 0, ROOT).unwrap().ino;
        let (atime, mtime) = (1_600_000_000_123_456_789, 1_500_000_000_987_654_321);
        v.setattr(ino, &SetAttr { atime: Some(TimeSet::At(atime)), mtime: Some(TimeSet::At(mtime)), ..SetAttr::default() }).unwrap();
        let attr = v.import_content(ino, &private, BringIn::Link).unwrap();
        assert_eq!((attr.size, attr.atime, attr.mtime), (data.len() as u64, atime, mtime), "times stay");
        assert_eq!(std::fs::metadata(&private).unwrap().nlink(), 2, "linked into the object store, not copied");
        assert_eq!(read_all(&v, ino), data);

        // A file with another name already is copied: its owner may change it.
        let shared = object_of(outside.path(), "shared.at1", b"shared bytes");
        std::fs::hard_link(&shared, outside.path().join("other-name.at1")).unwrap();
        let ino2 = v.mknod(ROOT_INO, b"copied", Kind::File, 0o644, 0, ROOT).unwrap().ino;
        v.import_content(ino2, &shared, BringIn::Link).unwrap();
        assert_eq!(std::fs::metadata(&shared).unwrap().nlink(), 2, "not linked a third time");
        std::fs::write(&shared, b"changed by its owner").unwrap();
        assert_eq!(read_all(&v, ino2), b"shared bytes");
        v.close().unwrap();
    }

    #[test]
    fn import_content_refuses_a_damaged_object_and_a_file_with_content() {
        let store = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let v = Volume::open(store.path(), VolumeConfig::default()).unwrap();
        let data = b"some bytes that will be damaged on disk\n".repeat(40);
        let object = object_of(outside.path(), "bad.at1", &data);
        let mut bytes = std::fs::read(&object).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&object, &bytes).unwrap();
        let ino = v.mknod(ROOT_INO, b"f", Kind::File, 0o644, 0, ROOT).unwrap().ino;
        for how in [BringIn::Link, BringIn::Copy] {
            let e = v.import_content(ino, &object, how).unwrap_err();
            assert!(matches!(e, VolumeError::Rejected(_)), "{e}");
        }
        assert_eq!(v.getattr(ino).unwrap().size, 0, "the file stays empty");
        assert!(v.objects.list().unwrap().is_empty(), "nothing was put");
        let good = object_of(outside.path(), "good.at1", b"good");
        v.import_content(ino, &good, BringIn::Copy).unwrap();
        let again = v.import_content(ino, &good, BringIn::Copy).unwrap_err();
        assert_eq!(again.errno(), libc::EEXIST);
        assert_eq!(v.objects.list().unwrap().len(), 1, "the refused second object is gone");
        v.close().unwrap();
    }
}
