//! Where `compress` and `decompress` write, as zstd and xz do:
//!
//! - a regular file, or a name not taken yet, is written atomically: a temp
//!   file beside it, fsync, rename over it, fsync of the directory. A
//!   symlink is followed first, so the file it points at is replaced and
//!   the link stays a link;
//! - a device, FIFO or socket is written in place: opened (a socket
//!   connected) and written, never replaced by a regular file;
//! - an existing regular file is not overwritten without `--force`, and
//!   never when it is the input itself;
//! - a new file takes the mode and times of an input that is a regular file
//!   (and its owner, where allowed), as zstd and xz give it.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Where output goes.
#[derive(Debug)]
pub enum Destination {
    Stdout,
    /// A device, FIFO or socket, written in place.
    Special(PathBuf),
    /// A regular file (new or replaced), written atomically at `target`: the
    /// path the user gave with the symlinks of its last component followed.
    File {
        target: PathBuf,
    },
}

/// Links followed at most before giving up (the kernel's own limit).
const MAX_SYMLINKS: usize = 40;

/// Decides how to write `output` (as the user gave it).
pub fn destination(output: &Path, force: bool, input: Option<&Metadata>) -> Result<Destination> {
    if output.as_os_str() == "-" {
        return Ok(Destination::Stdout);
    }
    let shown = output.display();
    let target = follow_symlinks(output).with_context(|| format!("{shown}"))?;
    let meta = match fs::metadata(&target) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            check_parent_dir(&target).with_context(|| format!("{shown}"))?;
            return Ok(Destination::File { target });
        }
        Err(e) => return Err(e).with_context(|| format!("{shown}")),
    };
    let same_as_input = input.is_some_and(|i| i.dev() == meta.dev() && i.ino() == meta.ino());
    let kind = meta.file_type();
    if kind.is_dir() {
        return Err(io::Error::from_raw_os_error(libc::EISDIR)).with_context(|| format!("{shown}"));
    }
    if kind.is_char_device() || kind.is_block_device() || kind.is_fifo() || kind.is_socket() {
        return Ok(Destination::Special(target));
    }
    if same_as_input {
        bail!("{shown} is the input itself: give another output");
    }
    if !force {
        bail!("{shown} already exists; use -f to overwrite it");
    }
    Ok(Destination::File { target })
}

/// `path` with its last component's symlinks followed (directories on the
/// way need not be: renaming inside them reaches the same directory). A
/// dangling link gives the path it points at, which is then created.
fn follow_symlinks(path: &Path) -> io::Result<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_SYMLINKS {
        match fs::symlink_metadata(&current) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = fs::read_link(&current)?;
                // Relative to the link's directory; an absolute one replaces it.
                current = current.parent().map_or_else(|| link.clone(), |dir| dir.join(&link));
            }
            _ => return Ok(current),
        }
    }
    Err(io::Error::from_raw_os_error(libc::ELOOP))
}

/// A new file's directory must exist (else the error would name the temp
/// file made in it).
fn check_parent_dir(path: &Path) -> io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
        Err(e) => Err(e),
    }
}

/// Opens a device or FIFO for writing (without creating or truncating
/// it), or connects to a socket.
pub fn open_special(path: &Path) -> io::Result<Box<dyn Write>> {
    if fs::metadata(path)?.file_type().is_socket() {
        return Ok(Box::new(UnixStream::connect(path)?));
    }
    Ok(Box::new(OpenOptions::new().write(true).open(path)?))
}

/// Gives a new output file the input's permission bits and times, and its
/// owner where the caller may (as root): what `zstd` and `xz` do.
pub fn copy_input_metadata(file: &File, input: &Metadata) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // The owner first: chown clears set-id bits, and the mode carries none.
    // Failing to give it away is normal for a user and not an error.
    let _ = std::os::unix::fs::fchown(file, Some(input.uid()), Some(input.gid()));
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(input.mode() & 0o777))?;
    let times = [libc::timespec { tv_sec: input.atime(), tv_nsec: input.atime_nsec() }, libc::timespec { tv_sec: input.mtime(), tv_nsec: input.mtime_nsec() }];
    // SAFETY: a valid descriptor and two valid timespecs.
    if unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_chains_are_followed_relative_to_each_link() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        std::os::unix::fs::symlink("sub/b", dir.path().join("a")).unwrap();
        std::os::unix::fs::symlink("target", sub.join("b")).unwrap();
        assert_eq!(follow_symlinks(&dir.path().join("a")).unwrap(), sub.join("target"));
        std::os::unix::fs::symlink("loop", dir.path().join("loop")).unwrap();
        assert_eq!(follow_symlinks(&dir.path().join("loop")).unwrap_err().raw_os_error(), Some(libc::ELOOP));
    }
}
