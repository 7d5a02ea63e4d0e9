//! Resolving a path *as a caller*, the way the mount would: for queries
//! (and the coming S3 gateway), which name a file by path and run in the
//! daemon. Every directory on the way needs search permission and the file
//! read permission, for the caller ([`crate::access`]). A symlink's target
//! is resolved here, inside the volume, like any other path: an absolute
//! target, or `..` above the root, is refused without looking at anything
//! outside (there is nothing outside to look at: names live in the
//! metadata engine, not on the host).

use std::collections::VecDeque;
use std::sync::Arc;

use at1_core::reader::Object;
use at1_store::{Ino, Kind, ROOT_INO};
use thiserror::Error;

use crate::access::{Caller, Want};
use crate::error::VolumeError;
use crate::volume::{Volume, CONTROL_NAME};

/// Symlinks followed in one resolution at most (the kernel's limit).
const MAX_SYMLINKS: usize = 40;

/// A resolved regular file.
pub struct Resolved {
    pub ino: Ino,
    /// Its content; `None` when it is empty.
    pub object: Option<Arc<Object>>,
}

/// Why a path does not resolve. Messages say nothing of what lies outside
/// the volume.
#[derive(Debug, Error)]
pub enum ResolveError {
    #[error("no such file")]
    NotFound,
    #[error("permission denied")]
    PermissionDenied,
    #[error("a symlink on the path leads outside the mount")]
    LeavesMount,
    #[error("not a regular file")]
    NotAFile,
    #[error("a component of the path is not a directory")]
    NotADirectory,
    #[error("too many levels of symbolic links")]
    Loop,
    #[error("{0}")]
    Volume(#[from] VolumeError),
}

impl From<at1_store::MetaError> for ResolveError {
    fn from(e: at1_store::MetaError) -> Self {
        ResolveError::Volume(e.into())
    }
}

fn components(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".").map(<[u8]>::to_vec)
}

impl Volume {
    /// Resolves `path` (relative to the root) for `caller`, judging
    /// permissions as `open(O_RDONLY)` through the mount would, and opens
    /// the file's content.
    pub fn resolve(&self, caller: &Caller, path: &str) -> Result<Resolved, ResolveError> {
        let r = self.meta.read()?;
        let root = r.inode(ROOT_INO)?.ok_or(ResolveError::NotFound)?;
        if !caller.may(Want::Search, root.perm, root.uid, root.gid) {
            return Err(ResolveError::PermissionDenied);
        }
        // The directories walked so far, the root first: `..` pops one.
        let mut dirs: Vec<Ino> = vec![ROOT_INO];
        let mut pending: VecDeque<Vec<u8>> = components(path.as_bytes()).collect();
        let mut symlinks = 0;
        while let Some(name) = pending.pop_front() {
            if name == b".." {
                if dirs.len() == 1 {
                    return Err(ResolveError::LeavesMount);
                }
                dirs.pop();
                continue;
            }
            let dir = *dirs.last().ok_or(ResolveError::NotFound)?;
            if dir == ROOT_INO && name == CONTROL_NAME {
                return Err(ResolveError::NotFound); // the control directory holds no tables
            }
            let ino = r.lookup(dir, &name)?.ok_or(ResolveError::NotFound)?;
            let inode = r.inode(ino)?.ok_or(ResolveError::NotFound)?;
            match inode.kind {
                Kind::Symlink => {
                    symlinks += 1;
                    if symlinks > MAX_SYMLINKS {
                        return Err(ResolveError::Loop);
                    }
                    let target = r.symlink_target(ino)?.ok_or(ResolveError::NotFound)?;
                    if target.first() == Some(&b'/') {
                        return Err(ResolveError::LeavesMount);
                    }
                    for c in components(&target).collect::<Vec<_>>().into_iter().rev() {
                        pending.push_front(c);
                    }
                }
                Kind::Dir => {
                    if !caller.may(Want::Search, inode.perm, inode.uid, inode.gid) {
                        return Err(ResolveError::PermissionDenied);
                    }
                    dirs.push(ino);
                }
                _ if !pending.is_empty() => return Err(ResolveError::NotADirectory),
                Kind::File => {
                    if !caller.may(Want::Read, inode.perm, inode.uid, inode.gid) {
                        return Err(ResolveError::PermissionDenied);
                    }
                    drop(r);
                    let object = self.whole_object(&inode)?;
                    return Ok(Resolved { ino, object });
                }
                _ => return Err(ResolveError::NotAFile),
            }
        }
        Err(ResolveError::NotAFile) // the path names a directory
    }
}
