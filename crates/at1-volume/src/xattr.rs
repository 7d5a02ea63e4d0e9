//! Extended attributes: a user's own are kept by the metadata engine with
//! the inode (shared by its hard links); `user.at1.*` are computed from the
//! file's content and read-only.

use at1_store::{Ino, Kind};

use crate::error::{errno, VResult};
use crate::volume::{hex, Volume};

pub const VIRTUAL_PREFIX: &[u8] = b"user.at1.";
pub const VIRTUAL_NAMES: [&str; 8] = ["original_bytes", "stored_bytes", "ratio", "codec", "sha256", "blocks", "recall_point_bytes", "idle_bytes"];
/// Longest attribute name (the kernel's XATTR_NAME_MAX).
const NAME_MAX: usize = 255;
/// Largest value (the kernel's XATTR_SIZE_MAX).
const VALUE_MAX: usize = 64 << 10;
/// SHA-256 of no bytes: the content of an empty file.
pub(crate) const EMPTY_SHA256_HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The `user.at1.` name, if `name` is one.
pub fn virtual_name(name: &[u8]) -> Option<&[u8]> {
    name.strip_prefix(VIRTUAL_PREFIX)
}

/// Refuses what `setxattr` must not store.
pub fn check_settable(name: &[u8], value: &[u8]) -> VResult<()> {
    if virtual_name(name).is_some() {
        return Err(errno(libc::EPERM));
    }
    if name.is_empty() {
        return Err(errno(libc::EINVAL));
    }
    // `system.*` are the kernel's own (POSIX ACLs): kept as plain bytes they
    // would claim to have set permissions that nothing applies — `cp -a`
    // sets a file's mode through `system.posix_acl_access` and falls back to
    // chmod only when told ACLs are not supported.
    if name.starts_with(b"system.") {
        return Err(errno(libc::EOPNOTSUPP));
    }
    if name.len() > NAME_MAX {
        return Err(errno(libc::ERANGE));
    }
    if value.len() > VALUE_MAX {
        return Err(errno(libc::E2BIG));
    }
    Ok(())
}

impl Volume {
    /// A `user.at1.*` attribute of a regular file.
    pub(crate) fn virtual_xattr(&self, ino: Ino, name: &[u8]) -> VResult<Vec<u8>> {
        let inode = {
            let r = self.meta.read()?;
            Self::inode_in(&*r, ino)?
        };
        if inode.kind != Kind::File {
            return Err(errno(libc::ENODATA));
        }
        let Some(content) = &inode.content else {
            // Never written, or written empty: no object, nothing stored.
            let value = match name {
                b"original_bytes" | b"stored_bytes" | b"idle_bytes" | b"blocks" | b"recall_point_bytes" => "0".to_string(),
                b"ratio" => "0.000".to_string(),
                b"codec" => "empty".to_string(),
                b"sha256" => EMPTY_SHA256_HEX.to_string(),
                _ => return Err(errno(libc::ENODATA)),
            };
            return Ok(value.into_bytes());
        };
        let (original, stored) = (inode.size, content.stored_len);
        let value = match name {
            b"original_bytes" => original.to_string(),
            b"stored_bytes" | b"idle_bytes" => stored.to_string(),
            b"ratio" => format!("{:.3}", if stored == 0 { 0.0 } else { original as f64 / stored as f64 }),
            b"sha256" => hex(&content.sha256),
            b"codec" | b"blocks" | b"recall_point_bytes" => {
                let object = self.object_of(ino, content)?;
                match name {
                    b"codec" => object.codec_summary().to_string(),
                    b"blocks" => object.footer().blocks.len().to_string(),
                    _ => object.point_recall_bytes().to_string(),
                }
            }
            _ => return Err(errno(libc::ENODATA)),
        };
        Ok(value.into_bytes())
    }
}
