//! Extended attributes. A user's own xattrs (any namespace the backing
//! filesystem takes) are stored on the entry's stub or node and shared by
//! all its names. `user.at1.*` are computed from the file's object and are
//! read-only (EPERM on set and remove).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use fuser::ReplyXattr;

use super::error::{errno, FsError, FsResult};
use super::inode::{is_control, NodeKind};
use super::At1Fs;
use crate::reader::Object;
use crate::store::{self, RegularKind};

const VIRTUAL_PREFIX: &[u8] = b"user.at1.";
const VIRTUAL_NAMES: [&str; 8] = ["original_bytes", "stored_bytes", "ratio", "codec", "sha256", "blocks", "recall_point_bytes", "idle_bytes"];

/// Replies with `value`, or only its size when `size` is 0 (the size-probe
/// protocol), or ERANGE when it does not fit.
pub fn reply_sized(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(fuser::Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

fn is_virtual(name: &OsStr) -> bool {
    name.as_bytes().starts_with(VIRTUAL_PREFIX)
}

impl At1Fs {
    fn is_regular(&self, ino: u64) -> bool {
        matches!(self.kind(ino), Ok(NodeKind::Regular(_)))
    }

    /// The value of a `user.at1.*` attribute of a regular file.
    fn virtual_xattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        let NodeKind::Regular(kind) = self.kind(ino)? else { return Err(errno(libc::ENODATA)) };
        let path = match &kind {
            RegularKind::Managed(id) => store::Anchored::new(self.store.object_path(id))?,
            _ => self.tree_path(ino)?,
        };
        let object = match kind {
            RegularKind::Plain => None,
            _ => match Object::open(&path) {
                Ok(o) => Some(o),
                Err(crate::reader::ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(FsError::Read(e)),
            },
        };
        let plain_len = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let (original, stored) = match &object {
            Some(o) => (o.original_len(), o.stored_len()),
            None => (plain_len(), plain_len()),
        };
        let value = match name {
            b"original_bytes" => original.to_string(),
            b"stored_bytes" | b"idle_bytes" => stored.to_string(),
            b"ratio" => format!("{:.3}", if stored == 0 { 0.0 } else { original as f64 / stored as f64 }),
            b"codec" => object.as_ref().map_or("none", |o| o.codec_summary()).to_string(),
            b"sha256" => match &object {
                Some(o) => o.trailer().original_sha256.iter().map(|b| format!("{b:02x}")).collect(),
                None => return Err(errno(libc::ENODATA)),
            },
            b"blocks" => object.as_ref().map_or(0, |o| o.footer().blocks.len()).to_string(),
            b"recall_point_bytes" => object.as_ref().map_or(original, |o| o.point_recall_bytes()).to_string(),
            _ => return Err(errno(libc::ENODATA)),
        };
        Ok(value.into_bytes())
    }

    pub(super) fn get_xattr(&self, ino: u64, name: &OsStr) -> FsResult<Vec<u8>> {
        if is_control(ino) {
            return Err(errno(libc::ENODATA));
        }
        if is_virtual(name) {
            return self.virtual_xattr(ino, &name.as_bytes()[VIRTUAL_PREFIX.len()..]);
        }
        store::get_xattr(&self.meta_path(ino)?, name)?.ok_or_else(|| errno(libc::ENODATA))
    }

    pub(super) fn list_xattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        if is_control(ino) {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for n in store::xattr_names(&self.meta_path(ino)?)? {
            out.extend_from_slice(n.as_bytes());
            out.push(0);
        }
        if self.is_regular(ino) {
            for n in VIRTUAL_NAMES {
                out.extend_from_slice(VIRTUAL_PREFIX);
                out.extend_from_slice(n.as_bytes());
                out.push(0);
            }
        }
        Ok(out)
    }

    pub(super) fn set_xattr(&self, ino: u64, name: &OsStr, value: &[u8], flags: i32) -> FsResult<()> {
        if is_control(ino) || is_virtual(name) {
            return Err(FsError::refused(libc::EPERM, "user.at1.* attributes are read-only"));
        }
        self.check_writable()?;
        Ok(store::set_xattr(&self.meta_path(ino)?, name, value, flags)?)
    }

    pub(super) fn remove_xattr(&self, ino: u64, name: &OsStr) -> FsResult<()> {
        if is_control(ino) || is_virtual(name) {
            return Err(FsError::refused(libc::EPERM, "user.at1.* attributes are read-only"));
        }
        self.check_writable()?;
        Ok(store::remove_xattr(&self.meta_path(ino)?, name)?)
    }
}
