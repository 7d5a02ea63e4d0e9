//! Extended attributes. A user's own xattrs (any namespace the backing
//! filesystem takes) are stored on the entry's stub or node and shared by
//! all its names. `user.at1.*` are computed from the file's object and are
//! read-only (EPERM on set and remove).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use fuser::ReplyXattr;
use sha2::Digest;

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

/// What a regular file's content is, for its `user.at1.*` attributes.
enum Content {
    Object(Box<Object>),
    /// A managed file never written: no object.
    Empty,
    /// Raw bytes in the store (not an object), of this length.
    Plain(u64),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_virtual(name: &OsStr) -> bool {
    name.as_bytes().starts_with(VIRTUAL_PREFIX)
}

impl At1Fs {
    /// What a regular file's `user.at1.*` attributes describe.
    fn content(&self, ino: u64) -> FsResult<Content> {
        let NodeKind::Regular(kind) = self.kind(ino)? else { return Err(errno(libc::ENODATA)) };
        match kind {
            RegularKind::Managed(id) => match Object::open(&store::Anchored::new(self.store.object_path(&id))?) {
                Ok(o) => Ok(Content::Object(Box::new(o))),
                // A file never written has no object: it is empty, as one
                // truncated to nothing is (whose object is the empty one).
                Err(crate::reader::ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(Content::Empty),
                Err(e) => Err(FsError::Read(e)),
            },
            RegularKind::Bare => Ok(Content::Object(Box::new(Object::open(&self.tree_path(ino)?).map_err(FsError::Read)?))),
            RegularKind::Plain => Ok(Content::Plain(std::fs::metadata(&*self.tree_path(ino)?).map(|m| m.len()).unwrap_or(0))),
        }
    }

    /// The value of a `user.at1.*` attribute of a regular file.
    fn virtual_xattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        let content = self.content(ino)?;
        let (original, stored) = match &content {
            Content::Object(o) => (o.original_len(), o.stored_len()),
            Content::Empty => (0, 0),
            Content::Plain(len) => (*len, *len),
        };
        let value = match name {
            b"original_bytes" => original.to_string(),
            b"stored_bytes" | b"idle_bytes" => stored.to_string(),
            b"ratio" => format!("{:.3}", if stored == 0 { 0.0 } else { original as f64 / stored as f64 }),
            b"codec" => match &content {
                Content::Object(o) => o.codec_summary(),
                Content::Empty => "empty",
                Content::Plain(_) => "none",
            }
            .to_string(),
            b"sha256" => match &content {
                Content::Object(o) => hex(&o.trailer().original_sha256),
                Content::Empty => hex(&sha2::Sha256::digest(b"")),
                // Not kept for bytes put in the store by hand (and not listed).
                Content::Plain(_) => return Err(errno(libc::ENODATA)),
            },
            b"blocks" => match &content {
                Content::Object(o) => o.footer().blocks.len(),
                _ => 0,
            }
            .to_string(),
            b"recall_point_bytes" => match &content {
                Content::Object(o) => o.point_recall_bytes(),
                _ => original,
            }
            .to_string(),
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
        if let Ok(NodeKind::Regular(kind)) = self.kind(ino) {
            for n in VIRTUAL_NAMES.into_iter().filter(|n| *n != "sha256" || kind != RegularKind::Plain) {
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
