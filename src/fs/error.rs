//! Every error at the FUSE boundary, with the errno it becomes and the log
//! level it deserves — mapped here and nowhere else (mountpoint-s3's
//! `fs/error.rs` habit).

use std::io;

use fuser::Errno;
use thiserror::Error;

use crate::gate::GateError;
use crate::reader::ReadError;

#[derive(Debug, Error)]
pub enum FsError {
    /// A system call on the backing store failed; its errno passes through.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The gate refused to commit: the old version stays. EIO.
    #[error("write not committed: {0}")]
    Rejected(String),
    /// An object could not be read (corrupt block, bad object). EIO.
    #[error("read failed: {0}")]
    Read(#[from] ReadError),
    /// A query written to `.at1/sql` was refused. EINVAL.
    #[error("query refused: {0}")]
    Query(String),
    /// A request the filesystem refuses on purpose, with its errno.
    #[error("{what}")]
    Refused { errno: i32, what: &'static str },
    /// The request's code panicked (a bug): the request fails with EIO,
    /// the mount keeps serving.
    #[error("internal error, the request panicked: {0}")]
    Panicked(String),
}

impl FsError {
    pub fn refused(errno: i32, what: &'static str) -> Self {
        FsError::Refused { errno, what }
    }

    pub fn errno(&self) -> Errno {
        match self {
            FsError::Io(e) => Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO)),
            FsError::Rejected(_) | FsError::Read(_) | FsError::Panicked(_) => Errno::EIO,
            FsError::Query(_) => Errno::EINVAL,
            FsError::Refused { errno, .. } => Errno::from_i32(*errno),
        }
    }

    /// Logs the error at the level it deserves: data errors are errors;
    /// refusals and ordinary errnos (ENOENT, EEXIST, ...) are routine.
    pub fn log(&self, op: &str) {
        match self {
            FsError::Rejected(_) | FsError::Read(_) | FsError::Panicked(_) => log::error!("{op}: {self}"),
            FsError::Io(e) if matches!(e.raw_os_error(), Some(libc::EIO) | None) => log::warn!("{op}: {self}"),
            _ => log::debug!("{op}: {self}"),
        }
    }
}

impl From<GateError> for FsError {
    fn from(e: GateError) -> Self {
        match e {
            GateError::Io(io) => FsError::Io(io),
            other => FsError::Rejected(other.to_string()),
        }
    }
}

pub type FsResult<T> = Result<T, FsError>;

pub fn errno(e: i32) -> FsError {
    FsError::Io(io::Error::from_raw_os_error(e))
}
