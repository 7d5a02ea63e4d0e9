//! What a volume operation can fail with. Each error knows the errno it
//! stands for (`errno()`), so every adapter — FUSE, the S3 gateway, the
//! command line — maps it the same way; the FUSE adapter logs and replies
//! with it in one place.

use std::io;

use at1_core::gate::GateError;
use at1_core::reader::ReadError;
use at1_store::MetaError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum VolumeError {
    /// A plain refusal: the errno says it all (ENOENT, EEXIST, ENOTEMPTY,
    /// EISDIR, ENOTDIR, EINVAL, EPERM, EROFS, ENAMETOOLONG, ...).
    #[error("{}", io::Error::from_raw_os_error(*.0))]
    Errno(i32),
    /// The caller may not do this (EACCES).
    #[error("permission denied")]
    PermissionDenied,
    /// The gate refused the new content: the old version stays (EIO).
    #[error("write not committed: {0}")]
    Rejected(String),
    /// A file's content could not be read: its object is missing or does
    /// not verify (EIO). Names the path and the object.
    #[error("{path}: {what}")]
    Damaged { path: String, what: String },
    /// The metadata engine failed (EIO).
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// A system call on the store failed; its errno passes through.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// Opening the store failed in a way the user must act on (a second
    /// daemon, an old layout, an unwritable directory).
    #[error("{0}")]
    Store(String),
}

pub type VResult<T> = Result<T, VolumeError>;

impl VolumeError {
    pub fn errno(&self) -> i32 {
        match self {
            VolumeError::Errno(e) => *e,
            VolumeError::PermissionDenied => libc::EACCES,
            VolumeError::Rejected(_) | VolumeError::Damaged { .. } | VolumeError::Store(_) => libc::EIO,
            VolumeError::Meta(MetaError::Exists) => libc::EEXIST,
            VolumeError::Meta(_) => libc::EIO,
            VolumeError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    /// Data errors (a rejected commit, a damaged object, a failing engine)
    /// deserve an error log line; refusals are routine.
    pub fn is_data_error(&self) -> bool {
        match self {
            VolumeError::Rejected(_) | VolumeError::Damaged { .. } | VolumeError::Meta(MetaError::Engine(_) | MetaError::Corrupt(_)) => true,
            VolumeError::Io(e) => matches!(e.raw_os_error(), Some(libc::EIO) | None),
            _ => false,
        }
    }
}

/// Shorthand for a refusal with an errno.
pub fn errno(e: i32) -> VolumeError {
    VolumeError::Errno(e)
}

impl From<GateError> for VolumeError {
    fn from(e: GateError) -> Self {
        match e {
            GateError::Io(io) => VolumeError::Io(io),
            other => VolumeError::Rejected(other.to_string()),
        }
    }
}

impl From<ReadError> for VolumeError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Io(io) => VolumeError::Io(io),
            other => VolumeError::Damaged { path: String::new(), what: other.to_string() },
        }
    }
}
