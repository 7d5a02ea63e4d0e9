//! `at1 import STORE OBJECT PATH`: an `.at1` object made by `at1 compress`
//! becomes a file of the volume — verified whole (every block, every
//! segment, the SHA-256), copied into the object store and checked again
//! there, not re-encoded.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

use at1_core::reader::{self, Object};
use at1_store::{Content, Ino, Inode, Kind, ObjectId, ROOT_INO};
use serde_json::json;

use crate::error::{errno, VResult, VolumeError};
use crate::journal;
use crate::volume::{check_new_name, entry_path, hex, Attr, Owner, Volume};

impl Volume {
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
        let refused = |what: String| VolumeError::Rejected(format!("{}: {what}", object.display()));
        let source = File::open(object)?;
        let checked = Arc::new(Object::open_file(source.try_clone()?).map_err(|e| refused(e.to_string()))?);
        reader::verify(checked.clone()).map_err(|e| refused(e.to_string()))?;
        let (original_len, sha256) = (checked.original_len(), checked.trailer().original_sha256);
        let mut temp = self.objects.create_temp()?;
        io::copy(&mut &source, &mut temp.file)?;
        // The copy is what will be read: check it too.
        let copy = Object::open_file(temp.file.try_clone()?).map_err(|e| refused(format!("the copy does not read back: {e}")))?;
        copy.check_all_blocks().map_err(|e| refused(format!("the copy does not read back: {e}")))?;
        if copy.trailer().original_sha256 != sha256 {
            return Err(refused("the copy does not read back".into()));
        }
        let content = Content { object: ObjectId::random()?, stored_len: copy.stored_len(), sha256 };
        self.objects.put(&content.object, temp)?;
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
                content: Some(content.clone()),
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
