//! Every error at the FUSE boundary, with the errno it becomes and the log
//! level it deserves — mapped here and nowhere else (mountpoint-s3's
//! `fs/error.rs` habit). Volume errors carry their errno already.

use at1_volume::VolumeError;
use fuser::Errno;

#[derive(Debug)]
pub enum FsError {
    /// What the volume refused or failed with.
    Volume(VolumeError),
    /// A request the adapter refuses itself (the control directory).
    Refused { errno: i32, what: &'static str },
    /// The request panicked (a bug): EIO, logged, and the mount goes on.
    Panicked(String),
}

impl From<VolumeError> for FsError {
    fn from(e: VolumeError) -> Self {
        FsError::Volume(e)
    }
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> Self {
        FsError::Volume(VolumeError::Io(e))
    }
}

impl std::fmt::Display for FsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsError::Volume(e) => write!(f, "{e}"),
            FsError::Refused { what, .. } => f.write_str(what),
            FsError::Panicked(what) => write!(f, "the request panicked (a bug; the mount goes on): {what}"),
        }
    }
}

impl FsError {
    pub fn refused(errno: i32, what: &'static str) -> Self {
        FsError::Refused { errno, what }
    }

    pub fn errno(&self) -> Errno {
        Errno::from_i32(match self {
            FsError::Volume(e) => e.errno(),
            FsError::Refused { errno, .. } => *errno,
            FsError::Panicked(_) => libc::EIO,
        })
    }

    /// Data errors are errors; refusals and ordinary errnos (ENOENT,
    /// EEXIST, ...) are routine.
    pub fn log(&self, op: &str) {
        match self {
            FsError::Volume(e) if e.is_data_error() => log::error!("{op}: {self}"),
            FsError::Panicked(_) => log::error!("{op}: {self}"),
            _ => log::debug!("{op}: {self}"),
        }
    }
}

pub type FsResult<T> = Result<T, FsError>;

pub fn errno(e: i32) -> FsError {
    FsError::Volume(VolumeError::Errno(e))
}
