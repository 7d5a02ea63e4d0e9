//! Extended attributes: a user's own are kept by the metadata engine with
//! the inode (shared by its hard links); `user.at1.*` are computed from the
//! file's content and read-only.

use at1_store::{Ino, Inode, Kind};

use crate::error::{errno, VResult};
use crate::volume::{hex, Volume};

pub const VIRTUAL_PREFIX: &[u8] = b"user.at1.";
pub const VIRTUAL_NAMES: [&str; 9] = ["original_bytes", "stored_bytes", "ratio", "codec", "sha256", "blocks", "recall_point_bytes", "idle_bytes", "segments"];
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
        if inode.extents.is_empty() {
            // Never written, or written empty: no object, nothing stored.
            let value = match name {
                b"original_bytes" | b"stored_bytes" | b"idle_bytes" | b"blocks" | b"recall_point_bytes" | b"segments" => "0".to_string(),
                b"ratio" => "0.000".to_string(),
                b"codec" => "empty".to_string(),
                b"sha256" => EMPTY_SHA256_HEX.to_string(),
                _ => return Err(errno(libc::ENODATA)),
            };
            return Ok(value.into_bytes());
        }
        let (original, stored) = (inode.size, inode.stored_len());
        let value = match name {
            b"original_bytes" => original.to_string(),
            b"stored_bytes" | b"idle_bytes" => stored.to_string(),
            b"ratio" => format!("{:.3}", if stored == 0 { 0.0 } else { original as f64 / stored as f64 }),
            b"segments" => inode.extents.len().to_string(),
            b"sha256" => match inode.extents.as_slice() {
                [one] => hex(&one.content.sha256),
                _ => hex(&self.whole_sha256(&inode)?),
            },
            b"codec" | b"blocks" | b"recall_point_bytes" => {
                let mut codecs: Vec<&'static str> = Vec::new();
                let (mut blocks, mut recall) = (0usize, 0u64);
                for e in &inode.extents {
                    let object = self.object_of(ino, &e.content)?;
                    if !codecs.contains(&object.codec_summary()) {
                        codecs.push(object.codec_summary());
                    }
                    blocks += object.footer().blocks.len();
                    // A point recall reads inside one extent.
                    recall = recall.max(object.point_recall_bytes());
                }
                match name {
                    b"codec" => codecs.join("+"),
                    b"blocks" => blocks.to_string(),
                    _ => recall.to_string(),
                }
            }
            _ => return Err(errno(libc::ENODATA)),
        };
        Ok(value.into_bytes())
    }

    /// SHA-256 of a file of several extents: its bytes read through, 1 MiB
    /// at a time.
    fn whole_sha256(&self, inode: &Inode) -> VResult<[u8; 32]> {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        let mut at = 0;
        let mut buf = Vec::with_capacity(1 << 20);
        while at < inode.size {
            let stop = (at + (1 << 20)).min(inode.size);
            buf.clear();
            self.read_extents(inode.ino, &inode.extents, at, stop, &mut buf)?;
            hash.update(&buf);
            at = stop;
        }
        Ok(hash.finalize().into())
    }
}
